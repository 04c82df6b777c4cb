"""``seqwatch``: the command line an institution runs on its own data.

Subcommands:

* ``convert``: turn a benchmark data set (ADFA-LD, HDFS, OpenStack) into
  canonical event tables;
* ``fit``: train a local detector on normal behaviour and calibrate its threshold;
* ``score``: score every sequence of a file, write a per-sequence table and,
  when labels are present, detection metrics;
* ``explain``: show why one sequence scored as it did, event by event;
* ``report``: write a self-contained HTML report of the top anomalies.

Reading data: an event file has one row per event. Without flags the columns
are detected from the header (``sequence`` or ``sequence_id``, ``event``,
``order`` or ``timestamp``, ``label``), which reads the files ``convert``
writes. ``fit`` records how it read the training data in the model directory
(:data:`LAYOUT_FILE`); ``score``, ``explain`` and ``report`` use that as their
default, so the same flags need not be repeated.

User-facing output goes to stdout; progress, logging and errors go to stderr.
Any :class:`~common.errors.SeqwatchError` or OS error becomes one line
``seqwatch: error: ...`` and exit code 2 (130 on Ctrl-C); ``-v`` adds the
traceback. Modules that import torch, pandas or matplotlib are imported inside
the subcommands so that ``seqwatch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from common import __version__
from common.errors import ConfigError, DataError, ModelFileError, SeqwatchError

if TYPE_CHECKING:
    import pandas as pd

    from common.config import DetectorConfig
    from common.detector import ScoredTable, SequenceDetector
    from common.events import ColumnMap, EventTable

__all__ = ["LAYOUT_FILE", "DataLayout", "build_parser", "main", "read_data", "resolve_columns"]

log = logging.getLogger(__name__)

PROG = "seqwatch"
LAYOUT_FILE = "columns.json"
"""File in a model directory, written by ``seqwatch fit``: how the training data was read."""
_LAYOUT_FORMAT = "seqwatch-data-layout"

SEQUENCE_CANDIDATES = ("sequence", "sequence_id")
"""Header names tried, in order, for the sequence-id column."""
EVENT_CANDIDATES = ("event",)
"""Header names tried for the event column."""
ORDER_CANDIDATES = ("order", "timestamp")
"""Header names tried for the order column (none found: file order)."""
_OUR_LOGGERS = frozenset({"client", "common", "server", "simulations"})
_TOP_EVENT_EXPECTED = 2
#: Expected events kept per step for the report's explanations.
_EXPLAIN_EXPECTED = 3
_TOKEN_WIDTH = 40
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------- output


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


@dataclass
class _LoggingSetup:
    handler: logging.Handler
    old_level: int

    def undo(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.old_level)


def _setup_logging(verbose: int, quiet: bool) -> _LoggingSetup:
    """Log to stderr: WARNING by default, INFO with ``-v``, DEBUG with ``-vv``, ERROR with ``--quiet``."""
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(_LogFormatter(with_name=verbose > 0))
    handler.addFilter(_OurRecords())
    root = logging.getLogger()
    setup = _LoggingSetup(handler, root.level)
    root.addHandler(handler)
    root.setLevel(level)
    return setup


class EpochProgress:
    """Per-epoch progress on stderr: a tqdm bar on a terminal, else one plain line per epoch."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self._bar: Any = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency, but optional here
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc="fit", unit="epoch", file=sys.stderr, leave=True)

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

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------- argparse types


