#!/usr/bin/env bash
# The Prometheus source's tests (tests/integration/test_prometheus_source.py) start a private
# Prometheus server of their own (127.0.0.1, a free port, a private data dir, killed at the
# end). They need the binary: Debian's package installs offline and starts no service here.
# Install it when missing and we are allowed to; otherwise say how (the tests then skip).
set -uo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's prometheus for the Prometheus source tests"
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null 2>&1 ||
     { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }; then
    exit 0
  fi
fi
echo "warning: no prometheus binary (sudo apt-get install -y prometheus); the Prometheus source tests will skip" >&2
[ "${CI:-}" = "true" ] && exit 1
exit 0
