"""A private event loop for the partition readers of asyncio-only clients (nats-py, aio-pika).

A Dask worker runs a partition's step as a plain blocking call in its thread; a reader whose
client is asyncio-only runs its coroutines on a loop of its own there (:meth:`LoopReader.
_run`), which exists only inside the reader's calls and is closed by :meth:`LoopReader.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class LoopReader:
    """The private loop of a partition reader: :meth:`_run` a coroutine, :meth:`close` it.

    Subclasses close their connection in :meth:`_drop`; a pickled copy (Dask moves readers
    between workers) must leave ``_loop`` out of its state (set it to ``None``).
    """

    _loop: asyncio.AbstractEventLoop | None = None

    def _run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` to its end on the reader's loop (made on first use)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    async def _drop(self) -> None:
        """Close the connection (the next call opens a new one)."""

    def close(self) -> None:
        """Close the connection and the loop (a later read opens new ones)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(Exception):
            loop.run_until_complete(self._drop())
        with contextlib.suppress(Exception):
            left = asyncio.all_tasks(loop)  # the client's tasks of a connection lost
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self._loop = None
