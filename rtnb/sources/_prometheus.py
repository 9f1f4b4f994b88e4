"""``rtnb.sources.prometheus`` and ``rtnb.sources.scrape``: monitoring data as input.

* :func:`prometheus` asks a Prometheus server (the HTTP API) a PromQL expression: a range
  query (``/api/v1/query_range``) for the history from ``since``, then one instant query
  (``/api/v1/query``) per ``step`` as time goes on. Every evaluation time is a multiple of
  ``step`` since the epoch and is read exactly once: the reader's position is the next time
  to evaluate, and it only moves on once a response is in the buffer, so a reconnect asks
  again from there (no gap, no overlap, also across the switch from history to live).
* :func:`scrape` reads a Prometheus exposition endpoint (``/metrics``) every ``every``
  with ``prometheus_client``'s own parser: one row per sample.

Both give one row per (series, time): the event time, the series' labels as ``str``
columns (``__name__`` as ``name``) and the value as ``float64``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
import time as _time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rtnb._net import mask_url, mask_urls
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._decode import Payload
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import SourceOptions, TlsOptions, bearer_headers
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["MAX_POINTS", "PrometheusSource", "ScrapeSource", "prometheus", "scrape"]

log = logging.getLogger(__name__)

#: Prometheus refuses a range query of more than 11,000 points per series
#: (``(end - start) / step > 11000``); longer ranges are asked in pieces of this many points.
MAX_POINTS = 11_000
_MS = 1_000_000  # ns in a millisecond: the API's time resolution
_NAME = "__name__"
Converted = tuple[pd.DataFrame, list[int], list[tuple[int, str]]]


class _Response(bytes):
    """A response body, with what the reader already parsed from it (``data``)."""

    data: Any


def _response(body: bytes, data: Any) -> _Response:
    out = _Response(body)
    out.data = data
    return out


def _api_time(ns: int) -> str:
    """Nanoseconds since the epoch as the API's seconds, exactly (milliseconds).

    Examples
    --------
    >>> _api_time(1_700_000_000_250_000_000), _api_time(5_000_000)
    ('1700000000.250', '0.005')
    """
    ms = ns // _MS
    return f"{ms // 1000}.{ms % 1000:03d}"


def _times_ns(seconds: Sequence[float]) -> np.ndarray[Any, Any]:
    """The API's times (float seconds, millisecond resolution) as int64 nanoseconds."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * 1000.0).astype(np.int64) * _MS


def _columns(labels: Iterable[str], time: str, what: str) -> dict[str, str]:
    """The column of each label: ``__name__`` is ``name``, ``time``/``name``/``value`` not.

    A label named like one of the other columns is the column ``label_<label>``.

    Examples
    --------
    >>> _columns(["__name__", "job", "name", "time"], "time", "p")
    {'__name__': 'name', 'job': 'job', 'name': 'label_name', 'time': 'label_time'}
    """
    out: dict[str, str] = {}
    for label in map(str, labels):
        if label == _NAME:
            out[label] = "name"
        elif label in (time, "name", "value"):
            out[label] = f"label_{label}"
        else:
            out[label] = label
    columns = list(out.values())
    if len(set(columns)) != len(columns) or time in columns or "value" in columns:
        msg = f"{what}: the labels {list(out)!r} give the columns {columns!r}; they clash"
        raise ConfigError(msg)
    return out


def _example(time: str, columns: dict[str, str]) -> pd.DataFrame:
    cols: dict[str, pd.Series] = {time: pd.Series([], dtype="datetime64[ns]")}
    for column in columns.values():
        cols[column] = pd.Series([], dtype="str")
    cols["value"] = pd.Series([], dtype="float64")
    return pd.DataFrame(cols)


