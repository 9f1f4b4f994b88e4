"""Helpers for browser tests: drive a real JupyterLab with Playwright and Debian chromium.

The fixtures using these (``lab``, ``browser``, ``page``) are in ``conftest.py`` next to this file.
Import helpers with ``from browser_helpers import ...``.

Server
    :class:`JupyterLab` (``add_notebook``, ``sync_kernel_env``, ``shutdown_kernels``, ``api``,
    ``log_tail``, ``stop``), :func:`start_lab`.
Notebook
    :func:`open_notebook`, :func:`run_cells`, :func:`run_all_above_last_cell`, :func:`run_all`,
    :func:`wait_for_kernel_idle`, :func:`execution_counts`, :func:`cell_errors`,
    :func:`notebook_errors`, :func:`cell_text`, :func:`notebook_outputs`.
Bokeh
    :func:`wait_for_bokeh`, :func:`bokeh_cds_lengths`, :func:`bokeh_sources`,
    :func:`bokeh_titles`.
ipywidgets
    :func:`set_slider`, :func:`slider_value`.
Other
    :func:`wait_until`, :func:`screenshot`, :func:`console_errors`, :func:`attach_console_log`.

Notes
-----
* JupyterLab is started with ``--LabApp.expose_app_in_browser=True`` so ``window.jupyterapp`` (the
  ``JupyterLab`` application object) exists in the page; without it, JupyterLab 4.6 does not
  expose the app. The helpers drive notebooks through ``jupyterapp.commands``.
* ipykernel 6 handles comm messages (ipywidgets updates) on the shell channel, so they queue
  behind a running cell: with a last cell ``await asyncio.sleep(12)`` running, a slider change
  reached the kernel only when that cell finished (measured: 12.3 s later). A notebook whose
  last cell ``await``-s a long stream must be run with :func:`run_all_above_last_cell` (or
  :func:`run_cells` with ``upto=-1``) before widgets are driven from the page.
* ``window.Bokeh.documents`` never forgets a document, e.g. the plot of a re-executed cell; the
  Bokeh helpers therefore look only at documents with a root view attached to the DOM unless
  ``live_only=False``.
* :data:`LAB_SETTINGS` turns off the news/update toast and sets notebook ``windowingMode`` to
  ``"none"`` so every cell (and its outputs) is in the DOM.
* ``RTNB_*`` environment variables: the server inherits ``os.environ`` at startup, and
  :func:`open_notebook` additionally copies the *current* ``RTNB_*`` variables into the kernel
  spec ``env`` (see :meth:`JupyterLab.sync_kernel_env`), so ``monkeypatch.setenv("RTNB_X", ...)``
  before :func:`open_notebook` reaches the kernel that notebook starts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
)

T = TypeVar("T")

#: Debian's chromium; Playwright's own browser downloads are not available here.
CHROMIUM_PATH = Path(os.environ.get("RTNB_CHROMIUM", "/usr/bin/chromium"))
#: Command-line switches for chromium (Playwright adds its own fresh ``--user-data-dir``).
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Prefix of the environment variables forwarded to kernels by :meth:`JupyterLab.sync_kernel_env`.
KERNEL_ENV_PREFIX = "RTNB_"
#: Browser viewport used by the ``page`` fixture.
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}

#: JupyterLab user settings written into the isolated settings dir (keeps the UI deterministic).
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # No "Would you like to get notified about official Jupyter news?" toast, no update check.
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    # Attach every cell to the DOM, so outputs of off-screen cells are rendered and queryable.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# JavaScript snippet defining ``panel``: the NotebookPanel for ``name`` (or the current widget).
_JS_PANEL = """
const app = window.jupyterapp;
if (!app) { throw new Error('window.jupyterapp is not defined (expose_app_in_browser?)'); }
let panel = null;
for (const w of app.shell.widgets('main')) {
    if (w.content && w.sessionContext && w.context &&
        (name == null || w.context.path === name)) { panel = w; }
}
if (panel === null) { throw new Error('no notebook panel open for ' + name); }
"""


def _js_fn(body: str, arg: str = "name") -> str:
    """Wrap *body* in an arrow function taking *arg* and preceded by the panel lookup.

    Parameters
    ----------
    body : str
        JavaScript statements that may use ``app``, ``panel`` and *arg*.
    arg : str
        Name of the single (possibly destructured) argument of the arrow function.

    Returns
    -------
    str
        JavaScript source suitable for :meth:`playwright.sync_api.Page.evaluate`.
    """
    return f"async ({arg}) => {{\n{_JS_PANEL}\n{body}\n}}"


# --------------------------------------------------------------------------------------------
# Generic polling
# --------------------------------------------------------------------------------------------


def wait_until(
    fn: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.2,
    message: str = "condition not met",
) -> T:
    """Call *fn* until it returns a truthy value and return that value.

    Exceptions raised by *fn* count as "not yet"; the last one is chained to the timeout error.

    Parameters
    ----------
    fn : Callable[[], T]
        Zero-argument callable polled for a truthy result.
    timeout : float
        Seconds before giving up.
    interval : float
        Seconds between calls.
    message : str
        Text of the :class:`AssertionError` raised on timeout.

    Returns
    -------
    T
        The first truthy value returned by *fn*.

    Raises
    ------
    AssertionError
        If *fn* did not return a truthy value within *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_exc: BaseException | None = None
    while True:
        try:
            value = fn()
            last_value, last_exc = value, None
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"{message} (after {timeout:.1f}s; last value: {last_value!r})"
            raise AssertionError(detail) from last_exc
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Returns
    -------
    int
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pids_with_arg(needle: str) -> list[int]:
    """Return ids of processes whose command line contains *needle*.

    Parameters
    ----------
    needle : str
        Substring searched in ``/proc/<pid>/cmdline`` (arguments joined by spaces).

    Returns
    -------
    list[int]
        Matching process ids (never the current process).
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


@dataclass
class JupyterLab:
    """A running JupyterLab server with isolated directories.

    Attributes
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:45678`` (no trailing slash).
    token : str
        The server's authentication token.
    root_dir : pathlib.Path
        ``ServerApp.root_dir``; notebooks are added here by :meth:`add_notebook`.
    base_dir : pathlib.Path
        Temporary directory holding the root, config, data, runtime, settings and log.
    log_path : pathlib.Path
        File receiving the server's stdout and stderr.
    process : subprocess.Popen
        The server process.
    """

    url: str
    token: str = field(repr=False)
    root_dir: Path
    base_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    _kernel_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def runtime_dir(self) -> Path:
        """Path: the isolated ``JUPYTER_RUNTIME_DIR`` (kernel connection files live here)."""
        return self.base_dir / "runtime"

    @property
    def kernelspec_dir(self) -> Path:
        """Path: the ``python3`` kernel spec that shadows the venv's one (see ``JUPYTER_PATH``)."""
        return self.base_dir / "data" / "kernels" / "python3"

    # -- HTTP API ------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the Jupyter server REST API.

        Parameters
        ----------
        method : str
            HTTP method, e.g. ``"GET"``.
        path : str
            Path below the base URL, e.g. ``"/api/kernels"``.
        body : Any
            JSON-serialisable request body, or ``None``.
        timeout : float
            Socket timeout in seconds.

        Returns
        -------
        Any
            The decoded JSON response, or ``None`` for an empty response.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def is_up(self) -> bool:
        """Tell whether ``/api/status`` answers.

        Returns
        -------
        bool
            ``True`` if the server answered with HTTP 200.
        """
        query = urllib.parse.urlencode({"token": self.token})
        try:
            with urllib.request.urlopen(f"{self.url}/api/status?{query}", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- notebooks and kernels -----------------------------------------------------------

    def add_notebook(self, nb: str | os.PathLike[str] | Mapping[str, Any], name: str) -> Path:
        """Put a notebook into :attr:`root_dir`.

        Parameters
        ----------
        nb : str or os.PathLike or Mapping
            Path of an ``.ipynb`` file to copy, a JSON string, or a notebook mapping
            (e.g. an ``nbformat.NotebookNode``). A missing ``kernelspec`` is set to ``python3``
            so JupyterLab does not ask for a kernel.
        name : str
            Relative path inside the root dir, e.g. ``"demo.ipynb"`` or ``"sub/demo.ipynb"``.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        if isinstance(nb, Mapping):
            content: dict[str, Any] = json.loads(json.dumps(nb))
        elif isinstance(nb, str) and nb.lstrip().startswith("{"):
            content = json.loads(nb)
        else:
            content = json.loads(Path(nb).read_text(encoding="utf-8"))
        content.setdefault("metadata", {}).setdefault(
            "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
        )
        target = self.root_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content, indent=1), encoding="utf-8")
        return target

    def notebook_url(self, name: str) -> str:
        """Return the browser URL that opens notebook *name* in a reset workspace.

        Parameters
        ----------
        name : str
            Notebook path relative to :attr:`root_dir`.

        Returns
        -------
        str
            ``{url}/lab/tree/{name}?reset&token={token}``.
        """
        quoted = urllib.parse.quote(name)
        return f"{self.url}/lab/tree/{quoted}?reset&token={self.token}"

    def sync_kernel_env(self, prefix: str = KERNEL_ENV_PREFIX) -> dict[str, str]:
        """Write the current ``os.environ[prefix*]`` into the ``python3`` kernel spec's ``env``.

        Kernels started afterwards (e.g. by opening a notebook) get these variables even when
        they were set after the server started. Variables removed from ``os.environ`` since the
        server started are set to the empty string.

        Parameters
        ----------
        prefix : str
            Only variables whose name starts with this are forwarded.

        Returns
        -------
        dict[str, str]
            The ``env`` written into the kernel spec.
        """
        env = {k: v for k, v in os.environ.items() if k.startswith(prefix)}
        for key in self._kernel_env:
            env.setdefault(key, "")
        self._kernel_env = dict(env)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "metadata": {"debugger": True},
            "env": env,
        }
        self.kernelspec_dir.mkdir(parents=True, exist_ok=True)
        (self.kernelspec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
        return env

    def kernels(self) -> list[dict[str, Any]]:
        """List the running kernels.

        Returns
        -------
        list[dict[str, Any]]
            The ``/api/kernels`` models.
        """
        return list(self.api("GET", "/api/kernels"))

    def shutdown_kernels(self) -> None:
        """Delete every session and shut down every kernel of this server."""
        for session in self.api("GET", "/api/sessions"):
            try:
                self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)
            except urllib.error.HTTPError:
                pass
        for kernel in self.kernels():
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
            except urllib.error.HTTPError:
                pass

    # -- logs and shutdown ---------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        """Return the last lines of the server log.

        Parameters
        ----------
        lines : int
            How many lines.

        Returns
        -------
        str
            The tail of :attr:`log_path`.
        """
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "<no server log>"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and its kernels: ``/api/shutdown``, then SIGTERM, then SIGKILL.

        Kernels still alive afterwards (found by their connection file in :attr:`runtime_dir`)
        are killed too.

        Parameters
        ----------
        timeout : float
            Seconds to wait for each escalation step.
        """
        if self.process.poll() is None:
            try:
                self.api("POST", "/api/shutdown", timeout=5)
            except (urllib.error.URLError, OSError):
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    self.process.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    self.process.send_signal(sig)
            else:
                self.process.wait(timeout=timeout)
        for pid in _pids_with_arg(str(self.runtime_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_lab(base_dir: Path, startup_timeout: float = 90.0) -> JupyterLab:
    """Start ``python -m jupyter lab`` in *base_dir* and wait until its API answers.

    Parameters
    ----------
    base_dir : pathlib.Path
        Empty temporary directory for the server's files.
    startup_timeout : float
        Seconds to wait for ``/api/status``.

    Returns
    -------
    JupyterLab
        The running server.
    """
    dirs = {n: base_dir / n for n in ("root", "config", "data", "runtime", "settings", "ws")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    for plugin, settings in LAB_SETTINGS.items():
        target = dirs["settings"] / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings), encoding="utf-8")

    token = secrets.token_hex(24)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_PATH=os.pathsep.join(filter(None, [str(dirs["data"]), env.get("JUPYTER_PATH")])),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["ws"]),
        PYTHONUNBUFFERED="1",
        # the server reads its token here: on the command line, `ps` would show it to anyone
        JUPYTER_TOKEN=token,
    )
    log_path = base_dir / "jupyterlab.log"
    for attempt in range(3):  # retry only if another process grabbed the free port meanwhile
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={dirs['root']}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--ServerApp.shutdown_no_activity_timeout=0",
        ]
        with log_path.open("wb") as log:
            # Own session: a Ctrl-C in the terminal reaches pytest (which stops the server via
            # the fixture teardown) but not the server, which would ask for confirmation.
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        lab = JupyterLab(
            url=f"http://127.0.0.1:{port}",
            token=token,
            root_dir=dirs["root"],
            base_dir=base_dir,
            log_path=log_path,
            process=process,
        )
        lab.sync_kernel_env()
        deadline = time.monotonic() + startup_timeout
        while not lab.is_up():
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            return lab
        exited = process.poll() is not None
        lab.stop(timeout=5)
        if exited and "is not available" in lab.log_tail(5) and attempt < 2:
            continue
        why = "exited" if exited else f"was not up after {startup_timeout:.0f}s"
        shown = " ".join(cmd).replace(token, "<token>")
        pytest.fail(
            f"JupyterLab {why}: {shown}\nlog {log_path} (tail):\n{lab.log_tail(80)}",
            pytrace=False,
        )
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


