"""``rtnb.sources.tail``: follow a growing log file (JSON lines or CSV), across rotations."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pandas as pd

from rtnb._time import DurationLike, to_ns
from rtnb.errors import CheckpointError, ConfigError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._decode import CsvDecoder
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, SourceOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["TailSource", "tail"]


class TailSource(BufferedSource):
    """Reads complete lines appended to a file; reopens it when it is rotated or truncated.

    Rotation is noticed when the path names a different file (inode) than the one open, or
    when the file became shorter than the position read: the rest of the old file is read to
    its end first, then the new file from its start. A line is taken only once it ends with a
    newline. Positions are ``(inode, byte offset after the line)``.
    """

    replayable = True

    def resume_kind(self) -> str:
        """Not resumable yet (it would re-read the file from its start)."""
        msg = (f"source {self.name!r}: tail cannot resume at a file offset yet, so a checkpoint "
               "cannot say where to go on; run it without --checkpoint")
        raise CheckpointError(msg)

    def __init__(self, path: Path, *, from_start: bool, poll_s: float, header: bool,
                 follow: bool, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.from_start = from_start
        self.poll_s = poll_s
        self.header = header
        self.follow = follow
        self.rotations = 0

    def __repr__(self) -> str:
        return f"<TailSource {self.name!r} {str(self.path)!r}>"

    async def _read(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            try:
                handle = self.path.open("rb")
            except FileNotFoundError:
                if not self.follow:
                    raise
                await asyncio.sleep(self.poll_s)
                continue
            with handle:
                inode = os.fstat(handle.fileno()).st_ino
                if first and not self.from_start:
                    handle.seek(0, os.SEEK_END)
                first = False
                self._connected()
                pending = b""
                skip_header = self.header and handle.tell() == 0
                while not stop.is_set():
                    chunk = handle.read(1 << 20)
                    if chunk:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        offset = handle.tell() - len(pending)
                        end = offset - sum(len(line) + 1 for line in lines)
                        for line in lines:
                            end += len(line) + 1
                            if skip_header:
                                skip_header = False
                                continue
                            if line.strip():
                                payload, position = line.rstrip(b"\r"), (inode, end)
                                if not self._offer(payload, position):
                                    await self._put(payload, position)
                        continue
                    if not self.follow:
                        return
                    self._drained()  # at the end of the file: no more lines for now
                    await asyncio.sleep(self.poll_s)
                    try:
                        current = self.path.stat()
                    except FileNotFoundError:
                        continue  # rotated away; the new file appears soon
                    if current.st_ino != inode or current.st_size < handle.tell():
                        rest = handle.read()  # whatever the old file still had
                        if rest:
                            pending += rest
                            continue
                        self.rotations += 1
                        break


def tail(
    path: str | os.PathLike[str],
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    format: DecoderLike = "json",
    header: bool | None = None,
    from_start: bool = True,
    follow: bool = True,
    poll: DurationLike = "100ms",
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "tail",
) -> StreamingFrame:
    r"""Follow a log file as it grows: every new line becomes a row.

    Parameters
    ----------
    path
        The file; it may not exist yet, and may be rotated (renamed and recreated) or
        truncated while followed.
    example, time
        The rows' schema and the event-time column (see :class:`~rtnb.sources.SourceOptions`).
    format
        ``"json"`` (one object per line), ``"csv"`` (fields in the example's column order)
        or a decoder / function ``line -> dict``: the ``decoder`` of other sources.
    header
        CSV files start with a header line to skip (default: True for ``"csv"``).
    from_start
        Read what the file already holds (default) or only lines appended from now on.
    follow
        Keep waiting for new lines (default); ``False`` stops at the end of the file.
    poll
        How often to look for new data when at the end of the file.

    Other Parameters
    ----------------
    max_batch, max_delay, buffer, time_unit, max_events, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions` (a full buffer
        stops reading: the file keeps the rest).

    Examples
    --------
    >>> import json, pathlib, tempfile, rtnb
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "app.log"
    >>> _ = log.write_text("\n".join(json.dumps({"t": f"2026-01-01T00:00:0{i}", "ms": i})
    ...                              for i in range(3)) + "\n")
    >>> src = rtnb.sources.tail(log, example={"t": "datetime64[ns]", "ms": "float64"},
    ...                         time="t", follow=False)
    >>> out = src.collect()
    >>> src.run()
    >>> out[0]["ms"].tolist()
    [0.0, 1.0, 2.0]
    """
    schema = as_example(example, f"tail {name!r}")
    decoder: Any = format
    if format == "csv":
        decoder = CsvDecoder([str(c) for c in schema.columns])
        header = True if header is None else header
    elif format not in ("json", "msgpack") and isinstance(format, str):
        msg = f"tail format must be 'json', 'csv' or a decoder; got {format!r}"
        raise ConfigError(msg)
    source = TailSource(Path(path), from_start=from_start, poll_s=to_ns(poll) / 1e9,
                        header=bool(header), follow=follow, name=name, example=schema,
                        options=SourceOptions.of(locals(), decoder=decoder))
    return attach(source, time)
