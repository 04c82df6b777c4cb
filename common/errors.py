"""Errors raised where input enters seqwatch (files, config, messages).

Every error carries a message that names the file, row, column or key at fault
and says what to do. The CLI turns any :class:`SeqwatchError` into one readable
line and exit code 2.
"""

from __future__ import annotations


class SeqwatchError(Exception):
    """Base class of every error a user can fix."""


class DataError(SeqwatchError):
    """A data file is missing, empty, malformed or inconsistent."""


class ConfigError(SeqwatchError):
    """A configuration key is missing, unknown or of the wrong type."""


class NotFittedError(SeqwatchError, ValueError, AttributeError):
    """A detector was used before ``fit`` (or ``load``).

    A ``ValueError`` and an ``AttributeError``, as scikit-learn's (and so
    PyOD's) ``NotFittedError`` is: code written for those catches it.
    """


class ModelFileError(SeqwatchError):
    """A saved model directory is missing files or is inconsistent."""


class TrainingError(SeqwatchError):
    """Training could not produce a usable model (the loss diverged)."""