@dataclass
class ConsoleLog:
    """Console messages and uncaught page errors collected from one page.

    Attributes
    ----------
    messages : list[str]
        Every console message as ``"<type>: <text>"``.
    errors : list[str]
        Console errors and uncaught exceptions (``pageerror``).
    """

    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        """Record a console message.

        Parameters
        ----------
        msg : ConsoleMessage
            The Playwright console message.
        """
        self.messages.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            self.errors.append(msg.text)

    def on_page_error(self, error: Exception) -> None:
        """Record an uncaught exception in the page.

        Parameters
        ----------
        error : Exception
            The Playwright error.
        """
        self.errors.append(f"pageerror: {error}")


_CONSOLE_LOGS: weakref.WeakKeyDictionary[Page, ConsoleLog] = weakref.WeakKeyDictionary()


def attach_console_log(page: Page) -> ConsoleLog:
    """Start collecting console messages of *page* (idempotent).

    Parameters
    ----------
    page : Page
        The page to watch.

    Returns
    -------
    ConsoleLog
        The collector; also available later through :func:`console_errors`.
    """
    if page not in _CONSOLE_LOGS:
        log = ConsoleLog()
        page.on("console", log.on_console)
        page.on("pageerror", log.on_page_error)
        _CONSOLE_LOGS[page] = log
    return _CONSOLE_LOGS[page]


