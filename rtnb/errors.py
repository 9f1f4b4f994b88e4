"""The exceptions rtnb raises.

Every message says what went wrong, where (the node name), what arrived and what to do.

::

    RtnbError
    ├── ConfigError(ValueError)      bad arguments, raised at construction, never inside update
    ├── SchemaError(ValueError)      a batch does not match the frame's example
    ├── SourceError                  connect/decode failures; carries the source name
    │   └── DecodeError
    ├── CheckpointError
    ├── ExportError                  pipeline cannot be written as a script
    └── MissingExtraError(ImportError)
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DecodeError",
    "ExportError",
    "MissingExtraError",
    "RtnbError",
    "SchemaError",
    "SourceError",
]


class RtnbError(Exception):
    """Base class of every error rtnb raises on purpose."""


class ConfigError(RtnbError, ValueError):
    """A bad argument, found when a node or object is built (never while data flows)."""


class SchemaError(RtnbError, ValueError):
    """A micro-batch whose columns or dtypes do not match the frame's ``example``."""


class SourceError(RtnbError):
    """A source could not connect, read or decode.

    Parameters
    ----------
    message
        What happened and what to do.
    source
        The name of the source node.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class DecodeError(SourceError):
    """A record could not be decoded into the frame's schema."""


class CheckpointError(RtnbError):
    """A checkpoint could not be written or restored."""


class ExportError(RtnbError):
    """A pipeline cannot be written as a standalone script."""


class MissingExtraError(RtnbError, ImportError):
    """An optional dependency is not installed.

    Examples
    --------
    >>> raise MissingExtraError("nats-py", extra="nats")
    Traceback (most recent call last):
    ...
    rtnb.errors.MissingExtraError: this feature needs nats-py: pip install 'rtnb[nats]'
    """

    def __init__(self, package: str, *, extra: str) -> None:
        super().__init__(f"this feature needs {package}: pip install 'rtnb[{extra}]'")
        self.package = package
        self.extra = extra
