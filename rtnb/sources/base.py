"""What every source implements: an async ``run`` that emits batches into a frame."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from rtnb.errors import CheckpointError

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["Source", "source_kind"]


class Source(Protocol):
    """A producer of micro-batches for one root :class:`~rtnb.StreamingFrame`."""

    name: str

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Emit batches into ``frame`` until exhausted or ``stop`` is set."""
        ...


def source_kind(source: Any) -> str:
    """How a run from a checkpoint resumes ``source``: replay, recorded, broker or live.

    Each source type says it (``resume_kind()``); raises :class:`~rtnb.CheckpointError` for a
    source that cannot resume.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> src = rtnb.sources.replay(pd.DataFrame({"timestamp": pd.to_datetime(["2026-01-01"])}))
    >>> source_kind(src.source)
    'replay'
    """
    resume_kind = getattr(source, "resume_kind", None)
    if resume_kind is None:
        name = getattr(source, "name", type(source).__name__)
        msg = (f"source {name!r} ({type(source).__name__}) is not supported by checkpoints: "
               "it does not say how it resumes (resume_kind())")
        raise CheckpointError(msg)
    kind: str = resume_kind()
    return kind