def console_errors(page: Page) -> list[str]:
    """Return console errors and uncaught exceptions seen so far on *page*.

    Parameters
    ----------
    page : Page
        A page created by the ``page`` fixture or passed to :func:`attach_console_log`.

    Returns
    -------
    list[str]
        The error texts, oldest first.
    """
    return list(attach_console_log(page).errors)


# --------------------------------------------------------------------------------------------
# Notebook helpers
# --------------------------------------------------------------------------------------------


def wait_for_kernel_idle(page: Page, name: str | None = None, timeout: float = 60.0) -> None:
    """Wait until the notebook's kernel is connected and idle.

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.
    timeout : float
        Seconds to wait.
    """
    body = """
    const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
    """
    wait_until(
        lambda: page.evaluate(_js_fn(body), name),
        timeout=timeout,
        message=f"kernel of {name or 'the notebook'} not idle",
    )


def open_notebook(page: Page, lab: JupyterLab, name: str, timeout: float = 90.0) -> None:
    """Open notebook *name* in JupyterLab and wait for its panel and an idle kernel.

    The current ``RTNB_*`` environment is forwarded to the kernel first
    (:meth:`JupyterLab.sync_kernel_env`). The workspace is reset, so panels from earlier tests
    are not restored.

    Parameters
    ----------
    page : Page
        The page to navigate.
    lab : JupyterLab
        The server; the notebook must already be in :attr:`JupyterLab.root_dir`.
    name : str
        Notebook path relative to the root dir.
    timeout : float
        Seconds to wait for the UI and the kernel.
    """
    lab.sync_kernel_env()
    page.goto(lab.notebook_url(name), timeout=timeout * 1000)
    page.wait_for_function(
        "() => window.jupyterapp !== undefined", timeout=timeout * 1000, polling=200
    )
    body = """
    if (!panel.context.isReady || panel.content.widgets.length === 0) { return false; }
    app.shell.activateById(panel.id);
    return true;
    """
    wait_until(
        lambda: page.evaluate(_js_fn(body), name),
        timeout=timeout,
        message=f"notebook panel for {name} not ready",
    )
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=timeout * 1000)
    wait_for_kernel_idle(page, name, timeout=timeout)


def run_cells(
    page: Page,
    upto: int | None = None,
    *,
    start: int = 0,
    name: str | None = None,
    wait: bool = True,
    timeout: float = 60.0,
    check: bool = True,
) -> bool:
    """Run cells ``[start, upto)`` of a notebook through JupyterLab's own commands.

    ``start == 0`` uses "Run All Above Selected Cell" (``notebook:run-all-above`` with cell
    *upto* active) or ``notebook:run-all-cells``; otherwise the range is selected and run with
    ``notebook:run-cell``. Cells run in order and execution stops at the first error.

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    upto : int or None
        End of the range (exclusive); negative values count from the end like Python slices
        (``-1``: every cell except the last). ``None`` means through the last cell.
    start : int
        First cell to run; negative values count from the end.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.
    wait : bool
        Wait until every requested cell has finished (its execute reply arrived). If ``False``,
        the cells are only queued and ``True`` is returned at once.
    timeout : float
        Seconds to wait when *wait* is true.
    check : bool
        When waiting, raise if a cell failed, listing :func:`cell_errors`.

    Returns
    -------
    bool
        JupyterLab's verdict (``False`` if a cell raised and execution stopped).

    Raises
    ------
    AssertionError
        If *check* and a cell failed, or the cells did not finish within *timeout*.
    """
    body = """
    const nb = panel.content;
    const n = nb.widgets.length;
    const clamp = i => (i < 0 ? Math.max(n + i, 0) : Math.min(i, n));
    const stop = (upto === null) ? n : clamp(upto);
    const begin = clamp(start);
    if (stop <= begin) { return true; }
    app.shell.activateById(panel.id);
    nb.deselectAll();
    let command = 'notebook:run-cell';
    if (begin === 0 && stop === n) {
        command = 'notebook:run-all-cells';
    } else if (begin === 0) {
        nb.activeCellIndex = stop;
        command = 'notebook:run-all-above';
    } else {
        nb.activeCellIndex = begin;
        for (let i = begin; i < stop; i++) { nb.select(nb.widgets[i]); }
    }
    const done = app.commands.execute(command);
    if (!wait) { return true; }
    const timer = new Promise(resolve => setTimeout(() => resolve('timeout'), timeoutMs));
    return await Promise.race([done, timer]);
    """
    args = {
        "name": name,
        "start": start,
        "upto": upto,
        "wait": wait,
        "timeoutMs": int(timeout * 1000),
    }
    result = page.evaluate(_js_fn(body, "{name, start, upto, wait, timeoutMs}"), args)
    what = f"cells [{start}:{'' if upto is None else upto}]"
    if result == "timeout":
        raise AssertionError(f"{what} did not finish within {timeout}s")
    if wait and check and result is not True:
        errors = "\n---\n".join(cell_errors(page)) or "<no error output>"
        raise AssertionError(f"running {what} failed: {result!r}\n{errors}")
    return bool(result)


def run_all_above_last_cell(page: Page, name: str | None = None, timeout: float = 60.0) -> bool:
    """Run every cell except the last one and wait for them (see :func:`run_cells`).

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.
    timeout : float
        Seconds to wait.

    Returns
    -------
    bool
        ``True`` if all those cells succeeded.
    """
    return run_cells(page, upto=-1, name=name, timeout=timeout)


def run_all(page: Page, name: str | None = None) -> None:
    """Queue every cell for execution without waiting (the last cell may block for long).

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.
    """
    run_cells(page, upto=None, name=name, wait=False)


def notebook_outputs(
    page: Page, name: str | None = None, cells: Sequence[int] | None = None
) -> list[list[dict[str, Any]]]:
    """Return cells' outputs from the notebook model (nbformat JSON).

    Outputs can be large (``output_notebook(INLINE)`` emits megabytes of JavaScript, which takes
    about a second to transfer): prefer :func:`cell_text` or :func:`notebook_errors`, or pass
    *cells*.

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.
    cells : Sequence[int] or None
        Indices of the cells wanted (negative counts from the end); ``None`` means all.

    Returns
    -------
    list[list[dict[str, Any]]]
        One list of output dicts per requested cell (empty for markdown/raw cells).
    """
    body = """
    const all = panel.content.widgets;
    const wanted = (cells === null) ? all.map((_, i) => i)
        : cells.map(i => (i < 0 ? all.length + i : i));
    return wanted.map(i => {
        const outputs = all[i] && all[i].model.outputs;
        return outputs ? outputs.toJSON() : [];
    });
    """
    wanted = None if cells is None else list(cells)
    return list(page.evaluate(_js_fn(body, "{name, cells}"), {"name": name, "cells": wanted}))