def _frame(time: str, columns: dict[str, str], times: np.ndarray[Any, Any],
           values: np.ndarray[Any, Any], label_values: dict[str, list[Any]]) -> pd.DataFrame:
    """The rows, sorted by time (stably: series in the server's order at each time)."""
    order = np.argsort(times, kind="stable")
    cols: dict[str, Any] = {time: pd.Series(times[order].astype("datetime64[ns]"))}
    for label, name in columns.items():
        column: Any = np.asarray(label_values[label], dtype=object)[order] if len(order) \
            else []
        cols[name] = pd.Series(column, dtype="str")
    cols["value"] = pd.Series(values[order], dtype="float64")
    return pd.DataFrame(cols)


class _Labels:
    """The label columns of a source, and a warning (once per label) for labels left out."""

    def __init__(self, name: str, labels: Sequence[str]) -> None:
        self.name = name
        self.labels = list(labels)
        self._known = set(labels)
        self._warned: set[str] = set()

    def add(self, metric: dict[str, str], n: int, out: dict[str, list[Any]]) -> None:
        for label in self.labels:
            out[label].extend([metric.get(label)] * n)
        if len(metric) > len(self._known) or not self._known.issuperset(metric):
            for label in sorted(set(metric) - self._known - self._warned - {_NAME}):
                self._warned.add(label)
                log.warning("source %r: series have the label %r, which is not one of its "
                            "columns %r; it is left out (give labels=[...] with it to keep it)",
                            self.name, label, self.labels)


def _discover_failed(what: str, url: str, exc: Exception) -> SourceError:
    msg = (f"{what}: could not read {mask_url(url)} to find the label columns "
           f"({type(exc).__name__}: {mask_urls(str(exc))}); give labels=[...] to build the "
           "source without asking the server")
    return SourceError(msg)


