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


def _import_streamz() -> None:
    """Import streamz without the logging changes of dask.distributed's import.

    streamz imports dask.distributed whenever it is installed (the ``dask`` extra), and that
    import applies Dask's default logging configuration: Bokeh's logger at ERROR, Tornado's
    at CRITICAL. Importing rtnb must not silence them: a served dashboard (``rtnb serve``)
    lost every session line of its log that way. Their levels, handlers and propagation are
    put back as they were; Dask's own loggers keep Dask's configuration.
    """
    import logging

    loggers = [logging.getLogger(n) for n in ("bokeh", "tornado", "tornado.application")]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    import streamz  # noqa: F401

    for lg, level, propagate, handlers in saved:
        lg.setLevel(level)
        lg.propagate = propagate
        lg.handlers[:] = handlers


_import_streamz()

from rtnb import datasets, demo, detect, formats, sinks, sources
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
    "formats",
    "partition_of",
    "rows",
    "session",
    "sinks",
    "sliding",
    "sources",
    "tumbling",
]