def execution_counts(page: Page, name: str | None = None) -> list[int | None]:
    """Return every cell's execution count (``None``: never run, running or not a code cell).

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.

    Returns
    -------
    list[int or None]
        One entry per cell.
    """
    body = "return panel.content.widgets.map(c => c.model.executionCount ?? null);"
    return list(page.evaluate(_js_fn(body), name))


def cell_text(page: Page, index: int, name: str | None = None) -> str:
    """Return the plain text a cell printed: stream text, ``text/plain`` results and errors.

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    index : int
        Cell index (negative counts from the end).
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.

    Returns
    -------
    str
        The concatenated text (error outputs as ``"ename: evalue"``).
    """
    body = """
    const all = panel.content.widgets;
    const cell = all[index < 0 ? all.length + index : index];
    if (!cell || !cell.model.outputs) { return ''; }
    const parts = [];
    for (let i = 0; i < cell.model.outputs.length; i++) {
        const out = cell.model.outputs.get(i);
        const raw = out.toJSON();
        if (raw.output_type === 'stream') {
            parts.push(Array.isArray(raw.text) ? raw.text.join('') : raw.text);
        } else if (raw.output_type === 'error') {
            parts.push(raw.ename + ': ' + raw.evalue + '\\n');
        } else if (out.data && out.data['text/plain'] !== undefined) {
            const t = out.data['text/plain'];
            parts.push((Array.isArray(t) ? t.join('') : t) + '\\n');
        }
    }
    return parts.join('');
    """
    return str(page.evaluate(_js_fn(body, "{name, index}"), {"name": name, "index": index}))


def notebook_errors(page: Page, name: str | None = None) -> list[str]:
    """Return ``"ename: evalue"`` of every error output in the notebook model.

    Unlike :func:`cell_errors` this reads the model, so it ignores stderr streams (e.g. warnings).

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.

    Returns
    -------
    list[str]
        One entry per error output, in cell order.
    """
    body = """
    const errors = [];
    for (const cell of panel.content.widgets) {
        const outputs = cell.model.outputs;
        if (!outputs) { continue; }
        for (let i = 0; i < outputs.length; i++) {
            const out = outputs.get(i);
            if (out.type === 'error') {
                const raw = out.toJSON();
                errors.push(raw.ename + ': ' + raw.evalue);
            }
        }
    }
    return errors;
    """
    return list(page.evaluate(_js_fn(body), name))


def cell_errors(page: Page) -> list[str]:
    """Return the text of every error and stderr output shown in the page.

    Error outputs (tracebacks) and stderr streams are both rendered by JupyterLab with MIME type
    ``application/vnd.jupyter.stderr``.

    Parameters
    ----------
    page : Page
        The JupyterLab page.

    Returns
    -------
    list[str]
        The texts, in document order.
    """
    selector = (
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
    )
    return [text.strip() for text in page.locator(selector).all_inner_texts()]


# --------------------------------------------------------------------------------------------
# Bokeh helpers (BokehJS documents rendered by jupyter_bokeh's BokehModel or show())
# --------------------------------------------------------------------------------------------

# Arrow-function prefix binding ``docs``: the BokehJS documents to inspect. With ``liveOnly``,
# only documents with a root view attached to the DOM (``window.Bokeh.documents`` never drops
# documents, e.g. those of re-executed cells, and jupyter_bokeh's BokehModel and notebook
# ``show()`` both render through ``add_document_standalone``, which sets ``views_manager``).
_JS_BOKEH_DOCS = """(liveOnly) => {
    const B = window.Bokeh;
    if (!B || !B.documents) { return []; }
    const isLive = doc => doc.views_manager != null &&
        doc.views_manager.roots.some(v => v.el != null && v.el.isConnected);
    const docs = B.documents.filter(doc => !liveOnly || isLive(doc));
"""


def _bokeh_eval(page: Page, body: str, live_only: bool) -> Any:
    """Evaluate *body* (which may use ``docs`` and ``B``) over the page's BokehJS documents.

    Parameters
    ----------
    page : Page
        The page.
    body : str
        JavaScript statements ending with a ``return``.
    live_only : bool
        Only documents currently rendered in the DOM.

    Returns
    -------
    Any
        The value returned by *body*.
    """
    return page.evaluate(_JS_BOKEH_DOCS + body + "\n}", live_only)


def bokeh_sources(page: Page, live_only: bool = True) -> list[list[dict[str, Any]]]:
    """Describe every columnar data source of every BokehJS document in the page.

    Parameters
    ----------
    page : Page
        The page.
    live_only : bool
        Skip documents that are no longer rendered (e.g. outputs of re-executed cells).

    Returns
    -------
    list[list[dict[str, Any]]]
        Per document (``window.Bokeh.documents`` order), dicts with ``id``, ``type``, ``name``
        and ``length`` (``get_length()``).
    """
    body = """
    return docs.map(doc => {
        const out = [];
        for (const m of doc.all_models) {
            if (typeof m.get_length === 'function' && 'data' in m) {
                out.push({id: m.id, type: m.type, name: m.name ?? null,
                          length: m.get_length() ?? 0});
            }
        }
        return out;
    });
    """
    return list(_bokeh_eval(page, body, live_only))


def bokeh_page_acks(page: Page, live_only: bool = True) -> list[dict[str, Any]]:
    """The rtnb ``PageAck`` model of every BokehJS document: ``sent``, ``applied``, ``fixed``.

    ``fixed`` says how the page was made to apply multi-event PATCH-DOCs (``"proto"``,
    ``"doc"``, ``"none"``; ``""`` before the page script ran): see ``rtnb.viz._bokeh``.
    """
    body = """
    const out = [];
    for (const doc of docs) {
        for (const m of doc.all_models) {
            if (String(m.type).endsWith("PageAck")) {
                out.push({sent: m.sent, applied: m.applied, fixed: m.fixed});
            }
        }
    }
    return out;
    """
    return list(_bokeh_eval(page, body, live_only))


def bokeh_cds_lengths(page: Page, live_only: bool = True) -> list[list[int]]:
    """Return ``get_length()`` of every ColumnDataSource, per BokehJS document.

    Parameters
    ----------
    page : Page
        The page.
    live_only : bool
        Skip documents that are no longer rendered (e.g. outputs of re-executed cells).

    Returns
    -------
    list[list[int]]
        One list per document in ``window.Bokeh.documents``; empty if BokehJS is not loaded.
    """
    return [[int(src["length"]) for src in doc] for doc in bokeh_sources(page, live_only)]


