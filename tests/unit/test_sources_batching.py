"""The source batcher cuts a batch when the reader has drained what is available.

``max_delay`` is an hour in these tests: a batcher that waited for it would never finish
(the ``wait_for`` guard fails the test instead). Nothing here measures time.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd

import rtnb
from rtnb.sources._runner import BufferedSource

EXAMPLE = pd.DataFrame({"i": pd.Series([], dtype="int64")})


class Windowed(BufferedSource):
    """A broker with a delivery window: at most ``window`` messages unacknowledged.

    Like AMQP prefetch or MQTT Receive Maximum: it sends ``window`` messages, then nothing
    until the batch holding them is acknowledged.
    """

    replayable = True

    def __init__(self, total: int, window: int, **options: Any) -> None:
        super().__init__(**options)
        self.total, self.window = total, window
        self.unacked = 0
        self.acked_now = asyncio.Event()

    async def _read(self, stop: asyncio.Event) -> None:
        sent = 0
        while sent < self.total and not stop.is_set():
            while self.unacked >= self.window:
                self.acked_now.clear()
                await self.acked_now.wait()
            sent += 1
            self.unacked += 1
            await self._put(json.dumps({"i": sent}).encode(), sent)
            if self.unacked >= self.window:
                self._drained()
        await stop.wait()

    async def _ack(self, positions: list[Any]) -> None:
        self.unacked -= len(positions)
        self.acked_now.set()


def test_a_small_delivery_window_does_not_wait_max_delay_per_batch():
    source = Windowed(100, 10, name="windowed", decoder="json", example=EXAMPLE,
                      max_batch=10_000, max_delay="1h", max_events=100)
    frame = rtnb.sources._runner.attach(source, None)
    batches = frame.collect()

    asyncio.run(asyncio.wait_for(frame.arun(), 60))
    assert [len(b) for b in batches] == [10] * 10  # one batch per window, none waited out
    assert pd.concat(batches)["i"].tolist() == list(range(1, 101))
    assert source.stats.batches == 10 and source.stats.acked == 100


def test_tail_cuts_a_batch_at_the_end_of_the_file(tmp_path: Path):
    log = tmp_path / "app.log"
    log.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(250)))

    async def scenario() -> list[pd.DataFrame]:
        src = rtnb.sources.tail(log, example=EXAMPLE, poll="10ms", max_delay="1h",
                                max_events=500)
        out = src.collect()
        src.start()
        while sum(len(b) for b in out) < 250:  # the first lines, without waiting an hour
            await asyncio.sleep(0.01)
        with log.open("a") as f:
            f.write("".join(json.dumps({"i": i}) + "\n" for i in range(250, 500)))
        await src.wait()
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert pd.concat(out)["i"].tolist() == list(range(500))
    assert len(out[0]) == 250  # cut when the reader reached the end of the file