def _csv_names(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; an empty string gives ``()`` (explicitly no columns)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# --------------------------------------------------------------------------- reading data


@dataclass(frozen=True)
class DataLayout:
    """How an event file is read: its column map plus optional sessionization."""

    columns: ColumnMap
    session_gap: float | None = None
    block_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``fit`` writes to :data:`LAYOUT_FILE`)."""
        return {
            "format": _LAYOUT_FORMAT,
            "format_version": 1,
            "columns": self.columns.to_dict(),
            "session_gap": self.session_gap,
            "block_size": self.block_size,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> DataLayout:
        """Inverse of :meth:`to_dict`.

        Raises:
            ModelFileError: the data is not a layout written by ``seqwatch fit``.
        """
        from common.events import ColumnMap

        if not isinstance(data, dict) or data.get("format") != _LAYOUT_FORMAT:
            raise ModelFileError(
                f"{source}: not a seqwatch data layout file; delete it or re-run 'seqwatch fit'"
            )
        try:
            columns = ColumnMap.from_dict(data["columns"], source=source)
            gap = data.get("session_gap")
            block = data.get("block_size")
            return cls(columns, None if gap is None else float(gap), None if block is None else int(block))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFileError(f"{source}: damaged data layout ({exc}); re-run 'seqwatch fit'") from exc


def _read_header(path: Path, encoding: str) -> list[str] | None:
    """Column names of an event file, or None when they cannot be read (``read_table`` then says why)."""
    name = path.name.lower()
    try:
        if not path.is_file():
            return None
        if name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                return [str(n) for n in pq.read_schema(path).names]
            except (pa.ArrowException, OSError, ValueError):
                return None
        import pandas as pd

        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        frame = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding, compression="infer")
        return [str(c) for c in frame.columns]
    except (OSError, ValueError, UnicodeError, LookupError, EOFError):
        return None


def _pick(header: list[str] | None, candidates: Sequence[str | None]) -> str | None:
    """First candidate present in ``header`` (the first candidate at all when the header is unknown)."""
    names = [c for c in candidates if c]
    if header is None:
        return names[0] if names else None
    return next((c for c in names if c in header), None)


def _shown(header: list[str]) -> str:
    return ", ".join(repr(c) for c in header[:20]) + (", ..." if len(header) > 20 else "")


def resolve_columns(
    path: str | Path,
    args: argparse.Namespace,
    *,
    saved: ColumnMap | None = None,
    features: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> ColumnMap:
    """The column map for ``path`` from the data-reading flags in ``args``.

    Precedence, per role: a flag (``--event-col`` ...), else the ``--columns``
    file when given (it replaces detection), else the map ``fit`` saved with
    the model (``saved``, when its column is in the file), else detection from
    the file's header. Feature columns default to ``saved``'s, else to
    ``features`` (the model's numeric and context feature names).

    Raises:
        ConfigError: an invalid map or ``--columns`` file.
        DataError: no sequence-id or event column could be found.
    """
    from common.events import GAP, LABEL, ORDER, ColumnMap

    path = Path(path)
    flags: dict[str, Any] = {
        "sequence": args.sequence_col,
        "event": args.event_col,
        "order": args.order_col,
        "time": args.time,
        "numeric": args.numeric_cols,
        "context": args.context_cols,
        "label": args.label_col,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if args.columns is not None:
        base = ColumnMap.from_file(args.columns)
        return dataclasses.replace(base, **given) if given else base

    header = _read_header(path, args.encoding)
    found: dict[str, Any] = {}
    for role, candidates, flag in (
        ("sequence", SEQUENCE_CANDIDATES, "--sequence-col"),
        ("event", EVENT_CANDIDATES, "--event-col"),
    ):
        if role in given:
            continue
        value = _pick(header, [getattr(saved, role) if saved else None, *candidates])
        if value is None:
            header = header or []
            looked = [*([getattr(saved, role)] if saved else []), *candidates]
            raise DataError(
                f"{path}: no {role} column found (looked for {', '.join(repr(c) for c in looked)}; "
                f"columns present: {_shown(header)}); name it with {flag}"
            )
        found[role] = value
    if "order" not in given:
        found["order"] = _pick(header, [saved.order if saved else None, *ORDER_CANDIDATES])
    order = given.get("order", found.get("order"))
    if "time" not in given:
        if saved is not None and saved.order is not None and order == saved.order:
            found["time"] = saved.time
        elif order == ORDER and header is not None and GAP in header:
            found["time"] = True  # a timestamped table written by write_table
        else:
            found["time"] = None
    if "numeric" not in given:
        if saved is not None:
            found["numeric"] = saved.numeric
        elif features is not None:
            found["numeric"] = tuple(n for n in features[0] if n != GAP)
    if "context" not in given:
        if saved is not None:
            found["context"] = saved.context
        elif features is not None:
            found["context"] = features[1]
    if "label" not in given and saved is not None and saved.label not in (None, LABEL):
        found["label"] = _pick(header, [saved.label])
    return ColumnMap(**{**found, **given})


def _session_settings(args: argparse.Namespace, saved: DataLayout | None) -> tuple[float | None, int | None]:
    """(gap seconds, block size): flags replace the saved settings; 0 means off."""
    if args.session_gap and args.block_size:
        raise ConfigError("give only one of --session-gap and --block-size")
    if args.session_gap is not None or args.block_size is not None:
        gap = args.session_gap if args.session_gap else None
        block = args.block_size if args.block_size else None
        return gap, block
    if saved is not None:
        return saved.session_gap, saved.block_size
    return None, None


def read_data(
    path: str | Path,
    args: argparse.Namespace,
    *,
    saved: DataLayout | None = None,
    features: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> tuple[EventTable, DataLayout]:
    """Read (and sessionize) an event file as the data-reading flags say; see :func:`resolve_columns`."""
    from common.events import read_table, sessionize

    columns = resolve_columns(path, args, saved=saved.columns if saved else None, features=features)
    log.info("reading %s with columns %s", path, columns.to_dict())
    table = read_table(path, columns, encoding=args.encoding)
    gap, block = _session_settings(args, saved)
    if gap is not None or block is not None:
        n_before = len(table)
        table = sessionize(table, gap_seconds=gap, block_size=block)
        how = f"after {gap:g} s of inactivity" if gap is not None else f"into blocks of {block} events"
        log.info("%s: sessionized %d sequence(s) %s: %d sequence(s)", path, n_before, how, len(table))
    return table, DataLayout(columns, gap, block)


def _describe(console: Console, what: str, table: EventTable) -> None:
    """One line about a table that was read, plus any repaired values."""
    g = table.grouped()
    labelled = ""
    if g.labels is not None:
        labelled = f", {int(g.labels.sum())} labelled anomalous"
    console.info(f"{what}: {len(g)} sequences, {g.n_events} events{labelled} ({table.source})")
    if table.repairs:
        total = sum(table.repairs.values())
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(table.repairs.items()))
        console.info(f"  repaired {total} value(s): {detail}")


# --------------------------------------------------------------------------- models


def _load_model(model_dir: str | Path, device: str | None) -> tuple[SequenceDetector, DataLayout | None]:
    """Load a detector and the data layout ``fit`` saved with it (None for federated models).

    Raises:
        ModelFileError: the directory is missing or not a seqwatch model.
    """
    p = Path(model_dir)
    if not p.exists():
        raise ModelFileError(f"{p}: model directory not found; train one with 'seqwatch fit --out {p}'")
    if not p.is_dir():
        raise ModelFileError(f"{p}: is a file, not a model directory")
    from common.detector import SequenceDetector

    detector = SequenceDetector.load(p, device=device)
    layout_path = p / LAYOUT_FILE
    layout: DataLayout | None = None
    if layout_path.is_file():
        try:
            data = json.loads(layout_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{layout_path}: unreadable ({exc}); re-run 'seqwatch fit'") from exc
        layout = DataLayout.from_dict(data, source=str(layout_path))
    return detector, layout


def _read_for_model(
    path: str | Path, args: argparse.Namespace, detector: SequenceDetector, layout: DataLayout | None
) -> EventTable:
    """Read a file to score with ``detector``; its features must be the model's."""
    enc = detector.encoder_
    table, _ = read_data(path, args, saved=layout, features=(enc.numeric_names, enc.context_names))
    if table.numeric != enc.numeric_names or table.context != enc.context_names:
        raise DataError(
            f"{table.source}: the model was trained with numeric features {list(enc.numeric_names)} and "
            f"context features {list(enc.context_names)}, but the data was read with "
            f"{list(table.numeric)} and {list(table.context)}; pass matching --numeric-cols/--context-cols "
            f"(and --order-col/--time when the model used timestamps)"
        )
    return table


def _threshold(detector: SequenceDetector, which: str) -> float:
    if which == "global":
        if detector.global_threshold_ is None:
            raise ConfigError(
                "this model has no global threshold (it was trained locally); use --threshold local"
            )
        return float(detector.global_threshold_)
    return float(detector.threshold_)


def _short(token: object) -> str:
    text = " ".join(str(token).split())
    return text if len(text) <= _TOKEN_WIDTH else text[: _TOKEN_WIDTH - 1] + "…"


def top_events_texts(detector: SequenceDetector, scored: ScoredTable, n: int) -> list[str]:
    """The ``n`` most surprising events of every sequence, each as one compact string.

    ``"pos 17: open (expected read, write); pos 3: ..."``, most surprising first.
    Positions are 0-based, as in ``seqwatch explain``; unseen tokens are marked
    ``[unseen]``. ``n <= 0`` gives empty strings (and skips the model pass).
    """
    data = scored.encoded
    if n <= 0:
        return [""] * len(data)
    from common.vocab import END, UNK

    if scored.events.expected is None:
        raise ValueError("top_events_texts() needs a table scored with expected_k > 0")
    positions = [scored.top_events(i, n) for i in range(len(data))]
    vocab = detector.encoder_.vocab
    events = scored.events
    texts = []
    for i, pos in enumerate(positions):
        start, length = int(data.offsets[i]), int(data.lengths[i])
        parts = []
        for t in pos:
            if t == length and events.end_expected is not None:  # the END step
                raw, unseen, guess_ids = vocab.token(END), "", events.end_expected[i, :_TOP_EVENT_EXPECTED]
            else:
                row = start + int(t)
                token = int(data.tokens[row])
                raw = scored.raw_events[row] if scored.raw_events is not None else vocab.token(token)
                unseen = " [unseen]" if token == UNK else ""
                guess_ids = events.expected[row, :_TOP_EVENT_EXPECTED]
            guesses = ", ".join(_short(vocab.token(int(a))) for a in guess_ids)
            parts.append(f"pos {int(t)}: {_short(raw)}{unseen} (expected {guesses})")
        texts.append("; ".join(parts))
    return texts


def score_frame(
    detector: SequenceDetector, scored: ScoredTable, threshold: float, top_events: int
) -> pd.DataFrame:
    """Per-sequence table.

    Columns: sequence_id, score, flagged, threshold, n_events, unknown_events,
    top_events, and label when the data is labelled.
    """
    import numpy as np
    import pandas as pd

    from common.vocab import UNK

    enc = scored.encoded
    lengths = np.diff(enc.offsets)
    n_seq = len(lengths)
    owner = np.repeat(np.arange(n_seq), lengths)
    unknown = np.bincount(owner, weights=(enc.tokens == UNK), minlength=n_seq).astype(np.int64)
    scores = np.asarray(scored.scores, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "sequence_id": np.asarray(enc.ids).astype(str),
            "score": scores,
            "flagged": scores > threshold,
            "threshold": np.full(n_seq, threshold, dtype=np.float64),
            "n_events": lengths.astype(np.int64),
            "unknown_events": unknown,
            "top_events": top_events_texts(detector, scored, top_events),
        }
    )
    if enc.labels is not None:
        frame["label"] = np.asarray(enc.labels).astype(np.int64)
    return frame


