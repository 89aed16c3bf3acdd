"""User-facing errors.

Every error a user can cause (bad file, bad geometry, missing weights, existing
output) is raised as an :class:`LNQError` whose message says what is wrong and
what to do. The CLI prints it without a traceback; the Slicer module shows it in
a message box.
"""


class LNQError(Exception):
    """An error caused by the input or the environment, with a message meant for the user."""


class InputError(LNQError, ValueError):
    """The input data is unsuitable (wrong dimension, not CT, NaNs, mismatched grids)."""


class OutputExistsError(LNQError, FileExistsError):
    """Writing would overwrite an existing file; pass ``overwrite=True`` (CLI: ``--overwrite``)."""


class OutputError(LNQError, OSError):
    """An output location cannot be created or written (a file where a folder should be, no permission)."""


class ModelError(LNQError):
    """A model folder is missing, corrupted or inconsistent with its model.json."""


class CancelledError(LNQError):
    """The user cancelled a running job; nothing was written."""
