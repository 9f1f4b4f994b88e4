"""Repository-wide pytest setup."""

from __future__ import annotations

import os

# Notebooks replay the bundled day of data; under test a few minutes of it is enough. Kernels
# started by nbval and by the browser tests inherit this (the notebook code stays the same).
os.environ.setdefault("RTNB_REPLAY_MAX_EVENTS", "20000")