def _write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet for ``.parquet``, TSV for ``.tsv``/``.tsv.gz``, else CSV (gzip for ``.gz``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.name.lower()
    if name.endswith(".parquet"):
        frame.to_parquet(out, index=False)
    else:
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        frame.to_csv(out, index=False, sep=sep, compression="infer")
    return out


def _metrics(scored: ScoredTable, threshold: float, source: str) -> dict[str, Any] | None:
    """``detection_report`` plus ``threshold_source``, or None without labels."""
    labels = scored.encoded.labels
    if labels is None:
        return None
    from common.metrics import detection_report

    return {**detection_report(labels, scored.scores, threshold), "threshold_source": source}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_metrics(console: Console, metrics: dict[str, Any]) -> None:
    rows = [
        ("AUROC", "auroc"),
        ("AUPRC", "auprc"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("F1", "f1"),
        ("false-alarm rate", "false_alarm_rate"),
        ("detection @1% FAR", "detection_rate_at_1pct_far"),
        ("detection @5% FAR", "detection_rate_at_5pct_far"),
    ]
    console.result(
        f"metrics ({metrics['n_sequences']} sequences, {metrics['n_anomalous']} anomalous; "
        f"tp {metrics['tp']} fp {metrics['fp']} tn {metrics['tn']} fn {metrics['fn']}):"
    )
    for title, key in rows:
        console.result(f"  {title:<18} {_fmt(metrics.get(key))}")


# --------------------------------------------------------------------------- subcommands


def cmd_convert(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch convert``: benchmark data set -> canonical event tables."""
    from common.datasets import convert

    options: dict[str, Any] = {}
    if args.dataset_version is not None:
        if args.dataset != "openstack":
            raise ConfigError(f"--version applies to openstack only, not {args.dataset}")
        options["version"] = args.dataset_version
    written = convert(args.dataset, args.src, args.out, fmt=args.format, **options)
    console.result(f"converted {args.dataset} from {args.src}:")
    for split, path in written.items():
        n_seq, n_events, n_anom = _count_file(path)
        anomalous = "" if n_anom is None else f", {n_anom} anomalous"
        console.result(f"  {split:<14} {n_seq:>7} sequences {n_events:>10} events{anomalous}  -> {path}")
    return 0


def _count_file(path: Path) -> tuple[int, int, int | None]:
    """(sequences, events, anomalous sequences or None) of a canonical file, reading two columns."""
    from common.events import CANONICAL, LABEL, SEQUENCE, read_table

    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        frame = pq.read_table(path, columns=[c for c in (SEQUENCE, LABEL) if c in have]).to_pandas()
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        import pandas as pd

        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        frame = pd.read_csv(path, sep=sep, usecols=lambda c: c in (SEQUENCE, LABEL), dtype={SEQUENCE: str})
    else:  # pragma: no cover - convert only writes the formats above
        table = read_table(path, CANONICAL)
        return len(table), table.n_events, None
    n_seq = int(frame[SEQUENCE].nunique())
    n_anom = int(frame.groupby(SEQUENCE)[LABEL].max().sum()) if LABEL in frame.columns else None
    return n_seq, len(frame), n_anom


def build_config(args: argparse.Namespace) -> DetectorConfig:
    """Detector config from ``--config`` (TOML/JSON, or a pyproject.toml) and the fit flags.

    Raises:
        ConfigError: unreadable file, unknown key or invalid value.
    """
    from common.config import DetectorConfig, load_config_file, parse_config, with_overrides

    config = DetectorConfig()
    if args.config is not None:
        flat = load_config_file(args.config)
        prefix = "tool.flwr.app.config."
        if any(k.startswith("tool.") for k in flat):
            flat = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
            if not flat:
                raise ConfigError(f"{args.config}: no [tool.flwr.app.config] table with seqwatch keys")
        config = parse_config(flat).detector
    changes: dict[str, dict[str, Any]] = {}
    if args.model_kind is not None:
        changes.setdefault("model", {})["kind"] = args.model_kind
    if args.epochs is not None:
        changes.setdefault("train", {})["epochs"] = args.epochs
    if args.device is not None:
        changes.setdefault("train", {})["device"] = args.device
    if args.seed is not None:
        changes.setdefault("train", {})["seed"] = args.seed
    if args.false_alarm_rate is not None:
        changes["calibration"] = {"false_alarm_rate": args.false_alarm_rate, "contamination": 0.0}
    return with_overrides(config, **changes) if changes else config


def cmd_fit(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch fit``: train a local detector and calibrate its threshold."""
    config = build_config(args)
    train, layout = read_data(args.data, args)
    _describe(console, "training data", train)
    validation = None
    if args.validation is not None:
        validation, _ = read_data(args.validation, args, saved=layout)
        _describe(console, "validation data", validation)

    from common.detector import SequenceDetector

    cfg = config
    detector = SequenceDetector(config)
    console.info(
        f"training {cfg.model.kind} (hidden {cfg.model.hidden}, {cfg.model.layers} layer(s)) "
        f"for up to {cfg.train.epochs} epoch(s) on {detector.device}"
    )
    with EpochProgress(cfg.train.epochs, quiet=console.quiet) as progress:
        detector.fit(train, validation, progress=progress)
    result = detector.fit_result_
    if result is not None and result.history:
        console.info(
            f"best epoch {result.best_epoch} of {len(result.history)} "
            f"(validation loss {result.best_val_loss:.4f}, {result.train_events_per_second:,.0f} events/s)"
        )
    out = detector.save(args.out)
    (out / LAYOUT_FILE).write_text(json.dumps(layout.to_dict(), indent=1), encoding="utf-8")
    cal = cfg.calibration
    n_val = len(detector.validation_scores_)
    how = (
        f"contamination {cal.contamination:g}"
        if cal.contamination > 0
        else f"false-alarm rate {cal.false_alarm_rate:g}"
    )
    console.result(f"threshold: {detector.threshold_:.6g} ({how} on {n_val} normal validation sequences)")
    console.result(f"model saved to {out}")
    return 0


def cmd_score(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch score``: per-sequence scores (and metrics when labelled)."""
    detector, layout = _load_model(args.model, args.device)
    table = _read_for_model(args.data, args, detector, layout)
    _describe(console, "data", table)
    threshold = _threshold(detector, args.threshold)
    scored = detector.score_table(table, expected_k=_TOP_EVENT_EXPECTED if args.top_events > 0 else 0)
    frame = score_frame(detector, scored, threshold, args.top_events)
    out = _write_frame(frame, args.out)

    n = len(frame)
    n_flagged = int(frame["flagged"].sum())
    share = f" ({100.0 * n_flagged / n:.1f}%)" if n else ""
    console.result(
        f"flagged {n_flagged} of {n} sequences{share} at {args.threshold} threshold {threshold:.6g}"
    )
    stats = scored.encoded.stats
    n_unknown = int(stats.get("unknown_events", 0))
    n_events = int(stats.get("events", int(frame["n_events"].sum())))
    if n_unknown:
        n_seq_unknown = int((frame["unknown_events"] > 0).sum())
        console.result(
            f"unknown events: {n_unknown} of {n_events} ({100.0 * n_unknown / max(n_events, 1):.2f}%) "
            f"in {n_seq_unknown} sequence(s), never seen in training"
        )
    else:
        console.info("unknown events: none")
    if stats.get("unknown_context"):
        console.info(f"unknown context values: {int(stats['unknown_context'])}")

    metrics = _metrics(scored, threshold, args.threshold)
    if metrics is not None:
        _print_metrics(console, metrics)
        if args.metrics_json is not None:
            mpath = Path(args.metrics_json)
            mpath.parent.mkdir(parents=True, exist_ok=True)
            mpath.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            console.info(f"metrics written to {mpath}")
    elif args.metrics_json is not None:
        log.warning("%s has no labels; metrics not computed, %s not written", table.source, args.metrics_json)
    console.result(f"scores written to {out}")
    return 0


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch explain``: per-event surprisal of one sequence."""
    detector, layout = _load_model(args.model, args.device)
    table = _read_for_model(args.data, args, detector, layout)
    ids = [str(x) for x in table.grouped().ids]
    if args.sequence not in set(ids):
        sessions = [i for i in ids if i.startswith(f"{args.sequence}#")]  # sessionized ids: "{entity}#{k}"
        close = sessions[:3] or difflib.get_close_matches(args.sequence, ids, n=3)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"ids look like {ids[0]!r}"
        raise DataError(
            f"{table.source}: no sequence with id {args.sequence!r} ({len(ids)} sequences; {hint})"
        )
    explanation = detector.explain(table, args.sequence, top_k=args.top_k)
    threshold = _threshold(detector, args.threshold)
    explanation = dataclasses.replace(
        explanation, threshold=threshold, flagged=bool(explanation.score > threshold)
    )
    if args.json:
        console.result(json.dumps(explanation.to_dict(), indent=2))
    else:
        console.result(explanation.to_text(max_events=args.max_events, expected_k=args.top_k))
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch report``: HTML report with the top anomalies explained."""
    import numpy as np

    from common.report import write_report

    detector, layout = _load_model(args.model, args.device)
    table = _read_for_model(args.data, args, detector, layout)
    _describe(console, "data", table)
    threshold = _threshold(detector, args.threshold)
    scored = detector.score_table(table, expected_k=_EXPLAIN_EXPECTED)
    frame = score_frame(detector, scored, threshold, top_events=3)
    metrics = _metrics(scored, threshold, args.threshold)
    order = np.argsort(-np.nan_to_num(scored.scores, nan=-np.inf), kind="stable")[: args.top]
    explanations = [detector.explanation(scored, int(i)) for i in order]
    explanations = [
        dataclasses.replace(x, threshold=threshold, flagged=bool(x.score > threshold)) for x in explanations
    ]
    title = args.title or f"seqwatch report: {Path(args.data).name}"
    html = write_report(
        args.out,
        frame,
        threshold=threshold,
        metrics=metrics,
        explanations=explanations,
        title=title,
        global_threshold=detector.global_threshold_,
    )
    scores_path = _write_frame(frame, Path(args.out) / "scores.csv")
    if metrics is not None:
        _print_metrics(console, metrics)
    console.info(f"scores written to {scores_path}")
    console.result(f"report written to {html} ({len(explanations)} anomalies explained)")
    return 0


# --------------------------------------------------------------------------- parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example epilogs as written."""


def _global_flags() -> argparse.ArgumentParser:
    """-v/--quiet, accepted before or after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log to stderr (-v: INFO, -vv: DEBUG) and show tracebacks of errors",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress or informational lines; only results, warnings off, errors",
    )
    return p


def _add_data_flags(p: argparse.ArgumentParser, *, for_model: bool) -> None:
    """Add the data-reading flags shared by fit, score, explain and report."""
    default_src = (
        "Defaults: how 'fit' read the training data (saved in the model\n"
        "directory), else detected from the file's header."
        if for_model
        else "Defaults: detected from the file's header, which reads the files\n'seqwatch convert' writes."
    )
    g = p.add_argument_group(
        "reading data", f"Event files: .csv, .csv.gz, .tsv, .tsv.gz or .parquet.\n{default_src}"
    )
    g.add_argument(
        "--sequence-col",
        metavar="NAME",
        help=f"column holding the sequence id (auto: {' then '.join(map(repr, SEQUENCE_CANDIDATES))})",
    )
    g.add_argument("--event-col", metavar="NAME", help="column holding the event token (auto: 'event')")
    g.add_argument(
        "--order-col",
        metavar="NAME",
        help="position or timestamp ordering events inside a sequence "
        f"(auto: {' then '.join(map(repr, ORDER_CANDIDATES))}; none found: file order)",
    )
    g.add_argument(
        "--time",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the order column is a timestamp (--time) or a position (--no-time); auto-detected by default",
    )
    g.add_argument(
        "--numeric-cols",
        metavar="A,B",
        type=_csv_names,
        help="comma-separated numeric feature columns ('' for none)",
    )
    g.add_argument(
        "--context-cols",
        metavar="C,D",
        type=_csv_names,
        help="comma-separated categorical context columns ('' for none)",
    )
    g.add_argument(
        "--label-col", metavar="NAME", help="0/1 label column, 1 = anomalous (auto: 'label' if present)"
    )
    g.add_argument(
        "--columns",
        metavar="FILE",
        help="column map, JSON or TOML with keys sequence, event, order, time, numeric, context, label; "
        "replaces detection, flags above override it",
    )
    g.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV files (default: utf-8)")
    g.add_argument(
        "--session-gap",
        metavar="SECONDS",
        type=_nonnegative_float,
        help="cut sequences after this many seconds of inactivity (needs timestamps; 0 = off)",
    )
    g.add_argument(
        "--block-size",
        metavar="N",
        type=_nonnegative_int,
        help="cut sequences into consecutive blocks of N events (0 = off; not with --session-gap)",
    )


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """Add --model/--device/--threshold (score, explain, report)."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", required=True, metavar="MODEL_DIR", help="model directory written by 'seqwatch fit'"
    )
    g.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to run the model (default: auto = CUDA when available)",
    )
    g.add_argument(
        "--threshold",
        choices=("local", "global"),
        default="local",
        help="flag with this institution's calibrated threshold (local, default) "
        "or the federation's (global)",
    )


_MAIN_EPILOG = """\
examples:
  seqwatch convert adfa-ld --src ../shared/data/adfa-ld --out data/adfa
  seqwatch fit --data data/adfa/train.parquet --out models/adfa --model gru --epochs 8
  seqwatch score --model models/adfa --data data/adfa/test.parquet --out scores.csv \\
      --metrics-json metrics.json
  seqwatch explain --model models/adfa --data data/adfa/test.parquet --sequence UAD-Adduser-1-1371
  seqwatch report --model models/adfa --data data/adfa/test.parquet --out report/

Run 'seqwatch COMMAND --help' for the flags of a command. Errors print one line
'seqwatch: error: ...' and exit with status 2 (130 when interrupted).
"""

_CONVERT_EPILOG = """\
Writes OUT/<split>.<format> (e.g. train.parquet, test.parquet) with the canonical
columns sequence, order, event, label (and attack_type for ADFA-LD), which the other
commands read without column flags.

examples:
  seqwatch convert adfa-ld --src ../shared/data/adfa-ld --out data/adfa
  seqwatch convert hdfs --src ../shared/data/hdfs --out data/hdfs --format csv
  seqwatch convert openstack --src ../shared/data/openstack --out data/os --version loghub
"""

_FIT_EPILOG = """\
Labelled anomalous sequences in the training data are left out: the model learns
normal behaviour. Without --validation, train.validation-fraction of the training
sequences is held out to early-stop and to calibrate the threshold.

The --config file holds flat dotted keys (or tables) such as:
  [model]
  kind = "gru"
  hidden = 64
  [train]
  epochs = 8
A pyproject.toml with a [tool.flwr.app.config] table works too. Flags override it.

examples:
  seqwatch fit --data data/adfa/train.parquet --out models/adfa
  seqwatch fit --data logins.csv --sequence-col user --event-col action \\
      --order-col ts --context-cols device,site --session-gap 1800 --out models/logins
  seqwatch fit --data train.csv --validation val.csv --config detector.toml \\
      --model cnn-lstm --device cuda --false-alarm-rate 0.005 --out models/m1
"""

_SCORE_EPILOG = """\
Output columns: sequence_id, score (higher = more anomalous), flagged (score >
threshold), threshold, n_events, unknown_events (events never seen in training),
top_events (the most surprising events, e.g. "pos 17: open (expected read, write)";
positions are 0-based; "pos N: <end>" after the last of N events means the sequence
stopped where the model expected it to go on), and label when the data has labels. The format follows the
suffix of --out: .parquet, .tsv(.gz) or CSV.

examples:
  seqwatch score --model models/adfa --data data/adfa/test.parquet --out scores.csv
  seqwatch score --model models/fed --data today.csv --out today.parquet --threshold global
  seqwatch score --model models/adfa --data test.parquet --out s.csv --metrics-json m.json --top-events 0
"""

_EXPLAIN_EPILOG = """\
Shows every event's surprisal (nats), its rank among the model's guesses, UNSEEN for
tokens never seen in training, and what the model expected instead; the most
anomalous events are marked '>>'. The last row, <end>, is the end of the sequence:
a high surprisal there means it stopped where the model expected more events.

examples:
  seqwatch explain --model models/adfa --data data/adfa/test.parquet --sequence UAD-Adduser-1-1371
  seqwatch explain --model models/adfa --data test.parquet --sequence UVD-0042 --top-k 5 --json
"""

_REPORT_EPILOG = """\
Writes OUT/report.html with its PNG figures (score distribution; ROC and PR curves when
labelled) and OUT/scores.csv with every sequence's score.

examples:
  seqwatch report --model models/adfa --data data/adfa/test.parquet --out report/
  seqwatch report --model models/fed --data today.csv --out report/ --top 25 --title "Today"
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``seqwatch`` argument parser with all subcommands."""
    common = _global_flags()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="seqwatch: anomaly detection over behaviour sequences, trained where the data lives.",
        epilog=_MAIN_EPILOG,
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "convert",
        help="convert a benchmark data set into canonical event tables",
        description="Convert a benchmark data set (ADFA-LD, HDFS, OpenStack) into canonical event tables.",
        epilog=_CONVERT_EPILOG,
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    p.add_argument("dataset", choices=("adfa-ld", "hdfs", "openstack"), help="which data set")
    p.add_argument("--src", required=True, metavar="DIR", help="folder holding the data set's files")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the tables to")
    p.add_argument(
        "--format",
        choices=("parquet", "csv", "csv.gz", "tsv", "tsv.gz"),
        default="parquet",
        help="output format (default: parquet)",
    )
    p.add_argument(
        "--version",
        "--dataset-version",
        dest="dataset_version",
        choices=("kalaki", "loghub"),
        help="OpenStack only: which release of the data set (default: kalaki)",
    )
    p.set_defaults(handler=cmd_convert)

    p = sub.add_parser(
        "fit",
        help="train a local detector on normal behaviour",
        description="Train a next-event model on this institution's data and calibrate its threshold.",
        epilog=_FIT_EPILOG,
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    p.add_argument("--data", required=True, metavar="TRAIN", help="training event file")
    p.add_argument(
        "--validation", metavar="VAL", help="normal validation file (default: hold out part of TRAIN)"
    )
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="directory to save the model to")
    g = p.add_argument_group("training")
    g.add_argument("--config", metavar="FILE", help="detector config, TOML or JSON (see below)")
    g.add_argument(
        "--model",
        dest="model_kind",
        choices=("lstm", "gru", "rnn", "cnn-lstm"),
        help="network kind (model.kind)",
    )
    g.add_argument("--epochs", type=_positive_int, metavar="N", help="most training epochs (train.epochs)")
    g.add_argument(
        "--device",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to train (train.device; default auto = CUDA when available)",
    )
    g.add_argument("--seed", type=int, metavar="N", help="random seed (train.seed)")
    g.add_argument(
        "--false-alarm-rate",
        type=float,
        metavar="F",
        help="target false-alarm rate of the threshold on normal validation data, e.g. 0.01 "
        "(calibration.false-alarm-rate; turns contamination off)",
    )
    _add_data_flags(p, for_model=False)
    p.set_defaults(handler=cmd_fit)

    p = sub.add_parser(
        "score",
        help="score every sequence of a file",
        description="Score every sequence of an event file with a trained model.",
        epilog=_SCORE_EPILOG,
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    _add_model_flags(p)
    p.add_argument("--data", required=True, metavar="FILE", help="event file to score")
    p.add_argument(
        "--out", required=True, metavar="FILE", help="per-sequence output (.csv, .tsv or .parquet)"
    )
    p.add_argument(
        "--metrics-json", metavar="FILE", help="write detection metrics here (when the data has labels)"
    )
    p.add_argument(
        "--top-events",
        type=_nonnegative_int,
        default=3,
        metavar="N",
        help="most surprising events listed per sequence (default: 3; 0 = skip, faster)",
    )
    _add_data_flags(p, for_model=True)
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser(
        "explain",
        help="explain one sequence's score event by event",
        description="Explain one sequence's score: per-event surprisal and what the model expected instead.",
        epilog=_EXPLAIN_EPILOG,
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    _add_model_flags(p)
    p.add_argument("--data", required=True, metavar="FILE", help="event file holding the sequence")
    p.add_argument("--sequence", required=True, metavar="ID", help="sequence id to explain")
    p.add_argument(
        "--top-k",
        type=_positive_int,
        default=3,
        metavar="K",
        help="expected events shown per step (default: 3)",
    )
    p.add_argument(
        "--max-events",
        type=_nonnegative_int,
        default=40,
        metavar="N",
        help="show at most the N most anomalous events (default: 40; 0 = all)",
    )
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    _add_data_flags(p, for_model=True)
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser(
        "report",
        help="write an HTML report of the top anomalies",
        description="Score a file and write a self-contained HTML report with the top anomalies explained.",
        epilog=_REPORT_EPILOG,
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    _add_model_flags(p)
    p.add_argument("--data", required=True, metavar="FILE", help="event file to score")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for report.html and its figures")
    p.add_argument(
        "--top",
        type=_nonnegative_int,
        default=10,
        metavar="N",
        help="anomalies explained in detail (default: 10)",
    )
    p.add_argument("--title", metavar="T", help="report title (default: 'seqwatch report: <data file>')")
    _add_data_flags(p, for_model=True)
    p.set_defaults(handler=cmd_report)
    return parser


# --------------------------------------------------------------------------- entry point


def _one_line(exc: BaseException) -> str:
    """An exception as one line of text."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _error(message: str, *, verbose: bool) -> None:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seqwatch`` command line; returns the exit status.

    0 on success, 2 on usage errors and on any :class:`SeqwatchError` or OS
    error (reported as one ``seqwatch: error: ...`` line on stderr), 130 when
    interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _EXIT_USAGE)
    verbose = int(getattr(args, "verbose", 0) or 0)
    quiet = bool(getattr(args, "quiet", False))
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    setup = _setup_logging(verbose, quiet)
    try:
        return int(handler(args, Console(quiet=quiet)))
    except KeyboardInterrupt:
        _error("interrupted", verbose=verbose > 0)
        return _EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (e.g. piped into head): nothing more to say, and
        # point stdout at /dev/null so the interpreter's final flush stays quiet.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (SeqwatchError, OSError) as exc:
        _error(_one_line(exc), verbose=verbose > 0)
        return _EXIT_USAGE
    finally:
        setup.undo()
