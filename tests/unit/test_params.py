"""Param: kinds, bounds, change notification and the ipywidget kept in sync both ways."""

from __future__ import annotations

import datetime as dt
import re

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pytest

from rtnb import ConfigError, Param
from rtnb.params import resolve


def td(text: str) -> pd.Timedelta:
    return pd.Timedelta(text)


# -- kind inference ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, kwargs, kind, expected", [
    (True, {}, "bool", True),
    (np.bool_(False), {}, "bool", False),
    (3, {"min": 0, "max": 5}, "int", 3),
    (np.int64(3), {"min": 0, "max": 5}, "int", 3),
    (2.5, {"min": 0, "max": 5}, "float", 2.5),
    (np.float32(0.5), {"min": 0, "max": 5}, "float", 0.5),
    ("10s", {"min": "1s", "max": "1min"}, "duration", td("10s")),
    (dt.timedelta(seconds=5), {"min": "1s", "max": "1min"}, "duration", td("5s")),
    (pd.Timedelta("2min"), {"min": "1s", "max": "5min"}, "duration", td("2min")),
    ("mean", {"choices": ["mean", "max"]}, "choice", "mean"),
    (10, {"choices": [10, 20]}, "choice", 10),
], ids=["bool", "np.bool_", "int", "np.int64", "float", "np.float32", "str-duration",
        "timedelta", "pd.Timedelta", "choice", "choice-of-ints"])
def test_kind_is_inferred_from_the_value(value, kwargs, kind, expected):
    p = Param(value, **kwargs)
    assert p.kind == kind
    assert p.value == expected
    assert type(p.value) is type(expected)


def test_numpy_timedelta64_is_a_duration():
    p = Param(np.timedelta64(5, "s"), min="1s", max="1min")
    assert p.kind == "duration"
    assert p.value == td("5s")


def test_kind_can_be_forced():
    p = Param(2, min=0, max=5, kind="float")
    assert p.kind == "float"
    assert p.value == 2.0 and isinstance(p.value, float)


@pytest.mark.parametrize("value", [None, [1, 2], object()])
def test_unknown_kind_raises(value):
    with pytest.raises(ConfigError, match=r"cannot tell what kind of Param 'p' is from .*; pass "
                                          r"kind="):
        Param(value, name="p")


def test_int_value_coerced_for_a_float_param():
    p = Param(1.0, min=0.0, max=10.0)
    p.value = 4
    assert p.value == 4.0 and isinstance(p.value, float)


def test_names_are_generated_when_not_given():
    a, b = Param(1, min=0, max=2), Param(1, min=0, max=2)
    assert a.name != b.name
    assert re.fullmatch(r"param\d+", a.name)


def test_repr():
    assert repr(Param("10s", min="1s", max="5min", name="window")) == \
        "Param(window='10s', kind='duration', min='1s', max='5min')"
    assert repr(Param(3, min=0, max=5, name="n")) == "Param(n=3, kind='int', min=0, max=5)"
    assert repr(Param("a", choices=["a", "b"], name="how")) == \
        "Param(how='a', kind='choice', choices=['a', 'b'])"
    assert repr(Param(True, name="on")) == "Param(on=True, kind='bool')"


def test_resolve():
    assert resolve(Param(2, min=0, max=5)) == 2
    assert resolve("10s") == "10s"


# -- bounds and type errors ----------------------------------------------------------------------
@pytest.mark.parametrize("value, kwargs", [(3, {}), (3, {"min": 0}), (1.5, {"max": 2.0}),
                                           ("10s", {"min": "1s"})])
def test_numeric_and_duration_params_need_both_bounds(value, kwargs):
    with pytest.raises(ConfigError, match=r"Param 'p' of kind '\w+' needs both `min` and `max` "
                                          r"so it can be drawn as a slider and checked"):
        Param(value, name="p", **kwargs)


def test_min_greater_than_max():
    with pytest.raises(ConfigError, match=re.escape("Param 'p': `min` (5) is greater than `max` "
                                                    "(1)")):
        Param(3, min=5, max=1, name="p")


