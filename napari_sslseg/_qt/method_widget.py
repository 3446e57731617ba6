"""The method section: a method from the registry and its options, as a form built from its config."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label

from ..methods import DEFAULT_METHOD, METHODS
from .forms import dataclass_form, form_values
from .layout import group


class MethodSection:
    def __init__(self):
        self.choice = ComboBox(name="method", label="method", choices=sorted(METHODS), value=DEFAULT_METHOD)
        self.summary = Label(name="summary")
        self.summary.native.setWordWrap(True)
        self.options = Container(name="options")
        self.box = group("Method", Container(widgets=[self.choice]), self.summary, self.options)
        self.choice.changed.connect(self._on_method)
        self._on_method()

    def _on_method(self, *_) -> None:
        cls = METHODS[self.choice.value]
        self.summary.value = cls.summary
        self.options.clear()
        self.options.extend(list(dataclass_form(cls.Config)))

    def option_values(self) -> dict:
        return form_values(self.options)