# -- prometheus -------------------------------------------------------------------------------
class PrometheusSource(BufferedSource):
    """Evaluates a PromQL expression over history, then live, each evaluation time once.

    The reader's position is :attr:`next_ns`, the next evaluation time (a multiple of
    ``step``). When the wall clock minus ``delay`` is more than one step ahead of it, it asks
    a range query (``max_points`` times at most per request; Prometheus refuses more than
    11,000 points per series), otherwise it waits for the time to come and asks an instant
    query at that time. Only once a response is in the buffer does the position move on, so
    after a lost connection the reader asks again from the first time it has not delivered.
    """

    replayable = True  # the server keeps the data: a full buffer pauses the reader

    def __init__(self, url: str, query: str, *, step_ns: int, since: Any, until: Any,
                 delay_ns: int, max_points: int, labels: Sequence[str], time: str,
                 headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 timeout_s: float, **options: Any) -> None:
        super().__init__(**options)
        import httpx
        self.url = url.rstrip("/")
        self.query = query
        self.step_ns = step_ns
        self.since = since
        self.until = until
        self.delay_ns = delay_ns
        self.max_points = max_points
        self.labels = _Labels(self.name, labels)
        #: The column of each label (``__name__`` is ``name``).
        self.columns = _columns(labels, time, self.name)
        self.time = time
        self._headers = headers
        self._ssl = ssl_context
        self.timeout_s = timeout_s
        self.retry_on = (OSError, asyncio.TimeoutError, httpx.TransportError)
        #: The next evaluation time to read (ns since the epoch); set when the run starts.
        self.next_ns: int | None = None
        #: The first evaluation time (``since``) and the last one (``until``; ``None``: live).
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        #: Requests answered so far: range queries (history, catching up) and instant ones.
        self.range_queries = 0
        self.instant_queries = 0
        self._warned_query = False
        self._emitted: int | None = None  # the next evaluation time not emitted yet
        self._resume_at: int | None = None  # skip(): where the next run starts

    def __repr__(self) -> str:
        return f"<PrometheusSource {self.name!r} {self.query!r} at {mask_url(self.url)}>"

    @property
    def exhausted(self) -> bool:  # type: ignore[override]
        """Whether a bounded source (``until=``) read its last evaluation time."""
        return self.end_ns is not None and self.next_ns is not None and \
            self.next_ns > self.end_ns

    def progress(self) -> float | None:
        """The share of the evaluation times from ``since`` to ``until`` (or to now) emitted.

        What :func:`rtnb.sources.hybrid` shows as the backfill's progress; ``None`` before
        the run started.
        """
        done = self.position
        if self.start_ns is None or done is None:
            return None
        end = self.end_ns if self.end_ns is not None else self._now_step()
        if end < self.start_ns:
            return 1.0
        return min(1.0, (done - self.start_ns) / (end - self.start_ns + self.step_ns))

    def resume_kind(self) -> str:
        """``"replay"``: a checkpoint resumes at :attr:`position`, the server keeps the data."""
        return "replay"

    @property
    def position(self) -> int | None:
        """The first evaluation time (ns) not emitted yet: where a checkpoint resumes.

        Responses read ahead into the buffer do not count: only what the pipeline took.
        ``None`` before the run started.
        """
        return self._emitted if self._emitted is not None else self.start_ns

    def skip(self, position: int | None) -> None:
        """Start the next run at evaluation time ``position`` (a checkpoint's)."""
        if position is None:
            return
        if isinstance(position, bool) or not isinstance(position, int) or \
                position % self.step_ns:
            msg = (f"source {self.name!r} resumes at an evaluation time (ns, a multiple of "
                   f"step); got {position!r}")
            raise ConfigError(msg)
        self._resume_at = self._emitted = position

    def _handled(self, positions: list[Any]) -> None:
        if positions:  # only forwards: a deferred ack may come with older positions
            after = max(int(p) for p in positions) + self.step_ns
            self._emitted = after if self._emitted is None else max(self._emitted, after)

    def _defer(self, positions: list[Any]) -> list[Any]:
        self._handled(positions)
        return positions

    async def _ack(self, positions: list[Any]) -> None:
        self._handled(positions)

    def _on_grid(self, ns: int, *, up: bool) -> int:
        step = self.step_ns
        return -(-ns // step) * step if up else ns // step * step

    def _now_step(self) -> int:
        """The last evaluation time whose data is in by now (wall clock minus ``delay``)."""
        return self._on_grid(_time.time_ns() - self.delay_ns, up=False)

    def _bounds(self) -> None:
        now = _time.time_ns()
        self.start_ns = self._on_grid(_when(self.since, now), up=True)
        self.end_ns = None if self.until is None else \
            self._on_grid(_when(self.until, now), up=False)
        self.next_ns = self.start_ns

    def _failed(self, response: Any) -> None:
        """Raise for a response that is not a success: retried, or a clear error."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            kind, error = body.get("errorType", "error"), body.get("error", "")
            if status >= 500 and kind not in ("bad_data", "execution"):
                msg = f"HTTP {status}: {kind}: {error}"
                raise OSError(msg)  # unavailable, timeout, internal: asked again
            msg = (f"source {self.name!r}: the Prometheus server at {mask_url(self.url)} "
                   f"refused the query {self.query!r}: {kind}: {error}")
            raise SourceError(msg, source=self.name)
        if status in (401, 403, 404):
            msg = (f"source {self.name!r}: {mask_url(self.url)} answered HTTP {status}; "
                   "check the URL (the server's address, without /api/v1) and the token")
            raise SourceError(msg, source=self.name)
        msg = f"HTTP {status}"
        raise OSError(msg)

    async def _get(self, client: Any, path: str, params: dict[str, str]) -> _Response:
        response = await client.post(path, data={"query": self.query, **params})
        if response.status_code != 200:
            self._failed(response)
        body = response.content
        try:
            reply = json.loads(body)
            data = reply["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"the server's answer is not a Prometheus API response ({exc})"
            raise OSError(msg) from None
        if reply.get("status") != "success":
            self._failed(response)
        want = ("matrix",) if path.endswith("query_range") else ("vector", "scalar")
        if kind not in want:
            msg = (f"source {self.name!r}: the query {self.query!r} gives a {kind}; "
                   "prometheus() reads an instant vector or a scalar expression "
                   "(not a range vector such as x[5m], nor a string)")
            raise SourceError(msg, source=self.name)
        if reply.get("warnings") and not self._warned_query:
            self._warned_query = True
            log.warning("source %r: the server warns about the query %r: %s", self.name,
                        self.query, "; ".join(map(str, reply["warnings"])))
        return _response(body, (kind, result))

    async def _read(self, stop: asyncio.Event) -> None:
        import httpx

        if self.start_ns is None:
            self._bounds()
        if self._resume_at is not None:
            self.next_ns, self._resume_at = self._resume_at, None
        verify: Any = self._ssl if self._ssl is not None else True
        async with httpx.AsyncClient(base_url=self.url, verify=verify, headers=self._headers,
                                     timeout=httpx.Timeout(self.timeout_s)) as client:
            while not stop.is_set():
                first = self.next_ns
                assert first is not None
                last = edge = self._now_step()
                if self.end_ns is not None:
                    if first > self.end_ns:
                        return  # bounded: every time up to `until` read
                    last = min(last, self.end_ns)
                last = min(last, first + (self.max_points - 1) * self.step_ns)
                if last < first:  # live: wait for the next evaluation time's data
                    wait = (first + self.delay_ns - _time.time_ns()) / 1e9
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.001, wait))
                    continue
                if last == first == edge:  # live: the newest evaluation time, alone
                    payload = await self._get(client, "/api/v1/query",
                                              {"time": _api_time(first)})
                    self.instant_queries += 1
                else:
                    payload = await self._get(client, "/api/v1/query_range", {
                        "start": _api_time(first), "end": _api_time(last),
                        "step": _api_time(self.step_ns)})
                    self.range_queries += 1
                self._connected()
                if not self._offer(payload, last):
                    await self._put(payload, last)
                self.next_ns = last + self.step_ns
                self._drained()

    def _rows(self, payload: Payload) -> pd.DataFrame:
        kind, result = payload.data  # type: ignore[union-attr]
        times: list[np.ndarray[Any, Any]] = []
        values: list[np.ndarray[Any, Any]] = []
        label_values: dict[str, list[Any]] = {label: [] for label in self.labels.labels}
        if kind == "scalar":
            result = [{"metric": {}, "value": result}]
        for series in result:
            metric = series["metric"]
            points = series["values"] if "values" in series else [series["value"]]
            times.append(_times_ns([p[0] for p in points]))
            values.append(np.asarray([p[1] for p in points], dtype=np.float64))
            self.labels.add(metric, len(points), label_values)
        if not times:
            return _frame(self.time, self.columns, np.zeros(0, dtype=np.int64),
                          np.zeros(0), label_values)
        return _frame(self.time, self.columns, np.concatenate(times),
                      np.concatenate(values), label_values)

    def _convert(self, payloads: Sequence[Payload]) -> Converted:
        frames = [self._rows(payload) for payload in payloads]
        owners = [i for i, f in enumerate(frames) for _ in range(len(f))]
        good = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return good, owners, []

    def _convert_each(self, payloads: Sequence[Payload], error: Exception) -> Converted:
        return _each(self, payloads, error)


def _each(source: PrometheusSource | ScrapeSource, payloads: Sequence[Payload],
          error: Exception) -> Converted:
    """Convert one response at a time after the batch failed: the bad ones are dead letters."""
    log.warning("source %r: a batch of %d responses failed (%s: %s); converting them one at "
                "a time", source.name, len(payloads), type(error).__name__, error)
    frames: list[pd.DataFrame] = []
    owners: list[int] = []
    dead: list[tuple[int, str]] = []
    for i, payload in enumerate(payloads):
        try:
            rows = source._rows(payload)
        except Exception as exc:  # this response's own problem: its dead letter says what
            dead.append((i, f"{source.name} could not read the response: "
                            f"{type(exc).__name__}: {exc}"))
            continue
        frames.append(rows)
        owners.extend([i] * len(rows))
    good = pd.concat(frames, ignore_index=True) if frames else source.example.iloc[:0]
    return good, owners, dead


def _when(value: Any, now_ns: int) -> int:
    """A time (ns since the epoch) from a timestamp, or a duration before ``now_ns``."""
    if isinstance(value, str):
        try:
            return now_ns - to_ns(value)
        except ConfigError:
            pass
    elif isinstance(value, dt.timedelta | np.timedelta64):
        return now_ns - to_ns(value)
    stamp = pd.Timestamp(value)
    if stamp.tz is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return int(stamp.value)


def _check_when(value: Any, what: str) -> None:
    try:
        _when(value, 0)
    except (ValueError, TypeError, ConfigError) as exc:
        msg = (f"{what} must be a duration before now ('1h', timedelta) or a time "
               f"('2026-12-01T00:00Z', pd.Timestamp); got {value!r} ({exc})")
        raise ConfigError(msg) from None


def _labels_of(url: str, query: str, headers: dict[str, str], verify: Any,
               timeout_s: float, what: str) -> list[str]:
    """The label names of the series the query gives now (one instant query)."""
    import httpx
    try:
        with httpx.Client(verify=verify, headers=headers, timeout=timeout_s) as client:
            response = client.post(url.rstrip("/") + "/api/v1/query", data={"query": query})
        reply = response.json()
    except (OSError, ValueError, httpx.HTTPError) as exc:
        raise _discover_failed(what, url, exc) from None
    if reply.get("status") != "success":
        msg = (f"{what}: the Prometheus server at {mask_url(url)} refused the query "
               f"{query!r}: {reply.get('errorType', 'error')}: {reply.get('error', '')}")
        raise SourceError(msg)
    data = reply["data"]
    if data["resultType"] == "scalar":
        return []
    if data["resultType"] != "vector":
        msg = (f"{what}: the query {query!r} gives a {data['resultType']}; prometheus() "
               "reads an instant vector or a scalar expression")
        raise SourceError(msg)
    if not data["result"]:
        msg = (f"{what}: the query {query!r} gives no series now, so its label columns "
               "cannot be found (every later series would lose its labels); give "
               "labels=[...]")
        raise ConfigError(msg)
    names = {label for series in data["result"] for label in series["metric"]}
    return ([_NAME] if _NAME in names else []) + sorted(names - {_NAME})


def _positive_ms(value: DurationLike, name: str) -> int:
    ns = to_ns(value, name=name)
    if ns <= 0 or ns % _MS:
        msg = f"`{name}` must be a positive whole number of milliseconds; got {value!r}"
        raise ConfigError(msg)
    return ns


def prometheus(
    query: str,
    *,
    url: str = "http://127.0.0.1:9090",
    step: DurationLike = "15s",
    since: DurationLike | pd.Timestamp | str = "1h",
    until: DurationLike | pd.Timestamp | str | None = None,
    delay: DurationLike = "5s",
    labels: Sequence[str] | None = None,
    time: str = "time",
    max_points: int = MAX_POINTS,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    token_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    timeout: DurationLike = "30s",
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 1_000,
    max_events: int | None = None,
    max_reconnects: int | None = None,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "prometheus",
) -> StreamingFrame:
    """A PromQL expression evaluated every ``step``: the history from ``since``, then live.

    The history is read with range queries (``/api/v1/query_range``) as fast as the server
    answers, then one instant query (``/api/v1/query``) is asked per ``step`` as time goes
    on. Evaluation times are the multiples of ``step`` (since the epoch) from ``since``
    on, each read exactly once, also across the switch from history to live and across
    reconnects: the live part starts at the step after the last one of the range. Each
    (series, time) is one row: the evaluation time as the event time (so the watermark
    never goes back), the series' labels as ``str`` columns (``__name__`` as ``name``) and
    the value as ``float64`` (``NaN`` and ``±inf`` as Prometheus gives them).

    Parameters
    ----------
    query
        A PromQL expression whose value is an instant vector or a scalar
        (``rate(http_requests_total[1m])``, ``up``, ``sum by (job) (...)``).
    url
        The Prometheus server (``http://`` or ``https://``; the API is under ``/api/v1``).
    step
        The time between evaluations (a whole number of milliseconds).
    since
        The first evaluation time: a duration before now (``"1h"``, timedelta) or a time
        (``"2026-12-01T00:00Z"``, ``pd.Timestamp``; naive times are UTC).
    until
        ``None`` (default): go on live. A time or a duration before now: the last
        evaluation time; the source then ends after the range (bounded, finite: the
        history part of :func:`rtnb.sources.hybrid`, for one).
    delay
        An evaluation time is asked once the wall clock is this far past it (default
        ``"5s"``), so that the scrapes it covers are in the server: an instant query at a
        time whose scrapes were not all ingested yet could differ from what a range query
        over it gives later. Keep it above the targets' scrape duration.
    labels
        The label columns, in order (``"__name__"`` becomes the column ``name``; a label
        named like ``time``, ``name`` or ``value`` the column ``label_<label>``). Labels
        of the series not among them are left out (with a warning, once per label; the
        metric name ``__name__`` without one), a
        series without one has ``<NA>`` there. ``None``: the labels of the series the
        query gives now (one instant query when the source is built).
    time
        The name of the event-time column.
    max_points
        The most evaluation times asked in one range query (Prometheus refuses more than
        11,000 points per series): a longer history is read in pieces of that many.
    headers, token, token_env
        HTTP headers; ``token`` (or the environment variable named by ``token_env``: the
        way to keep it out of an exported script) is sent as ``Authorization: Bearer``.
    timeout
        How long one request may take before it is asked again.
    name
        The source's name.

    Other Parameters
    ----------------
    max_batch, max_delay, buffer, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions` (a message is
        one response of the server: ``buffer`` responses are held at most).
    tls, ca, cert, key
        TLS for ``https://`` (a custom CA, a client certificate):
        :class:`~rtnb.sources.TlsOptions`.

    Returns
    -------
    StreamingFrame
        Columns ``time``, the label columns, ``value``.

    Notes
    -----
    With checkpoints (an exported script's ``--checkpoint``) a restarted run resumes at
    the first evaluation time the pipeline had not taken (responses read ahead do not
    count). ``since``/``until`` given as durations are taken from the restart's clock:
    give times for a run that must cover the same range after a restart.

    Raises
    ------
    ConfigError
        A bad argument (``step``, ``since``, ``until``, labels named like ``time`` or
        ``value``).
    SourceError
        When running: the server refused the query (bad PromQL, a range vector, a query
        that failed to execute), naming the source and the query, or answered 401, 403 or
        404. A server that cannot be reached is asked again with backoff
        (``source.stats.reconnects``, ``stats.last_error``, a warning in the log).

    Examples
    --------
    >>> import rtnb
    >>> up = rtnb.sources.prometheus("up", url="http://127.0.0.1:9090", step="15s",
    ...                              since="1h", labels=["job", "instance"])
    >>> list(up.example.columns), up.time
    (['time', 'job', 'instance', 'value'], 'time')
    >>> up.source.query, up.source.step_ns / 1e9
    ('up', 15.0)
    """
    what = f"prometheus {name!r}"
    if not isinstance(query, str) or not query.strip():
        msg = f"{what}: `query` must be a PromQL expression (a non-empty str); got {query!r}"
        raise ConfigError(msg)
    if not url.startswith(("http://", "https://")):
        msg = f"{what}: url must start with http:// or https://; got {mask_url(url)!r}"
        raise ConfigError(msg)
    step_ns = _positive_ms(step, "step")
    delay_ns = to_ns(delay, name="delay")
    if delay_ns < 0:
        msg = f"{what}: `delay` must not be negative; got {delay!r}"
        raise ConfigError(msg)
    _check_when(since, f"{what}: `since`")
    if until is not None:
        _check_when(until, f"{what}: `until`")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or \
            not 1 <= max_points <= MAX_POINTS + 1:
        msg = f"{what}: `max_points` must be an int from 1 to {MAX_POINTS + 1}; got {max_points!r}"
        raise ConfigError(msg)
    timeout_s = to_ns(timeout, name="timeout") / 1e9
    all_headers = bearer_headers(headers, token, token_env, what)
    context = TlsOptions.of(locals()).context(owner=what)
    if labels is None:
        labels = _labels_of(url, query, all_headers, context if context is not None else True,
                            timeout_s, what)
    columns = _columns(labels, time, what)
    label_list = list(columns)
    source = PrometheusSource(
        url, query, step_ns=step_ns, since=since, until=until, delay_ns=delay_ns,
        max_points=max_points, labels=label_list, time=time, headers=all_headers,
        ssl_context=context, timeout_s=timeout_s, name=name,
        example=_example(time, columns), options=SourceOptions.of(locals()))
    return attach(source, time)


# -- scrape -----------------------------------------------------------------------------------
def _exposition_labels(text: str) -> list[str]:
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.update(sample.labels)
    return sorted(names)


class ScrapeSource(BufferedSource):
    """Fetches an exposition endpoint every ``every``; one row per sample, at the scrape time.

    Scrapes are due at fixed times (``every`` apart, from the first); a scrape that takes
    longer than ``every`` makes the next one wait for it (none are caught up). A body that
    does not parse is a dead letter with the parser's error; a server that cannot be
    reached is asked again with backoff.
    """

    def __init__(self, url: str, *, every_ns: int, labels: Sequence[str], time: str,
                 headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 timeout_s: float, **options: Any) -> None:
        super().__init__(**options)
        import httpx
        self.url = url
        self.every_ns = every_ns
        self.labels = _Labels(self.name, labels)
        #: The column of each label; the sample's name is ``name``.
        self.columns = _columns([_NAME, *labels], time, self.name)
        self.time = time
        self._headers = headers
        self._ssl = ssl_context
        self.timeout_s = timeout_s
        self.retry_on = (OSError, asyncio.TimeoutError, httpx.TransportError)
        self._last_ns = 0  # the last scrape's time: the next one is later (watermark)
        self._due: float | None = None  # monotonic time of the next scrape

    def __repr__(self) -> str:
        return f"<ScrapeSource {self.name!r} {mask_url(self.url)}>"

    async def _read(self, stop: asyncio.Event) -> None:
        import httpx

        verify: Any = self._ssl if self._ssl is not None else True
        headers = {"Accept": "text/plain;version=0.0.4", **self._headers}
        async with httpx.AsyncClient(verify=verify, headers=headers,
                                     timeout=httpx.Timeout(self.timeout_s)) as client:
            while not stop.is_set():
                now = _time.monotonic()
                if self._due is not None and now < self._due:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._due - now)
                    continue
                at = max(_time.time_ns(), self._last_ns + 1)
                response = await client.get(self.url)
                if response.status_code in (401, 403, 404):
                    msg = (f"source {self.name!r}: {mask_url(self.url)} answered HTTP "
                           f"{response.status_code}; check the URL and the token")
                    raise SourceError(msg, source=self.name)
                if response.status_code != 200:
                    msg = f"HTTP {response.status_code}"
                    raise OSError(msg)
                self._connected()
                payload = _response(response.content, at)
                if not self._offer(payload, at):
                    await self._put(payload, at)
                self._last_ns = at
                every = self.every_ns / 1e9
                self._due = now + every if self._due is None else \
                    max(self._due + every, _time.monotonic())
                self._drained()

    def _rows(self, payload: Payload) -> pd.DataFrame:
        from prometheus_client.parser import text_string_to_metric_families

        at = payload.data  # type: ignore[union-attr]
        text = bytes(payload).decode() if isinstance(payload, bytes) else payload
        names: list[str] = []
        values: list[float] = []
        label_values: dict[str, list[Any]] = {label: [] for label in self.labels.labels}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                names.append(sample.name)
                values.append(float(sample.value))
                self.labels.add(sample.labels, 1, label_values)
        n = len(values)
        out = _frame(self.time, self.columns, np.full(n, at, dtype=np.int64),
                     np.asarray(values, dtype=np.float64), {_NAME: names, **label_values})
        return out

    def _convert(self, payloads: Sequence[Payload]) -> Converted:
        frames = [self._rows(payload) for payload in payloads]
        owners = [i for i, f in enumerate(frames) for _ in range(len(f))]
        good = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return good, owners, []

    def _convert_each(self, payloads: Sequence[Payload], error: Exception) -> Converted:
        return _each(self, payloads, error)


def scrape(
    url: str,
    *,
    every: DurationLike = "15s",
    labels: Sequence[str] | None = None,
    time: str = "time",
    headers: dict[str, str] | None = None,
    token: str | None = None,
    token_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    timeout: DurationLike = "10s",
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 1_000,
    max_events: int | None = None,
    max_reconnects: int | None = None,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "scrape",
) -> StreamingFrame:
    """A Prometheus exposition endpoint (``/metrics``) read every ``every``, as Prometheus does.

    The body is parsed with ``prometheus_client.parser.text_string_to_metric_families``;
    each sample is one row: the scrape's time (the wall clock, UTC, when the request was
    sent) as the event time, the sample's name (``name``: a counter's ``_total`` and
    ``_created``, a histogram's ``_bucket``, ``_sum`` and ``_count`` samples as the parser
    names them), its labels as ``str`` columns and its value as ``float64``.

    Parameters
    ----------
    url
        The endpoint (``http://127.0.0.1:8000/metrics``).
    every
        The time between scrapes.
    labels
        The label columns, in order (labels not among them are left out, with a warning
        once per label; a label named like ``time``, ``name`` or ``value`` is the column
        ``label_<label>``). ``None``: every label of one scrape made when the source is built.
    time
        The name of the event-time column.
    headers, token, token_env
        As for :func:`prometheus`.
    timeout
        How long one scrape may take before it is tried again.
    name
        The source's name.

    Other Parameters
    ----------------
    max_batch, max_delay, buffer, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions` (a message is
        one scrape).
    tls, ca, cert, key
        TLS for ``https://``: :class:`~rtnb.sources.TlsOptions`.

    Returns
    -------
    StreamingFrame
        Columns ``time``, ``name``, the label columns, ``value``.

    Examples
    --------
    >>> import rtnb
    >>> metrics = rtnb.sources.scrape("http://127.0.0.1:8000/metrics", every="5s",
    ...                               labels=["pipeline", "node"])
    >>> list(metrics.example.columns), metrics.source.every_ns / 1e9
    (['time', 'name', 'pipeline', 'node', 'value'], 5.0)
    """
    what = f"scrape {name!r}"
    if not url.startswith(("http://", "https://")):
        msg = f"{what}: url must start with http:// or https://; got {mask_url(url)!r}"
        raise ConfigError(msg)
    every_ns = to_ns(every, name="every")
    if every_ns <= 0:
        msg = f"{what}: `every` must be positive; got {every!r}"
        raise ConfigError(msg)
    timeout_s = to_ns(timeout, name="timeout") / 1e9
    all_headers = bearer_headers(headers, token, token_env, what)
    context = TlsOptions.of(locals()).context(owner=what)
    if labels is None:
        import httpx
        try:
            with httpx.Client(verify=context if context is not None else True,
                              headers=all_headers, timeout=timeout_s) as client:
                response = client.get(url)
                response.raise_for_status()
            labels = _exposition_labels(response.text)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            raise _discover_failed(what, url, exc) from None
    label_list = [str(label) for label in labels]
    if _NAME in label_list:
        msg = f"{what}: labels must not include {_NAME!r} (the sample's name is `name`)"
        raise ConfigError(msg)
    columns = _columns([_NAME, *label_list], time, what)
    source = ScrapeSource(
        url, every_ns=every_ns, labels=label_list, time=time, headers=all_headers,
        ssl_context=context, timeout_s=timeout_s, name=name,
        example=_example(time, columns), options=SourceOptions.of(locals()))
    return attach(source, time)
