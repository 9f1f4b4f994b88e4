"""Live-view benchmark (issue 4, "live views"): a real kernel fed 100,000 events/s.

Two parts, same run:

* **Kernel run.** An ipykernel is started (``jupyter_client.KernelManager``, kernel = this
  virtualenv's python) and a cell runs ``bench/_views_kernel.start("rtnb")``: a
  ``rtnb.StreamingFrame`` (``t`` datetime64, ``host`` str with 12 keys, ``cpu`` float), two
  views of it, ``sdf.plot.line(x="t", y="cpu", rollover=1000, max_fps=10)`` (one line) and the
  same with ``by="host"`` (12 lines), both shown with ``display`` (which opens their widget
  comms), and a feeder task on the kernel's running loop (``create_task``; the cell returns at
  once) that emits 1,000-row batches every 10 ms, time-paced: 100,000 events/s. No browser: the
  kernel sends the comm messages whether or not a front end renders them. This process reads
  iopub (every ``comm_msg`` of the two widgets, timed by the kernel's header date), samples the
  kernel's RSS and CPU time every 2 s (1 s quick), sends a ``pass`` execute request every 5 s
  (round trip: the kernel stays responsive) and reads the kernel's own counters through
  ``user_expressions`` at the end of the warm-up and at the end. 10 min (30 s quick); warm-up
  1 min (5 s quick); rates and sizes are over the steady state after the warm-up.
  Then a fresh kernel runs the naive approach in the same way for 2 min (20 s quick): a plain
  ``jupyter_bokeh.BokehModel`` per view whose ``ColumnDataSource.data`` is replaced with the
  line's whole visible history (the last 1,000 points) at every update, same pace, same
  points kept, same 12 keys (``_views_kernel.NaiveView``).
* **Python-side cost of one update (in-process, no kernel).** A view and its widget are built
  without a kernel; its comm is replaced by one that serialises and HMAC-signs every message as
  the kernel's ``jupyter_client.Session`` does (the socket send itself is not included). Each
  repetition emits 1,000 new rows (untimed) and times ``view.flush()``
  (``time.perf_counter_ns``): rtnb's one-line and 12-key views, and the naive view, each with a
  history of 1,000 and of 10,000 points per line (``rollover``; the history is filled first).
  Contenders run interleaved in rounds, so machine noise hits all of them alike.

What travels: once a page reports that rtnb's page script mended jupyter_bokeh 4.0.5's front
end (``PageAck.fixed == "proto"``; there is no browser here, so the kernel is told so, as
``PAGE_FIX``), rtnb sends one PATCH-DOC per view update, as one comm message (``rtnb_patch``:
header, metadata and content with the arrays inlined as base64). Without the fix it sends one
PATCH-DOC per changed ``ColumnDataSource`` (one source per key), each in jupyter_bokeh's three
comm messages. A plain ``BokehModel`` sends 3 comm messages plus 2 per binary
buffer (x and y: 7 per PATCH-DOC). "Payload bytes" below are the Bokeh message text plus
binary buffers; each comm message also carries a Jupyter envelope (header, parent header,
signature), counted in the iopub KB/s column.

Run through ``bench/run.py`` (``make bench``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

TITLE = "Live views: 100,000 events/s into a real kernel (issue 4)"

RATE = 100_000  # events/s fed into the kernel
BATCH_ROWS = 1_000  # rows per emitted batch (a batch every 10 ms)
ROLLOVER = 1_000  # points kept per line, rtnb and naive
MAX_FPS = 10.0
RSS_TARGET = 1.10  # kernel RSS at the end / after the warm-up
HISTORY_TARGET = 1.05  # rtnb bytes per update, 10,000- / 1,000-point history
#: What the rtnb views are told a page reported (``PageAck.fixed``): "proto" is what
#: JupyterLab pages report once rtnb's page script ran (tests/browser/test_dashboard.py
#: checks it in chromium); "" is a page without the fix (one event per PATCH-DOC).
PAGE_FIX = "proto"
UPDATE_GAP_S = 0.03  # PATCH-DOCs of one view closer than this (kernel clock) are one update
PING_EVERY_S = 5.0
HISTORIES = (1_000, 10_000)  # in-process: points per line already plotted
NEVER = 1e-9  # max_fps of in-process views: they update only when flush() is called


@dataclass(frozen=True)
class Mode:
    """Durations of one benchmark run."""

    rtnb_s: float
    naive_s: float
    warm_s: float
    sample_s: float
    rounds: int  # in-process: rounds of ...
    block: int  # ... this many timed updates per contender


FULL = Mode(rtnb_s=600.0, naive_s=120.0, warm_s=60.0, sample_s=2.0, rounds=10, block=100)
QUICK = Mode(rtnb_s=30.0, naive_s=20.0, warm_s=5.0, sample_s=1.0, rounds=5, block=40)


# -- process memory and CPU ------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    """Resident set size of a process (psutil if installed, else /proc)."""
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise
    return int(psutil.Process(pid).memory_info().rss)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


# -- what one widget sent, read from iopub ---------------------------------------------------
SHAPE = re.compile(r'"shape":\s*\[(\d+)')
PATCH_DOC = re.compile(r'"msgtype":\s*"PATCH-DOC"')
EVENTS = re.compile(r'\{\s*"events"')


@dataclass
class Patch:
    """One Bokeh PATCH-DOC message as it arrived on iopub (one or more comm frames)."""

    t: float  # kernel send time of its first frame (epoch s, from the iopub header date)
    frames: int = 0
    payload: int = 0  # Bokeh message text + binary buffers, bytes
    rows: int | None = None  # rows carried (first array's length), None for other changes


@dataclass
class CommLog:
    """Every comm frame of one widget: times, sizes and the PATCH-DOCs they form."""

    frame_times: list[float] = field(default_factory=list)
    frame_bytes: list[int] = field(default_factory=list)  # iopub message, envelope included
    patches: list[Patch] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # client receive - kernel send, s

    def add(self, t: float, recv: float, data: dict[str, Any], buffers: list[Any],
            iopub_bytes: int) -> None:
        content = data.get("content", data)  # ipywidgets wraps custom messages
        if isinstance(content, dict) and content.get("msg") == "rtnb_patch":
            # a whole PATCH-DOC in one comm message (a page with rtnb's fix reported)
            fragments = [str(f) for f in content.get("fragments") or []]
            self.frame_times.append(t)
            self.frame_bytes.append(iopub_bytes)
            self.lags.append(recv - t)
            patch = Patch(t)
            patch.frames = 1
            patch.payload = sum(len(f.encode()) for f in fragments)
            match = SHAPE.search(fragments[-1]) if fragments else None
            patch.rows = int(match.group(1)) if match else None
            self.patches.append(patch)
            return
        payload = content.get("payload") if isinstance(content, dict) else None
        size = len(payload.encode()) if isinstance(payload, str) else 0
        size += sum(memoryview(b).nbytes for b in buffers)
        self.frame_times.append(t)
        self.frame_bytes.append(iopub_bytes)
        self.lags.append(recv - t)
        if isinstance(payload, str) and len(payload) < 400 and PATCH_DOC.search(payload):
            self.patches.append(Patch(t))
        if not self.patches:
            return
        patch = self.patches[-1]
        patch.frames += 1
        patch.payload += size
        if patch.rows is None and isinstance(payload, str) and EVENTS.match(payload):
            match = SHAPE.search(payload)
            if match:
                patch.rows = int(match.group(1))


# -- driving a kernel ------------------------------------------------------------------------
class KernelRun:
    """A kernel started for the benchmark, and this process reading its iopub channel."""

    def __init__(self, log: Callable[[str], None], sample_s: float) -> None:
        from jupyter_client.manager import KernelManager

        self.log = log
        self.sample_s = sample_s
        self._tmp = tempfile.TemporaryDirectory(prefix="rtnb-bench-views-")
        self.km = KernelManager(kernel_name="python3",
                                connection_file=str(Path(self._tmp.name) / "kernel.json"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.km.start_kernel(cwd=str(REPO))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.comms: dict[str, CommLog] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.pings: dict[str, float] = {}  # msg_id -> sent at
        self.ping_ms: list[float] = []
        self.rss: list[tuple[float, int]] = []  # (epoch s, bytes)
        self.cpu: list[tuple[float, float]] = []  # (epoch s, kernel CPU s)
        self.stderr: list[str] = []
        self.pid: int | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=False)
        self._tmp.cleanup()

    # iopub and shell, never blocking on one while the other fills
    def _step(self, timeout: float) -> None:
        while self.kc.shell_channel.msg_ready():
            reply = self.kc.get_shell_msg(timeout=0)
            parent = reply["parent_header"].get("msg_id", "")
            if parent in self.pings:
                self.ping_ms.append((time.time() - self.pings.pop(parent)) * 1e3)
            else:
                self.replies[parent] = reply["content"]
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except Empty:
            return
        recv = time.time()
        kind = msg["msg_type"]
        if kind == "comm_msg":
            content = msg["content"]
            log = self.comms.get(content["comm_id"])
            if log is not None:
                buffers = list(msg.get("buffers") or [])
                size = sum(len(json.dumps(msg[part], default=str))
                           for part in ("header", "parent_header", "metadata", "content"))
                size += sum(memoryview(b).nbytes for b in buffers)
                log.add(msg["header"]["date"].timestamp(), recv, content["data"], buffers, size)
        elif kind == "stream" and msg["content"].get("name") == "stderr":
            self.stderr.append(msg["content"]["text"])
        elif kind == "error":
            self.stderr.append("\n".join(msg["content"].get("traceback", [])))

    def execute(self, code: str, expression: str | None = None,
                timeout: float = 180.0) -> Any:
        """Run ``code`` and return the value of ``expression`` (a JSON string in the kernel)."""
        expressions = {"value": expression} if expression else {}
        msg_id = self.kc.execute(code, store_history=False, user_expressions=expressions)
        deadline = time.time() + timeout
        while msg_id not in self.replies:
            if time.time() > deadline:
                msg = f"kernel did not answer within {timeout:.0f} s: {code[:80]!r}"
                raise RuntimeError(msg)
            self._step(0.02)
        reply = self.replies.pop(msg_id)
        if reply["status"] != "ok":
            msg = f"kernel error: {reply.get('ename')}: {reply.get('evalue')}"
            raise RuntimeError(msg)
        if not expression:
            return None
        value = reply["user_expressions"]["value"]
        if value["status"] != "ok":
            msg = f"kernel error in {expression!r}: {value.get('ename')}: {value.get('evalue')}"
            raise RuntimeError(msg)
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))

    def sample(self) -> None:
        assert self.pid is not None
        now = time.time()
        self.rss.append((now, rss_bytes(self.pid)))
        self.cpu.append((now, cpu_seconds(self.pid)))

    def run_until(self, until: float) -> None:
        """Read iopub until ``until`` (epoch s), sampling RSS/CPU and pinging the kernel."""
        next_sample = next_ping = time.time()
        while (now := time.time()) < until:
            if now >= next_sample:
                self.sample()
                next_sample += self.sample_s
            if now >= next_ping:
                msg_id = self.kc.execute("pass", silent=True, store_history=False)
                self.pings[msg_id] = time.time()
                next_ping += PING_EVERY_S
            self._step(0.02)


@dataclass
class ViewStats:
    """Steady-state figures of one view in a kernel run."""

    name: str
    seconds: float
    updates_per_s: float  # kernel counter
    updates_max_1s: int  # most updates (PATCH-DOC bursts on iopub) in one 1 s bin
    patches_per_s: float
    frames_per_s: float
    kb_per_s: float  # iopub bytes, envelope included
    rows_median: float
    payload_median: float
    payload_p99: float
    bytes_per_row: float
    update_ms: tuple[float, float, float]  # kernel time of one update: p50, p99, max
    lost: int  # PATCH-DOCs the kernel counted but this process did not receive


@dataclass
class KernelStats:
    """One kernel run: its views and the kernel process."""

    kind: str
    seconds: float
    warm_s: float
    events_per_s: float
    max_behind_ms: float
    late_pct: float  # batches emitted >100 ms after they were due, % (after the warm-up)
    views: list[ViewStats]
    rss_warm: float  # MiB
    rss_end: float
    rss_peak: float
    rss_slope: float  # MiB/min after the warm-up
    cpu_pct: float  # kernel CPU (one core = 100 %) after the warm-up
    client_cpu_pct: float
    ping_ms: list[float]
    lag_p99_ms: float
    load: tuple[float, float]  # 1-min load average of the machine at the start and the end
    python: str
    stderr: list[str]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _updates_in(patches: list[Patch]) -> list[float]:
    """Start times of updates: PATCH-DOCs of one view closer than UPDATE_GAP_S are one."""
    starts: list[float] = []
    last = -math.inf
    for p in patches:
        if p.t - last > UPDATE_GAP_S:
            starts.append(p.t)
        last = p.t
    return starts


def kernel_run(kind: str, seconds: float, mode: Mode, log: Callable[[str], None]
               ) -> KernelStats:
    """Feed 100,000 events/s for ``seconds`` into a fresh kernel's views; measure them."""
    log(f"views: starting a kernel for the {kind} views ({seconds:.0f} s) ...")
    client_cpu0 = time.process_time()
    load0 = os.getloadavg()[0]
    run = KernelRun(log, mode.sample_s)
    try:
        start = run.execute(
            f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport _views_kernel as _vk\n"
            f"_snap = _vk.start({kind!r}, rate={RATE}, batch_rows={BATCH_ROWS}, "
            f"rollover={ROLLOVER}, max_fps={MAX_FPS}, max_seconds={seconds + 120}, "
            f"page_fix={PAGE_FIX!r})",
            "_snap")
        run.pid = int(start["pid"])
        for view in start["views"].values():
            run.comms[view["comm_id"]] = CommLog()
        t0 = float(start["time"])
        run.run_until(t0 + mode.warm_s)
        warm = run.execute("", "_vk.snapshot(reset_peak=True)")
        client_warm = time.process_time()
        cpu_warm = (time.time(), cpu_seconds(run.pid))
        run.run_until(t0 + seconds)
        end = run.execute("", "_vk.snapshot()")
        cpu_end = (time.time(), cpu_seconds(run.pid))
        load_end = os.getloadavg()[0]
        client_end = time.process_time()
        run.sample()
        last = run.execute("", "_vk.stop()")
        run.run_until(time.time() + 2.0)  # what was sent before stop() arrives
        if end["error"]:
            msg = f"the feeder failed in the kernel:\n{end['error']}"
            raise RuntimeError(msg)
    finally:
        run.close()
    log(f"views: {kind} kernel done (client CPU {time.process_time() - client_cpu0:.0f} s)")

    t_warm, t_end = float(warm["time"]), float(end["time"])
    span = t_end - t_warm
    views: list[ViewStats] = []
    for name, v_end in end["views"].items():
        v_warm = warm["views"][name]
        comm = run.comms[v_end["comm_id"]]
        patches = [p for p in comm.patches if t_warm <= p.t < t_end]
        data = [p for p in patches if p.rows]
        frames = [i for i, t in enumerate(comm.frame_times) if t_warm <= t < t_end]
        starts = [t for t in _updates_in(comm.patches) if t_warm <= t < t_end]
        bins: dict[int, int] = {}
        for t in starts:
            bins[int(t - t_warm)] = bins.get(int(t - t_warm), 0) + 1
        full_bins = [n for b, n in bins.items() if b < int(span)]
        sent = int(last["views"][name]["patch_docs"])
        if kind == "rtnb":  # the kernel counts every PATCH-DOC
            lost = sent - len(comm.patches)
        else:  # the kernel counts the data replacements only
            lost = sent - sum(1 for p in comm.patches if p.rows)
        payloads = [float(p.payload) for p in data]
        views.append(ViewStats(
            name=name, seconds=span,
            updates_per_s=(v_end["updates"] - v_warm["updates"]) / span,
            updates_max_1s=max(full_bins, default=0),
            patches_per_s=len(patches) / span,
            frames_per_s=len(frames) / span,
            kb_per_s=sum(comm.frame_bytes[i] for i in frames) / span / 1024,
            rows_median=statistics.median([float(p.rows or 0) for p in data]) if data
            else math.nan,
            payload_median=statistics.median(payloads) if payloads else math.nan,
            payload_p99=_pct(payloads, 99),
            bytes_per_row=(sum(payloads) / sum(p.rows or 0 for p in data)) if data
            else math.nan,
            update_ms=(float(v_end["update_ms_p50"] or math.nan),
                       float(v_end["update_ms_p99"] or math.nan),
                       float(v_end["update_ms_max"] or math.nan)),
            lost=lost,
        ))
    mib = 1024 * 1024
    after = [(t, r / mib) for t, r in run.rss if t >= t0 + mode.warm_s]
    rss_warm = after[0][1] if after else math.nan
    slope = math.nan
    if len(after) >= 3:
        ts = np.array([t for t, _ in after]) / 60
        slope = float(np.polyfit(ts - ts[0], np.array([r for _, r in after]), 1)[0])
    lags = [lag for c in run.comms.values() for lag in c.lags]
    return KernelStats(
        kind=kind, seconds=seconds, warm_s=mode.warm_s,
        events_per_s=(end["events"] - warm["events"]) / span,
        max_behind_ms=float(end["max_behind"]) * float(end["batch_period"]) * 1e3,
        late_pct=(end["late"] - warm["late"]) / max(end["batches"] - warm["batches"], 1) * 100,
        views=views,
        rss_warm=rss_warm, rss_end=after[-1][1] if after else math.nan,
        rss_peak=max((r for _, r in after), default=math.nan), rss_slope=slope,
        cpu_pct=(cpu_end[1] - cpu_warm[1]) / (cpu_end[0] - cpu_warm[0]) * 100,
        client_cpu_pct=(client_end - client_warm) / (cpu_end[0] - cpu_warm[0]) * 100,
        ping_ms=run.ping_ms, lag_p99_ms=_pct(lags, 99) * 1e3, load=(load0, load_end),
        python=str(end["python"]), stderr=run.stderr,
    )


