"""The optional detectors that wrap proven libraries (issue 17): River's anomaly detectors
(``rtnb.detect._river.River``) and stumpy's incremental matrix profile
(``rtnb.detect._stumpy.MatrixProfile``), through ``sdf.detect`` as a user runs them.

Both extras are in ``dev``, so nothing here is skipped: a missing one fails the imports."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest
from river import anomaly, preprocessing

import rtnb
from rtnb.detect._river import River
from rtnb.detect._stumpy import MatrixProfile
from rtnb.errors import ConfigError, MissingExtraError
from rtnb.state import Checkpoint
from rtnb.testing import collect, collect_all, feed, random_splits


def _hst(window: int = 50, height: int = 4):
    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
        n_trees=5, height=height, window_size=window, seed=3)


MAKERS = {
    "river_hst": lambda: River(_hst(), threshold=0.8),
    "river_gauss": lambda: River(anomaly.GaussianScorer(grace_period=20), threshold=0.999),
    "river_filter": lambda: River(anomaly.QuantileFilter(anomaly.GaussianScorer(), q=0.99)),
    "mp": lambda: MatrixProfile(m=10, threshold=0.4, window=60),
    "mp_grow": lambda: MatrixProfile(m=10, threshold=0.4, window=60, egress=False),
}


def _cycle(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """A cycle of 20 rows with a little noise (what a matrix profile is for)."""
    rng = np.random.default_rng(seed)
    return scale * (np.sin(np.arange(n) * 2 * np.pi / 20) + rng.normal(0.0, 0.05, n))


def _frames(n: int = 400) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Three hosts on different scales, each with a spike, a stuck stretch and a gap."""
    frames = []
    for i, host in enumerate(["a", "b", "c"]):
        x = _cycle(n, 10 + i, 10.0 ** i)
        x[200 + 30 * i] += 4 * 10.0 ** i  # a spike
        x[330:336] = x[329]  # stuck
        x[100 + i] = np.nan
        frames.append(pd.DataFrame({
            "time": pd.date_range("2026-01-01", periods=n, freq="s") + pd.Timedelta(
                milliseconds=300 * i), "host": host, "value": x}))
    data = pd.concat(frames).sort_values("time", kind="stable").reset_index(drop=True)
    return data, frames


def _run(make, data: pd.DataFrame, splits: list[int] | None = None,
         protect: bool = False) -> pd.DataFrame:
    sdf = rtnb.StreamingFrame(data.iloc[:0], name="m", time="time")
    out = collect(sdf.detect(make(), on="value", by="host", protect=protect))
    feed(sdf, data, splits=splits)
    return out.frame()


# -- through sdf.detect: batch splits and keys --------------------------------------------------
@pytest.mark.parametrize("name", list(MAKERS))
def test_any_batch_split_gives_the_same_output_and_keys_are_independent(name):
    make = MAKERS[name]
    data, frames = _frames()
    whole = _run(make, data)
    assert list(whole.columns) == ["time", "host", "value", "score", "is_anomaly"]
    assert np.isfinite(whole["score"]).sum() > 600  # scored once warmed up
    for seed in (1, 2):
        pd.testing.assert_frame_equal(_run(make, data, random_splits(len(data), seed, 60)),
                                      whole)
    for host, g in whole.groupby("host"):
        alone = frames["abc".index(host)]["value"].to_numpy()
        score, flag = make().process(alone)
        np.testing.assert_array_equal(g["score"].to_numpy(), score)
        np.testing.assert_array_equal(g["is_anomaly"].to_numpy(), flag)


def test_halfspacetrees_finds_a_value_where_none_were():
    """Two levels, then a value between them: HalfSpaceTrees' kind of anomaly."""
    rng = np.random.default_rng(5)
    n = 600
    x = np.where(rng.random(n) < 0.5, 10.0, 30.0) + rng.normal(0.0, 0.5, n)
    x[500] = 20.0
    data = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=n, freq="min"),
                         "value": x})
    out = _run(lambda: River(_hst(100, height=3), threshold=0.75), data.assign(host="a"))
    assert out["score"].isna().sum() == 100  # HalfSpaceTrees' first window: not scored
    assert np.flatnonzero(out["is_anomaly"]).tolist() == [500]


