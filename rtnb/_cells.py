"""Tear down what a notebook cell built when that cell runs again (no orphan streams)."""

from __future__ import annotations

import sys
import weakref
from typing import Any, Protocol

__all__ = ["track"]


class _Teardown(Protocol):
    def _teardown(self) -> None: ...


_by_cell: dict[str, list[weakref.ref[Any]]] = {}
_current: str | None = None
_installed = False


def _pre_run_cell(info: Any) -> None:
    """IPython ``pre_run_cell`` hook: close what the previous run of this cell built."""
    global _current
    cell_id = getattr(info, "cell_id", None)
    _current = cell_id
    if cell_id is None:
        return
    for ref in _by_cell.pop(cell_id, []):
        obj = ref()
        if obj is not None:
            obj._teardown()


def _shell() -> Any:
    """The running IPython shell, or ``None``.

    Inside a kernel IPython is loaded already; a script never imports it through here.
    """
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _install() -> bool:
    global _installed
    if _installed:
        return True
    shell = _shell()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False

    shell.events.register("pre_run_cell", _pre_run_cell)
    _installed = True
    return True


def _cell_id() -> str | None:
    """The id of the cell being executed (JupyterLab sends it in the request's metadata)."""
    kernel = getattr(_shell(), "kernel", None)
    try:
        parent = kernel.get_parent() if kernel is not None else None
    except Exception:  # an older kernel without get_parent
        parent = None
    cell_id = (parent or {}).get("metadata", {}).get("cellId")
    return cell_id if isinstance(cell_id, str) else _current


def track(obj: _Teardown) -> None:
    """Call ``obj._teardown()`` when the cell running now runs again (JupyterLab cell ids).

    Outside a kernel, or in a front end that sends no cell id, this does nothing.
    """
    if not _install():
        return
    cell_id = _cell_id()
    if cell_id is not None:
        _by_cell.setdefault(cell_id, []).append(weakref.ref(obj))
