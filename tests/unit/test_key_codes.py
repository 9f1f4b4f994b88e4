"""KeyRegistry codes of Arrow string keys probed straight from the Arrow buffers (issue 16):
the same codes as a dictionary of Python strings, for every shape a batch's key column takes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rtnb.windows.keys import KeyRegistry


def reference(batches: list[pd.DataFrame]) -> list[list[int]]:
    """Codes in order of first appearance, nulls one key of their own (a Python dict)."""
    known: dict[object, int] = {}
    out = []
    for b in batches:
        codes = []
        for v in b["k"].tolist():
            key = None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
            codes.append(known.setdefault(key, len(known)))
        out.append(codes)
    return out


def frames(values: list[list[object]], arrow: pa.DataType) -> list[pd.DataFrame]:
    return [pd.DataFrame({"k": pd.array(pa.array(v, type=arrow), dtype=pd.StringDtype(
        "pyarrow", na_value=np.nan) if arrow == pa.large_string() else "string[pyarrow]")})
        for v in values]


RNG = np.random.default_rng(7)
WORDS = ["", "a", "web-01", "web-1", "ü-ß", "日本", "x" * 300, "web-01 ", "Web-01"] + [
    f"host-{i}" for i in range(500)]


@pytest.mark.parametrize("arrow", [pa.string(), pa.large_string()])
def test_codes_equal_a_python_dict_of_the_keys(arrow: pa.DataType) -> None:
    batches = [[WORDS[i] for i in RNG.integers(0, len(WORDS), size)]
               for size in (1, 100, 7, 1000, 100, 3, 2000, 100)]
    dfs = frames(batches, arrow)
    reg = KeyRegistry(["k"], dfs[0].iloc[:0])
    assert [reg.codes(b).tolist() for b in dfs] == reference(dfs)
    # once known, every batch is coded from its Arrow buffers (not the general path)
    from rtnb._frames import column
    for b, want in zip(dfs, reference(dfs), strict=True):
        probed = reg._probe(column(b, "k"))
        assert probed is not None and probed.tolist() == want


def test_slices_of_one_frame_and_nulls() -> None:
    whole = pd.DataFrame({"k": pd.array([WORDS[i % 20] for i in range(5000)], dtype=str)})
    whole.loc[[17, 4000], "k"] = None
    # slices share the parent's Arrow buffers at an offset; the nulls take the general path
    parts = [whole.iloc[i:i + 333] for i in range(0, 5000, 333)]
    reg = KeyRegistry(["k"], whole.iloc[:0])
    assert [reg.codes(b).tolist() for b in parts] == reference(parts)
    again = [reg.codes(b).tolist() for b in parts]  # now every key is known: probed
    assert again == reference(parts)


def test_a_new_key_in_a_batch_of_known_ones_is_registered() -> None:
    reg = KeyRegistry(["k"], pd.DataFrame({"k": pd.Series([], dtype=str)}))
    first = pd.DataFrame({"k": pd.array(["a", "b"] * 50, dtype=str)})
    assert reg.codes(first).tolist() == [0, 1] * 50
    mixed = pd.DataFrame({"k": pd.array(["b", "c", "a"], dtype=str)})
    assert reg.codes(mixed).tolist() == [1, 2, 0]
    assert reg.codes(mixed).tolist() == [1, 2, 0]
