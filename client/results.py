"""What ``seqwatch score``, ``explain`` and ``report`` print and write: models, score tables, metrics."""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from client.console import Console
from client.datafiles import LAYOUT_FILE, DataLayout, read_data
from common.errors import ConfigError, DataError, ModelFileError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from common.detector import ScoredTable, SequenceDetector
    from common.events import EventTable


TOP_EVENT_EXPECTED = 2
"""Expected events named per surprising event in ``seqwatch score``'s ``top_events``."""
RESIDUAL_MARK = 2.0
"""A number this many standard deviations from what the model expected is named in the top
events (``[amount +7.8σ]``)."""
DEFAULT_EVENT_EXPECTED = 3
"""Expected events (with probabilities) per row of ``seqwatch score --events-out``."""
_TOKEN_WIDTH = 40


def load_model(
    model_dir: str | Path, device: str | None, threads: int | None = None
) -> tuple[SequenceDetector, DataLayout | None]:
    """Load a detector and the data layout ``fit`` saved with it (None for federated models).

    ``device`` / ``threads`` (None: as saved) say where and on how many CPU threads it runs here.

    Raises:
        ModelFileError: the directory is missing or not a seqwatch model.
    """
    p = Path(model_dir)
    if not p.exists():
        raise ModelFileError(f"{p}: model directory not found; train one with 'seqwatch fit --out {p}'")
    if not p.is_dir():
        raise ModelFileError(f"{p}: is a file, not a model directory")
    from common.detector import SequenceDetector

    detector = SequenceDetector.load(p, device=device, threads=threads)
    layout_path = p / LAYOUT_FILE
    layout: DataLayout | None = None
    if layout_path.is_file():
        try:
            data = json.loads(layout_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{layout_path}: unreadable ({exc}); re-run 'seqwatch fit'") from exc
        layout = DataLayout.from_dict(data, source=str(layout_path))
    return detector, layout


def read_for_model(
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


def chosen_threshold(
    detector: SequenceDetector,
    which: str,
    args: argparse.Namespace | None = None,
    console: Console | None = None,
) -> tuple[float, str]:
    """The threshold ``--threshold`` asks for, and what it is: ``local`` or ``global``.

    The coordinator's final model (``runs/<name>/model``) carries only the
    federation's threshold, so its own threshold is named ``global`` too.
    ``--false-alarm-rate`` / ``--confidence`` in ``args`` first recalibrate
    the local threshold (:func:`recalibrate`).
    """
    far, confidence = getattr(args, "false_alarm_rate", None), getattr(args, "confidence", None)
    if _recalibration_asked(args):
        if which == "global":
            none = detector.validation_scores_.size == 0
            raise ConfigError(
                "--false-alarm-rate and --confidence recalibrate the local threshold from the validation "
                "scores saved with the model; "
                + (
                    "this model keeps none (a federation's global model): use an institution's own model"
                    if none
                    else "drop --threshold global"
                )
            )
        recalibrate(detector, far, confidence, console)
        return float(detector.threshold_), "local"
    glob = detector.global_threshold_
    if which == "global":
        if glob is None:
            raise ConfigError(
                "this model has no global threshold (it was trained locally); use --threshold local"
            )
        return float(glob), "global"
    own = float(detector.threshold_)
    return own, "global" if glob is not None and own == float(glob) else "local"


def _recalibration_asked(args: argparse.Namespace | None) -> bool:
    """Whether ``--false-alarm-rate`` or ``--confidence`` asks to recalibrate the local threshold."""
    return any(getattr(args, flag, None) is not None for flag in ("false_alarm_rate", "confidence"))


def threshold_note(detector: SequenceDetector, name: str, args: argparse.Namespace) -> str:
    """How the threshold :func:`chosen_threshold` gave was set, in words (for report.html)."""
    if name == "global":
        return "the federation's global threshold"
    from common.metrics import unresolved_rate

    cal = detector.config.calibration
    n = int(detector.validation_scores_.size)
    recalibrated = _recalibration_asked(args)
    where = f"the {n} validation scores saved with the model" if n else "the model's validation sequences"
    caveat = unresolved_rate(n, cal.rate, cal.confidence)
    return (
        f"{cal.target} on {where}"
        + (", recalibrated for this report" if recalibrated else "")
        + (f"; but {caveat}" if caveat else "")
    )


def recalibrate(
    detector: SequenceDetector, far: float | None, confidence: float | None, console: Console | None = None
) -> float:
    """Set ``detector.threshold_`` anew from the validation scores saved with it, at false-alarm
    rate ``far`` and ``confidence`` (None: as saved; the contamination rule is turned off).

    Raises:
        ConfigError: the model keeps no validation scores (a coordinator's global model).
    """
    import dataclasses

    from common.metrics import unresolved_rate

    scores = detector.validation_scores_
    if scores.size == 0:
        raise ConfigError(
            "this model keeps no validation scores to recalibrate from (a federation's global model "
            "carries only the global threshold); use an institution's own model or refit"
        )
    cal = detector.config.calibration
    cal = dataclasses.replace(
        cal,
        false_alarm_rate=cal.false_alarm_rate if far is None else far,
        confidence=cal.confidence if confidence is None else confidence,
        contamination=0.0,
    )
    detector.config = dataclasses.replace(detector.config, calibration=cal)
    threshold = detector.calibrate(scores)
    fit = getattr(detector, "fit_result_", None)
    part = "training" if fit is not None and fit.monitored == "training" else "validation"
    line = (
        f"threshold recalibrated: {threshold:.6g} ({cal.target} on the {scores.size} normal {part} "
        f"scores saved with the model)"
    )
    if console is not None:
        console.info(line)
    else:
        log.info("%s", line)
    if part == "training":
        log.warning(
            "the model was fitted without validation sequences: its saved scores are the training "
            "sequences', which it fits better than new data, so expect more false alarms than the target"
        )
    note = unresolved_rate(int(scores.size), cal.rate, cal.confidence)
    if note:
        log.warning("%s", note)
    return threshold


UNKNOWN_SHARE_WARNING = 0.10
"""More of the scored events unknown to the model than this: likely not the data it was trained for."""


def summarize_scores(
    console: Console,
    detector: SequenceDetector,
    scored: ScoredTable,
    frame: pd.DataFrame,
    threshold: float,
    threshold_name: str,
) -> None:
    """Print how many sequences were flagged and how many events and context values the model did
    not know (``score`` and ``report``); warn when so many events are unknown that the data is
    probably not what the model was trained for."""
    n = len(frame)
    n_flagged = int(frame["flagged"].sum())
    share = f" ({100.0 * n_flagged / n:.1f}%)" if n else ""
    console.result(
        f"flagged {n_flagged} of {n} sequences{share} at {threshold_name} threshold {threshold:.6g}"
    )
    stats = scored.encoded.stats
    n_unknown = int(stats.get("unknown_events", 0))
    n_events = int(stats.get("events", int(frame["n_events"].sum())))
    if n_unknown:
        n_seq_unknown = int((frame["unknown_events"] > 0).sum())
        why = (
            "never seen in training, or among the rare ones the vocabulary left out"
            if detector.encoder_.vocab.cut_types
            else "never seen in training"
        )
        console.result(
            f"unknown events: {n_unknown} of {n_events} ({100.0 * n_unknown / max(n_events, 1):.2f}%) "
            f"in {n_seq_unknown} sequence(s), {why}"
        )
        if n_unknown > UNKNOWN_SHARE_WARNING * n_events:
            log.warning(
                "%.0f%% of the events are unknown to the model: data unlike what it was trained on scores "
                "high throughout; check that the model and the data belong together",
                100.0 * n_unknown / n_events,
            )
    else:
        console.info("unknown events: none")
    if stats.get("unknown_context"):
        console.info(f"unknown context values: {int(stats['unknown_context'])}")
    if not detector.has_p_values:
        why = (
            "the model keeps no validation scores (a federation's global model)"
            if detector.validation_scores_.size == 0
            else "the model was fitted without validation sequences, and against its training "
            "sequences' own scores they would come out too small"
        )
        console.result(f"p-values: none; {why}")


def event_scale(scored: ScoredTable, sequences: Iterable[int]) -> float:
    """The largest finite step score (END steps included) of these sequences, at least 1: the
    report shades events against it (:func:`common.report.write_report`'s ``event_scale``)."""
    import numpy as np

    ev = scored.events
    largest = 1.0
    for i in sequences:
        steps = ev.score[ev.of(int(i))]
        if ev.end_surprisal is not None:
            steps = np.append(steps, ev.end_surprisal[int(i)])
        finite = steps[np.isfinite(steps)]
        if finite.size:
            largest = max(largest, float(finite.max()))
    return largest


def _short(token: object) -> str:
    text = " ".join(str(token).split())
    return text if len(text) <= _TOKEN_WIDTH else text[: _TOKEN_WIDTH - 1] + "…"


_TEXT_CHUNK = 1 << 16
"""Sequences whose top-event texts are built at once: vectorised, in bounded memory."""


def top_events_texts(
    detector: SequenceDetector, scored: ScoredTable, n: int, threshold: float | None = None
) -> list[str]:
    """The ``n`` most surprising events of every sequence, each as one compact string.

    ``"pos 17: open (expected read, write); pos 3: ..."``, most surprising first.
    Positions are 0-based, as in ``seqwatch explain``; unseen tokens are marked
    ``[unseen]``, context values unseen in training ``[unseen device]``, numbers
    at least :data:`RESIDUAL_MARK` standard deviations from what the model expected
    ``[amount +7.8σ]``, and missing ones ``[amount missing]``. A sequence flagged
    (score above ``threshold``; None: the detector's own) by its context part (a model with a
    context head) starts with the event whose context values were the least
    expected: ``"context at pos 7: device 'tablet' (expected device 'phone'
    (0.93)); pos 17: ..."``. ``n <= 0`` gives empty strings (and skips the
    model pass).

    Built column-wise (object arrays of shared ``str``), :data:`_TEXT_CHUNK`
    sequences at a time, not event by event: millions of sequences take seconds.
    """
    import numpy as np

    if n <= 0:
        return [""] * len(scored.encoded)
    if scored.events.expected is None:
        raise ValueError("top_events_texts() needs a table scored with expected_k > 0")
    counts, positions = scored.top_steps(n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    vocab = detector.encoder_.vocab
    names = np.array([_short(vocab.token(i)) for i in range(len(vocab))], dtype=object)
    texts: list[str] = []
    for lo in range(0, len(counts), _TEXT_CHUNK):
        hi = min(lo + _TEXT_CHUNK, len(counts))
        texts += _top_texts(detector, scored, names, lo, counts[lo:hi], positions[starts[lo] : starts[hi]])
    sequences, rows = _context_culprits(scored, detector.threshold_ if threshold is None else threshold)
    for i, row in zip(sequences.tolist(), rows.tolist(), strict=True):
        lead = _context_lead(detector, scored, i, row)
        texts[i] = f"{lead}; {texts[i]}" if texts[i] else lead
    return texts


def _context_culprits(scored: ScoredTable, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(sequences, rows): :meth:`~common.detector.ScoredTable.context_culprits` of the sequences
    scoring above ``threshold``."""
    sequences, rows = scored.context_culprits()
    flagged = scored.scores[sequences] > threshold
    return sequences[flagged], rows[flagged]


def _context_lead(detector: SequenceDetector, scored: ScoredTable, i: int, row: int) -> str:
    """``"context at pos 7: device 'tablet' (expected device 'phone' (0.93))"``: event ``row``
    of sequence ``i``, whose context values set its score (:func:`_context_culprits`)."""
    from common.explanation import expected_context_text, unseen_context_text

    events = scored.events
    assert events.context_surprisal is not None
    t = row - int(events.offsets[i])
    expected = detector.expected_context_at(scored, row)
    # the columns it expected otherwise; with hashed categories (a federation's), which it cannot
    # name, every column, with the surprisal instead
    columns = tuple(expected) or detector.encoder_.context_names
    actual = {name: scored.context_value(row, name) for name in columns}
    shown = {name: value for name, value in actual.items() if value is not None}
    what = f"{unseen_context_text(shown)} " if shown else ""
    if not expected:
        return f"context at pos {t}: {what}({float(events.context_surprisal[row]):.1f} nats)"
    return f"context at pos {t}: {what}(expected {expected_context_text(expected)})"


def _top_texts(
    detector: SequenceDetector,
    scored: ScoredTable,
    names: np.ndarray,
    first: int,
    counts: np.ndarray,
    positions: np.ndarray,
) -> list[str]:
    """:func:`top_events_texts` of the sequences ``first, first + 1, ...``: ``counts`` steps
    each, at ``positions`` (:meth:`~common.detector.ScoredTable.top_steps`)."""
    import numpy as np
    import pandas as pd

    from common.vocab import END, UNK

    data, events = scored.encoded, scored.events
    expected = events.expected
    assert expected is not None
    owner = first + np.repeat(np.arange(len(counts)), counts)  # each listed step's sequence
    is_end = (
        positions == data.lengths[owner] if events.end_expected is not None else np.zeros(len(owner), bool)
    )
    is_event = ~is_end
    rows = (data.offsets[owner] + positions)[is_event]  # the listed events' rows in the table
    tokens = data.tokens[rows]

    raw = np.empty(len(owner), dtype=object)
    raw[is_end] = names[END]
    if scored.raw_events is not None:
        codes, uniques = pd.factorize(scored.raw_events[rows], use_na_sentinel=False)
        raw[is_event] = np.array([_short(u) for u in uniques], dtype=object)[codes]
    else:
        raw[is_event] = names[tokens]

    marks = np.full(len(rows), "", dtype=object)
    marks[tokens == UNK] = " [unseen]"
    context_names = detector.encoder_.context_names
    if context_names:
        for j in np.nonzero((data.context[rows] == 0).any(axis=1))[0].tolist():
            marks[j] += f" [unseen {', '.join(scored.unseen_context(int(rows[j]), context_names))}]"
    for c, name in enumerate(detector.encoder_.numeric_names):
        r = np.asarray(events.residual[rows, c], dtype=np.float64)
        finite = np.isfinite(r)
        marks[~finite & (tokens != UNK)] += f" [{name} missing]"  # an unseen event's numbers are not judged
        for j in np.nonzero(finite & (np.abs(np.where(finite, r, 0.0)) >= RESIDUAL_MARK))[0].tolist():
            marks[j] += f" [{name} {float(r[j]):+.1f}σ]"
    detail = np.full(len(owner), "", dtype=object)
    detail[is_event] = marks

    guesses = np.full(len(owner), "", dtype=object)
    k_event = min(TOP_EVENT_EXPECTED, expected.shape[1])
    end_expected = events.end_expected
    k_end = 0 if end_expected is None else min(TOP_EVENT_EXPECTED, end_expected.shape[1])
    for k in range(max(k_event, k_end)):
        column = np.full(len(owner), "", dtype=object)
        listed = np.zeros(len(owner), dtype=bool)
        if k < k_event:
            column[is_event], listed[is_event] = names[expected[rows, k]], True
        if end_expected is not None and k < k_end:
            column[is_end], listed[is_end] = names[end_expected[owner[is_end], k]], True
        guesses = np.where(listed & (k > 0), guesses + ", ", guesses) + column

    parts = (
        "pos " + positions.astype(str).astype(object) + ": " + raw + detail + " (expected " + guesses + ")"
    )
    texts = np.full(len(counts), "", dtype=object)
    starts = np.cumsum(counts) - counts
    for k in range(int(counts.max(initial=0))):
        has = np.nonzero(counts > k)[0]
        texts[has] = (texts[has] + "; " if k else texts[has]) + parts[starts[has] + k]
    return texts.tolist()


def score_frame(
    detector: SequenceDetector, scored: ScoredTable, threshold: float, top_events: int
) -> pd.DataFrame:
    """Per-sequence table.

    Columns: sequence_id, score, flagged, threshold, n_events, unknown_events, top_events,
    label when the data is labelled, and p_value (the share of the model's normal validation
    sequences scoring at least as high, :meth:`SequenceDetector.p_values`; NaN without them).
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
            "top_events": top_events_texts(detector, scored, top_events, threshold),
        }
    )
    if enc.labels is not None:
        frame["label"] = np.asarray(enc.labels).astype(np.int64)
    frame["p_value"] = detector.p_values_from_scores(scores)  # last: the columns before it keep their places
    return frame


def event_frame(
    detector: SequenceDetector, scored: ScoredTable, table: EventTable, expected: int
) -> pd.DataFrame:
    """Per-event table: one row per event of every sequence, then its END step.

    Columns: sequence_id; position (0-based; the END step of a sequence of N
    events is position N, event ``<end>``); order (the table's order value:
    a UTC timestamp for timestamped data, else the position column it was
    read with; empty on END rows); event (the raw token); unseen (never seen
    in training); score (surprisal plus any numeric part), surprisal (nats)
    and rank (1 = the model's top guess); ``expected_1`` … ``expected_K`` with
    their probabilities ``expected_1_p`` …; ``residual_<name>`` per numeric
    feature (actual − expected in the units the model reads: standard
    deviations of the training data, after the log transform of heavy-tailed
    features); ``unseen_<name>`` per context column (its value never seen in
    training, so the model read it as unseen); ``context_surprisal`` with a
    context head (``-log p`` of the event's context values given the event and
    its history, nats; empty on END rows) and, with ``expected > 0``, what it
    expected there (:func:`_expected_context_columns`); and label when the data is
    labelled (the row's label; on an END row its sequence's, 1 if any of its
    rows is anomalous). ``scored`` must be ``table``'s, scored with ``expected_k >=
    expected`` (or with every event of the vocabulary, when it has fewer).
    """
    import numpy as np
    import pandas as pd

    from common.events import EVENT, LABEL, ORDER
    from common.scoring import next_event_choices
    from common.vocab import END, UNK

    enc, ev = scored.encoded, scored.events
    vocab = detector.encoder_.vocab
    expected = min(expected, next_event_choices(len(vocab), detector.config.model.end_event))
    if expected and (ev.expected is None or ev.expected.shape[1] < expected):
        raise ValueError(f"event_frame() needs a table scored with expected_k >= {expected}")
    step_offsets, is_event = ev.step_layout()
    steps = np.diff(step_offsets)

    # Text columns as categoricals: a code per row, each distinct token once.
    names, name_codes = _with_end(pd.Index([vocab.token(i) for i in range(len(vocab))]), vocab.token(END))
    raw = table.frame[EVENT]
    if not isinstance(raw.dtype, pd.CategoricalDtype):
        raw = raw.astype("category")
    event_names, event_codes = _with_end(raw.cat.categories, vocab.token(END))
    sequence = pd.Categorical.from_codes(
        np.repeat(np.arange(len(steps)), steps), categories=pd.Index(np.asarray(enc.ids).astype(str))
    )
    position = np.arange(len(is_event), dtype=np.int64) - np.repeat(step_offsets[:-1], steps)
    order_values = table.frame[ORDER]
    if table.time_ordered:
        # epoch seconds as float64 keep about 0.24 µs today: rounded to µs, 08:17:22.123 stays .123
        order: Any = pd.to_datetime(
            ev.on_steps(order_values.to_numpy(np.float64), None, np.nan), unit="s", utc=True
        ).round("us")
    elif pd.api.types.is_integer_dtype(order_values.dtype):
        order = pd.array(ev.on_steps(order_values.to_numpy(np.int64), None, 0), dtype="Int64")
        order[~is_event] = pd.NA
    else:
        order = ev.on_steps(order_values.to_numpy(np.float64), None, np.nan)
    columns: dict[str, Any] = {
        "sequence_id": sequence,
        "position": position,
        "order": order,
        "event": pd.Categorical.from_codes(
            ev.on_steps(event_codes[raw.cat.codes.to_numpy(np.int64)], None, event_codes[-1]), event_names
        ).remove_unused_categories(),
        "unseen": ev.on_steps(enc.tokens == UNK, None, False),
        "score": ev.on_steps(ev.score, ev.end_surprisal, np.nan),
        "surprisal": ev.on_steps(ev.surprisal, ev.end_surprisal, np.nan),
        "rank": ev.on_steps(ev.rank, ev.end_rank, 0),
    }
    if expected:
        assert ev.expected is not None and ev.expected_p is not None
        ids = ev.on_steps(ev.expected[:, :expected], _head(ev.end_expected, expected), 0)
        probs = ev.on_steps(ev.expected_p[:, :expected], _head(ev.end_expected_p, expected), np.nan)
        for j in range(expected):
            columns[f"expected_{j + 1}"] = pd.Categorical.from_codes(
                name_codes[ids[:, j]], names
            ).remove_unused_categories()
            columns[f"expected_{j + 1}_p"] = probs[:, j]
    for j, name in enumerate(detector.encoder_.numeric_names):
        columns[f"residual_{name}"] = ev.on_steps(ev.residual[:, j], None, np.nan)
    for j, name in enumerate(detector.encoder_.context_names):
        columns[f"unseen_{name}"] = ev.on_steps(enc.context[:, j] == 0, None, False)
    if ev.context_surprisal is not None:
        columns["context_surprisal"] = ev.on_steps(ev.context_surprisal, None, np.nan)
    columns.update(_expected_context_columns(detector, scored, expected))
    if LABEL in table.frame.columns and enc.labels is not None:
        columns["label"] = ev.on_steps(
            table.frame[LABEL].to_numpy(dtype=np.int8), np.asarray(enc.labels, dtype=np.int8), 0
        )
    return pd.DataFrame(columns)


def _expected_context_columns(
    detector: SequenceDetector, scored: ScoredTable, expected: int
) -> dict[str, Any]:
    """``context_expected_<name>`` and ``context_expected_<name>_p`` per context column: the
    value a context head found likeliest for each event (``<unseen>`` for the unseen-value
    slot) and its probability; empty on END rows and for events unseen in training (their
    context is not judged). None of them without a context head, with ``expected = 0`` or
    with hashed categories (a federation's), whose names the model does not know."""
    import numpy as np
    import pandas as pd

    from common.vocab import UNK

    ev, enc = scored.events, scored.encoded
    context = detector.encoder_.context
    if not expected or ev.context_expected is None or ev.context_expected_p is None or context.hashed:
        return {}
    judged = enc.tokens != UNK
    out: dict[str, Any] = {}
    for j, name in enumerate(detector.encoder_.context_names):
        values = np.array(["<unseen>", *context.columns[name]], dtype=object)  # id 0: unseen
        categories, codes = np.unique(values.astype(str), return_inverse=True)
        ids = np.where(judged, codes[ev.context_expected[:, j]], -1)
        out[f"context_expected_{name}"] = pd.Categorical.from_codes(
            ev.on_steps(ids, None, -1), pd.Index(categories)
        ).remove_unused_categories()
        p = np.where(judged, ev.context_expected_p[:, j], np.nan).astype(np.float32)
        out[f"context_expected_{name}_p"] = ev.on_steps(p, None, np.nan)
    return out


def _head(values: np.ndarray | None, k: int) -> np.ndarray | None:
    return None if values is None else values[:, :k]


def _with_end(names: pd.Index, end: str) -> tuple[pd.Index, np.ndarray]:
    """``names`` made unique, plus ``end``; and each name's code in the result (then ``end``'s)."""
    import numpy as np
    import pandas as pd

    categories = names.unique()
    if end not in categories:
        categories = categories.append(pd.Index([end]))
    codes = categories.get_indexer(names.append(pd.Index([end])))
    return categories, np.asarray(codes, dtype=np.int64)


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet for ``.parquet``, TSV for ``.tsv``/``.tsv.gz``, else CSV (gzip for ``.gz``).

    CSV and TSV: missing values are empty, booleans ``True``/``False``, times
    ISO 8601 in UTC to one precision per column (``2026-01-05T08:00:00Z``, or
    ``...00.250Z`` throughout when a value needs it). Text is written as it is; a
    value holding the separator, a quote or a line break is quoted as CSV
    quotes it (in TSV too).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.name.lower()
    if name.endswith(".parquet"):
        frame.to_parquet(out, index=False)
        return out
    sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
    units = _time_units(frame)
    if _needs_quotes(frame, sep):  # pandas' writer quotes what must be quoted
        _with_iso_times(frame, units).to_csv(out, index=False, sep=sep, compression="infer")
    else:
        _write_plain(frame, out, sep, units)
    return out


_TimeUnit = Literal["s", "ms", "us", "ns"]

_WRITE_ROWS = 262_144
"""Rows converted to Arrow and written at a time (bounds the extra memory of a large file)."""


def _utc_times(col: pd.Series) -> np.ndarray:
    """A date-time column as naive UTC ``datetime64`` in its own unit (no cast to nanoseconds,
    which would wrap dates beyond 2262)."""
    if getattr(col.dt, "tz", None) is not None:
        col = col.dt.tz_convert("UTC").dt.tz_localize(None)
    return col.to_numpy()


def _time_units(frame: pd.DataFrame) -> dict[int, _TimeUnit]:
    """Per date-time column (by position): the coarsest of s, ms, us, ns that shows each of its
    values exactly, so that the whole column has one format."""
    import numpy as np
    import pandas as pd

    units: dict[int, _TimeUnit] = {}
    coarse: tuple[_TimeUnit, ...] = ("s", "ms", "us")
    for i in range(frame.shape[1]):
        if not pd.api.types.is_datetime64_any_dtype(frame.dtypes.iloc[i]):
            continue
        values = _utc_times(frame.iloc[:, i])
        present = values[~np.isnat(values)]
        units[i] = next(
            (u for u in coarse if np.array_equal(present.astype(f"datetime64[{u}]"), present)),
            "ns",
        )
    return units


def _iso_times(col: pd.Series, unit: _TimeUnit) -> np.ndarray:
    """Date-times as ISO 8601 UTC text to ``unit`` (``2026-01-05T08:00:00Z`` for seconds); None where
    missing."""
    import numpy as np

    values = _utc_times(col)
    out = np.datetime_as_string(values, unit=unit, timezone="UTC").astype(object)
    out[np.isnat(values)] = None
    return out


def _with_iso_times(frame: pd.DataFrame, units: dict[int, _TimeUnit]) -> pd.DataFrame:
    """``frame`` with the date-time columns at the positions in ``units`` as ISO 8601 text."""
    if not units:
        return frame
    frame = frame.copy(deep=False)
    for i, unit in units.items():
        frame.isetitem(i, _iso_times(frame.iloc[:, i], unit))
    return frame


def _is_text(col: pd.Series) -> bool:
    import pandas as pd

    dtype = col.dtype
    return not (
        pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
    )


def _needs_quotes(frame: pd.DataFrame, sep: str) -> bool:
    """Whether a text value (a category: each once) holds ``sep``, a quote or a line break."""
    import numpy as np
    import pandas as pd

    pattern = f'[{re.escape(sep)}"\r\n]'
    for i in range(frame.shape[1]):
        col = frame.iloc[:, i]
        if not _is_text(col):
            continue
        values = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else col
        text = pd.Series(np.asarray(values, dtype=object)).dropna().astype(str)
        if text.str.contains(pattern, regex=True).any():
            return True
    return False


def _is_missing(value: object) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _arrow_columns(frame: pd.DataFrame, units: dict[int, _TimeUnit]) -> pa.Table:
    """``frame`` as an Arrow table of plain columns: numbers, and text as pandas' CSV writer
    prints it (categories and other values by ``str``: booleans ``True``/``False``; date-times
    by :func:`_iso_times` to ``units``)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    def coded(codes: np.ndarray, missing: np.ndarray, words: list[str]) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=missing), pa.array(words, pa.string()))

    arrays: list[pa.Array] = []
    for i in range(frame.shape[1]):
        col = frame.iloc[:, i]
        if i in units:
            arr = pa.array(_iso_times(col, units[i]), type=pa.string())
        elif isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy()
            words = [str(c) for c in col.cat.categories]
            arr = coded(np.maximum(codes, 0), codes < 0, words).dictionary_decode()
        elif pd.api.types.is_bool_dtype(col.dtype):
            missing = col.isna().to_numpy()
            flags = col.fillna(False).to_numpy(dtype=bool).astype(np.int8)
            arr = coded(flags, missing, ["False", "True"]).dictionary_decode()
        elif not _is_text(col):
            arr = pa.array(col, from_pandas=True)
        else:
            arr = pa.array([None if _is_missing(v) else str(v) for v in col.astype(object)], pa.string())
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])


def _write_plain(frame: pd.DataFrame, out: Path, sep: str, units: dict[int, _TimeUnit]) -> None:
    """Arrow's CSV writer, several times faster than pandas' on millions of rows, without quotes
    (:func:`_needs_quotes` found none needed), :data:`_WRITE_ROWS` rows at a time."""
    import csv
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = io.StringIO()
    csv.writer(header, delimiter=sep, lineterminator="\n").writerow([str(c) for c in frame.columns])
    options = pacsv.WriteOptions(include_header=False, delimiter=sep, quoting_style="none")
    gz = out.name.lower().endswith(".gz")
    with pa.CompressedOutputStream(str(out), "gzip") if gz else pa.OSFile(str(out), "wb") as sink:
        sink.write(header.getvalue().encode("utf-8"))
        for start in range(0, len(frame), _WRITE_ROWS):
            piece = frame.iloc[start : start + _WRITE_ROWS]
            pacsv.write_csv(_arrow_columns(piece, units), sink, options)


def labelled_metrics(scored: ScoredTable, threshold: float, source: str) -> dict[str, Any] | None:
    """``detection_report`` plus ``threshold_source``, or None without labels."""
    labels = scored.encoded.labels
    if labels is None:
        return None
    from common.metrics import UNNAMED_GROUP, detection_by_group, detection_report

    metrics = {**detection_report(labels, scored.scores, threshold), "threshold_source": source}
    types = scored.attack_types
    if types is not None and labels.any():
        groups = detection_by_group(labels, scored.scores, types, threshold)
        if set(groups) != {UNNAMED_GROUP}:  # some anomaly names its type
            metrics["by_attack_type"] = groups
    return metrics


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_metrics(console: Console, metrics: dict[str, Any]) -> None:
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
    groups = metrics.get("by_attack_type")
    if groups:
        from common.explanation import printable_name

        names = {name: printable_name(name, 40) for name in groups}
        width = max(18, *(len(name) for name in names.values()))
        console.result(
            f"  {'by attack type':<{width}} {'n':>6} {'recall':>7} {'AUROC':>7} {'det@1%':>7} {'det@5%':>7}"
        )
        for name, g in groups.items():
            figures = (
                g["recall"],
                g["auroc"],
                g["detection_rate_at_1pct_far"],
                g["detection_rate_at_5pct_far"],
            )
            console.result(
                f"  {names[name]:<{width}} {g['n']:>6} " + " ".join(f"{_fmt(v):>7}" for v in figures)
            )