# -- in-process: the Python-side cost of one update ------------------------------------------
class SessionComm:
    """Factory of comms that serialise and sign every message as the kernel's Session does."""

    def __init__(self) -> None:
        from jupyter_client.session import Session

        self.session = Session(key=b"rtnb-bench-views")
        self.parent = self.session.msg("execute_request", {"code": ""})["header"]

    def __call__(self, **kwargs: Any) -> Any:
        from comm.base_comm import BaseComm

        session, parent = self.session, self.parent

        class _Comm(BaseComm):
            frames = 0
            bytes = 0

            def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                            buffers: Any = None, **keys: Any) -> None:
                content = {"data": data or {}, "comm_id": self.comm_id, **keys}
                msg = session.msg(msg_type, content, parent=parent, metadata=metadata or {})
                wire = session.serialize(msg, ident=self.topic)
                self.frames += 1
                self.bytes += sum(len(f) for f in wire)
                self.bytes += sum(memoryview(b).nbytes for b in buffers or [])

        return _Comm(**kwargs)


@contextlib.contextmanager
def session_comms() -> Iterator[None]:
    """Widgets created in the block get a :class:`SessionComm` comm."""
    import comm

    saved = comm.create_comm
    comm.create_comm = SessionComm()
    try:
        yield
    finally:
        comm.create_comm = saved


