"""Run every benchmark in ``bench/`` and write ``bench/RESULTS.md`` (``make bench``).

Usage::

    .venv/bin/python bench/run.py            # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # smoke run on 200,000 events,
                                             # writes bench/RESULTS-quick.md

A benchmark module is any ``bench/*.py`` other than this file and ``_*.py``; it defines
``TITLE`` and ``run(quick, log) -> (markdown_lines, target_rows)`` where a target row is
``(target, measured, "PASS" | "FAIL" | "n/a")``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def discover() -> list[ModuleType]:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    names = sorted(p.stem for p in HERE.glob("*.py")
                   if p.name != "run.py" and not p.name.startswith("_"))
    return [importlib.import_module(name) for name in names]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _git_commit() -> str:
    head = HERE.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (HERE.parent / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return "?"


def machine_info() -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return [
        "| | |",
        "| --- | --- |",
        f"| date | {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} |",
        f"| machine | {platform.system()} {platform.release()} {platform.machine()}, "
        f"{_cpu_model()} |",
        f"| cores | {os.cpu_count()} (usable by this process: {affinity}); load average at "
        f"start {load} |",
        f"| memory | {_memory_total()} |",
        f"| python | {platform.python_version()} ({sys.executable}) |",
        f"| pandas / numpy / streamz | {_version('pandas')} / {_version('numpy')} / "
        f"{_version('streamz')} |",
        f"| pyarrow / pyinstrument | {_version('pyarrow')} / {_version('pyinstrument')} |",
        f"| rtnb | {_version('rtnb')} (git {_git_commit()}, working tree as it was during "
        "the run) |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run on 200,000 events (writes RESULTS-quick.md)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the results")
    parser.add_argument("--only", default=None,
                        help="comma-separated bench modules to run (default: all)")
    args = parser.parse_args()
    out = args.out or HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md")

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    info = machine_info()
    sections: list[str] = []
    targets: list[tuple[str, str, str, str]] = []
    chosen = set(args.only.split(",")) if args.only else None
    for module in discover():
        if chosen is not None and module.__name__ not in chosen:
            continue
        log(f"== {module.__name__}: {module.TITLE}")
        md, rows = module.run(args.quick, log)
        sections += md
        targets += [(module.__name__, *row) for row in rows]
    elapsed = time.perf_counter() - started

    verdicts = [r[3] for r in targets]
    head = [
        "# rtnb benchmarks" + (" (QUICK smoke run: 200,000 events, not the benchmark)"
                               if args.quick else ""),
        "",
        "Written by `make bench` (`.venv/bin/python bench/run.py"
        + (" --quick" if args.quick else "") + "`); do not edit by hand. "
        f"Whole run: {elapsed / 60:.1f} min.",
        "",
        *info,
        "",
        "## Targets: "
        f"{verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL, "
        f"{len(verdicts) - verdicts.count('PASS') - verdicts.count('FAIL')} not measurable",
        "",
        "| bench | target | measured | verdict |",
        "| --- | --- | ---: | --- |",
        *[f"| {b} | {t} | {m} | {'**FAIL**' if v == 'FAIL' else v} |"
          for b, t, m, v in targets],
        "",
    ]
    out.write_text("\n".join(head + sections).rstrip() + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
