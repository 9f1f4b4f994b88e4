"""The core loads no plotting: ``import rtnb`` and headless pipelines leave Bokeh unloaded.

Each check runs in a fresh interpreter, since this test session has imported Bokeh long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

#: What only plotting needs. Not Jinja2: a dependency of rtnb itself (export templates), and
#: streamz imports dask.distributed when it is installed (the ``dask`` extra), which loads it.
PLOTTING = ("bokeh", "ipywidgets", "IPython", "jupyter_bokeh")

_PIPELINE = """
import pandas as pd
import rtnb

t = pd.date_range("2026-01-01", periods=200, freq="s")
df = pd.DataFrame({"timestamp": t, "host": ["a", "b"] * 100,
                   "cpu": [float(i % 37) for i in range(200)]})
sdf = rtnb.sources.replay(df, batch_size=50)
agg = sdf.window(rtnb.tumbling("10s"), by="host").agg(cpu=("cpu", "mean"))
flagged = agg.detect(rtnb.detect.ZScore(window="1min"), on="cpu", by="host")
out = flagged.collect()
sdf.run()
assert sum(len(b) for b in out) == 40, sum(len(b) for b in out)
"""


def loaded_after(code: str) -> list[str]:
    """The plotting modules in ``sys.modules`` after running ``code`` in a new interpreter."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps([m for m in {PLOTTING!r} if m in sys.modules]))
        """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("code", [
    "import rtnb",
    "import rtnb.export.runtime",
    "import rtnb.viz",
    "import rtnb\nrtnb.dashboard.__doc__",
    _PIPELINE,
], ids=["rtnb", "export-runtime", "viz-package", "dashboard-attribute", "replay-pipeline"])
def test_the_core_loads_no_plotting(code: str) -> None:
    assert loaded_after(code) == []


def test_a_plot_loads_bokeh_on_first_use() -> None:
    result = loaded_after(_PIPELINE + '\nview = agg.plot.line(x="window_start", y="cpu")\n')
    assert "bokeh" in result
    assert "jupyter_bokeh" in result


def test_dashboard_is_the_recorded_public_callable() -> None:
    import rtnb
    import rtnb.viz
    from rtnb.export.script import public_path

    assert rtnb.dashboard is rtnb.viz.dashboard
    assert public_path(rtnb.dashboard) == "rtnb.dashboard"
    assert "Parameters" in (rtnb.dashboard.__doc__ or "")


@pytest.mark.parametrize("code", ["import rtnb", "import rtnb.export.runtime"])
def test_import_rtnb_loads_no_numba(code: str) -> None:
    """The compiled kernels (numba, ~0.4-0.6 s to import) load when a stateful node first
    processes a batch, not when rtnb is imported (the CLI, ``--help``, a plain script)."""
    probe = code + "\nimport sys\nprint('numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
