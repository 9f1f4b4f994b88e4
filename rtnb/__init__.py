"""rtnb: real-time analytics and monitoring in JupyterLab.

Connect a source, shape it as a streaming dataframe of pandas micro-batches, watch it in
live Bokeh plots tuned with widgets::

    import rtnb
    size = rtnb.Param("10s", min="1s", max="5min", name="window")
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), speed=600)
    agg = src.window(rtnb.tumbling(size), by="host").agg(mean=("cpu", "mean"))
    rtnb.dashboard(size, agg.plot.line(x="window_start", y="mean", by="host"))
    src.start()
"""

from rtnb import datasets, demo, detect, sinks, sources
from rtnb.aggregations import Aggregation
from rtnb.detect import alert, evaluate
from rtnb.errors import (
    CheckpointError,
    ConfigError,
    DecodeError,
    ExportError,
    MissingExtraError,
    RtnbError,
    SchemaError,
    SourceError,
)
from rtnb.frame import StreamingFrame, StreamingSeries, WindowedFrame
from rtnb.params import Param
from rtnb.partitions import partition_of
from rtnb.pipeline import Pipeline
from rtnb.viz import dashboard  # light: views, Bokeh and ipywidgets load on first use
from rtnb.windows import rows, session, sliding, tumbling

__version__ = "0.1.0.dev0"

__all__ = [
    "Aggregation",
    "CheckpointError",
    "ConfigError",
    "DecodeError",
    "ExportError",
    "MissingExtraError",
    "Param",
    "Pipeline",
    "RtnbError",
    "SchemaError",
    "SourceError",
    "StreamingFrame",
    "StreamingSeries",
    "WindowedFrame",
    "alert",
    "dashboard",
    "datasets",
    "demo",
    "detect",
    "evaluate",
    "partition_of",
    "rows",
    "session",
    "sinks",
    "sliding",
    "sources",
    "tumbling",
]
