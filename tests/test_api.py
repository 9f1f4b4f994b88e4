"""The public surface: a curated flat namespace, every public callable documented with an
example (the examples run as doctests)."""

from __future__ import annotations

import inspect

import pytest

import rtnb

PUBLIC = [
    "Aggregation", "CheckpointError", "ConfigError", "DecodeError", "ExportError",
    "MissingExtraError", "Param", "Pipeline", "RtnbError", "SchemaError", "SourceError",
    "StreamingFrame", "StreamingSeries", "WindowedFrame", "alert", "dashboard", "datasets",
    "demo", "detect", "evaluate", "formats", "partition_of", "rows", "session", "sinks",
    "sliding", "sources", "tumbling",
]


def test_all_is_the_sorted_curated_namespace() -> None:
    assert rtnb.__all__ == sorted(PUBLIC)
    for name in rtnb.__all__:
        assert hasattr(rtnb, name), name


TESTING = ["Collected", "assert_frame_equal_unordered", "collect", "collect_all", "feed",
           "pandas_windows", "random_splits"]


def test_testing_helpers_are_a_module_of_their_own() -> None:
    """A module of its own, imported as ``import rtnb.testing`` (like ``pandas.testing``)."""
    import rtnb.testing

    assert rtnb.testing.__all__ == sorted(TESTING)
    for name in TESTING:
        doc = inspect.getdoc(getattr(rtnb.testing, name)) or ""
        assert ">>>" in doc, f"rtnb.testing.{name} has no example"


def public_callables() -> list[tuple[str, object]]:
    found = []
    for name in rtnb.__all__:
        obj = getattr(rtnb, name)
        if inspect.ismodule(obj):
            found += [(f"{name}.{n}", getattr(obj, n)) for n in obj.__all__
                      if callable(getattr(obj, n)) and not n[0].isupper()]
        elif callable(obj) and not (inspect.isclass(obj) and issubclass(obj, Exception)):
            found.append((name, obj))
    return found


@pytest.mark.parametrize(("name", "obj"), public_callables(), ids=lambda v: str(v)[:40])
def test_public_callables_have_docstrings_with_examples(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert ">>>" in doc or ">>>" in (inspect.getdoc(inspect.getmodule(obj)) or ""), (
        f"{name} has no example")


@pytest.mark.parametrize("name", ["StreamingFrame", "Param", "dashboard", "tumbling"])
def test_parameters_are_documented(name: str) -> None:
    obj = getattr(rtnb, name)
    doc = inspect.getdoc(obj) or ""
    assert "Parameters" in doc or "Examples" in doc


def test_exceptions_form_one_tree() -> None:
    for name in ["ConfigError", "SchemaError", "SourceError", "DecodeError", "CheckpointError",
                 "ExportError", "MissingExtraError"]:
        assert issubclass(getattr(rtnb, name), rtnb.RtnbError), name
    assert issubclass(rtnb.ConfigError, ValueError)
    assert issubclass(rtnb.SchemaError, ValueError)
    assert issubclass(rtnb.DecodeError, rtnb.SourceError)
    assert issubclass(rtnb.MissingExtraError, ImportError)
