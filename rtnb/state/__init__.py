"""State that outlives a process: checkpoints of source positions and operator state.

See :class:`Checkpoint` (a SQLite file, one row per pipeline, written atomically).
"""

from rtnb.state.checkpoint import Checkpoint, source_kind

__all__ = ["Checkpoint", "source_kind"]
