"""``seqwatch``: the command line an institution runs on its own data.

Subcommands:

* ``convert``: turn a benchmark data set (ADFA-LD, HDFS, OpenStack) into
  canonical event tables;
* ``fit``: train a local detector on normal behaviour and calibrate its threshold;
* ``score``: score every sequence of a file, write a per-sequence table (and,
  with ``--events-out``, a per-event one) and, when labels are present,
  detection metrics;
* ``explain``: show why one sequence scored as it did, event by event;
* ``report``: write a self-contained HTML report of the top anomalies.

Reading data: an event file has one row per event; without flags the columns
are detected from the header, and ``fit`` saves how it read the training data
so that ``score``, ``explain`` and ``report`` need not repeat the flags
(:mod:`client.datafiles`). Output helpers live in :mod:`client.console`, what
``score``/``explain``/``report`` print and write in :mod:`client.results`;
this module holds the subcommands and the parser.

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
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.console import PROG, Console, CountProgress, EpochProgress, Status, setup_logging, size_text
from client.datafiles import (
    DEFAULT_ENCODING,
    LAYOUT_FILE,
    ORDER_CANDIDATES,
    SEQUENCE_CANDIDATES,
    beside_column_map,
    describe,
    read_data,
    unused_columns,
)
from client.results import (
    DEFAULT_EVENT_EXPECTED,
    TOP_EVENT_EXPECTED,
    chosen_threshold,
    event_frame,
    event_scale,
    labelled_metrics,
    load_model,
    print_metrics,
    read_for_model,
    score_frame,
    summarize_scores,
    threshold_note,
    write_frame,
)
from common import __version__
from common.argtypes import (
    Parser,
    confidence,
    file_to_write,
    folder_to_write,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    rate,
)
from common.errors import ConfigError, DataError, SeqwatchError

if TYPE_CHECKING:
    from common.config import DetectorConfig

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


_THREADS_NOTE = "0 = PyTorch's default, every core; fewer is faster where busy processes share the cores"
#: Expected events kept per step for the report's explanations.
_EXPLAIN_EXPECTED = 3
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130

# --------------------------------------------------------------------------- argparse types


def _csv_names(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; an empty string gives ``()`` (explicitly no columns)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _column_name(text: str) -> str:
    """A column name, as header names are read: without surrounding spaces."""
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("expected a column name, got an empty one")
    return name


def _device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA only where a CUDA device is present."""
    if text not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:(0|[1-9]\d*)", text):
        raise argparse.ArgumentTypeError(f"use auto, cpu, cuda or cuda:N, not {text!r}")
    if text.startswith("cuda"):
        from common.model import missing_device

        problem = missing_device(text)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return text


# --------------------------------------------------------------------------- output checks

#: What ``write_frame`` writes, by file name ending.
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


def _check_table_output(path: str | None, flag: str) -> None:
    """Refuse, before any work, an output table that cannot be written as asked."""
    if path is None:
        return
    p = Path(path)
    if not p.name.lower().endswith(_TABLE_SUFFIXES):
        raise ConfigError(f"{flag} {path}: name a {', '.join(_TABLE_SUFFIXES)} file")
    file_to_write(path, flag)


# --------------------------------------------------------------------------- subcommands


#: ``seqwatch convert openstack --version``: the releases :func:`common.datasets.load_openstack`
#: reads, the default first (here as text: ``--help`` imports no data code).
OPENSTACK_RELEASES = ("kalaki", "loghub")


