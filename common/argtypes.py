"""What every command line of the project (``seqwatch``, the researcher's commands) checks alike.

:class:`Parser` is the argument parser of every command: a usage error is one
``PROG: error: ...`` line with exit status 2. The argparse types turn a
flag's text into a value or raise :class:`argparse.ArgumentTypeError`, which
becomes such a line (``error: argument --flag: ...``). The output checks
refuse, before any work, a path that cannot be written as asked.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from common.config import MAX_INT
from common.errors import ConfigError


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the CLI.

    argparse prints the whole usage block first; on a command with twenty flags the error
    itself is then the last of a dozen lines. Subcommands' parsers are of this class too
    (``add_subparsers`` makes its parsers of the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """A whole number > 0."""
    value = _whole(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number >= 0."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def rate(text: str) -> float:
    """A rate in [0, 1) (``--false-alarm-rate``; 0: no validation score above the threshold),
    as ``calibration.false-alarm-rate`` takes it."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (e.g. 0.01 for 1 %), got {text}")
    return value


def confidence(text: str) -> float:
    """A probability in [0, 1) (``--confidence``; 0 = off)."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (e.g. 0.9; 0 = off), got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if abs(value) > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT:,} in size, got {text}")
    return value


def folder_to_write(path: str | Path, flag: str = "") -> Path:
    """``path`` as a folder to write into (created later if missing).

    Raises:
        ConfigError: ``path`` is an existing file.
    """
    if not str(path).strip():  # Path("") is the current folder: files would land where the user stands
        raise ConfigError(f"{flag} is empty; name a folder (it is created if missing)".strip())
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path}".strip() + ": is a file; name a folder (it is created if missing)")
    _check_writable(p, flag)
    return p


def file_to_write(path: str | Path, flag: str = "") -> Path:
    """``path`` as a file to write.

    Raises:
        ConfigError: ``path`` is an existing folder.
    """
    if not str(path).strip():
        raise ConfigError(f"{flag} is empty; name a file".strip())
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {path}".strip() + ": is a folder; name a file")
    _check_writable(p, flag)
    return p


def _check_writable(p: Path, flag: str) -> None:
    """Refuse an output ``p`` (a file, or a folder to write into) where nothing can be written.

    An existing file must be writable. Missing folders are created later, with their parents,
    inside the nearest folder that exists, so that folder must take a new file: probed with a
    nameless temporary file (nothing is left behind), so a read-only file system, a folder
    without permission, or one such as /proc where nothing can be created, is refused before
    any work rather than after it.

    Raises:
        ConfigError: naming the flag, the path and the folder that refuses it.
    """
    import os
    import tempfile

    where = f"{flag} {p}".strip()
    if p.exists() and not p.is_dir():  # a file, or a device such as /dev/null
        if not os.access(p, os.W_OK):
            raise ConfigError(f"{where}: the file is read-only; name another file or make it writable")
        return
    existing = p.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{where}: {existing} is a file, not a folder; name another place")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot write in {existing} ({exc.strerror or exc}); name another place"
        ) from None
