"""The ipywidget of a :class:`~rtnb.Param` (a slider, a dropdown or a checkbox)."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from rtnb.params import Param

__all__ = ["param_widget"]


def param_widget(param: Param) -> Any:
    """The widget that edits ``param``: duration and number sliders, a dropdown, a checkbox.

    The caller connects it (``observe``) to the Param; see :attr:`rtnb.Param.widget`.
    """
    common: dict[str, Any] = {
        "description": param.name,
        "description_allow_html": False,
        "tooltip": param.doc,
        "style": {"description_width": "initial"},
        "continuous_update": False,
    }
    if param.kind == "duration":
        return widgets.SelectionSlider(options=param.duration_options(), value=param.value,
                                       **common)
    if param.kind == "int":
        return widgets.IntSlider(value=param.value, min=param.min, max=param.max,
                                 step=int(param.step or 1), **common)
    if param.kind == "float":
        assert param.min is not None and param.max is not None
        step = param.step or (param.max - param.min) / 100
        return widgets.FloatSlider(value=param.value, min=param.min, max=param.max, step=step,
                                   **common)
    common.pop("continuous_update")
    if param.kind == "choice":
        return widgets.Dropdown(options=list(param.choices or ()), value=param.value, **common)
    return widgets.Checkbox(value=param.value, indent=False, **common)