@dataclass
class Cell:
    """One in-process contender: a view, its frame and feeder, and what its updates cost."""

    label: str
    kind: str
    keys: int
    history: int
    view: Any
    feeder: Any
    times_ns: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)

    @property
    def comm(self) -> Any:
        return self.view.model.comm if self.kind == "rtnb" else self.view.widget.comm

    def update(self, timed: bool) -> None:
        self.feeder.frame.emit(self.feeder.next_batch())
        b0, f0 = self.comm.bytes, self.comm.frames
        start = time.perf_counter_ns()
        self.view.flush()
        elapsed = time.perf_counter_ns() - start
        if timed:
            self.times_ns.append(elapsed)
            self.bytes.append(self.comm.bytes - b0)
            self.frames.append(self.comm.frames - f0)


def make_cell(kind: str, keys: int, history: int) -> Cell:
    """A view with ``history`` points per line already plotted, ready for 1,000-row updates."""
    import pandas as pd
    from _views_kernel import HOSTS, Feeder, NaiveView, example, report_page_fix

    import rtnb

    sdf = rtnb.StreamingFrame(example(), time="t", name="feed")
    by = "host" if keys > 1 else None
    with session_comms():
        if kind == "rtnb":
            view: Any = sdf.plot.line(x="t", y="cpu", by=by, rollover=history, max_fps=NEVER)
            view.widget  # noqa: B018 - creates the widget and its comm, as display() does
            report_page_fix(view.model, PAGE_FIX)  # as a page running rtnb's fix reports
        else:
            view = NaiveView(sdf, x="t", y="cpu", by=by, rollover=history, max_fps=MAX_FPS)
    # fill every line's history: `history` rows per key, keys in turn
    n = history * keys
    fill = pd.DataFrame({"t": (pd.Timestamp("2025-12-31") + pd.to_timedelta(np.arange(n), "us")
                               ).astype("datetime64[ns]"),
                         "host": pd.array(HOSTS[np.arange(n) % keys], dtype=str),
                         "cpu": np.linspace(0.0, 100.0, n)})
    sdf.emit(fill)
    view.flush()
    feeder = Feeder(sdf, rate=RATE, batch_rows=BATCH_ROWS, seed=keys)
    label = f"{kind} {'one line' if keys == 1 else f'{keys} keys'}"
    cell = Cell(label=label, kind=kind, keys=keys, history=history, view=view, feeder=feeder)
    for _ in range(5):
        cell.update(timed=False)
    return cell


