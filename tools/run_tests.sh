#!/usr/bin/env bash
# The pytest part of `make test`: two pytest processes side by side.
#
# The browser tests (JupyterLab driven by Debian's chromium) spend most of their ~10 minutes
# waiting on a live page in real time, and they must run in a process of their own anyway
# (Playwright's sync API keeps an event loop running in the main thread, see conftest.py).
# So they run in a second pytest process beside the rest of the suite instead of after it:
# the suite takes about as long as its longer half. The fault tests (tests/faults and the
# cluster runs' kill -9 tests, marker `faults`: kill -9 of exported scripts, private brokers
# killed) and the export parity of the notebooks (marker `parity`) run in that second process
# too, before the browser tests (conftest.py orders them). A fresh clone's make test on 2
# cores (2026-12-07, 21 min 29 s with the install, numba's kernels compiled first) gave:
# main half 18 min 37 s, second half 19 min 46 s. Both halves must pass; the second half's
# report follows the other's. Arguments go to both processes (e.g. `-x`, `--lf` does not apply: the cache
# provider is off).
set -uo pipefail
PY=${PY:-.venv/bin/python}
# numba's kernels compiled once into its on-disk cache first (tools/warm_kernels.py): on a
# fresh clone both processes, their Dask workers and exported scripts compiled them at once
"$PY" tools/warm_kernels.py || exit 1
log=$(mktemp -t rtnb-browser-tests.XXXXXX)
"$PY" -m pytest -m "browser or faults or parity" "$@" >"$log" 2>&1 &
browser=$!
trap 'kill "$browser" 2>/dev/null; rm -f "$log"' EXIT
"$PY" -m pytest -m "not browser and not faults and not parity" "$@"
rest=$?
wait "$browser"
browser_rc=$?
echo
echo "======== fault, parity and browser tests (the second pytest process, run beside the one above) ========"
cat "$log"
echo
echo "pytest exit codes: main ${rest}, faults + parity + browser ${browser_rc}"
[ "$rest" -eq 0 ] && [ "$browser_rc" -eq 0 ]