def bokeh_titles(page: Page, live_only: bool = True) -> list[str]:
    """Return the title text of every plot in every BokehJS document.

    Parameters
    ----------
    page : Page
        The page.
    live_only : bool
        Skip documents that are no longer rendered (e.g. outputs of re-executed cells).

    Returns
    -------
    list[str]
        Title texts (plots without a title are skipped).
    """
    body = """
    const out = [];
    for (const doc of docs) {
        for (const m of doc.all_models) {
            const t = m.title;
            if (t != null && typeof t === 'object' && typeof t.text === 'string' &&
                'renderers' in m) {
                out.push(t.text);
            }
        }
    }
    return out;
    """
    return list(_bokeh_eval(page, body, live_only))


def wait_for_bokeh(page: Page, timeout: float = 30.0) -> int:
    """Wait until at least one BokehJS document is rendered in the DOM, idle and visible.

    Parameters
    ----------
    page : Page
        The page.
    timeout : float
        Seconds to wait.

    Returns
    -------
    int
        The number of live, idle documents.
    """
    body = "return docs.filter(d => d.roots().length > 0 && d.is_idle).length;"
    count = wait_until(
        lambda: _bokeh_eval(page, body, True),
        timeout=timeout,
        message="no rendered Bokeh document",
    )
    page.locator(".jp-OutputArea-output .bk-Canvas canvas").first.wait_for(
        state="visible", timeout=timeout * 1000
    )
    return int(count)


# --------------------------------------------------------------------------------------------
# ipywidgets helpers
# --------------------------------------------------------------------------------------------


def _slider(page: Page, description: str | None, index: int) -> Locator:
    """Locate an ipywidgets 8 slider (IntSlider, FloatSlider, SelectionSlider, ...).

    Parameters
    ----------
    page : Page
        The page.
    description : str or None
        Exact ``description`` label of the slider; ``None`` matches any slider.
    index : int
        Which of the matching sliders.

    Returns
    -------
    Locator
        The slider's container (``.widget-slider``).
    """
    sliders = page.locator(".widget-slider")
    if description is not None:
        label = page.locator(
            ".widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$")
        )
        sliders = sliders.filter(has=label)
    return sliders.nth(index)


def slider_value(page: Page, description: str | None = None, index: int = 0) -> tuple[float, str]:
    """Read a slider's handle position and readout.

    Parameters
    ----------
    page : Page
        The page.
    description : str or None
        Exact description label; ``None`` matches any slider.
    index : int
        Which of the matching sliders.

    Returns
    -------
    tuple[float, str]
        ``aria-valuenow`` of the noUiSlider handle (the value; the option index for selection
        sliders) and the readout text ("" if the readout is hidden).
    """
    slider = _slider(page, description, index)
    handle = slider.locator(".noUi-handle").first
    now = float(handle.get_attribute("aria-valuenow") or "nan")
    readout = slider.locator(".widget-readout")
    text = readout.first.inner_text().strip() if readout.count() else ""
    return now, text


def set_slider(
    page: Page,
    value: float | str,
    *,
    description: str | None = None,
    index: int = 0,
    max_steps: int = 500,
    timeout: float = 10.0,
) -> str:
    """Move an ipywidgets slider like a keyboard user (arrow keys on the noUiSlider handle).

    Every key press updates the widget model, which syncs to the kernel like a drag would.

    Parameters
    ----------
    page : Page
        The page.
    value : float or str
        Target: a number is compared with the handle's ``aria-valuenow`` (the value for
        IntSlider/FloatSlider, the option index for SelectionSlider); a string is compared
        with the readout text (e.g. a SelectionSlider label).
    description : str or None
        Exact description label of the slider; ``None`` matches any slider.
    index : int
        Which of the matching sliders.
    max_steps : int
        Maximum number of key presses.
    timeout : float
        Seconds to wait for the slider to appear.

    Returns
    -------
    str
        The readout text after moving.

    Raises
    ------
    AssertionError
        If the target cannot be reached.
    """
    slider = _slider(page, description, index)
    handle = slider.locator(".noUi-handle").first
    handle.wait_for(state="visible", timeout=timeout * 1000)
    handle.focus()
    if isinstance(value, str):
        # Walk right from where the handle is, then left: every step is a change the kernel
        # must process, so do not sweep from one end.
        for key in ("ArrowRight", "ArrowLeft"):
            for _ in range(max_steps):
                now, text = slider_value(page, description, index)
                if text == value:
                    return text
                handle.press(key)
                if slider_value(page, description, index)[0] == now:
                    break
        raise AssertionError(f"slider {description or index}: no option with readout {value!r}")
    target = float(value)
    for _ in range(max_steps):
        now, text = slider_value(page, description, index)
        if abs(now - target) <= 1e-9 * max(1.0, abs(target)):
            return text
        handle.press("ArrowRight" if now < target else "ArrowLeft")
        after = slider_value(page, description, index)[0]
        if after == now or (after - target) * (now - target) < 0:
            break  # stuck at a bound, or the step jumps over the target
    now, text = slider_value(page, description, index)
    raise AssertionError(f"slider {description or index}: cannot reach {value!r} (at {now})")


# --------------------------------------------------------------------------------------------
# Screenshots
# --------------------------------------------------------------------------------------------