def test_river_filter_flags_spikes_on_every_scale():
    """Through River's QuantileFilter, the threshold follows each key's own scores."""
    data, _ = _frames()
    out = _run(MAKERS["river_filter"], data)
    for i, host in enumerate("abc"):
        flagged = out.loc[(out["host"] == host) & out["is_anomaly"]].index
        rows = out.loc[out["host"] == host].index
        assert rows[200 + 30 * i] in flagged
        assert len(flagged) <= 20  # 5 % of the rows (q = 0.99, once the quantile settles)


def test_matrix_profile_finds_the_shapes_not_seen_before():
    data, _ = _frames()
    out = _run(MAKERS["mp"], data)
    for i, host in enumerate("abc"):
        g = out.loc[out["host"] == host].reset_index(drop=True)
        assert g["score"].isna().sum() == 61  # 60 rows warm up, and one missing value
        onsets = np.flatnonzero(g["is_anomaly"] & ~g["is_anomaly"].shift(fill_value=False))
        spike = 200 + 30 * i
        # the spike from its row on (every run of m = 10 rows that holds it), and the stuck
        # stretch (330-335) once it leaves the cycle's shape; nothing else
        assert onsets[0] == spike
        assert g["is_anomaly"].iloc[spike:spike + 10].all()
        assert 330 <= onsets[1] <= 340
        flagged = set(np.flatnonzero(g["is_anomaly"]).tolist())
        assert flagged <= set(range(spike, spike + 10)) | set(range(330, 346))


def test_matrix_profile_scores_are_scale_free_and_between_0_and_sqrt2():
    x = _cycle(300, 4)
    x[250] += 3
    base, _ = MatrixProfile(m=10, threshold=0.4).process(x)
    scaled, _ = MatrixProfile(m=10, threshold=0.4).process(1e6 * x - 3e4)
    np.testing.assert_allclose(scaled, base, atol=1e-4)
    assert np.isnan(base[:100]).all()  # the default window: 10 m
    assert ((base[100:] >= 0) & (base[100:] <= np.sqrt(2) + 1e-9)).all()
    assert np.nanmax(base[:250]) < 0.3 < base[250]


# -- state: snapshot, one-value verbs, protect ----------------------------------------------
@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("cut", [7, 40, 300])  # before m rows, warming up, scored
def test_snapshot_pickled_mid_stream_continues_exactly(name, cut):
    make = MAKERS[name]
    x = _cycle(500, 8)
    x[350] += 3
    x[20] = np.nan
    keys = np.arange(500) % 2
    whole = make().process(x, keys)
    first = make()
    first.process(x[:2 * cut], keys[:2 * cut])
    saved = pickle.loads(pickle.dumps(first.snapshot()))
    second = make()
    second.restore(saved)
    rest = second.process(x[2 * cut:], keys[2 * cut:])
    np.testing.assert_array_equal(rest[0], whole[0][2 * cut:])
    np.testing.assert_array_equal(rest[1], whole[1][2 * cut:])
    again = make()  # the same snapshot restores twice (nothing shared with it)
    again.restore(saved)
    np.testing.assert_array_equal(again.process(x[2 * cut:], keys[2 * cut:])[0], rest[0])


def test_a_pipeline_checkpoint_resumes_exactly(tmp_path):
    """Both detectors in one pipeline, saved to a checkpoint mid-stream and restored."""
    data, _ = _frames()
    batches = [data.iloc[lo:lo + 100].reset_index(drop=True) for lo in range(0, len(data), 100)]

    def build() -> rtnb.StreamingFrame:
        sdf = rtnb.sources.replay(data, time="time", name="m")
        sdf.detect(MAKERS["river_hst"](), on="value", by="host", name="hst")
        sdf.detect(MAKERS["mp"](), on="value", by="host", name="mp")
        return sdf

    src = build()
    expected = collect_all(src)
    feed(src, batches)
    src_a = build()
    got = collect_all(src_a)
    feed(src_a, batches[:7], close=False)
    Checkpoint(tmp_path / "s.db").save(rtnb.Pipeline(src_a))
    src_b = build()
    pipeline_b = rtnb.Pipeline(src_b)
    assert Checkpoint(tmp_path / "s.db").restore(pipeline_b)
    for name, out in got.items():
        pipeline_b.node(name).sink(out.append)
    feed(src_b, batches[7:])
    assert list(got) == ["m", "m.hst", "m.mp"]
    for name, want in expected.items():
        pd.testing.assert_frame_equal(got[name].frame(), want.frame(), obj=name)