@pytest.mark.parametrize("value, kwargs, message", [
    (7, {"min": 0, "max": 5}, "Param 'p' must be between 0 and 5; got 7"),
    (-0.5, {"min": 0.0, "max": 1.0}, "Param 'p' must be between 0.0 and 1.0; got -0.5"),
    ("10s", {"min": "1s", "max": "5s"}, "Param 'p' must be between 1s and 5s; got 10s"),
    ("500ms", {"min": "1s", "max": "5min"}, "Param 'p' must be between 1s and 5min; got 500ms"),
])
def test_initial_value_out_of_bounds(value, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Param(value, name="p", **kwargs)


def test_bounds_are_inclusive():
    p = Param(5, min=0, max=10)
    p.value = 0
    p.value = 10
    assert p.value == 10


def test_setting_a_value_out_of_bounds_keeps_the_old_value():
    p = Param("10s", min="1s", max="5min", name="window")
    with pytest.raises(ConfigError, match="Param 'window' must be between 1s and 5min; got 1h"):
        p.value = "1h"
    assert p.value == td("10s")


@pytest.mark.parametrize("bad, message", [
    (2.5, "Param 'n' is an int; got 2.5 (float)"),
    (True, "Param 'n' is an int; got True (bool)"),
    ("3", "Param 'n' is an int; got '3' (str)"),
])
def test_int_param_rejects_other_types(bad, message):
    p = Param(3, min=0, max=10, name="n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        p.value = bad
    assert p.value == 3


@pytest.mark.parametrize("bad, message", [
    (True, "Param 'x' is a float; got True (bool)"),
    ("1.5", "Param 'x' is a float; got '1.5' (str)"),
])
def test_float_param_rejects_other_types(bad, message):
    p = Param(1.0, min=0.0, max=10.0, name="x")
    with pytest.raises(ConfigError, match=re.escape(message)):
        p.value = bad


def test_bool_param_rejects_ints():
    p = Param(False, name="on")
    with pytest.raises(ConfigError, match="Param 'on' is a bool; got 1"):
        p.value = 1


def test_choice_param_rejects_other_values():
    p = Param("mean", choices=["mean", "max"], name="how")
    with pytest.raises(ConfigError, match=re.escape("Param 'how' must be one of ['mean', 'max']; "
                                                    "got 'median'")):
        p.value = "median"


def test_choice_kind_needs_choices():
    with pytest.raises(ConfigError, match="Param 'how' of kind 'choice' needs `choices`"):
        Param("mean", kind="choice", name="how")


@pytest.mark.parametrize("bad, message", [
    (5, "`window.value` must be a duration with a unit such as '10s' or '5min'; got the bare "
        "number 5"),
    ("soon", "`window.value` must be a duration such as '10s', '5min' or a timedelta; got "
             "'soon'"),
])
def test_duration_param_rejects_non_durations(bad, message):
    p = Param("10s", min="1s", max="5min", name="window")
    with pytest.raises(ConfigError, match=re.escape(message)):
        p.value = bad


def test_duration_bounds_must_be_durations():
    with pytest.raises(ConfigError,
                       match=re.escape("`window.min` must be a duration with a unit")):
        Param("10s", min=1, max="5min", name="window")


def test_duration_values_are_timedeltas():
    p = Param("10s", min="1s", max="5min")
    p.value = dt.timedelta(minutes=2)
    assert p.value == td("2min") and isinstance(p.value, pd.Timedelta)
    p.value = "90s"
    assert p.value == td("90s")


# -- watch / unwatch -----------------------------------------------------------------------------
def test_watch_reports_param_old_and_new():
    p = Param("10s", min="1s", max="5min")
    seen = []
    p.watch(lambda param, old, new: seen.append((param, old, new)))
    p.value = "30s"
    assert seen == [(p, td("10s"), td("30s"))]


def test_no_notification_when_the_value_does_not_change():
    p = Param("10s", min="1s", max="5min")
    seen = []
    p.watch(lambda param, old, new: seen.append(new))
    p.value = "10s"
    p.value = dt.timedelta(seconds=10)
    assert seen == []


def test_no_notification_for_a_refused_value():
    p = Param(3, min=0, max=5)
    seen = []
    p.watch(lambda param, old, new: seen.append(new))
    with pytest.raises(ConfigError):
        p.value = 9
    assert seen == []


def test_watchers_are_called_in_order_and_unwatch_stops_one():
    p = Param(1, min=0, max=10)
    calls = []
    unwatch_a = p.watch(lambda param, old, new: calls.append(("a", new)))
    p.watch(lambda param, old, new: calls.append(("b", new)))
    p.value = 2
    unwatch_a()
    unwatch_a()  # harmless twice
    p.value = 3
    assert calls == [("a", 2), ("b", 2), ("b", 3)]


def test_a_watcher_may_unwatch_itself_while_notified():
    p = Param(1, min=0, max=10)
    calls = []

    def once(param, old, new):
        calls.append(new)
        unwatch()

    unwatch = p.watch(once)
    p.value = 2
    p.value = 3
    assert calls == [2]


# -- widgets -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, widget_type", [
    (lambda: Param("10s", min="1s", max="1min"), widgets.SelectionSlider),
    (lambda: Param(3, min=0, max=10), widgets.IntSlider),
    (lambda: Param(2.5, min=0.0, max=10.0), widgets.FloatSlider),
    (lambda: Param("a", choices=["a", "b"]), widgets.Dropdown),
    (lambda: Param(True), widgets.Checkbox),
], ids=["duration", "int", "float", "choice", "bool"])
def test_widget_type_per_kind(make, widget_type):
    param = make()
    assert isinstance(param.widget, widget_type)
    assert param.widget is param.widget  # built once
    assert param.widget.value == param.value


