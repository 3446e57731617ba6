"""Supervised baseline: annotated slices only. Every semi-supervised claim is measured against it."""

from .base import Method, register


@register
class Supervised(Method):
    name = "supervised"
    summary = "Annotated slices only (Dice + cross-entropy): the baseline every method is measured against."
    uses_unlabelled = False