@pytest.mark.parametrize("name", list(MAKERS))
def test_score_one_changes_nothing(name):
    make = MAKERS[name]
    x = _cycle(200, 9)
    det, ref = make(), make()
    det.process(x[:150])
    ref.process(x[:150])
    for key in (0, 5):  # a key with state and a new one
        det.score_one(100.0, key=key)
    np.testing.assert_array_equal(det.process(x[150:])[0], ref.process(x[150:])[0])
    assert det.snapshot()["keys"].tolist() == [0]


def test_river_protect_leaves_flagged_rows_out_of_the_model():
    x = _cycle(300, 6)
    x[[120, 200]] += 5
    det = River(anomaly.GaussianScorer(grace_period=20), threshold=0.9999)
    score, flag = det.process(x, protect=True)
    assert np.flatnonzero(flag).tolist() == [120, 200]
    without, _ = River(anomaly.GaussianScorer(grace_period=20),
                       threshold=0.9999).process(np.delete(x, [120, 200]))
    np.testing.assert_array_equal(np.delete(score, [120, 200]), without)


@pytest.mark.parametrize("name", list(MAKERS))
def test_missing_values_score_nan_and_are_not_learned(name):
    make = MAKERS[name]
    x = _cycle(200, 12)
    gaps = x.copy()
    gaps[[90, 91, 150]] = np.nan
    s1, _ = make().process(np.delete(x, [90, 91, 150]))
    s2, _ = make().process(gaps)
    assert np.isnan(s2[[90, 91, 150]]).all()
    np.testing.assert_array_equal(np.delete(s2, [90, 91, 150]), s1)


# -- settings and the missing extra ---------------------------------------------------------
@pytest.mark.parametrize(("make", "match"), [
    (lambda: River(anomaly.HalfSpaceTrees()), "needs threshold="),
    (lambda: River(object(), threshold=1), "takes a River anomaly detector"),
    (lambda: River(preprocessing.StandardScaler() | anomaly.GaussianScorer(), threshold=1),
     "scores a target, which a River pipeline does not pass on"),
    (lambda: River(anomaly.HalfSpaceTrees(), threshold=0.9, warmup=0), "warmup must be an int"),
    (lambda: MatrixProfile(m=2, threshold=1), "m \\(rows in a run\\) must be an int >= 3"),
    (lambda: MatrixProfile(m=10, threshold=1, window=20), "window must be an int >= 3 \\* m"),
])
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_warmup_defaults_to_the_models_own():
    assert River(_hst(80), threshold=0.9)._warmup == 80  # HalfSpaceTrees' window_size
    assert River(anomaly.GaussianScorer(), threshold=0.9)._warmup == 100  # grace_period
    assert River(anomaly.OneClassSVM(), threshold=0.9)._warmup == 1
    assert River(_hst(80), threshold=0.9, warmup=5)._warmup == 5


def test_repr():
    assert repr(River(_hst(), threshold=0.8)) == (
        "River(MinMaxScaler | HalfSpaceTrees, threshold=0.8)")
    assert repr(MatrixProfile(m=10, threshold=0.4)) == "MatrixProfile(m=10, threshold=0.4)"
    assert repr(MatrixProfile(m=10, threshold=0.4, window=60, egress=False)) == (
        "MatrixProfile(m=10, threshold=0.4, window=60, egress=False)")


@pytest.mark.parametrize(("make", "package"), [
    (lambda: River(anomaly.HalfSpaceTrees(), threshold=0.9), "river"),
    (lambda: MatrixProfile(m=10, threshold=0.4), "stumpy"),
])
def test_a_missing_extra_says_which_to_install(monkeypatch, make, package):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` fails
    with pytest.raises(MissingExtraError, match=f"pip install 'rtnb\\[{package}\\]'") as err:
        make()
    assert err.value.extra == package
