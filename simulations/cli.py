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

from common.argtypes import Parser, file_to_write, folder_to_write, positive_int
from common.errors import ConfigError, SeqwatchError

__all__ = ["Parser", "log_level", "output_file", "output_folder", "positive_int", "run_main", "setup_logging"]

_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def run_main(
    prog: str,
    body: Callable[[list[str]], int],
    argv: Sequence[str] | None,
    *,
    log_format: str | None = "%(message)s",
) -> int:
    """Run ``body(argv)``; the project's errors and OS errors become one line and exit 2.

    ``log_format``: set up INFO logging in that format first (None: ``body`` does it).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if log_format is not None:
        setup_logging("INFO", log_format)
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


def log_level(text: str) -> str:
    """argparse type: a logging level name, any case."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"use one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return level


def setup_logging(level: str = "INFO", fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    logging.basicConfig(level=level, format=fmt)


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder to write into, resolved: refused (before any work) when empty or an existing file."""
    if not str(path).strip():
        raise ConfigError(f"{flag}: give a folder name")
    return folder_to_write(Path(path).expanduser(), flag).resolve()


def output_file(text: str) -> Path:
    """argparse type of an output file: refused (before any work) when it is an existing folder."""
    try:
        return file_to_write(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