def cmd_convert(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch convert``: benchmark data set -> canonical event tables."""
    from common.datasets import convert

    options: dict[str, Any] = {}
    if args.dataset_version is not None:
        if args.dataset != "openstack":
            raise ConfigError(f"--version applies to openstack only, not {args.dataset}")
        options["version"] = args.dataset_version
    written = convert(args.dataset, args.src, folder_to_write(args.out, "--out"), fmt=args.format, **options)
    release = ""
    if args.dataset == "openstack":
        release = f" ({options.get('version', OPENSTACK_RELEASES[0])} release)"
    console.result(f"converted {args.dataset}{release} from {args.src}:")
    for split, path in written.items():
        n_seq, n_events, n_anom = _count_file(path)
        anomalous = "" if n_anom is None else f", {n_anom} anomalous"
        console.result(f"  {split:<14} {n_seq:>7} sequences {n_events:>10} events{anomalous}  -> {path}")
    return 0


def _count_file(path: Path) -> tuple[int, int, int | None]:
    """(sequences, events, anomalous sequences or None) of a canonical file, reading two columns."""
    from common.events import CANONICAL, LABEL, SEQUENCE
    from common.tableio import read_table

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
    n_anom = None
    if LABEL in frame.columns:
        n_anom = int(frame.groupby(SEQUENCE, observed=True)[LABEL].max().sum())
    return n_seq, len(frame), n_anom


def build_config(args: argparse.Namespace) -> DetectorConfig:
    """Detector config from ``--config`` (TOML/JSON, or a pyproject.toml) and the fit flags.

    Raises:
        ConfigError: unreadable file, unknown key or invalid value.
    """
    from common.config import APP_SECTIONS, DetectorConfig, load_config_file, parse_config, with_overrides

    config = DetectorConfig()
    if args.config is not None:
        flat = load_config_file(args.config)
        prefix = "tool.flwr.app.config."
        if any(k.startswith("tool.") for k in flat):
            beside = sorted(k for k in flat if k.split(".")[0] in APP_SECTIONS)
            if beside:
                raise ConfigError(
                    f"{args.config}: seqwatch keys both in [tool.flwr.app.config] and beside it "
                    f"({', '.join(beside[:3])}{', ...' if len(beside) > 3 else ''}); keep them in one place"
                )
            flat = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
            if not flat:
                raise ConfigError(f"{args.config}: no [tool.flwr.app.config] table with seqwatch keys")
        else:
            ignored = sorted(k for k in flat if k.split(".")[0] in ("federation", "data"))
            if ignored:
                log.warning(
                    "%s: %s set the federation or its simulation (flwr run, python -m "
                    "simulations.experiment), not this detector: seqwatch fit ignores them",
                    args.config,
                    ", ".join(ignored),
                )
        try:
            config = parse_config(flat).detector
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: {exc}") from exc
    changes: dict[str, dict[str, Any]] = {}
    if args.model_kind is not None:
        changes.setdefault("model", {})["kind"] = args.model_kind
    if args.epochs is not None:
        changes.setdefault("train", {})["epochs"] = args.epochs
    if args.device is not None:
        changes.setdefault("train", {})["device"] = args.device
    if args.seed is not None:
        changes.setdefault("train", {})["seed"] = args.seed
    if args.threads is not None:
        changes.setdefault("train", {})["threads"] = args.threads
    if args.false_alarm_rate is not None:
        changes["calibration"] = {"false_alarm_rate": args.false_alarm_rate, "contamination": 0.0}
    if args.confidence is not None:
        changes.setdefault("calibration", {}).update({"confidence": args.confidence, "contamination": 0.0})
    return with_overrides(config, **changes) if changes else config


def _reading(path: str, console: Console) -> Status:
    """The status line while a data file is read (on a terminal)."""
    return Status(f"reading {path}{size_text(path)}", quiet=console.quiet)


def cmd_fit(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch fit``: train a local detector and calibrate its threshold."""
    from common.detector import SequenceDetector, check_model_folder

    check_model_folder(folder_to_write(args.out, "--out"), "--out")
    config = build_config(args)
    from common.model import resolve_device

    resolve_device(config.train.device)  # a device this machine lacks stops here, before any reading
    with _reading(args.data, console):
        train, layout = read_data(args.data, args)
    beside = beside_column_map(args.data) if args.columns is None else None
    if beside is not None:
        console.info(f"columns from {beside}, the column map beside the data")
    describe(console, "training data", train)
    unused = unused_columns(args.data, layout.columns, layout.encoding or DEFAULT_ENCODING)
    if unused:
        console.info(
            f"columns not used: {', '.join(unused)} (to fuse them with the events: "
            f"--numeric-cols A,B for numbers, --context-cols C,D for categories)"
        )
    validation = None
    if args.validation is not None:
        with _reading(args.validation, console):
            validation, _ = read_data(args.validation, args, saved=layout)
        describe(console, "validation data", validation)

    from common.scoring import MIN_SPREAD_SEQUENCES, end_weight_is_fitted

    cfg = config
    detector = SequenceDetector(config)
    console.info(
        f"training {cfg.model.kind} (hidden {cfg.model.hidden}, {cfg.model.layers} layer(s)) "
        f"for up to {cfg.train.epochs} epoch(s) on {detector.device}"
    )
    with EpochProgress(cfg.train.epochs, quiet=console.quiet) as progress:
        detector.fit(train, validation, progress=progress, batch_progress=progress.events)
    vocab = detector.encoder_.vocab
    cut = (
        f"; the {vocab.cut_types:,} rarer ones ({vocab.cut_events:,} training events) are read as <unk>, "
        f"like events never seen (vocab.max-size {cfg.vocab.max_size}, vocab.min-count {cfg.vocab.min_count})"
        if vocab.cut_types
        else ""
    )
    console.info(f"vocabulary: {len(vocab.tokens):,} event types{cut}")
    result = detector.fit_result_
    if result is not None and result.history:
        console.info(
            f"best epoch {result.best_epoch} of {len(result.history)} ({result.monitored} loss "
            f"{result.best_val_loss:.4f}, {result.train_events_per_second:,.0f} events/s)"
        )
        if result.best_epoch == len(result.history) == cfg.train.epochs and cfg.train.epochs > 1:
            console.info(
                f"the {result.monitored} loss was still falling at the last epoch: more epochs may fit "
                f"normal behaviour better (--epochs {2 * cfg.train.epochs})"
            )
    out = detector.save(args.out)
    (out / LAYOUT_FILE).write_text(json.dumps(layout.to_dict(), indent=1), encoding="utf-8")
    cal = cfg.calibration
    n_val = len(detector.validation_scores_)
    part = result.monitored if result is not None else "validation"  # "training" when none was held out
    how = cal.target
    if cfg.model.end_event and end_weight_is_fitted(cfg.score):
        source = (
            f"fitted on the {part} sequences"
            if n_val >= MIN_SPREAD_SEQUENCES
            else f"score.end-weight: {n_val} {part} sequences are too few to fit it"
        )
        console.info(f"END weight: {detector.end_weight_:.4g} ({source})")
    if detector.model_.context_trunk is not None:
        fusion = detector.context_fusion_
        console.info(
            "context part: not scored (too few or too uniform "
            f"{part} sequences to fit it: {n_val}, at least {MIN_SPREAD_SEQUENCES} needed)"
            if fusion is None
            else f"context part: {fusion.shift:.4g} + {fusion.scale:.4g} × a sequence's largest context "
            f"surprisal, when that exceeds its event score (fitted on the {part} sequences)"
        )
    # (too few validation sequences for the rate, or none: fit() has warned)
    console.result(f"threshold: {detector.threshold_:.6g} ({how} on {n_val} normal {part} sequences)")
    console.result(f"model saved to {out}")
    return 0


def cmd_score(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch score``: per-sequence scores (and metrics when labelled)."""
    if args.events_out is None and args.event_expected is not None:
        raise ConfigError("--event-expected applies to --events-out only")
    outputs = [Path(f).resolve() for f in (args.out, args.events_out, args.metrics_json) if f is not None]
    if len(set(outputs)) < len(outputs):
        raise ConfigError("--out, --events-out and --metrics-json must name different files")
    _check_not_input(
        args, {"--out": args.out, "--events-out": args.events_out, "--metrics-json": args.metrics_json}
    )
    _check_table_output(args.out, "--out")
    _check_table_output(args.events_out, "--events-out")
    if args.metrics_json is not None:
        file_to_write(args.metrics_json, "--metrics-json")
    event_expected = DEFAULT_EVENT_EXPECTED if args.event_expected is None else args.event_expected
    detector, layout = load_model(args.model, args.device, args.threads)
    threshold, threshold_name = chosen_threshold(detector, args.threshold, args, console)
    with _reading(args.data, console):
        table = read_for_model(args.data, args, detector, layout)
    describe(console, "data", table)
    expected_k = max(
        TOP_EVENT_EXPECTED if args.top_events > 0 else 0,
        event_expected if args.events_out is not None else 0,
    )
    with CountProgress(table.n_events, desc="score", unit="event", quiet=console.quiet) as progress:
        scored = detector.score_table(table, expected_k=expected_k, progress=progress)
    with Status(
        "listing each sequence's most surprising events", quiet=console.quiet or args.top_events <= 0
    ):
        frame = score_frame(detector, scored, threshold, args.top_events)
    with Status(f"writing {args.out}", quiet=console.quiet):
        out = write_frame(frame, args.out)
    if args.events_out is not None:
        with Status(f"writing {args.events_out}", quiet=console.quiet):
            events = event_frame(detector, scored, table, event_expected)
            events_out, n_event_rows = write_frame(events, args.events_out), len(events)
            del events

    summarize_scores(console, detector, scored, frame, threshold, threshold_name)
    metrics = labelled_metrics(scored, threshold, threshold_name)
    if metrics is not None:
        print_metrics(console, metrics)
        if args.metrics_json is not None:
            mpath = Path(args.metrics_json)
            mpath.parent.mkdir(parents=True, exist_ok=True)
            mpath.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            console.info(f"metrics written to {mpath}")
    elif args.metrics_json is not None:
        log.warning("%s has no labels; metrics not computed, %s not written", table.source, args.metrics_json)
    console.result(f"scores written to {out}")
    if args.events_out is not None:
        console.result(f"event scores written to {events_out} ({n_event_rows} rows)")
    return 0


def _check_not_input(args: argparse.Namespace, outputs: dict[str, str | None]) -> None:
    """Refuse an output file that is one of the command's inputs (``--data``, ``--columns``):
    writing it would destroy the data before, or while, it is read."""
    inputs = {
        flag: getattr(args, name, None) for flag, name in (("--data", "data"), ("--columns", "columns"))
    }
    for out_flag, out in outputs.items():
        for in_flag, given in inputs.items():
            if out is not None and given is not None and Path(out).resolve() == Path(given).resolve():
                raise ConfigError(
                    f"{out_flag} {out} is the {in_flag} file: writing it would overwrite the input; "
                    f"name another file"
                )


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch explain``: per-event surprisal of one sequence."""
    detector, layout = load_model(args.model, args.device, args.threads)
    # with --json, stdout holds the JSON alone: the recalibration line goes to the log
    threshold, _ = chosen_threshold(detector, args.threshold, args, None if args.json else console)
    with _reading(args.data, console):
        table = read_for_model(args.data, args, detector, layout)
    ids = [str(x) for x in table.grouped().ids]
    if args.sequence not in set(ids):
        sessions = [i for i in ids if i.startswith(f"{args.sequence}#")]  # sessionized ids: "{entity}#{k}"
        close = sessions[:3] or difflib.get_close_matches(args.sequence, ids, n=3)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"ids look like {ids[0]!r}"
        raise DataError(
            f"{table.source}: no sequence with id {args.sequence!r} ({len(ids)} sequences; {hint})"
        )
    explanation = detector.explain(table, args.sequence, top_k=args.top_k)
    explanation = dataclasses.replace(
        explanation, threshold=threshold, flagged=bool(explanation.score > threshold)
    )
    if args.json:
        console.result(explanation.to_json())
    else:
        console.result(explanation.to_text(max_events=args.max_events, expected_k=args.top_k))
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """``seqwatch report``: HTML report with the top anomalies explained."""
    import numpy as np

    from common.report import write_report

    folder_to_write(args.out, "--out")
    _check_not_input(args, {"--out (its scores.csv)": str(Path(args.out) / "scores.csv")})
    detector, layout = load_model(args.model, args.device, args.threads)
    threshold, threshold_name = chosen_threshold(detector, args.threshold, args, console)
    with _reading(args.data, console):
        table = read_for_model(args.data, args, detector, layout)
    describe(console, "data", table)
    with CountProgress(table.n_events, desc="score", unit="event", quiet=console.quiet) as progress:
        scored = detector.score_table(table, expected_k=_EXPLAIN_EXPECTED, progress=progress)
    with Status("listing each sequence's most surprising events", quiet=console.quiet):
        frame = score_frame(detector, scored, threshold, top_events=3)
    summarize_scores(console, detector, scored, frame, threshold, threshold_name)
    metrics = labelled_metrics(scored, threshold, threshold_name)
    order = np.argsort(-np.nan_to_num(scored.scores, nan=-np.inf), kind="stable")[: args.top]
    # built one at a time as the report draws them: a sequence of a million events is a million
    # explanation objects, and --top of them at once would not fit in memory
    explanations = (
        dataclasses.replace(x, threshold=threshold, flagged=bool(x.score > threshold))
        for x in (detector.explanation(scored, int(i)) for i in order)
    )
    title = args.title or f"seqwatch report: {Path(args.data).name}"
    with Status(f"writing the report to {args.out}", quiet=console.quiet):
        html = write_report(
            args.out,
            frame,
            threshold=threshold,
            metrics=metrics,
            explanations=explanations,
            event_scale=event_scale(scored, order),
            title=title,
            global_threshold=detector.global_threshold_,
            threshold_note=threshold_note(detector, threshold_name, args),
        )
        scores_path = write_frame(frame, Path(args.out) / "scores.csv")
    if metrics is not None:
        print_metrics(console, metrics)
    console.info(f"scores written to {scores_path}")
    n_flagged = int((scored.scores[order] > threshold).sum())
    console.result(
        f"report written to {html} (the {len(order)} highest-scoring sequences explained, "
        f"{n_flagged} of them flagged)"
    )
    return 0


# --------------------------------------------------------------------------- parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example epilogs as written."""


def _global_flags() -> Parser:
    """-v/--quiet, accepted before or after the subcommand."""
    p = Parser(add_help=False)
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
        type=_column_name,
        metavar="NAME",
        help=f"column holding the sequence id (auto: {' then '.join(map(repr, SEQUENCE_CANDIDATES))})",
    )
    g.add_argument(
        "--event-col",
        type=_column_name,
        metavar="NAME",
        help="column holding the event token (auto: 'event')",
    )
    g.add_argument(
        "--order-col",
        type=_column_name,
        metavar="NAME",
        help="position or timestamp ordering events inside a sequence "
        f"(auto: {' then '.join(map(repr, ORDER_CANDIDATES))}; none found: file order)",
    )
    g.add_argument(
        "--time",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the order column is a timestamp (--time) or a position (--no-time); auto-detected by "
        "default. Timestamps without a time zone are read as UTC (counted when others carry one)",
    )
    g.add_argument(
        "--day-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="numeric dates such as 04/03/2024 are day first (--day-first) or month first "
        "(--no-day-first); by default decided from each file's dates (month first, with a warning, "
        "when every one reads either way). fit saves the order it read with the model",
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
        "--label-col",
        type=_column_name,
        metavar="NAME",
        help="0/1 label column, 1 = anomalous (auto: 'label' if present)",
    )
    g.add_argument(
        "--columns",
        metavar="FILE",
        help="column map, JSON or TOML with keys sequence, event, order, time, numeric, context, label, "
        "day_first; replaces detection, flags above override it. A model's columns.json also brings "
        "its session gap or block size",
    )
    g.add_argument(
        "--encoding",
        help="text encoding of CSV/TSV files, e.g. cp1252 (default: the one fit read the model's data in, "
        "else utf-8)",
    )
    g.add_argument(
        "--session-gap",
        metavar="SECONDS",
        type=nonnegative_float,
        help="cut sequences after this many seconds of inactivity (needs timestamps; 0 = off)",
    )
    g.add_argument(
        "--block-size",
        metavar="N",
        type=nonnegative_int,
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
        type=_device,
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to run the model (default: auto = CUDA when available)",
    )
    g.add_argument(
        "--threads",
        type=nonnegative_int,
        metavar="N",
        help=f"CPU threads (default: as when fitted; {_THREADS_NOTE})",
    )
    g.add_argument(
        "--threshold",
        choices=("local", "global"),
        default="local",
        help="flag with this institution's calibrated threshold (local, default) "
        "or the federation's (global)",
    )
    g.add_argument(
        "--false-alarm-rate",
        type=rate,
        metavar="F",
        help="recalibrate the local threshold to this false-alarm rate on the validation scores saved "
        "with the model (no refit; turns contamination off)",
    )
    g.add_argument(
        "--confidence",
        type=confidence,
        metavar="C",
        help="recalibrate the local threshold so that it holds the false-alarm rate on new normal data "
        "with probability C, or 0 to drop a confidence the model was fitted with (see 'seqwatch fit --help')",
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
commands read without column flags. Where the source folder (or the one above it)
holds a SHA256SUMS list, as the shared data sets do, each file read is checked
against it first: a damaged or different file is an error, not wrong counts.

examples:
  seqwatch convert adfa-ld --src ../shared/data/adfa-ld --out data/adfa
  seqwatch convert hdfs --src ../shared/data/hdfs-deeplog --out data/hdfs --format csv
  seqwatch convert openstack --src ../shared/data/openstack-aecid --out data/os --version loghub
"""

_FIT_EPILOG = """\
Labelled anomalous sequences in the training data are left out: the model learns
normal behaviour. Without --validation, train.validation-fraction of the training
sequences is held out to early-stop and to calibrate the threshold. The threshold
leaves at most --false-alarm-rate of those validation sequences above it; new
normal data exceeds it about as often, sometimes more. With --confidence C it is
set so that the rate on new normal data stays below the target with probability C
(for data like the validation data; no score distribution assumed).

The --config file holds flat dotted keys (or tables) such as:
  [model]
  kind = "gru"
  hidden = 64
  [train]
  epochs = 8
A pyproject.toml with a [tool.flwr.app.config] table works too, and so does a saved
model's folder (the config it was fitted with). Flags override it. Every key, its
default and meaning: docs/configuration.md.
On a host shared with other busy processes, cap the CPU threads with --threads N
(train.threads; 0, the default, lets PyTorch use every core). score, explain and
report take --threads too.

examples:
  seqwatch fit --data data/adfa/train.parquet --out models/adfa
  seqwatch fit --data logins.csv --sequence-col user --event-col action \\
      --order-col ts --context-cols device,site --session-gap 1800 --out models/logins
  seqwatch fit --data train.csv --validation val.csv --config detector.toml \\
      --model cnn-lstm --device cuda --false-alarm-rate 0.005 --out models/m1
  seqwatch fit --data train.parquet --false-alarm-rate 0.01 --confidence 0.9 --out models/m2
"""

_SCORE_EPILOG = """\
Output columns: sequence_id, score (higher = more anomalous), flagged (score >
threshold), threshold, n_events, unknown_events (events never seen in training),
top_events (the most surprising events, e.g. "pos 17: open (expected read, write)";
positions are 0-based; "pos N: <end>" after the last of N events means the sequence
stopped where the model expected it to go on; with a context head, a sequence flagged
by its context starts with "context at pos 7: device 'tablet' (expected device 'phone'
(0.93))"), label when the data has labels, and
p_value (the share of the model's normal validation sequences scoring at least as high,
counting this one: 0.002 means rarer than all but 0.2 % of normal data; its floor is
1/(validation sequences + 1); empty for a model without held-out validation sequences).
The format follows the suffix of --out: .parquet, .tsv(.gz) or .csv(.gz); other suffixes
are refused.

--events-out FILE writes one row per event, each sequence's END step last: sequence_id,
position (0-based; the END step of N events is position N, event <end>), order (the
file's order value; for timed data an ISO 8601 UTC time, 2026-01-05T08:00:00Z), event,
unseen, score, surprisal (nats), rank (1 = the model's top guess), expected_1..K with
expected_1_p..K_p, residual_<feature> per numeric feature (actual - expected, in
standard deviations of the training data after the log transform of heavy-tailed
features), unseen_<column> per context column (its value never seen in training); with
a context head also context_surprisal and, per context column, context_expected_<column>
with context_expected_<column>_p (the value it found likeliest there); and label when
the data has labels (on END rows the sequence's label). Parquet suits large files best.

--false-alarm-rate and --confidence choose another operating point without refitting:
the local threshold is set anew from the validation scores saved with the model (the
model folder is not changed).

examples:
  seqwatch score --model models/adfa --data data/adfa/test.parquet --out scores.csv
  seqwatch score --model models/fed --data today.csv --out today.parquet --threshold global
  seqwatch score --model models/adfa --data today.csv --out s.csv --false-alarm-rate 0.005
  seqwatch score --model models/adfa --data test.parquet --out s.csv --metrics-json m.json --top-events 0
  seqwatch score --model models/adfa --data test.parquet --out s.csv --events-out events.parquet
"""

_EXPLAIN_EPILOG = """\
The first line gives the sequence's score, the threshold, and p: the share of the
model's normal validation sequences scoring at least as high (counting this one).
Below it, one line per event: its surprisal (nats), its rank among the model's
guesses, UNSEEN for tokens outside the model's vocabulary (never seen in training, or
cut as rare by vocab.max-size / vocab.min-count; <unk> among the expected events
stands for any of them), and what the model expected instead; the most anomalous
events are marked '>>'. The last row, <end>, is the end of the sequence: a high
surprisal there means it stopped where the model expected more events.

examples:
  seqwatch explain --model models/adfa --data data/adfa/test.parquet --sequence UAD-Adduser-1-1371
  seqwatch explain --model models/adfa --data test.parquet --sequence UVD-0042 --top-k 5 --json
"""

_REPORT_EPILOG = """\
Writes OUT/report.html with its figures embedded (score distribution; ROC and PR curves
when labelled), so the HTML file can be sent on its own; the same figures as PNG files
beside it; and OUT/scores.csv with every sequence's score.

examples:
  seqwatch report --model models/adfa --data data/adfa/test.parquet --out report/
  seqwatch report --model models/fed --data today.csv --out report/ --top 25 --title "Today"
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``seqwatch`` argument parser with all subcommands."""
    common = _global_flags()
    parser = Parser(
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
        choices=OPENSTACK_RELEASES,
        help=f"OpenStack only: which release of the data set (default: {OPENSTACK_RELEASES[0]})",
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
    g.add_argument("--epochs", type=positive_int, metavar="N", help="most training epochs (train.epochs)")
    g.add_argument(
        "--device",
        type=_device,
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to train (train.device; default auto = CUDA when available)",
    )
    g.add_argument("--seed", type=nonnegative_int, metavar="N", help="random seed (train.seed)")
    g.add_argument(
        "--threads",
        type=nonnegative_int,
        metavar="N",
        help=f"CPU threads (train.threads, saved with the model; default {_THREADS_NOTE})",
    )
    g.add_argument(
        "--false-alarm-rate",
        type=rate,
        metavar="F",
        help="target false-alarm rate of the threshold on normal validation data, e.g. 0.01 "
        "(calibration.false-alarm-rate; turns contamination off)",
    )
    g.add_argument(
        "--confidence",
        type=confidence,
        metavar="C",
        help="hold the false-alarm rate on new normal data with probability C, e.g. 0.9, not just on "
        "the validation data: a higher threshold, and at least log(1-C)/log(1-F) validation sequences "
        "(230 for 0.9 at 0.01); 0 = off (calibration.confidence; turns contamination off)",
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
        type=nonnegative_int,
        default=3,
        metavar="N",
        help="most surprising events listed per sequence (default: 3; 0 = skip, faster)",
    )
    p.add_argument(
        "--events-out",
        metavar="FILE",
        help="also write every event's score, one row per event (.csv, .tsv or .parquet; see below)",
    )
    p.add_argument(
        "--event-expected",
        type=nonnegative_int,
        metavar="K",
        help="with --events-out: the model's K likeliest events per row, with probabilities "
        f"(default: {DEFAULT_EVENT_EXPECTED})",
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
    p.add_argument(
        "--sequence",
        required=True,
        type=str.strip,
        metavar="ID",
        help="sequence id to explain (as read: no surrounding spaces)",
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=3,
        metavar="K",
        help="expected events shown per step (default: 3)",
    )
    p.add_argument(
        "--max-events",
        type=nonnegative_int,
        default=40,
        metavar="N",
        help="show at most the N most anomalous events (default: 40; 0 = all); --json lists every event",
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
        type=nonnegative_int,
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


def _out_of_memory(exc: BaseException) -> str | None:
    """What to tell the user when ``exc`` is an allocation failure (NumPy's ``MemoryError``,
    PyTorch's CPU allocator or ``torch.OutOfMemoryError``), else None."""
    text = _one_line(exc)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if not ({"MemoryError", "OutOfMemoryError"} & names or "can't allocate memory" in text):
        return None
    detail = text.split("DefaultCPUAllocator: ", 1)[-1]
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return (
        f"out of memory ({detail}); lower train.batch-size or train.chunk-len (fit), "
        f"score.batch-size (score, explain, report) or model.hidden in --config, or free memory"
    )


def _error(message: str, *, verbose: bool) -> None:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seqwatch`` command line; returns the exit status.

    0 on success, 2 on usage errors and on any :class:`SeqwatchError`, OS
    error or failed memory allocation (reported as one ``seqwatch: error: ...``
    line on stderr), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _EXIT_USAGE)
    verbose = int(getattr(args, "verbose", 0) or 0)
    quiet = bool(getattr(args, "quiet", False))
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    setup = setup_logging(verbose, quiet)
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
    except (MemoryError, RuntimeError) as exc:
        message = _out_of_memory(exc)
        if message is None:
            raise  # a bug: its traceback is what to report
        _error(message, verbose=verbose > 0)
        return _EXIT_USAGE
    finally:
        setup.undo()
