"""Repository-wide pytest setup."""

from __future__ import annotations

import os

# Notebooks replay the bundled day of data; under test a few minutes of it is enough. Kernels
# started by nbval and by the browser tests inherit this (the notebook code stays the same).
os.environ.setdefault("RTNB_REPLAY_MAX_EVENTS", "20000")


def pytest_collection_modifyitems(config: object, items: list) -> None:  # type: ignore[type-arg]
    """Run the browser tests last.

    Playwright's sync API keeps an event loop running in the main thread while its (session)
    fixtures live, and ``asyncio.run`` refuses to start under a running loop: every test that
    runs a pipeline with ``asyncio.run`` must come before them.
    """
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
