"""KeyRegistry codes of object and ``string[python]`` keys (issue 16): probed in pandas' table
of UTF-8 strings while every known key is a ``str``; the same codes as a dictionary of the
keys for every value such a column holds (non-strings, nulls, surrogates, subclasses)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas._libs import hashtable as ht  # type: ignore[attr-defined]

from rtnb._frames import column
from rtnb.windows.keys import KeyRegistry


def reference(batches: list[pd.DataFrame]) -> list[list[int]]:
    """Codes in order of first appearance, nulls one key of their own (a Python dict)."""
    known: dict[object, int] = {}
    out = []
    for b in batches:
        codes = []
        for v in b["k"].to_numpy(dtype=object).tolist():
            key = None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
            codes.append(known.setdefault(key, len(known)))
        out.append(codes)
    return out


WORDS = ["", "a", "web-01", "web-1", "ü-ß", "日本", "x" * 300, "web-01 ", "Web-01", "a\x00b",
         "a\x00"] + [f"host-{i}" for i in range(200)]


def frames(values: list[list[object]], dtype: str) -> list[pd.DataFrame]:
    if dtype == "object":
        return [pd.DataFrame({"k": pd.Series(np.array(v, dtype=object), dtype=object)})
                for v in values]
    return [pd.DataFrame({"k": pd.array(v, dtype="string[python]")}) for v in values]


@pytest.mark.parametrize("dtype", ["object", "string[python]"])
def test_string_keys_equal_a_python_dict_and_are_probed(dtype: str) -> None:
    rng = np.random.default_rng(3)
    batches = [[WORDS[i] for i in rng.integers(0, len(WORDS), size)]
               for size in (1, 100, 7, 1000, 100, 3, 2000, 100)]
    dfs = frames(batches, dtype)
    reg = KeyRegistry(["k"], dfs[0].iloc[:0])
    assert [reg.codes(b).tolist() for b in dfs] == reference(dfs)
    assert isinstance(reg._table, ht.StringHashTable)  # every known key is a str
    for b, want in zip(dfs, reference(dfs), strict=True):  # once known: probed
        probed = reg._probe(column(b, "k"))
        assert probed is not None and probed.tolist() == want


@pytest.mark.parametrize("dtype", ["object", "string[python]"])
def test_nulls_and_unknown_keys_take_the_general_path(dtype: str) -> None:
    reg = KeyRegistry(["k"], frames([[]], dtype)[0])
    values = [["a", "b"] * 20, ["b", None, "a"], ["c", "a"], [None, "a", "d"], ["a", "b"]]
    dfs = frames(values, dtype)
    assert [reg.codes(b).tolist() for b in dfs] == reference(dfs)
    # the null key is known now: the table of objects is used, nulls are found there
    again = [reg.codes(b).tolist() for b in dfs]
    assert again == reference(dfs)
    assert isinstance(reg._table, ht.PyObjectHashTable)


def test_object_keys_of_other_types_are_never_confused_with_strings() -> None:
    reg = KeyRegistry(["k"], pd.DataFrame({"k": pd.Series([], dtype=object)}))
    batches = [["a", "b", "a\x00"], [1.5, "a", 3, b"a"], ["a", np.str_("b"), "b"],
               [None, float("nan"), "a"], [pd.NA, 1.5, b"a", "a"]]
    dfs = [pd.DataFrame({"k": pd.Series(np.array(v, dtype=object), dtype=object)})
           for v in batches]
    assert [reg.codes(b).tolist() for b in dfs] == reference(dfs)


def test_a_lone_surrogate_is_coded_through_the_general_path() -> None:
    reg = KeyRegistry(["k"], pd.DataFrame({"k": pd.Series([], dtype=object)}))
    batches = [["a", "b"], ["\ud800", "a"], ["a", "\ud800", "b"]]
    dfs = [pd.DataFrame({"k": pd.Series(np.array(v, dtype=object), dtype=object)})
           for v in batches]
    assert [reg.codes(b).tolist() for b in dfs] == reference(dfs)
