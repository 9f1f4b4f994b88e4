"""The one way rtnb compiles its kernels with numba.

Imported only by the kernel modules (``rtnb.detect._kernels``, ``rtnb.windows._kernels``,
``_rolling_kernels``, ``_session_kernels``), which are themselves imported on first use, so
``import rtnb`` loads no numba.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["jit"]

F = TypeVar("F", bound=Callable[..., Any])


def jit(fn: F) -> F:
    """``numba.njit(cache=True, nogil=True, error_model="numpy")``, or without the cache.

    ``error_model="numpy"``: x / 0 is inf or NaN as in numpy, no ZeroDivisionError; the
    cache is left out when it cannot be written (numba: "no locator available").
    """
    try:
        compiled = numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:
        compiled = numba.njit(nogil=True, error_model="numpy")(fn)
    return cast(F, compiled)