def screenshot(page: Page, path: str | os.PathLike[str], *, full_page: bool = False) -> Path:
    """Save a PNG screenshot of *page*, creating parent directories.

    Parameters
    ----------
    page : Page
        The page.
    path : str or os.PathLike
        Destination file.
    full_page : bool
        Capture the whole scrollable page (JupyterLab itself does not scroll, its panels do).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=full_page)
    return target


__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_PATH",
    "ConsoleLog",
    "JupyterLab",
    "attach_console_log",
    "bokeh_cds_lengths",
    "bokeh_sources",
    "bokeh_titles",
    "cell_errors",
    "cell_text",
    "console_errors",
    "execution_counts",
    "notebook_errors",
    "notebook_outputs",
    "open_notebook",
    "run_all",
    "run_all_above_last_cell",
    "run_cells",
    "screenshot",
    "set_slider",
    "slider_value",
    "start_lab",
    "wait_for_bokeh",
    "wait_for_kernel_idle",
    "wait_until",
]


# --------------------------------------------------------------------------------------------
# Added for the live-dashboard tests (test_dashboard.py): kernel messages seen on the page's
# websockets, live Bokeh figures with update counters, the rtnb status widget, the JS heap.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelMessage:
    """One message a kernel sent to the page, as it crossed the websocket.

    Attributes
    ----------
    channel : str
        ``"iopub"``, ``"shell"``, ...
    msg_type : str
        The Jupyter message type (``"comm_msg"``, ``"status"``, ...).
    sent : float
        The kernel's header ``date``: when the kernel sent it, in seconds since the epoch
        (comparable with :func:`time.time` on this machine).
    received : float
        :func:`time.time` when Playwright handed the frame to Python (the sync API delivers
        events only while Python is inside a Playwright call, so this can lag).
    comm_id : str or None
        The comm (widget model id) of a ``comm_msg``.
    kind : str
        ``"bokeh-patch"``: the content part of a Bokeh PATCH-DOC (or the whole PATCH-DOC
        in one ``rtnb_patch`` message); ``"bokeh"``: the header/metadata parts of a
        PATCH-DOC sent in jupyter_bokeh's three parts; ``"widget"``: an
        ipywidgets state update; ``"comm"``: another comm message; ``"other"``: not a comm.
    events : tuple[str, ...]
        For ``"bokeh-patch"``: the Bokeh event kinds (``"ColumnsStreamed"``,
        ``"ColumnsPatched"``, ``"ModelChanged"``, ...).
    size : int
        Bytes in the websocket frame.
    """

    channel: str
    msg_type: str
    sent: float
    received: float
    comm_id: str | None
    kind: str
    events: tuple[str, ...]
    size: int


def parse_kernel_frame(payload: str | bytes) -> KernelMessage | None:
    """Decode a kernel websocket frame (JSON text, or the binary ``v1.kernel.websocket`` form).

    Parameters
    ----------
    payload : str or bytes
        The frame as Playwright reports it.

    Returns
    -------
    KernelMessage or None
        The decoded message; ``None`` if the frame is not a kernel message.
    """
    from datetime import datetime

    received = time.time()
    try:
        if isinstance(payload, str):
            msg = json.loads(payload)
            channel = str(msg.get("channel", ""))
            header, content = msg.get("header", {}), msg.get("content", {})
        else:
            # v1 protocol: n (u64 LE), n offsets (u64 LE); parts channel, header, parent
            # header, metadata, content, buffers... lie between consecutive offsets.
            count = int.from_bytes(payload[:8], "little")
            offsets = [int.from_bytes(payload[8 * i: 8 * i + 8], "little")
                       for i in range(1, count + 1)]
            parts = [payload[offsets[i]:offsets[i + 1]] for i in range(count - 1)]
            channel = parts[0].decode()
            header = json.loads(parts[1])
            content = json.loads(parts[4]) if len(parts) > 4 and parts[4] else {}
        sent = datetime.fromisoformat(str(header["date"])).timestamp()
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    msg_type = str(header.get("msg_type", ""))
    comm_id = content.get("comm_id") if isinstance(content, dict) else None
    kind, events = "other", ()
    if msg_type == "comm_msg" and isinstance(content, dict):
        data = content.get("data") or {}
        # ipywidgets wraps a widget's custom message: {"method": "custom", "content": {...}}
        inner = data.get("content") if data.get("method") == "custom" else data
        inner = inner if isinstance(inner, dict) else {}
        if inner.get("msg") in ("patch", "rtnb_patch"):
            kind = "bokeh"
            body = inner.get("payload")
            if inner.get("msg") == "rtnb_patch":  # a whole PATCH-DOC in one comm message
                fragments = inner.get("fragments") or []
                body = fragments[-1] if fragments else None
            if isinstance(body, str) and '"events"' in body:
                kind = "bokeh-patch"
                try:
                    events = tuple(str(e.get("kind")) for e in json.loads(body)["events"])
                except (ValueError, KeyError, TypeError):
                    events = ("?",)
        elif data.get("method") in ("update", "echo_update"):
            kind = "widget"
        else:
            kind = "comm"
    return KernelMessage(channel=channel, msg_type=msg_type, sent=sent, received=received,
                         comm_id=comm_id if isinstance(comm_id, str) else None, kind=kind,
                         events=events, size=len(payload))


class KernelMessageLog:
    """Record every kernel message a page receives on its kernel websockets.

    Attach before the page opens the notebook (``page.on("websocket")`` sees only sockets
    opened afterwards). Select by the kernel's send time (:attr:`KernelMessage.sent`), which
    does not depend on when Playwright delivers the frame. Frames reach Python only while it
    is inside a Playwright call: wait with ``page.wait_for_timeout`` (or call :meth:`pump`)
    before reading.

    Examples
    --------
    ``log = KernelMessageLog(page)`` then ``open_notebook(...)``, later
    ``log.select(kind="bokeh-patch", sent_after=t0)``.
    """

    def __init__(self, page: Page) -> None:
        self.page = page
        self.messages: list[KernelMessage] = []
        self.sockets: list[str] = []
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: Any) -> None:
        url = str(ws.url)
        if "/api/kernels/" not in url or "/channels" not in url:
            return
        self.sockets.append(url)
        ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        message = parse_kernel_frame(payload)
        if message is not None:
            self.messages.append(message)

    def pump(self, ms: float = 50) -> None:
        """Let Playwright deliver the frames it holds (waits *ms* milliseconds in the page)."""
        self.page.wait_for_timeout(ms)

    def wait_for_sent(self, t: float, timeout: float = 180.0) -> None:
        """Wait until a message the kernel sent after *t* has reached the page.

        Kernel messages arrive in order, so every message sent up to *t* has arrived then.
        A busy page can lag the kernel by many seconds (frames wait in the browser until its
        main thread takes them): select by send time only after this returned. Needs the
        kernel to keep sending (the status widget refreshes every second while a source runs).

        Parameters
        ----------
        t : float
            Kernel send time, seconds since the epoch.
        timeout : float
            Seconds to wait.
        """
        wait_until(
            lambda: self.pump(100) or any(m.sent > t for m in reversed(self.messages)),
            timeout=timeout, interval=0.1,
            message=f"no kernel message sent after {t:.1f} reached the page")

    def select(
        self,
        *,
        kind: str | None = None,
        comm_id: str | None = None,
        sent_after: float | None = None,
        sent_before: float | None = None,
    ) -> list[KernelMessage]:
        """Return the recorded messages matching every given criterion.

        Parameters
        ----------
        kind : str or None
            :attr:`KernelMessage.kind` (``"comm_msg"`` selects every comm message).
        comm_id : str or None
            Only this comm.
        sent_after, sent_before : float or None
            Bounds on :attr:`KernelMessage.sent` (seconds since the epoch; after is
            exclusive, before inclusive).

        Returns
        -------
        list[KernelMessage]
            Matching messages, in arrival order.
        """
        out = []
        for m in list(self.messages):
            if kind == "comm_msg" and m.msg_type != "comm_msg":
                continue
            if kind not in (None, "comm_msg") and m.kind != kind:
                continue
            if comm_id is not None and m.comm_id != comm_id:
                continue
            if sent_after is not None and not m.sent > sent_after:
                continue
            if sent_before is not None and not m.sent <= sent_before:
                continue
            out.append(m)
        return out


# Arrow-function body (after _JS_BOKEH_DOCS) listing every plot and data table of the chosen
# documents; the first call on a source hooks its streaming/patching/change signals to a
# counter, so ``updates`` counts the changes the page applied since then.
_JS_BOKEH_FIGURES = """
    const watch = s => {
        if (s.__rtnb_watch == null) {
            const w = {updates: 0, last: 0};
            const bump = () => { w.updates += 1; w.last = performance.now(); };
            s.streaming.connect(bump);
            s.patching.connect(bump);
            s.change.connect(bump);
            s.__rtnb_watch = w;
        }
        return s.__rtnb_watch;
    };
    const lastX = s => {
        const x = s.data && s.data.x;
        return (x && x.length) ? Number(x[x.length - 1]) : null;
    };
    const out = [];
    for (const doc of docs) {
        const docIndex = B.documents.indexOf(doc);
        const live = doc.views_manager != null &&
            doc.views_manager.roots.some(v => v.el != null && v.el.isConnected);
        for (const m of doc.all_models) {
            let kind = null, sources = [];
            if ('renderers' in m && m.title != null && typeof m.title === 'object') {
                kind = 'plot';
                sources = m.renderers.map(r => r.data_source).filter(s => s != null);
            } else if (m.type === 'DataTable' && m.source != null) {
                kind = 'table';
                sources = [m.source];
            }
            if (kind === null) { continue; }
            const infos = sources.filter(s => typeof s.get_length === 'function').map(s => ({
                id: s.id, name: s.name ?? null, length: s.get_length() ?? 0,
                updates: watch(s).updates, last_update: watch(s).last, last_x: lastX(s)}));
            const xs = infos.map(i => i.last_x).filter(x => x !== null);
            out.push({doc: docIndex, live, kind, id: m.id,
                      title: kind === 'plot' ? (m.title.text ?? '') : '',
                      sources: infos,
                      rows: infos.reduce((a, i) => a + i.length, 0),
                      updates: infos.reduce((a, i) => a + i.updates, 0),
                      last_x: xs.length ? Math.max(...xs) : null});
        }
    }
    return out;
