"""Event-time alignment of a partitioned source (``BufferedSource._align``) with a fake clock:
a partition whose only messages are held back goes idle like any other partition."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from rtnb.frame import StreamingFrame
from rtnb.sources import _runner
from rtnb.sources._runner import BufferedSource

EXAMPLE = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                        "x": pd.Series([], dtype="float64")})


class ThreePartitions(BufferedSource):
    """Positions are ``(partition, n)``; nothing is read (the test calls ``_align``)."""

    def __init__(self) -> None:
        super().__init__(name="parts", example=EXAMPLE)
        self.align_partitions = 3
        self.idle_timeout_s = 1.0

    def _partition(self, position: Any) -> int:
        return int(position[0])


def rows(items: list[tuple[bytes, tuple[int, int]]]) -> pd.DataFrame:
    seconds = [int(payload) for payload, _ in items]
    return pd.DataFrame({"t": pd.to_datetime(seconds, unit="s"), "x": 1.0})


def test_held_messages_do_not_keep_their_partition_active(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    clock = [100.0]
    monkeypatch.setattr(_runner.time, "monotonic", lambda: clock[0])
    source = ThreePartitions()
    frame = StreamingFrame(EXAMPLE, time="t")
    first = [(b"10", (0, 0)), (b"15", (1, 0)), (b"20", (1, 1)), (b"25", (2, 0)),
             (b"30", (2, 1))]
    out, good, _, _ = source._align(frame, first, rows(first), list(range(5)), [],
                                    flush=False)
    # the bound is partition 0's newest (10 s): partitions 1 and 2 are held back
    assert [p for _, p in out] == [(0, 0)]
    assert len(good) == 1
    held = list(source._aligned)
    assert [p for _, p in held] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    # every partition silent for longer than idle_timeout: the held messages, decoded again
    # with the next batch, are no news from their partitions, so all are idle and all go on
    clock[0] += 1.5
    out, good, _, _ = source._align(frame, held, rows(held), list(range(4)), [],
                                    flush=False, held=len(held))
    assert [p for _, p in out] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert good["t"].tolist() == pd.to_datetime([15, 20, 25, 30], unit="s").tolist()
    assert source._aligned == []


def test_a_partition_sending_new_messages_stays_active(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    clock = [100.0]
    monkeypatch.setattr(_runner.time, "monotonic", lambda: clock[0])
    source = ThreePartitions()
    frame = StreamingFrame(EXAMPLE, time="t")
    first = [(b"10", (0, 0)), (b"20", (1, 0)), (b"30", (2, 0))]
    source._align(frame, first, rows(first), [0, 1, 2], [], flush=False)
    clock[0] += 1.5
    # partition 1 sends again (40 s): it stays active, the others are idle: the bound is 40 s
    items = [*source._aligned, (b"40", (1, 1))]
    out, _, _, _ = source._align(frame, items, rows(items), list(range(len(items))), [],
                                 flush=False, held=len(source._aligned))
    assert [p for _, p in out] == [(1, 0), (2, 0), (1, 1)]


def test_a_partition_whose_held_window_went_on_keeps_going_after_the_others_are_done(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition 0 runs ahead in event time; the others are done (silent). A pushing broker
    (AMQP) sends no more of partition 0 while its window is held, so partition 0 goes quiet
    too and everything held goes on. Partition 0's next messages must go on at once: before,
    they found the done partitions active again (every partition got a fresh idle_timeout
    when messages came back after a quiet spell) and waited a whole idle_timeout, one
    prefetch window per idle_timeout (the AMQP max_drift test took 60 s, 16 s now)."""
    clock = [100.0]
    monkeypatch.setattr(_runner.time, "monotonic", lambda: clock[0])
    source = ThreePartitions()
    frame = StreamingFrame(EXAMPLE, time="t")
    first = [(b"5", (1, 0)), (b"5", (2, 0)), (b"50", (0, 0)), (b"60", (0, 1))]
    out, _, _, _ = source._align(frame, first, rows(first), list(range(4)), [], flush=False)
    assert [p for _, p in out] == [(1, 0), (2, 0)]  # partition 0 is ahead: held
    held = list(source._aligned)
    clock[0] += 1.5  # all quiet (partition 0's window is full: the broker sends nothing)
    out, _, _, _ = source._align(frame, held, rows(held), list(range(2)), [], flush=False,
                                 held=len(held))
    assert [p for _, p in out] == [(0, 0), (0, 1)]
    clock[0] += 0.01  # acknowledged: the broker sends partition 0's next window
    more = [(b"70", (0, 2)), (b"80", (0, 3))]
    out, _, _, _ = source._align(frame, more, rows(more), list(range(2)), [], flush=False)
    assert [p for _, p in out] == [(0, 2), (0, 3)]  # not held for another idle_timeout
    assert source._aligned == []


def test_after_a_quiet_spell_that_released_held_messages_the_others_still_get_their_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same release at the end of a quiet spell, but the next messages come from a
    partition that held nothing: a producer writing the partitions one after the other
    again. Every partition gets a fresh idle_timeout, so partition 1's rows wait for
    partition 2 (whose newest is far behind) instead of going on past it."""
    clock = [100.0]
    monkeypatch.setattr(_runner.time, "monotonic", lambda: clock[0])
    source = ThreePartitions()
    frame = StreamingFrame(EXAMPLE, time="t")
    first = [(b"5", (1, 0)), (b"5", (2, 0)), (b"50", (0, 0)), (b"60", (0, 1))]
    source._align(frame, first, rows(first), list(range(4)), [], flush=False)
    held = list(source._aligned)
    clock[0] += 1.5
    out, _, _, _ = source._align(frame, held, rows(held), list(range(2)), [], flush=False,
                                 held=len(held))
    assert [p for _, p in out] == [(0, 0), (0, 1)]
    clock[0] += 0.2  # partition 1 writes again; partition 2 may follow
    more = [(b"55", (1, 1))]
    out, _, _, _ = source._align(frame, more, rows(more), [0], [], flush=False)
    assert out == [] and [p for _, p in source._aligned] == [(1, 1)]
