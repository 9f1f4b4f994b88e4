"""Pytest fixtures for browser tests: a real JupyterLab driven by Playwright and Debian chromium.

Fixtures
--------
lab
    Session-scoped :class:`browser_helpers.JupyterLab` server (isolated config, data, settings,
    workspaces and runtime dirs; the current environment is passed through).
playwright_instance
    Session-scoped Playwright driver.
browser
    Session-scoped Playwright :class:`~playwright.sync_api.Browser` running Debian chromium.
page
    Function-scoped :class:`~playwright.sync_api.Page` in a fresh browser context, with a
    console-error collector (see :func:`browser_helpers.console_errors`). On teardown a
    screenshot, the console errors and the server log tail are printed if the test failed, the
    context is closed and every kernel of ``lab`` is shut down.

The helpers live in ``browser_helpers.py`` next to this file. Import them from there
(``from browser_helpers import open_notebook, run_cells``), not ``from conftest import ...``:
with several ``conftest.py`` outside packages, ``conftest`` can name another directory's one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

# Make ``import browser_helpers`` work under any ``--import-mode`` (prepend mode adds this
# directory to sys.path by itself; importlib mode does not).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from browser_helpers import (  # noqa: E402
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    VIEWPORT,
    JupyterLab,
    attach_console_log,
    screenshot,
    start_lab,
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``browser`` marker.

    Parameters
    ----------
    config : pytest.Config
        The pytest configuration object.
    """
    config.addinivalue_line(
        "markers", "browser: end-to-end test in JupyterLab with headless chromium (slow)"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Store each phase's report on the item, so fixtures can tell whether the test failed.

    Parameters
    ----------
    item : pytest.Item
        The test item.
    call : pytest.CallInfo
        Information about the phase that ran.

    Returns
    -------
    Any
        The report produced by the other hook implementations.
    """
    report = yield
    setattr(item, f"rtnb_report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """Run one JupyterLab server for the whole session.

    Parameters
    ----------
    tmp_path_factory : pytest.TempPathFactory
        Provides the server's temporary base directory.

    Yields
    ------
    JupyterLab
        The running server; stopped (with its kernels) on teardown.
    """
    server = start_lab(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    """Start the Playwright driver for the session.

    Yields
    ------
    Playwright
        The synchronous Playwright API object.
    """
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Launch Debian chromium headless once per session.

    Playwright's ``launch`` gives the browser a fresh temporary ``--user-data-dir`` that is
    deleted when the browser closes.

    Parameters
    ----------
    playwright_instance : Playwright
        The Playwright driver.

    Yields
    ------
    Browser
        The launched browser.
    """
    if not CHROMIUM_PATH.exists():
        pytest.fail(
            f"{CHROMIUM_PATH} not found: browser tests need Debian chromium; "
            "install it with `apt-get install -y chromium` (do not run `playwright install`).",
            pytrace=False,
        )
    instance = playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM_PATH), args=list(CHROMIUM_ARGS), headless=True
    )
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def page(browser: Browser, lab: JupyterLab, request: pytest.FixtureRequest) -> Iterator[Page]:
    """Open a page in a fresh browser context, collecting console errors.

    On teardown: a screenshot and the console errors are saved/printed if the test failed, the
    context is closed and all kernels of ``lab`` are shut down (so background streams stop).

    Parameters
    ----------
    browser : Browser
        The session browser.
    lab : JupyterLab
        The session JupyterLab server.
    request : pytest.FixtureRequest
        The requesting test, used to detect failures.

    Yields
    ------
    Page
        The page.
    """
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    new_page = context.new_page()
    log = attach_console_log(new_page)
    try:
        yield new_page
    finally:
        report = getattr(request.node, "rtnb_report_call", None)
        if report is not None and report.failed:
            safe = re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-120:]
            shot = lab.base_dir / "failures" / f"{safe}.png"
            try:
                screenshot(new_page, shot)
                print(f"\n[browser] failure screenshot: {shot}")
            except Exception as exc:
                print(f"\n[browser] failure screenshot failed: {exc}")
            print("[browser] console errors:\n  " + "\n  ".join(log.errors or ["<none>"]))
            print(f"[browser] server log tail:\n{lab.log_tail(30)}")
        context.close()
        lab.shutdown_kernels()
