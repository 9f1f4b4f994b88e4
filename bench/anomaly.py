"""Anomaly detection quality with defaults (issue 17): every detector, as a user runs it,
scored with NAB's rules on our own corpus (``bench/corpus.py``) and on the bundled day.

For each detector built with its defaults (``ZScore()``, ``MAD()``, ``RollingQuantile()``,
``EWMA()``, ``RateOfChange()`` and ``Anomaly()`` when rtnb has it; a constructor that refuses
to run without arguments is reported as "needs arguments"), through the public streaming API:

* ``sdf = rtnb.StreamingFrame(example, time="time")``; the data, all series together in
  event-time order (as a replay of concurrent feeds delivers them), cut into 100-row batches
  before any timing and emitted one by one (``sdf.emit``);
* ``sdf.detect(detector, on="value", by="series")``, then
  ``rtnb.alert(that, "is_anomaly", by="series")`` with the alert defaults; its ``firing``
  events are the detections;
* ``rtnb.evaluate(alerts, labels, by="series", data=data, profile=...)`` for NAB's three
  profiles (without ``data=`` if this rtnb does not take it: no probationary period then);
* the bundled day (3.1M rows) goes in 1,000-row batches (``--day-batch``): at 100 rows its
  31,000 batches take about a minute per detector here, mostly in the alert node, and the
  scores do not depend on the batch size (the rows arrive in event-time order);
* speed: events per second through ``emit`` + ``detect`` alone, in the same run (a sink on
  the detect node, registered before the alert, stamps when detect has handed its batch on;
  everything after that stamp is the alert's).

Usage::

    .venv/bin/python bench/anomaly.py             # 48 series + the bundled day
    .venv/bin/python bench/anomaly.py --quick     # 12 series + 3 hosts of the bundled day
    .venv/bin/python bench/anomaly.py --seed 3 --no-day

Prints markdown and writes it to ``bench/results-anomaly.md`` (``--quick``:
``results-anomaly-quick.md``); ``bench/run.py`` (``make bench``) runs it too and adds it to
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

import rtnb  # noqa: E402
from rtnb.errors import ConfigError  # noqa: E402

TITLE = "Anomaly detection with defaults: NAB score on our own corpus and the bundled day " \
        "(issue 17)"
OUT = HERE / "results-anomaly.md"
QUICK_OUT = HERE / "results-anomaly-quick.md"
BATCH = 100
DAY_BATCH = 1_000
QUICK_HOSTS = ("web-01/", "web-02/", "web-03/")
TARGET = 65.0
DETECTORS = ("Anomaly", "ZScore", "MAD", "RollingQuantile", "EWMA", "RateOfChange")
#: NAB's profile names, then the names older rtnb versions used.
PROFILES = {"standard": ("standard",),
            "reward_low_FP_rate": ("reward_low_FP_rate", "reward_low_fp"),
            "reward_low_FN_rate": ("reward_low_FN_rate", "reward_low_fn")}

Log = Callable[[str], None]


@dataclass
class Outcome:
    """One detector on one corpus."""

    detector: str
    note: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    precision: float = float("nan")
    recall: float = float("nan")
    tp: int = 0
    fp: int = 0
    fn: int = 0
    firing: int = 0
    flagged: int = 0
    scored: int = 0
    rows: int = 0
    detect_s: float = float("nan")
    total_s: float = float("nan")
    wall_s: float = float("nan")
    windows: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return bool(self.scores)


def build(name: str) -> tuple[Any, str]:
    """The detector ``name`` with its defaults, or ``None`` and why not."""
    cls = getattr(rtnb.detect, name, None)
    if cls is None:
        return None, f"rtnb.detect.{name} does not exist in this rtnb (skipped)"
    try:
        return cls(), ""
    except (ConfigError, TypeError) as exc:
        return None, f"needs arguments: {type(exc).__name__}: {exc}"


def in_time_order(data: pd.DataFrame) -> pd.DataFrame:
    """All series interleaved by event time (ties keep the series order)."""
    return data.sort_values("time", kind="stable", ignore_index=True)


def cut(stream: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    return [stream.iloc[i:i + rows].reset_index(drop=True) for i in range(0, len(stream), rows)]


class Notes:
    """Messages printed once however many runs hit them."""

    def __init__(self, log: Log) -> None:
        self.log, self.seen = log, set()

    def __call__(self, msg: str) -> None:
        if msg not in self.seen:
            self.seen.add(msg)
            self.log(f"note: {msg}")


def score(alerts: pd.DataFrame, labels: pd.DataFrame, data: pd.DataFrame,
          note: Notes) -> tuple[dict[str, float], Any]:
    """NAB's three profiles (and the standard profile's full evaluation)."""
    scores: dict[str, float] = {}
    standard = None
    for profile, names in PROFILES.items():
        for i, name in enumerate(names):
            try:
                try:
                    ev = rtnb.evaluate(alerts, labels, by="series", data=data, profile=name)
                except TypeError:
                    note("rtnb.evaluate() takes no data= yet: scored without NAB's "
                         "probationary period, in event time")
                    ev = rtnb.evaluate(alerts, labels, by="series", profile=name)
            except ConfigError:
                if i + 1 < len(names):
                    continue
                raise
            if i:
                note(f"rtnb.evaluate() names NAB's {profile!r} profile {name!r}")
            scores[profile] = float(ev.nab_score)
            if profile == "standard":
                standard = ev
            break
    return scores, standard


def warm_up(name: str, stream: pd.DataFrame) -> None:
    """The same pipeline on 2,000 rows, untimed: compiled kernels load before the clock runs."""
    det, _ = build(name)
    sdf = rtnb.StreamingFrame(stream.iloc[:0], time="time", name="warm")
    alerts = rtnb.alert(sdf.detect(det, on="value", by="series"), "is_anomaly", by="series")
    alerts.collect()
    try:
        for batch in cut(stream.iloc[:2_000], BATCH):
            sdf.emit(batch)
        sdf.close()
    except Exception:  # the timed run reports it
        pass


def run_one(name: str, stream: pd.DataFrame, batches: list[pd.DataFrame],
            labels: pd.DataFrame, data: pd.DataFrame, note: Notes) -> Outcome:
    """Build, stream, alert and score one detector."""
    det, why = build(name)
    out = Outcome(name, note=why, rows=len(stream))
    if det is None:
        return out
    warm_up(name, stream)
    sdf = rtnb.StreamingFrame(stream.iloc[:0], time="time", name="corpus")
    detected = sdf.detect(det, on="value", by="series")
    stamps: list[float] = []
    detected.sink(lambda _batch: stamps.append(time.perf_counter()))  # before alert: first
    flags = [0, 0]

    def count(batch: pd.DataFrame) -> None:
        flags[0] += int(batch["is_anomaly"].sum())
        flags[1] += int(batch["score"].notna().sum())

    detected.sink(count)
    alerts = rtnb.alert(detected, "is_anomaly", by="series")
    fired: list[pd.DataFrame] = alerts.collect()
    detect_s = total_s = 0.0
    try:
        for batch in batches:
            before = len(stamps)
            began = time.perf_counter()
            sdf.emit(batch)
            ended = time.perf_counter()
            detect_s += (stamps[-1] if len(stamps) > before else ended) - began
            total_s += ended - began
        began = time.perf_counter()
        sdf.close()
        total_s += time.perf_counter() - began
    except Exception as exc:  # a detector that stops the pipeline is a result
        out.note = f"crashed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        traceback.print_exc(limit=2)
        return out
    out.detect_s, out.total_s = detect_s, total_s
    out.flagged, out.scored = flags
    events = pd.concat(fired, ignore_index=True) if fired else alerts.example.iloc[:0]
    out.firing = int((events["state"] == "firing").sum()) if len(events) else 0
    out.scores, ev = score(events, labels, data, note)
    if ev is not None:
        out.precision, out.recall = float(ev.precision), float(ev.recall)
        out.tp, out.fp, out.fn = ev.true_positives, ev.false_positives, ev.false_negatives
        out.windows = ev.windows
    if out.scored == 0:
        out.note = "every score NaN (never warmed up)"
    elif out.flagged == 0:
        out.note = "no row flagged"
    return out


def run_corpus(label: str, data: pd.DataFrame, labels: pd.DataFrame, log: Log,
               note: Notes, rows: int = BATCH) -> list[Outcome]:
    stream = in_time_order(data)
    batches = cut(stream, rows)
    log(f"{label}: {data['series'].nunique()} series, {len(data):,} rows, {len(labels)} "
        f"windows, {len(batches):,} batches of {rows}")
    results = []
    for name in DETECTORS:
        began = time.perf_counter()
        o = run_one(name, stream, batches, labels, data, note)
        o.wall_s = time.perf_counter() - began
        results.append(o)
        if o.ok:
            log(f"  {name}: NAB {o.scores.get('standard', float('nan')):.1f}, "
                f"recall {o.recall:.2f}, precision {o.precision:.2f}, "
                f"detect {o.rows / o.detect_s:,.0f} ev/s, run {o.total_s:.1f} s, "
                f"with warm-up and scoring {o.wall_s:.1f} s {o.note}")
        else:
            log(f"  {name}: {o.note}")
    return results


# ------------------------------------------------------------------------------ reporting

def _f(x: float, fmt: str = ".1f") -> str:
    return "n/a" if x != x else format(x, fmt)


def table(results: list[Outcome]) -> list[str]:
    lines = ["| detector (defaults) | NAB standard | reward low FP | reward low FN | precision "
             "| recall | TP / FP / FN | alerts fired | rows flagged | detect events/s "
             "| detect + alert s | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for o in results:
        if not o.ok:
            lines.append(f"| {o.detector}() | - | - | - | - | - | - | - | - | - | - | {o.note} |")
            continue
        s = o.scores
        speed = o.rows / o.detect_s if o.detect_s > 0 else float("nan")
        lines.append(
            f"| {o.detector}() | {_f(s.get('standard', np.nan))} "
            f"| {_f(s.get('reward_low_FP_rate', np.nan))} "
            f"| {_f(s.get('reward_low_FN_rate', np.nan))} | {_f(o.precision, '.2f')} "
            f"| {_f(o.recall, '.2f')} | {o.tp} / {o.fp} / {o.fn} | {o.firing:,} "
            f"| {o.flagged:,} | {speed:,.0f} | {o.total_s:.1f} | {o.note} |")
    return lines


def by_kind(best: Outcome, labels: pd.DataFrame) -> list[str]:
    """Recall per anomaly kind for one detector (from evaluate's per-window table)."""
    w = best.windows
    if w is None or not {"key", "start", "detected"} <= set(w.columns):
        return [f"(no per-window table from rtnb.evaluate for {best.detector})"]
    w = w.assign(series=w["key"].astype(str),
                 start=pd.to_datetime(w["start"]).astype("datetime64[ns]"))
    joined = labels.merge(w[["series", "start", "detected"]], on=["series", "start"],
                          how="left")
    if joined["detected"].isna().all() and best.tp:
        return ["(could not match evaluate's windows to the labels)"]
    joined["found"] = joined["detected"].notna()
    g = joined.groupby("kind")["found"].agg(["sum", "count"])
    lines = [f"Recall per anomaly kind, {best.detector}() (windows detected / labelled):", "",
             "| kind | detected | windows | recall |", "| --- | ---: | ---: | ---: |"]
    for kind, r in g.iterrows():
        lines.append(f"| {kind} | {int(r['sum'])} | {int(r['count'])} "
                     f"| {r['sum'] / r['count']:.2f} |")
    return lines


def best_of(results: list[Outcome]) -> Outcome | None:
    done = [o for o in results if o.ok]
    return max(done, key=lambda o: o.scores.get("standard", -np.inf)) if done else None


def provenance() -> list[str]:
    """When, on what code (uncommitted changes to rtnb/ noted) and how busy the machine was."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True,
                                  text=True, check=False, timeout=10).stdout.strip()
        except OSError:
            return "?"

    dirty = git("status", "--porcelain", "--", "rtnb")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [f"Run {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on git "
            f"{git('rev-parse', '--short=12', 'HEAD')}"
            + (f" with {len(dirty.splitlines())} uncommitted file(s) in rtnb/" if dirty else "")
            + f"; {os.cpu_count()} cores, load average at start {load}."]


def report(seed: int, quick: bool, day: bool, log: Log, *,
           day_batch: int = DAY_BATCH) -> tuple[list[str], list[Any]]:
    note = Notes(log)
    if getattr(rtnb.detect, "Anomaly", None) is None:
        note("rtnb.detect.Anomaly does not exist yet: skipped")
    n_series = 12 if quick else 48
    data, labels = corpus.make_corpus(seed, n_series=n_series)
    md = [f"## {TITLE}", "", *provenance(), "",
          f"`bench/anomaly.py{' --quick' if quick else ''}`: defaults only, one configuration "
          f"for every series; {BATCH}-row batches through `sdf.detect(det, on=\"value\", "
          "by=\"series\")` and `rtnb.alert(..., \"is_anomaly\", by=\"series\")` (alert "
          "defaults); `rtnb.evaluate(..., data=data)` with NAB's profiles (100 = perfect, "
          "0 = nothing detected). Speed: events/s through `emit` + `detect` alone, same run.",
          "", f"### Generated corpus (`bench/corpus.py`, seed {seed}, {n_series} series)", "",
          *corpus.describe(data, labels), ""]
    started = time.perf_counter()
    results = run_corpus("generated", data, labels, log, note)
    md += [*table(results), ""]
    best = best_of(results)
    if best is not None:
        md += [*by_kind(best, labels), ""]
    targets: list[Any] = []
    anomaly = next(o for o in results if o.detector == "Anomaly")
    measured = anomaly.scores.get("standard", float("nan"))
    targets.append((f"Anomaly() defaults: NAB standard >= {TARGET:.0f} on bench/corpus.py"
                    + (" (12-series quick corpus)" if quick else ""),
                    _f(measured), "n/a" if measured != measured
                    else ("PASS" if measured >= TARGET else "FAIL")))

    if day:
        d_data, d_labels = corpus.bundled_day()
        if quick:   # three hosts' 9 series, the whole day: 10 of the 21 windows
            keep = d_data["series"].str.startswith(QUICK_HOSTS)
            d_data = d_data[keep].reset_index(drop=True)
            d_labels = d_labels[d_labels["series"].isin(set(d_data["series"]))]
        md += [f"### Bundled day (`rtnb.datasets`{', hosts web-01 to web-03' if quick else ''}: "
               "one series per host and metric, labels from `incidents()`; "
               f"{day_batch:,}-row batches: 36 series at 1 s, about "
               f"{day_batch / 36:.0f} s of data each)", "",
               *corpus.describe(d_data, d_labels), ""]
        d_results = run_corpus("bundled day", d_data, d_labels, log, note, day_batch)
        md += [*table(d_results), ""]
        best_day = best_of(d_results)
        if best_day is not None:
            md += [*by_kind(best_day, d_labels), ""]
    md += [*quiet_noise(20_000 if quick else 100_000), ""]
    if note.seen:
        md += ["Notes:", "", *[f"- {n}" for n in sorted(note.seen)], ""]
    md += [f"Whole run {time.perf_counter() - started:.0f} s.", ""]
    return md, targets


def quiet_noise(n: int) -> list[str]:
    """False alarms of ``Anomaly()`` on ``n`` rows of noise with no anomaly, per kind."""
    rng = np.random.default_rng(1)
    kinds = {"white (normal)": rng.normal(0.0, 1.0, n),
             "Poisson(4) counts": rng.poisson(4.0, n).astype(float),
             "Poisson(30) counts": rng.poisson(30.0, n).astype(float),
             "lognormal(0, 0.5)": rng.lognormal(0.0, 0.5, n),
             "Student t(3)": rng.standard_t(3, n)}
    times = np.arange(n, dtype=np.int64) * 60 * 10**9
    lines = [f"### False alarms on noise ({n:,} rows at 1 min, no anomaly; `Anomaly()`, "
             "incidents started)", "", "| noise | incidents | per 10,000 rows |",
             "| --- | ---: | ---: |"]
    for name, x in kinds.items():
        flag = rtnb.detect.Anomaly().process(x, times=times)[1]
        onsets = int((flag & ~np.r_[False, flag[:-1]]).sum())
        lines.append(f"| {name} | {onsets} | {onsets / n * 10_000:.2f} |")
    return lines


def run(quick: bool, log: Log) -> tuple[list[str], list[Any]]:
    """``bench/run.py`` hook; also writes ``bench/results-anomaly.md``."""
    md, targets = report(0, quick, True, log)
    (QUICK_OUT if quick else OUT).write_text("\n".join(md).rstrip() + "\n")
    return md, targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="12 generated series and 3 hosts of the bundled day")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--no-day", action="store_true", help="skip the bundled day")
    parser.add_argument("--day-batch", type=int, default=DAY_BATCH,
                        help=f"rows per batch for the bundled day (default {DAY_BATCH:,}; its "
                             "3.1M rows at 100 take minutes per detector)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"markdown file ({OUT.name}; {QUICK_OUT.name} with --quick)")
    args = parser.parse_args()
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    md, _ = report(args.seed, args.quick, not args.no_day, log, day_batch=args.day_batch)
    text = "\n".join(md).rstrip() + "\n"
    print(text)
    out = args.out or (QUICK_OUT if args.quick else OUT)
    out.write_text(text)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
