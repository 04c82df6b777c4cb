"""User-facing output of the ``seqwatch`` CLI: result lines, logging to stderr, epoch progress."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

PROG = "seqwatch"
_OUR_LOGGERS = frozenset({"client", "common", "server", "simulations"})


@dataclass(frozen=True)
class Console:
    """Prints user-facing text to stdout; ``quiet`` silences everything but results."""

    quiet: bool = False

    def info(self, text: str) -> None:
        """Informational line (hidden by ``--quiet``)."""
        if not self.quiet:
            print(text)

    def result(self, text: str) -> None:
        """A result line (always printed)."""
        print(text)


class _LogFormatter(logging.Formatter):
    """``seqwatch: warning: message`` (plus the logger name with ``-v``)."""

    def __init__(self, with_name: bool) -> None:
        super().__init__("%(message)s")
        self.with_name = with_name

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        name = f"{record.name}: " if self.with_name else ""
        return f"{PROG}: {record.levelname.lower()}: {name}{text}"


class _OurRecords(logging.Filter):
    """Below WARNING, only records from seqwatch's own packages (not matplotlib & co.)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in _OUR_LOGGERS


class _BarAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records above a terminal progress bar (through tqdm) while one is drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")  # only a process that drew a bar imported it
        if tqdm is None or not getattr(tqdm.tqdm, "_instances", None):
            super().emit(record)
            return
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must not raise: report it as logging does
            self.handleError(record)


@dataclass
class _LoggingSetup:
    handler: logging.Handler
    old_level: int

    def undo(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.old_level)


def setup_logging(verbose: int, quiet: bool) -> _LoggingSetup:
    """Log to stderr: WARNING by default, INFO with ``-v``, DEBUG with ``-vv``, ERROR with ``--quiet``."""
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.WARNING
    handler = _BarAwareHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(_LogFormatter(with_name=verbose > 0))
    handler.addFilter(_OurRecords())
    root = logging.getLogger()
    setup = _LoggingSetup(handler, root.level)
    root.addHandler(handler)
    root.setLevel(level)
    return setup


def _terminal_bar(quiet: bool, **kwargs: Any) -> Any:
    """A tqdm bar on stderr when stderr is a terminal and output is not quiet, else None."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but optional here
        return None
    return tqdm(file=sys.stderr, **kwargs)


class _Progress:
    """A ``with`` block around a progress display; closes the terminal bar, if any, on leaving."""

    _bar: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


class EpochProgress(_Progress):
    """Training progress on stderr.

    On a terminal: a bar over the epochs and, below it, one over the current
    epoch's events (rate and time left, so a long first epoch is not silent).
    Elsewhere: one plain line per epoch.
    """

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self._bar = _terminal_bar(quiet, total=total, desc="fit", unit="epoch", leave=True)
        self._events: Any = None
        self._epoch = 0

    def events(self, epoch: int, per_epoch: int, n: int) -> None:
        """``n`` more events trained on in ``epoch`` (of ``per_epoch``): the inner bar."""
        if self._bar is None:
            return
        if self._events is None:
            self._events = _terminal_bar(
                False,
                total=per_epoch,
                desc=f"epoch {epoch}",
                unit="event",
                unit_scale=True,
                leave=False,
                position=1,
            )
            self._epoch = epoch
        elif epoch != self._epoch:
            self._epoch = epoch
            self._events.set_description(f"epoch {epoch}", refresh=False)  # reset() redraws the bar
            self._events.reset(total=per_epoch)
        self._events.update(n)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._events is not None:
            self._events.close()
        super().__exit__(exc_type, exc, tb)

    def __call__(self, epoch: int, row: dict[str, float]) -> None:
        text = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
        if self._bar is not None:
            short = {"train_loss": "loss", "val_loss": "val"}
            self._bar.set_postfix_str(
                "  ".join(f"{short[k]} {v:.4f}" for k, v in row.items() if k in short), refresh=False
            )
            self._bar.update(1)
        elif not self.quiet:
            print(f"epoch {epoch}/{self.total}  {text}", file=sys.stderr, flush=True)


class Status(_Progress):
    """Slow work without a count to show (``reading big.csv (154 MB)``): one line on stderr while it
    runs, on a terminal only, erased when it is done; nothing elsewhere or with ``--quiet``.

    Drawn through tqdm, so warnings logged meanwhile print above it instead of onto it.
    """

    def __init__(self, text: str, *, quiet: bool) -> None:
        self._bar = _terminal_bar(quiet, total=None, desc=text, bar_format="{desc} …", leave=False)


def size_text(path: str | os.PathLike[str]) -> str:
    """`` (154 MB)``: a file's size for a status line; empty when it cannot be read."""
    try:
        size: float = os.path.getsize(path)
    except OSError:
        return ""
    if size < 1000:
        return f" ({size:,.0f} byte{'' if size == 1 else 's'})"
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 999.95 or unit == "GB":  # 999,950 bytes is 1.0 MB, not 1,000.0 kB
            break
    return f" ({size:,.1f} {unit})"


class CountProgress(_Progress):
    """Progress of long counted work (events scored) on stderr: a tqdm bar on a terminal, else silent.

    Call it with the amount done since the last call. Off a terminal (logs,
    pipes) it prints nothing: a count without a bar is noise there.
    """

    def __init__(self, total: int, *, desc: str, unit: str, quiet: bool) -> None:
        self._bar = _terminal_bar(
            quiet or total <= 0, total=total, desc=desc, unit=unit, unit_scale=True, leave=False
        )

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)