def test_widget_label_and_tooltip():
    p = Param(3, min=0, max=10, name="threshold", doc="alert above this")
    assert (p.widget.description, p.widget.tooltip) == ("threshold", "alert above this")


def test_sliders_update_the_pipeline_on_release_only():
    for p in (Param("10s", min="1s", max="1min"), Param(3, min=0, max=10),
              Param(2.5, min=0.0, max=10.0)):
        assert p.widget.continuous_update is False


def test_int_slider_has_the_bounds_and_step():
    w = Param(4, min=2, max=20, step=2).widget
    assert (w.min, w.max, w.step, w.value) == (2, 20, 2, 4)


def test_float_slider_default_step_is_a_hundredth_of_the_range():
    w = Param(2.5, min=0.0, max=10.0).widget
    assert (w.min, w.max, w.value) == (0.0, 10.0, 2.5)
    assert w.step == pytest.approx(0.1)


def test_dropdown_offers_the_choices():
    assert Param("mean", choices=["mean", "max", "p99"]).widget.options == ("mean", "max", "p99")


def test_duration_slider_options_include_min_max_and_value():
    p = Param("7s", min="3s", max="100s")
    labels = [label for label, _ in p.widget.options]
    values = [value for _, value in p.widget.options]
    assert labels == ["3s", "5s", "7s", "10s", "15s", "20s", "30s", "45s", "1min", "90s", "100s"]
    assert values == sorted(values)
    assert values[0] == td("3s") and values[-1] == td("100s")
    assert p.widget.value == td("7s")
    assert p.widget.label == "7s"


def test_duration_slider_options_stay_within_bounds():
    p = Param("250ms", min="200ms", max="2s")
    values = [value for _, value in p.widget.options]
    assert values == [td("200ms"), td("250ms"), td("500ms"), td("1s"), td("2s")]


@pytest.mark.parametrize("make, new", [
    (lambda: Param(3, min=0, max=10), 7),
    (lambda: Param(2.5, min=0.0, max=10.0), 7.5),
    (lambda: Param("a", choices=["a", "b"]), "b"),
    (lambda: Param(False), True),
    (lambda: Param("10s", min="1s", max="1min"), td("30s")),
], ids=["int", "float", "choice", "bool", "duration"])
def test_param_change_moves_the_widget(make, new):
    param = make()
    w = param.widget
    param.value = new
    assert w.value == new


@pytest.mark.parametrize("make, old, new", [
    (lambda: Param(3, min=0, max=10), 3, 7),
    (lambda: Param(2.5, min=0.0, max=10.0), 2.5, 7.5),
    (lambda: Param("a", choices=["a", "b"]), "a", "b"),
    (lambda: Param(False), False, True),
    (lambda: Param("10s", min="1s", max="1min"), td("10s"), td("30s")),
], ids=["int", "float", "choice", "bool", "duration"])
def test_widget_change_sets_the_param_and_notifies(make, old, new):
    param = make()
    seen = []
    param.watch(lambda p, o, n: seen.append((o, n)))
    param.widget.value = new
    assert param.value == new
    assert seen == [(old, new)]


def test_param_changes_before_the_widget_exists_are_shown():
    p = Param(3, min=0, max=10)
    p.value = 8
    assert p.widget.value == 8


def test_duration_value_between_slider_stops_becomes_a_stop():
    # 20s is one of the stops; the Param must land exactly there, and so must the widget.
    p = Param("10s", min="1s", max="1min")
    w = p.widget
    p.value = "20s"
    assert (p.value, w.value, w.label) == (td("20s"), td("20s"), "20s")


def test_duration_value_that_is_not_a_stop_is_added_to_the_slider():
    p = Param("10s", min="1s", max="5min", name="window")
    w = p.widget
    seen = []
    p.watch(lambda param, old, new: seen.append((old, new)))
    p.value = "13s"
    assert p.value == td("13s")
    assert w.value == td("13s")
    assert "13s" in [label for label, _ in w.options]
    assert seen == [(td("10s"), td("13s"))]
