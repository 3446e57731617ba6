"""Errors that reach the user as a readable message."""


class InputError(ValueError):
    """Input the engine cannot use. The message says what is wrong and how to fix it."""


class CheckpointError(InputError):
    """A model file that cannot be loaded safely or is not ours."""