def in_process(mode: Mode, log: Callable[[str], None]) -> list[Cell]:
    """Time ``flush()`` of 1,000-row updates for every contender, interleaved in rounds."""
    import gc

    cells = [make_cell(kind, keys, history)
             for history in HISTORIES for keys in (1, 12) for kind in ("rtnb", "naive")]
    log(f"views: in-process updates, {mode.rounds} rounds x {mode.block} per contender ...")
    for _ in range(mode.rounds):
        for cell in cells:
            gc.collect()
            for _ in range(mode.block):
                cell.update(timed=True)
    for cell in cells:
        cell.view.close()
    return cells


# -- report ----------------------------------------------------------------------------------
def _f(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:.0f} s"


def kernel_tables(runs: list[KernelStats]) -> list[str]:
    lines = ["### Kernel run: steady state after the warm-up", "",
             "| approach | view | steady s | view updates/s (max in 1 s) | PATCH-DOC/s "
             "| comm msgs/s | comm msgs per update | rows per PATCH-DOC (median) "
             "| payload bytes per PATCH-DOC: median / p99 | bytes per row | iopub KB/s "
             "| kernel time per update p50 / p99 / max |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for run in runs:
        for v in run.views:
            per_update = v.frames_per_s / v.updates_per_s if v.updates_per_s else math.nan
            lines.append(
                f"| {run.kind} | {v.name} | {v.seconds:.0f} "
                f"| {v.updates_per_s:.2f} ({v.updates_max_1s}) | {v.patches_per_s:.1f} "
                f"| {v.frames_per_s:.1f} | {per_update:.1f} | {_f(v.rows_median, 0)} "
                f"| {_f(v.payload_median, 0)} / {_f(v.payload_p99, 0)} "
                f"| {_f(v.bytes_per_row, 1)} | {_f(v.kb_per_s, 0)} "
                f"| {' / '.join(_f(ms, 0) for ms in v.update_ms)} ms |")
    lines += ["", "| approach | run (warm-up) | events/s fed (steady) "
              "| feeder most behind (batches >100 ms late) "
              "| kernel RSS after warm-up -> end (peak) | end / warm-up | RSS slope "
              "| kernel CPU | this process CPU | execute round trip p50 / p99 / max "
              "| iopub delivery p99 | PATCH-DOCs lost | machine load start / end |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: | ---: |"]
    for run in runs:
        ratio = run.rss_end / run.rss_warm
        lines.append(
            f"| {run.kind} | {_duration(run.seconds)} ({_duration(run.warm_s)}) "
            f"| {run.events_per_s:,.0f} | {run.max_behind_ms:,.0f} ms ({run.late_pct:.2f} %) "
            f"| {run.rss_warm:.1f} -> {run.rss_end:.1f} MiB ({run.rss_peak:.1f}) "
            f"| {ratio:.3f}x | {run.rss_slope:+.3f} MiB/min | {run.cpu_pct:.0f} % "
            f"| {run.client_cpu_pct:.0f} % "
            f"| {_pct(run.ping_ms, 50):.0f} / {_pct(run.ping_ms, 99):.0f} / "
            f"{max(run.ping_ms, default=math.nan):.0f} ms "
            f"| {run.lag_p99_ms:.0f} ms | {sum(v.lost for v in run.views)} "
            f"| {run.load[0]:.2f} / {run.load[1]:.2f} |")
    return lines


def _stat(cell: Cell) -> tuple[float, float, float, float, float]:
    t = np.array(cell.times_ns) / 1e3
    return (float(np.percentile(t, 50)), float(np.percentile(t, 99)),
            float(np.median(cell.bytes)), float(np.median(cell.frames)), float(len(t)))


def process_tables(cells: list[Cell]) -> list[str]:
    lines = ["### Python-side cost of one update of 1,000 new rows (in-process)", "",
             "| view | history per line | flush p50 | flush p99 | serialised bytes per update "
             "| comm msgs per update | updates timed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cell in cells:
        p50, p99, size, frames, n = _stat(cell)
        lines.append(f"| {cell.label} | {cell.history:,} | {p50:,.0f} us | {p99:,.0f} us "
                     f"| {size:,.0f} | {frames:.0f} | {n:.0f} |")
    lines += ["", "| view | history per line | naive / rtnb time (p50) | naive / rtnb bytes |",
              "| --- | ---: | ---: | ---: |"]
    for history in HISTORIES:
        for keys in (1, 12):
            ours = _find(cells, "rtnb", keys, history)
            theirs = _find(cells, "naive", keys, history)
            lines.append(f"| {ours.label[5:]} | {history:,} "
                         f"| {_stat(theirs)[0] / _stat(ours)[0]:.2f}x "
                         f"| {_stat(theirs)[2] / _stat(ours)[2]:.2f}x |")
    return lines


def _find(cells: list[Cell], kind: str, keys: int, history: int) -> Cell:
    return next(c for c in cells
                if c.kind == kind and c.keys == keys and c.history == history)


def target_rows(runs: list[KernelStats], cells: list[Cell]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    ours = runs[0]
    fed = f"{ours.events_per_s / 1000:.0f}k ev/s fed"
    for v in ours.views:
        ok = v.updates_per_s <= MAX_FPS and v.updates_max_1s <= MAX_FPS
        rows.append((f"views ({v.name}): updates/s <= max_fps ({MAX_FPS:.0f}) at 100k ev/s",
                     f"{v.updates_per_s:.2f}/s (max {v.updates_max_1s} in 1 s; {fed})",
                     "PASS" if ok else "FAIL"))
    for v in ours.views:
        per_update = v.frames_per_s / v.updates_per_s if v.updates_per_s else math.nan
        frames = v.frames_per_s / v.patches_per_s if v.patches_per_s else math.nan
        rows.append((f"views ({v.name}): comm messages/s <= max_fps ({MAX_FPS:.0f}), as issue 4 "
                     "words it", f"{v.frames_per_s:.1f}/s ({per_update:.1f} per update: "
                     f"{v.patches_per_s / v.updates_per_s:.1f} PATCH-DOC x {frames:.0f})",
                     "PASS" if v.frames_per_s <= MAX_FPS else "FAIL"))
    ratio = ours.rss_end / ours.rss_warm
    rows.append((f"views: kernel RSS end / warm-up <= {RSS_TARGET:.2f} "
                 f"({_duration(ours.seconds)} at 100k ev/s)",
                 f"{ratio:.3f}x ({ours.rss_slope:+.2f} MiB/min)",
                 "PASS" if ratio <= RSS_TARGET else "FAIL"))
    growth = [_stat(_find(cells, "rtnb", k, HISTORIES[1]))[2]
              / _stat(_find(cells, "rtnb", k, HISTORIES[0]))[2] for k in (1, 12)]
    rows.append((f"views: bytes per update independent of history: rtnb "
                 f"{HISTORIES[1]:,}- / {HISTORIES[0]:,}-point history <= {HISTORY_TARGET} "
                 "(1,000 new rows)",
                 f"{growth[0]:.3f}x one line, {growth[1]:.3f}x 12 keys",
                 "PASS" if max(growth) <= HISTORY_TARGET else "FAIL"))
    one = {h: (_stat(_find(cells, "naive", 1, h)), _stat(_find(cells, "rtnb", 1, h)))
           for h in HISTORIES}
    rows.append(("views: bytes per update, naive / rtnb, 1,000 new rows, one line, "
                 f"{HISTORIES[0]:,} / {HISTORIES[1]:,}-point history",
                 " / ".join(f"{n[2] / r[2]:.2f}x" for n, r in one.values()), "n/a"))
    rows.append(("views: Python cost of that update (serialise + send), naive / rtnb, "
                 f"{HISTORIES[0]:,} / {HISTORIES[1]:,}-point history",
                 " / ".join(f"{n[0] / r[0]:.2f}x" for n, r in one.values()), "n/a"))
    return rows


def notes(runs: list[KernelStats]) -> list[str]:
    ours = runs[0]
    return [
        "### Notes", "",
        f"- Kernel: `{ours.python}` (ipykernel, started by `jupyter_client.KernelManager`). "
        "Both rtnb views run in one kernel on one feed; the naive views in a second, fresh "
        "kernel. RSS is the whole kernel process (both views, the feed, IPython).",
        "- *View updates/s* is the kernel's own count of coalesced updates (`view.updates`); "
        "*max in 1 s* counts update bursts on iopub (PATCH-DOCs of a view less than "
        f"{UPDATE_GAP_S * 1000:.0f} ms apart, by the kernel's send time) per whole second. "
        "Each widget's timer ticks on a fixed schedule of `1 / max_fps` and never sooner than "
        "that after its previous tick; the naive pump sleeps `1 / max_fps` after each update, "
        "so its rate is below `max_fps` by the time an update takes (*kernel time per "
        "update*: the view's flush, timed in the kernel by a wrapper around it).",
        "- *Comm msgs per update*: with the page fix reported (`PAGE_FIX = \"proto\"`), rtnb "
        "sends one PATCH-DOC per update as one comm message: every changed line and, for flow "
        "control, the update's number (`PageAck.sent`) travel together. Without it (a page "
        "that has not run rtnb's page script) it would send one PATCH-DOC per line that got "
        "rows, each as 3 comm messages. The naive `BokehModel` sends 7 per PATCH-DOC (x and y "
        "as binary buffers, 2 messages each).",
        f"- *Rows per PATCH-DOC*: at 100,000 events/s and <10 updates/s an update carries "
        f">10,000 new rows, >800 per key, so with `rollover={ROLLOVER:,}` most PATCH-DOCs "
        f"carry {ROLLOVER:,} rows (the cap), i.e. the line's whole history, as the naive "
        "view's do. This run therefore cannot separate \"proportional to new rows\" from "
        "\"proportional to history\"; the in-process table does (1,000 new rows into 1,000- "
        "and 10,000-point histories).",
        "- *Bytes*: rtnb inlines arrays in the PATCH-DOC text; Bokeh gzips them before base64 "
        "(event times, 8 bytes, compress well; random float `cpu` values hardly do). The naive "
        "`BokehModel` sends raw binary buffers (16 bytes per row) in separate comm messages. "
        "*Bytes per row* = payload bytes / rows carried, envelope excluded. *PATCH-DOCs lost* "
        "= sent (kernel count) - received here (0: nothing dropped on iopub).",
        "- *Feeder most behind*: the largest delay of a due batch after the warm-up (the feeder "
        "catches up, at most 10 batches at a time), and the share of batches emitted more "
        "than 100 ms late; with *events/s fed* it shows whether the kernel kept up (a backlog "
        "that is caught up is delay, not loss). *Execute round trip*: a `pass` request "
        f"every {PING_EVERY_S:.0f} s during the run. *iopub delivery*: kernel send time to "
        "this process reading it. *Machine load*: 1-min load average (2 cores, shared: "
        "other jobs on the machine slow the kernel and show here).",
    ]


def run(quick: bool, log: Callable[[str], None]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Run both parts; return (markdown lines, target rows)."""
    mode = QUICK if quick else FULL
    runs = [kernel_run("rtnb", mode.rtnb_s, mode, log),
            kernel_run("naive", mode.naive_s, mode, log)]
    for r in runs:
        if r.stderr:
            log(f"views: {r.kind} kernel stderr (first lines): {''.join(r.stderr)[:600]!r}")
    cells = in_process(mode, log)
    md = [f"## {TITLE}", "",
          f"{RATE:,} events/s ({BATCH_ROWS:,}-row batches every "
          f"{BATCH_ROWS / RATE * 1000:.0f} ms), 12 hosts, views with `rollover={ROLLOVER:,}`, "
          f"`max_fps={MAX_FPS:.0f}`. rtnb: {_duration(mode.rtnb_s)}; naive: "
          f"{_duration(mode.naive_s)} (shorter: it is the comparison, not the target); "
          f"warm-up {_duration(mode.warm_s)}. Method: see the docstring of `bench/views.py`.",
          ""]
    md += [*kernel_tables(runs), "", *process_tables(cells), "", *notes(runs), ""]
    return md, target_rows(runs, cells)


if __name__ == "__main__":
    print("run the benchmark with `make bench` (bench/run.py)", file=sys.stderr)
    sys.exit(2)
