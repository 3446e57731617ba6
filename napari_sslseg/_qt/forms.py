"""Forms generated from option dataclasses, so a new method or setting needs no widget code."""

from __future__ import annotations

from dataclasses import MISSING, fields

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox


def _default(field):
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return None


def _widget(name: str, value, limits: dict):
    """A widget for one field; its range, where the config declares one (``config.setting``), bounds
    the spin box. ``config.validate`` still checks every value when training starts."""
    label = name.replace("_", " ")
    low = limits.get("low", limits.get("above", 0))
    high = limits.get("high", limits.get("below", 10**7))
    if isinstance(value, bool):
        return CheckBox(name=name, label=label, value=value)
    if isinstance(value, int):
        return SpinBox(name=name, label=label, value=value, min=low, max=high, step=limits.get("multiple", 1))
    if isinstance(value, float):
        # a step below the default keeps enough decimals for values like 1e-4
        step = min(0.01, abs(value) / 10) if value else 0.01
        return FloatSpinBox(name=name, label=label, value=value, min=float(low), max=float(min(high, 1e6)), step=step)
    if "choices" in limits:
        return ComboBox(name=name, label=label, value=value, choices=list(limits["choices"]))
    return LineEdit(name=name, label=label, value="" if value is None else str(value))


def dataclass_form(cls, exclude=()) -> Container:
    """A form with one widget per field of the dataclass ``cls``, set to its defaults."""
    from ..config import field_help

    helps = field_help(cls)
    widgets = [_widget(f.name, _default(f), f.metadata.get("limits", {})) for f in fields(cls) if f.name not in exclude]
    for w, f in zip(widgets, [f for f in fields(cls) if f.name not in exclude]):
        # the field's comment in the source, as the command line's --help shows it
        w.tooltip = (f"{helps[f.name].replace('``', '')} " if helps[f.name] else "") + f"({f.name}, default {_default(f)!r})"
    return Container(widgets=widgets, labels=True)


def form_values(form: Container) -> dict:
    """The form's values by field name, for ``dataclass(**values)``."""
    return {w.name: w.value for w in form}
