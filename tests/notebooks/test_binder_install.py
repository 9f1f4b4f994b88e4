"""Notebook 04 on the Binder install (no broker clients): Redis may run, the `redis` extra is
missing, and Run All still goes to the end (issue 18, defect 4).

The kernel blocks ``import redis`` as an install without ``rtnb[redis]`` would; the shared
Redis server on 127.0.0.1:6379 runs as usual (``make test`` starts it).
"""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

BLOCK_REDIS = """
import sys
for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
    del sys.modules[name]
sys.modules["redis"] = None  # `import redis` raises ImportError, as without the extra
"""


def test_sources_notebook_runs_to_the_end_without_the_redis_extra() -> None:
    nb = nbformat.read(NOTEBOOKS / "04-sources.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BLOCK_REDIS))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on any error
    said = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert "this install has no Redis client: skipped" in said
    assert "rtnb[redis]" in said
    assert "rows read over the WebSocket" in said  # the last cell ran: ws stopped
