"""Errors that reach the user as a readable message."""


class InputError(ValueError):
    """Input the engine cannot use. The message says what is wrong and how to fix it."""


class CheckpointError(InputError):
    """A model file that cannot be loaded safely or is not ours."""


class TrainingError(Exception):
    """Training stopped by a failure; the message says what failed and what was saved.

    Not a RuntimeError: a napari generator worker takes those for "the worker was deleted"."""
