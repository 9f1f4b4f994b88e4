"""The buffer of recent raw batches that a what-if recomputation replays."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from rtnb.windows.base import NO_WATERMARK, time_ns

__all__ = ["MAX_RETAINED_ROWS", "Retained"]

#: Hard cap on retained rows per engine, whatever the span asked for (bounded memory).
MAX_RETAINED_ROWS = 2_000_000


class Retained:
    """The input batches of the last ``span_ns`` of event time, in arrival order.

    Batches are kept as they arrived (not merged), so a replay through a fresh engine sees
    the same batch boundaries, the same disorder and therefore the same lateness decisions as
    the live run did. Whole batches are dropped from the front once the newest event time has
    moved ``span_ns`` past their newest event, or once more than ``max_rows`` rows are held.

    Examples
    --------
    >>> import pandas as pd
    >>> buf = Retained(span_ns=10 * 10**9, time="t")
    >>> for s in (0, 5, 20):
    ...     buf.append(pd.DataFrame({"t": [pd.Timestamp("2026-01-01") + pd.Timedelta(s, "s")]}))
    >>> len(buf), buf.start
    (1, Timestamp('2026-01-01 00:00:20'))
    """

    def __init__(self, span_ns: int, *, time: str, max_rows: int = MAX_RETAINED_ROWS) -> None:
        self.span_ns = span_ns
        self.time = time
        self.max_rows = max_rows
        self._batches: deque[tuple[int, int, pd.DataFrame]] = deque()  # (min t, max t, batch)
        self.rows = 0
        self._max_time = NO_WATERMARK

    def append(self, batch: pd.DataFrame) -> None:
        """Keep ``batch``; drop what fell out of the span (or over the row cap)."""
        if not len(batch):
            return
        t = time_ns(batch[self.time])
        lo, hi = int(t.min()), int(t.max())
        self._batches.append((lo, hi, batch))
        self.rows += len(batch)
        self._max_time = max(self._max_time, hi)
        horizon = self._max_time - self.span_ns
        while self._batches and (self._batches[0][1] < horizon or self.rows > self.max_rows):
            self.rows -= len(self._batches.popleft()[2])

    def __len__(self) -> int:
        return len(self._batches)

    def snapshot(self) -> dict[str, Any]:
        """The retained batches and bookkeeping, for a checkpoint."""
        return {"batches": list(self._batches), "rows": self.rows, "max_time": self._max_time}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back."""
        self._batches = deque(state["batches"])
        self.rows = int(state["rows"])
        self._max_time = int(state["max_time"])

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return (b for _, _, b in self._batches)

    def replay_chunks(self, allowed_lateness_ns: int,
                      max_rows: int = 200_000) -> Iterator[pd.DataFrame]:
        """The retained batches, consecutive ones merged where that changes no result.

        Feeding an engine these chunks gives the same output as feeding it the batches one by
        one: a batch is merged into the chunk before it only if none of its rows is older than
        the watermark it met in the live run (max time before it - ``allowed_lateness_ns``),
        so no row's on-time/late decision can differ. Batches that did meet that watermark
        start a new chunk, so the cost of a replay grows with the number of such batches, not
        with the number of batches.

        Examples
        --------
        >>> import pandas as pd
        >>> buf = Retained(span_ns=10**12, time="t")
        >>> for s in (0, 1, 2, 0, 3):  # the fourth batch is older than the newest time
        ...     buf.append(pd.DataFrame({"t": [pd.Timestamp("2026-01-01") + pd.Timedelta(s, "s")]}))
        >>> [len(c) for c in buf.replay_chunks(allowed_lateness_ns=0)]
        [3, 2]
        """
        chunk: list[pd.DataFrame] = []
        rows = 0
        max_time = NO_WATERMARK
        for lo, hi, batch in self._batches:
            watermark = max_time - allowed_lateness_ns if max_time != NO_WATERMARK else None
            meets_watermark = watermark is not None and lo < watermark
            if chunk and (meets_watermark or rows + len(batch) > max_rows):
                yield pd.concat(chunk, ignore_index=True) if len(chunk) > 1 else chunk[0]
                chunk, rows = [], 0
            chunk.append(batch)
            rows += len(batch)
            max_time = max(max_time, hi)
        if chunk:
            yield pd.concat(chunk, ignore_index=True) if len(chunk) > 1 else chunk[0]

    @property
    def start(self) -> pd.Timestamp | None:
        """The oldest event time held: output before it may miss rows and is dropped."""
        if not self._batches:
            return None
        return pd.Timestamp(int(np.min([lo for lo, _, _ in self._batches])))

    @property
    def fill(self) -> float:
        """Held rows as a fraction of ``max_rows``."""
        return self.rows / self.max_rows
