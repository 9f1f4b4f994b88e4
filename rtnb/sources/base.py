"""What every source implements: an async ``run`` that emits batches into a frame."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["Source"]


class Source(Protocol):
    """A producer of micro-batches for one root :class:`~rtnb.StreamingFrame`."""

    name: str

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Emit batches into ``frame`` until exhausted or ``stop`` is set."""
        ...
