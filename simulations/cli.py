"""What the researcher's commands share at the command line: argument types and one-line errors.

``python -m simulations.experiment`` and the ``bench_*`` benchmarks run
through :func:`run_main`: a user mistake (a bad config key, a missing data
set, an output path that is a file) is one ``PROG: error: ...`` line on stderr
and exit status 2, as in the ``seqwatch`` CLI, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from common.errors import ConfigError, SeqwatchError

_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def run_main(prog: str, body: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run ``body(argv)``; the project's errors and OS errors become one line and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(args)
    except SystemExit as exc:  # argparse: usage errors (2, message already printed) and --help (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _EXIT_USAGE)
    except (SeqwatchError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def log_level(text: str) -> str:
    """argparse type: a logging level name, any case."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"use one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return level


def setup_logging(level: str = "INFO", fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    logging.basicConfig(level=level, format=fmt)


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder to write into: refused (before any work) when empty or an existing file."""
    if not str(path).strip():
        raise ConfigError(f"{flag}: give a folder name")
    p = Path(path).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path}: is a file; name a folder (it is created if missing)")
    return p


def output_file(path: Path | None, flag: str = "--out") -> Path | None:
    """A file to write: refused (before any work) when it is an existing folder."""
    if path is not None and path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; name a file")
    return path
