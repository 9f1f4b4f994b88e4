"""Event-time windows: specs (what a window is) and the engine (how it is computed)."""

from rtnb.windows.engine import AggSpec, WindowAggregator, WindowOutput
from rtnb.windows.specs import (
    Rows,
    Session,
    Sliding,
    Tumbling,
    WindowSpec,
    rows,
    session,
    sliding,
    tumbling,
)

__all__ = [
    "AggSpec",
    "Rows",
    "Session",
    "Sliding",
    "Tumbling",
    "WindowAggregator",
    "WindowOutput",
    "WindowSpec",
    "rows",
    "session",
    "sliding",
    "tumbling",
]