"""


def bokeh_figures(page: Page, live_only: bool = True) -> list[dict[str, Any]]:
    """Describe every plot and data table in the page's BokehJS documents, with update counts.

    The first call hooks every data source it finds (its ``streaming``, ``patching`` and
    ``change`` signals) to a counter kept in the page; later calls report how many changes
    the page applied to each source since then (sources added later are hooked when first
    seen). Lengths alone cannot show updates: patched sources (a bar chart, ``emit="update"``
    windows) do not grow, and ``rollover`` caps the others.

    Parameters
    ----------
    page : Page
        The page.
    live_only : bool
        Only documents currently rendered in the DOM.

    Returns
    -------
    list[dict[str, Any]]
        One dict per figure: ``doc`` (index in ``window.Bokeh.documents``), ``live``,
        ``kind`` (``"plot"`` or ``"table"``), ``id``, ``title`` (plots), ``sources`` (dicts
        with ``id``, ``name``, ``length``, ``updates``, ``last_update`` (``performance.now()``
        ms) and ``last_x``), and their totals ``rows``, ``updates`` and newest ``last_x``.
    """
    return list(_bokeh_eval(page, _JS_BOKEH_FIGURES, live_only))


def bokeh_column(page: Page, source_name: str, column: str = "x",
                 live_only: bool = True) -> list[float]:
    """Return one column of the (first) data source named *source_name*, as numbers.

    Datetime columns come back as BokehJS holds them: milliseconds since the epoch.

    Parameters
    ----------
    page : Page
        The page.
    source_name : str
        The source's ``name`` (rtnb names a view's sources ``"<frame>:<key>"``).
    column : str
        The column.
    live_only : bool
        Only documents currently rendered in the DOM.

    Returns
    -------
    list[float]
        The values; empty if no such source or column.
    """
    body = """
    for (const doc of docs) {
        for (const m of doc.all_models) {
            if (m.name === arg.name && typeof m.get_length === 'function' && m.data) {
                const col = m.data[arg.column];
                return col ? Array.from(col, Number) : [];
            }
        }
    }
    return [];
    """
    script = _JS_BOKEH_DOCS.replace("(liveOnly) =>", "({liveOnly, arg}) =>") + body + "\n}"
    return [float(v) for v in page.evaluate(
        script, {"liveOnly": live_only, "arg": {"name": source_name, "column": column}})]


def rtnb_status(page: Page, index: int = 0) -> dict[str, Any]:
    """Read an rtnb status widget (``table.rtnb-status``) as the page shows it now.

    Parameters
    ----------
    page : Page
        The page.
    index : int
        Which status table (document order).

    Returns
    -------
    dict[str, Any]
        ``state`` (``data-state``), ``events_in`` and ``updates`` (ints from ``data-*``),
        ``page_lag`` (``data-page-lag``: the Bokeh messages the kernel has sent and the page
        not yet acknowledged, ``None`` while no page acknowledges) and ``cells``: the text of
        each row keyed by its header (``"events in"`` ...); an empty dict if there is no such
        table.
    """
    script = """(index) => {
        const tables = document.querySelectorAll('table.rtnb-status');
        const t = tables[index];
        if (!t) { return {}; }
        const cells = {};
        for (const row of t.querySelectorAll('tr')) {
            const th = row.querySelector('th'), td = row.querySelector('td');
            if (th && td) { cells[th.textContent.trim()] = td.textContent.trim(); }
        }
        const lag = t.dataset.pageLag;
        return {state: t.dataset.state, events_in: Number(t.dataset.eventsIn),
                updates: Number(t.dataset.updates),
                page_lag: (lag === undefined || lag === '') ? null : Number(lag), cells};
    }"""
    return dict(page.evaluate(script, index))


def click_status_button(page: Page, description: str, until_state: str,
                        timeout: float = 30.0, index: int = 0) -> float | None:
    """Click a button of an rtnb status widget in the page and time the kernel's answer.

    The page waits (up to *timeout*) for the button to be enabled, since the buttons follow
    the state shown by separate widget updates; the click is then dispatched by JavaScript in
    the page (no Playwright actionability waits), and the page polls (every 10 ms) until the
    status table's ``data-state`` is *until_state*. The time covers the page sending the
    click, the kernel acting on it and its next status refresh (every second), and the page
    rendering it (after every message the kernel sent before: a busy page lags).

    Parameters
    ----------
    page : Page
        The page.
    description : str
        The button's text (``"pause"``, ``"resume"``, ``"stop"``).
    until_state : str
        The ``data-state`` that answers the click.
    timeout : float
        Seconds to wait in the page.
    index : int
        Which status widget (``.rtnb-status-box``, document order).

    Returns
    -------
    float or None
        Milliseconds (``performance.now()``) from the click to the state shown; ``None`` if
        it was not shown within *timeout*.

    Raises
    ------
    AssertionError
        If the button is missing, or stayed disabled for *timeout* seconds.
    """
    script = """async ({description, untilState, timeoutMs, index}) => {
        const box = document.querySelectorAll('.rtnb-status-box')[index];
        if (!box) { return {error: 'no .rtnb-status-box'}; }
        const button = Array.from(box.querySelectorAll('button'))
            .find(b => b.textContent.trim() === description);
        if (!button) { return {error: 'no button ' + description}; }
        // The table and the buttons are separate widgets: a button is enabled by an update
        // that can reach the page a moment after the state it follows.
        const start = performance.now();
        while (button.disabled) {
            if (performance.now() - start > timeoutMs) {
                return {error: 'button ' + description + ' stayed disabled'};
            }
            await new Promise(resolve => setTimeout(resolve, 10));
        }
        const state = () => {
            const t = box.querySelector('table.rtnb-status');
            return t ? t.dataset.state : null;
        };
        const t0 = performance.now();
        button.click();
        while (performance.now() - t0 < timeoutMs) {
            if (state() === untilState) { return {ms: performance.now() - t0}; }
            await new Promise(resolve => setTimeout(resolve, 10));
        }
        return {ms: null, state: state()};
    }"""
    result = page.evaluate(script, {"description": description, "untilState": until_state,
                                    "timeoutMs": int(timeout * 1000), "index": index})
    if "error" in result:
        raise AssertionError(f"status widget: {result['error']}")
    return None if result["ms"] is None else float(result["ms"])


def js_heap_mb(page: Page, collect_garbage: bool = True) -> float:
    """Return the page's used JavaScript heap in MB (CDP ``Runtime.getHeapUsage``).

    Parameters
    ----------
    page : Page
        A page of a chromium browser.
    collect_garbage : bool
        Run a full garbage collection first (``HeapProfiler.collectGarbage``), so the figure
        is what is still referenced.

    Returns
    -------
    float
        ``usedSize`` / 1e6.
    """
    cdp = page.context.new_cdp_session(page)
    try:
        if collect_garbage:
            cdp.send("HeapProfiler.collectGarbage")
        usage = cdp.send("Runtime.getHeapUsage")
    finally:
        cdp.detach()
    return float(usage["usedSize"]) / 1e6


__all__ += [
    "KernelMessage",
    "KernelMessageLog",
    "bokeh_column",
    "bokeh_figures",
    "click_status_button",
    "js_heap_mb",
    "parse_kernel_frame",
    "rtnb_status",
]


def wait_bokeh_settled(page: Page, quiet: float = 2.0, timeout: float = 180.0) -> None:
    """Wait until no live figure has applied a change for *quiet* seconds.

    Counts changes with :func:`bokeh_figures` (which hooks every source it sees). Use it
    after pausing or stopping a stream, before reading what the page shows.

    Parameters
    ----------
    page : Page
        The page.
    quiet : float
        Seconds without any change.
    timeout : float
        Seconds to wait.
    """
    state: dict[str, Any] = {"counts": None, "since": time.monotonic()}

    def settled() -> bool:
        counts = [(f["id"], f["updates"]) for f in bokeh_figures(page)]
        if counts != state["counts"]:
            state["counts"], state["since"] = counts, time.monotonic()
        return time.monotonic() - state["since"] >= quiet

    wait_until(settled, timeout=timeout, interval=0.25,
               message=f"the page's figures kept changing for {timeout:.0f}s")


def watch_kernel_lag(page: Page, name: str | None = None) -> None:
    """Start recording, in the page, how late each kernel message is handled.

    For every message from the kernel, the page records ``Date.now()`` minus the kernel's
    header ``date`` when JupyterLab's kernel connection emits it (after the page's main
    thread took the frame and decoded it). Read with :func:`kernel_lag`.

    Parameters
    ----------
    page : Page
        The JupyterLab page.
    name : str or None
        Notebook path; ``None`` means the last opened notebook panel.
    """
    body = """
    const kernel = panel.sessionContext.session.kernel;
    if (kernel.__rtnbLag) { return; }
    const lag = kernel.__rtnbLag = {lags: []};
    window.__rtnbKernelLag = lag;
    kernel.anyMessage.connect((_, m) => {
        if (m.direction === 'recv' && m.msg.header && m.msg.header.date) {
            lag.lags.push(Date.now() - Date.parse(m.msg.header.date));
        }
    });
    """
    page.evaluate(_js_fn(body), name)


def kernel_lag(page: Page, reset: bool = True) -> list[float]:
    """Return the lags (ms) recorded by :func:`watch_kernel_lag`, oldest first.

    Parameters
    ----------
    page : Page
        The page.
    reset : bool
        Forget the returned lags.

    Returns
    -------
    list[float]
        Milliseconds from the kernel sending each message to the page handling it.
    """
    script = """(reset) => {
        const lag = window.__rtnbKernelLag;
        if (!lag) { return []; }
        const out = lag.lags;
        if (reset) { lag.lags = []; }
        return out;
    }"""
    return [float(v) for v in page.evaluate(script, reset)]


def watch_row_latency(page: Page, source_name: str, *, x: str = "x", t: str = "y") -> None:
    """Record, for each new row of a data source, ``Date.now() - row[t]`` when it is drawn.

    A ``requestAnimationFrame`` loop in the page looks at the source (found by ``name`` in
    the live BokehJS documents, also when it appears later) once per animation frame; rows
    whose *x* is beyond the largest *x* seen so far are new, and their *t* column (epoch
    milliseconds stamped by the kernel) is subtracted from the time of the frame that will
    draw them. Read with :func:`row_latencies`.

    Parameters
    ----------
    page : Page
        The page.
    source_name : str
        The source's ``name`` (rtnb names a view's sources ``"<frame>:<key>"``).
    x : str
        An increasing column telling new rows from those seen.
    t : str
        The column holding the emit time in epoch milliseconds.
    """
    script = """({name, x, t}) => {
        const st = window.__rtnbRowLatency = {lat: [], frames: 0, rows: 0, stop: false};
        let source = null, lastX = -Infinity;
        const find = () => {
            for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
                for (const m of doc.all_models) {
                    if (m.name === name && m.data && typeof m.get_length === 'function') {
                        return m;
                    }
                }
            }
            return null;
        };
        const tick = () => {
            if (st.stop) { return; }
            const now = Date.now();
            st.frames += 1;
            if (source === null) { source = find(); }
            if (source !== null) {
                const xs = source.data[x], ts = source.data[t];
                if (xs && ts) {
                    for (let i = xs.length - 1; i >= 0 && xs[i] > lastX; i--) {
                        st.lat.push(now - Number(ts[i]));
                        st.rows += 1;
                    }
                    if (xs.length) { lastX = Math.max(lastX, Number(xs[xs.length - 1])); }
                }
            }
            requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
    }"""
    page.evaluate(script, {"name": source_name, "x": x, "t": t})


def row_latencies(page: Page, stop: bool = False) -> dict[str, Any]:
    """Return what :func:`watch_row_latency` recorded.

    Parameters
    ----------
    page : Page
        The page.
    stop : bool
        End the animation-frame loop.

    Returns
    -------
    dict[str, Any]
        ``latencies_ms`` (one per new row, in detection order), ``frames`` (animation frames
        seen) and ``rows``.
    """
    script = """(stop) => {
        const st = window.__rtnbRowLatency;
        if (!st) { return {latencies_ms: [], frames: 0, rows: 0}; }
        if (stop) { st.stop = true; }
        return {latencies_ms: st.lat, frames: st.frames, rows: st.rows};
    }"""
    return dict(page.evaluate(script, stop))


__all__ += [
    "kernel_lag",
    "row_latencies",
    "wait_bokeh_settled",
    "watch_kernel_lag",
    "watch_row_latency",
]
