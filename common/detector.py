"""The local detector, with the contract PyOD users know.

``fit(train, validation)`` → ``decision_function(table)`` (higher = more
anomalous) → ``threshold_`` → ``predict(table)``; ``explain`` shows per-event
surprisal with what was expected instead. Fitted attributes end in ``_``;
using an unfitted detector raises :class:`NotFittedError`.

Everything fitted (vocabulary, scalers, early stopping, END weight, threshold) sees only
training and validation data, never test labels or test scores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common import __version__
from common.config import (
    DETECTOR_FORMAT,
    DETECTOR_META,
    DetectorConfig,
    ScoreConfig,
    finite_number,
    parse_detector_config,
    to_flat,
    with_legacy_defaults,
)
from common.encoding import EncodedSequences, Encoder
from common.errors import ConfigError, DataError, ModelFileError, NotFittedError
from common.events import ORDER, EventTable, Sequences, text_codes
from common.explanation import EventExplanation, SequenceExplanation
from common.metrics import normal_p_values, threshold_for_contamination, threshold_for_far, unresolved_rate
from common.model import (
    NetworkShape,
    NextEventModel,
    build_model,
    missing_device,
    resolve_device,
    set_threads,
    shape_of,
)
from common.scoring import (
    WEIGHTED_END_AGGREGATES,
    ContextFusion,
    EventScores,
    aggregate,
    context_fusion_from_moments,
    end_weight_from_moments,
    next_event_choices,
    score_events,
    spread_moments,
)
from common.train import FitResult, fit_model
from common.vocab import END, UNK

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
ENCODER_FILE = "encoder.json"


def _device_here(saved: str, path: Path) -> str:
    """The saved ``train.device`` where this host has it, else the nearest it has (said in the log)."""
    if missing_device(saved) is None:
        return saved
    if not torch.cuda.is_available():
        log.info("%s: trained on %s; this host has no CUDA device, so it runs on the CPU", path, saved)
        return "auto"
    count = torch.cuda.device_count()
    log.info("%s: trained on %s; this host has %d CUDA device(s), so it runs on cuda:0", path, saved, count)
    return "cuda"


@dataclass
class ScoredTable:
    """Everything one scoring pass produces for a table."""

    encoded: EncodedSequences
    events: EventScores
    scores: np.ndarray
    raw_events: np.ndarray | None = None  # (N,) the raw tokens, for explanations
    raw_context: np.ndarray | None = None  # (N, C') the table's raw context values, for explanations
    raw_context_names: tuple[str, ...] = ()  # their columns (the table's order, not the encoder's)
    order: np.ndarray | None = None  # (N,) the order values (epoch seconds when ``time_ordered``)
    time_ordered: bool = False
    attack_types: np.ndarray | None = None  # (S,) each sequence's ``attack_type`` when the table has one
    #: (S,) with a context part (:class:`~common.scoring.ContextFusion`): the score without it,
    #: and the context part on that scale; ``scores`` is the larger of the two
    events_part: np.ndarray | None = None
    context_score: np.ndarray | None = None

    def order_texts(self, rows: slice) -> list[str] | None:
        """The order value of every event in ``rows``, to join it back to the data: ISO 8601 UTC
        for timestamps, else the position (``3``); None without order values.

        Timestamps are rounded to the microsecond, as ``score --events-out`` rounds them:
        ``2026-01-05T08:00:00Z``, ``2026-01-05T08:00:00.123000Z``.
        """
        if self.order is None:
            return None
        values = self.order[rows]
        if self.time_ordered:
            stamps = pd.to_datetime(np.asarray(values, dtype=np.float64), unit="s", utc=True).round("us")
            micro = stamps.microsecond.to_numpy()
            texts = np.datetime_as_string(stamps.tz_localize(None).to_numpy().astype("datetime64[us]"))
            whole = (micro == 0).tolist()
            return [t[:19] + "Z" if w else t + "Z" for t, w in zip(texts.tolist(), whole, strict=True)]
        out = []
        for value in values.tolist():
            out.append(str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))
        return out

    def unseen_context(self, row: int, names: tuple[str, ...]) -> dict[str, str]:
        """The context values of event ``row`` (of all events) never seen in training, by column."""
        if not names:
            return {}
        unseen = [names[j] for j in np.nonzero(self.encoded.context[row] == 0)[0]]
        return {n: self.context_value(row, n) or "" for n in unseen}

    def context_value(self, row: int, name: str) -> str | None:
        """The value of context column ``name`` at event ``row`` (of all events), as the data held
        it; None when the scored table did not keep it."""
        if self.raw_context is not None and name in self.raw_context_names:
            return str(self.raw_context[row, self.raw_context_names.index(name)])
        return None

    def context_driven(self) -> np.ndarray:
        """(S,) True where the context part set the score (at least as high as the score without it)."""
        if self.context_score is None or self.events_part is None:
            return np.zeros(len(self.scores), dtype=bool)
        return np.asarray(self.context_score >= self.events_part, dtype=bool)

    def context_culprits(self, sequences: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(sequences, rows): of ``sequences`` (default: all), each whose context part set its
        score (:meth:`context_driven`), with the row (of all events) of its event whose context
        values were the least expected, the first of ties; an event unseen in training is not
        judged. Only where the model expected another value in at least one column there: a
        context as expected names nothing. Whether the sequence is flagged is the caller's to
        ask: the score table, ``explain`` and the report all read the rule from here. Needs a
        table scored with ``expected_k > 0``; whole columns at once."""
        events, data = self.events, self.encoded
        none = np.zeros(0, dtype=np.int64)
        if events.context_surprisal is None or events.context_expected is None:
            return none, none
        chosen = np.arange(len(data)) if sequences is None else np.asarray(sequences, dtype=np.int64)
        chosen = chosen[self.context_driven()[chosen] & (data.lengths[chosen] > 0)]
        if not len(chosen):
            return none, none
        lengths = data.lengths[chosen].astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # each chosen sequence's first entry
        owner = np.repeat(np.arange(len(chosen)), lengths)
        rows = data.offsets[chosen][owner] + (np.arange(int(lengths.sum())) - starts[owner])
        surprisal = np.nan_to_num(events.context_surprisal[rows].astype(np.float64), nan=-np.inf)
        largest = np.maximum.reduceat(surprisal, starts)
        at_largest = np.flatnonzero((surprisal == largest[owner]) & np.isfinite(surprisal))
        judged, first = np.unique(owner[at_largest], return_index=True)
        picked = rows[at_largest[first]]
        differs = (events.context_expected[picked] != data.context[picked]).any(axis=1)
        return chosen[judged][differs], picked[differs]

    def top_events(self, n: int) -> list[np.ndarray]:
        """Positions of each sequence's ``n`` highest-scoring steps, most anomalous first.

        With an end-of-sequence model, position ``len(sequence)`` is its END step.
        Ties go as in explanations: the higher surprisal, then the earlier position.
        One sort over all steps of all sequences.
        """
        counts, positions = self.top_steps(n)
        return np.split(positions, np.cumsum(counts)[:-1]) if len(counts) else []

    def top_steps(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top_events` flat: (S,) how many steps each sequence has among its ``n``
        highest-scoring ones, and their positions (sum of counts,), sequence by sequence,
        each sequence's most anomalous first."""
        ev = self.events
        step_offsets, _ = ev.step_layout()
        steps = np.diff(step_offsets)
        score = ev.on_steps(np.asarray(ev.score, np.float64), ev.end_surprisal, np.nan)
        surprisal = ev.on_steps(np.asarray(ev.surprisal, np.float64), ev.end_surprisal, np.nan)
        owner = np.repeat(np.arange(len(steps)), steps)
        position = np.arange(len(owner)) - np.repeat(step_offsets[:-1], steps)
        lowest = -np.inf  # NaN ranks last, as in explanations
        key_score = np.where(np.isnan(score), lowest, score)
        key_surprisal = np.where(np.isnan(surprisal), lowest, surprisal)
        ranked = np.lexsort((position, -key_surprisal, -key_score, owner))
        # sorted by sequence first, so slot j of the sort is rank position[j] of its sequence
        picked = ranked[position < n]
        return np.minimum(steps, max(n, 0)), position[picked]


MIN_VALIDATION_CONTENTS = 10
"""Fewer distinct sequences than this in an automatic hold-out are a warning."""


def content_groups(table: EventTable | Sequences) -> np.ndarray:
    """A group id per sequence: identical sequences share a group (ids in order of first
    appearance, as ``pd.factorize`` numbers them).

    Identical means the same events with the same feature values (numbers,
    time gaps, context): sessions that repeat one path of events with other
    amounts or devices are different data to the model, not copies. Each
    sequence is keyed by two 64-bit hashes of its rows and their positions,
    computed over whole columns (no loop over sequences).
    """
    g = table.grouped() if isinstance(table, EventTable) else table
    n = len(g.ids)
    lengths = np.diff(g.offsets).astype(np.int64)
    # every row as integers: event and context values by their text, numbers by their bits
    columns = [text_codes(g.events)[0]]
    columns += [text_codes(g.context[:, j])[0] for j in range(g.context.shape[1])]
    numeric = np.ascontiguousarray(g.numeric, dtype=np.float64)
    columns += [numeric[:, j].copy().view(np.int64) for j in range(numeric.shape[1])]
    position = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
        g.offsets[:-1].astype(np.int64), lengths
    )
    nonempty = np.flatnonzero(lengths > 0)
    keys = np.zeros((n, 2), dtype=np.uint64)
    for k, salt in enumerate(_CONTENT_SALTS):
        row = _mix64(position.astype(np.uint64) ^ np.uint64(salt))
        for values in columns:
            row = _mix64(row ^ values.astype(np.uint64))
        if len(nonempty):
            keys[nonempty, k] = np.add.reduceat(row, g.offsets[nonempty])  # wraps, as intended
        keys[:, k] = _mix64(keys[:, k] ^ lengths.astype(np.uint64))
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


#: Two independent hashes per sequence (128 bits): two different sequences share a key with
#: a chance of about 2^-128 per pair.
_CONTENT_SALTS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (multiplication wraps): each input bit flips about half
    of the output bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def holdout_mask(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which sequences to hold out (bool per sequence): about ``fraction`` of them,
    whole content groups (:func:`content_groups`) at a time.

    Identical sequences go to the same side, so the validation scores that
    calibrate the threshold are not flattered by copies of training data.
    A ``fraction`` of 0 holds out nothing.
    """
    if fraction <= 0:
        return np.zeros(len(groups), dtype=bool)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    sizes = np.bincount(groups, minlength=n_groups)
    target = max(1, round(fraction * len(groups)))
    # groups in random order, each taken while it still fits: one large group met early is
    # passed over, not the end of the hold-out (which once kept 3 of 30 sequences)
    taken, room = [], target
    for group, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
        if size <= room:
            taken.append(group)
            room -= size
            if room == 0:
                break
    chosen = np.asarray(taken, dtype=np.int64)
    if len(chosen) == 0 and n_groups > 1:
        chosen = order[:1]
    if len(chosen) == n_groups:  # never hold out everything: a single content group stays to train on
        chosen = chosen[:-1]
    return np.isin(groups, chosen)


def holdout_split(table: EventTable, fraction: float, seed: int) -> tuple[EventTable, EventTable]:
    """``table`` split into (fit, held out) by :func:`holdout_mask`."""
    is_val = holdout_mask(content_groups(table), fraction, seed)
    ids = table.grouped().ids
    return table.subset(ids[~is_val]), table.subset(ids[is_val])


def check_model_folder(path: str | Path, flag: str = "") -> Path:
    """``path`` as a folder a model may be saved into: new, empty, or an earlier model's.

    Raises:
        ModelFileError: ``path`` is a file, or a folder holding files other
            than a seqwatch model's (saving there would mix the two).
    """
    p = Path(path)
    where = f"{flag} {path}".strip()
    if p.exists() and not p.is_dir():
        raise ModelFileError(f"{where}: is a file; name a folder for the model (it is created if missing)")
    if p.is_dir() and not (p / DETECTOR_META).is_file() and any(p.iterdir()):
        raise ModelFileError(
            f"{where}: the folder holds other files and no seqwatch model; name a new or empty folder "
            f"(an earlier model's folder is replaced)"
        )
    return p


class SequenceDetector:
    """Next-event model + calibrated threshold for behaviour sequences."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        if config is not None and not isinstance(config, DetectorConfig):
            raise TypeError(
                f"SequenceDetector takes a DetectorConfig, not {type(config).__name__}: build one with "
                "common.config.parse_detector_config({'train.epochs': 5, ...}) or "
                "with_overrides(DetectorConfig(), train={'epochs': 5})"
            )
        self.config = config or DetectorConfig()

    # -- fitted state -------------------------------------------------------------
    encoder_: Encoder
    model_: NextEventModel
    threshold_: float
    #: Weight of the END step in the averaging aggregates (fitted on validation normals).
    end_weight_: float
    #: How the context part enters the score (fitted on validation normals); None: it does not.
    context_fusion_: ContextFusion | None
    validation_scores_: np.ndarray
    fit_result_: FitResult | None
    global_threshold_: float | None

    @property
    def is_fitted(self) -> bool:
        """Whether the detector has a model, an encoder and a threshold (fitted or loaded)."""
        return all(hasattr(self, a) for a in ("model_", "encoder_", "threshold_"))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                "this SequenceDetector is not fitted yet: call fit(...) or SequenceDetector.load(dir) first"
            )

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.train.device)

    # -- fitting ----------------------------------------------------------------------
    def fit(
        self,
        train: EventTable,
        validation: EventTable | None = None,
        *,
        progress: Callable[[int, dict[str, float]], None] | None = None,
        batch_progress: Callable[[int, int, int], None] | None = None,
    ) -> SequenceDetector:
        """Fit vocabulary, scaler and model on ``train``; early-stop and calibrate on normal validation data.

        Without ``validation``, ``train.validation-fraction`` of the training
        sequences (grouped by content) is held out. Labelled anomalies in either
        table are dropped before fitting: the model learns normal behaviour.
        ``progress`` and ``batch_progress`` are :func:`~common.train.fit_model`'s.
        """
        _check_table(train, "train")
        if validation is not None:
            _check_table(validation, "validation")
        cfg = self.config
        set_threads(cfg.train.threads)
        # Selected on the grouped views: the tables' text is not copied.
        g = _normal_sequences(train)
        if validation is None:
            groups = content_groups(g)
            is_val = holdout_mask(groups, cfg.train.validation_fraction, cfg.train.seed)
            g, g_val = g.take(np.flatnonzero(~is_val)), g.take(np.flatnonzero(is_val))
            distinct = int(np.unique(groups[is_val]).size)
            if 0 < distinct < MIN_VALIDATION_CONTENTS:
                log.warning(
                    "%s: the %d held-out validation sequences hold only %d distinct sequence(s) "
                    "(the hold-out keeps copies together, so that it tests behaviour not trained on): the "
                    "threshold rests on so few patterns that it may flag many normal sequences; pass "
                    "validation data that represents normal behaviour (seqwatch fit --validation FILE)",
                    train.source,
                    len(g_val),
                    distinct,
                )
        else:
            g_val = _normal_sequences(validation)
        if len(g) == 0:
            raise DataError(
                f"{train.source}: no normal training sequences to fit on "
                f"(a model learns normal behaviour: give sequences whose label is 0, or no label column)"
            )
        encoder = Encoder.fit(
            g,
            numeric_names=train.numeric,
            context_names=train.context,
            vocab_config=cfg.vocab,
            source=train.source,
        )
        _check_vocabulary(encoder, cfg, train.source)
        self.encoder_ = encoder
        enc_train = self.encoder_.encode(g)
        enc_val = _encoded(self.encoder_, g_val, train if validation is None else validation)
        del g, g_val
        self.model_ = build_model(cfg.model, self.network_shape, seed=cfg.train.seed)
        self.fit_result_ = fit_model(
            self.model_,
            enc_train,
            enc_val if len(enc_val) else None,
            cfg.train,
            self.device,
            progress=progress,
            batch_progress=batch_progress,
        )
        if not len(enc_val):
            if validation is not None:
                why = f"{validation.source} has none"
            elif cfg.train.validation_fraction <= 0:
                why = "train.validation-fraction = 0 holds none out"
            else:
                why = f"all {len(enc_train)} training sequences have the same content"
            log.warning(
                "%s: no normal validation sequences (%s): early stopping, the END weight and the "
                "threshold use the training sequences themselves, so expect more false alarms than "
                "the target",
                train.source,
                why,
            )
        self.global_threshold_ = None  # a federation's threshold belongs to the model it came with
        self.fit_scoring(enc_val if len(enc_val) else enc_train)
        cal = cfg.calibration
        note = unresolved_rate(len(enc_val), cal.rate, cal.confidence) if len(enc_val) else None
        if note:
            log.warning(
                "%s: %s (%s)",
                train.source if validation is None else validation.source,
                note,
                "give more normal validation sequences (seqwatch fit --validation FILE)"
                if validation is not None
                else "give validation data (seqwatch fit --validation FILE), or a larger "
                "train.validation-fraction",
            )
        return self

    def fit_scoring(
        self,
        normal: EncodedSequences,
        *,
        end_weight: float | None = None,
        context_fusion: ContextFusion | None = None,
    ) -> np.ndarray:
        """Fit the END weight, the context fusion and the threshold on normal sequences; returns
        their scores.

        One scoring pass: ``end_weight_`` and ``context_fusion_`` from the
        moments of the score parts (:func:`~common.scoring.end_weight_from_moments`,
        :func:`~common.scoring.context_fusion_from_moments`) unless ``end_weight``
        is given: then it and ``context_fusion`` are the federation's, fitted on
        every node's validation sequences. Then ``threshold_`` by :meth:`calibrate`
        on the resulting scores.
        """
        if not hasattr(self, "model_"):
            self._check_fitted()
        cfg = self.config.score
        set_threads(self.config.train.threads)
        self.model_.to(self.device)
        events = score_events(self.model_, normal, cfg, self.device)
        if end_weight is None:
            moments = spread_moments(events, cfg)
            self.end_weight_ = end_weight_from_moments(moments, cfg)
            self.context_fusion_ = context_fusion_from_moments(moments, self.end_weight_)
        else:
            self.end_weight_, self.context_fusion_ = float(end_weight), context_fusion
        scores = aggregate(events, self.score_config_, self.context_fusion_)
        self.calibrate(scores)
        return scores

    @property
    def score_config_(self) -> ScoreConfig:
        """``config.score`` with the fitted END weight: how this detector scores."""
        if not hasattr(self, "end_weight_"):
            self._check_fitted()
        return dataclasses.replace(self.config.score, end_weight=self.end_weight_)

    @property
    def network_shape(self) -> NetworkShape:
        """The sizes the fitted encoder gives the network."""
        if not hasattr(self, "encoder_"):
            self._check_fitted()
        return shape_of(self.encoder_)

    def calibrate(self, normal_scores: np.ndarray) -> float:
        """Set ``threshold_`` from normal validation scores (target false-alarm or contamination rate)."""
        cal = self.config.calibration
        self.validation_scores_ = np.asarray(normal_scores, dtype=np.float64)
        if cal.contamination > 0:
            self.threshold_ = float(threshold_for_contamination(self.validation_scores_, cal.contamination))
        else:
            self.threshold_ = float(
                threshold_for_far(self.validation_scores_, cal.false_alarm_rate, cal.confidence)
            )
        if not hasattr(self, "global_threshold_"):
            self.global_threshold_ = None
        return self.threshold_

    @classmethod
    def from_parts(
        cls,
        config: DetectorConfig,
        encoder: Encoder,
        model: NextEventModel,
        *,
        threshold: float,
        validation_scores: np.ndarray | None = None,
        global_threshold: float | None = None,
        end_weight: float | None = None,
        context_fusion: ContextFusion | None = None,
    ) -> SequenceDetector:
        """Assemble a fitted detector (used by the federation with global weights).

        ``end_weight`` defaults to ``score.end-weight`` and ``context_fusion`` to
        none (no context part); :meth:`fit_scoring` fits them (and the
        threshold) on normal sequences.
        """
        det = cls(config)
        det.encoder_, det.model_ = encoder, model
        det.threshold_ = float(threshold)
        det.end_weight_ = float(config.score.end_weight if end_weight is None else end_weight)
        det.context_fusion_ = context_fusion
        det.validation_scores_ = np.asarray(validation_scores if validation_scores is not None else [])
        det.fit_result_ = None
        det.global_threshold_ = global_threshold
        return det

    # -- scoring --------------------------------------------------------------------------
    def encode(self, table: EventTable) -> EncodedSequences:
        self._check_fitted()
        _check_table(table)
        return _encoded(self.encoder_, table.grouped(), table)

    def _score_encoded(
        self,
        data: EncodedSequences,
        score: ScoreConfig | None = None,
        raw_events: np.ndarray | None = None,
        expected_k: int = 0,
        progress: Callable[[int], None] | None = None,
        grouped: Sequences | None = None,
        table: EventTable | None = None,
    ) -> ScoredTable:
        sc = score or self.score_config_
        set_threads(self.config.train.threads)
        self.model_.to(self.device)
        events = score_events(self.model_, data, sc, self.device, expected_k=expected_k, progress=progress)
        # the fitted fusion belongs to this detector's own score (another aggregate has other spreads)
        fusion = self.context_fusion_ if _scores_alike(sc, self.score_config_) else None
        base = aggregate(events, sc)
        mapped = None
        if fusion is not None and events.context_surprisal is not None:
            mapped = fusion.on_score_scale(events)
        return ScoredTable(
            data,
            events,
            base if mapped is None else np.maximum(base, mapped),
            raw_events,
            None if grouped is None else grouped.context,
            () if grouped is None else grouped.context_names,
            None if table is None else table.frame[ORDER].to_numpy(),  # its rows are in grouped order
            table is not None and table.time_ordered,
            None if grouped is None else grouped.attack_types,
            None if mapped is None else base,
            mapped,
        )

    def score_table(
        self,
        table: EventTable,
        score: ScoreConfig | None = None,
        *,
        expected_k: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> ScoredTable:
        """One scoring pass with per-event detail (for reports and explanations).

        ``expected_k > 0`` also keeps the top-k expected events at every step;
        ``progress`` is called with the number of events scored per batch.
        """
        self._check_fitted()
        _check_table(table)
        g = table.grouped()
        return self._score_encoded(
            _encoded(self.encoder_, g, table), score, g.events, expected_k, progress, g, table
        )

    def decision_function(self, table: EventTable) -> np.ndarray:
        """Anomaly score per sequence (in ``table.grouped().ids`` order); higher = more anomalous."""
        return self.score_table(table).scores

    def p_values(self, table: EventTable) -> np.ndarray:
        """Conformal p-value per sequence (in ``table.grouped().ids`` order): the share of the
        normal validation sequences (``validation_scores_``) scoring at least as high, counting
        the sequence itself (:func:`common.metrics.normal_p_values`). Small = unusual among
        normal data; a normal sequence gets ``p <= a`` with probability at most ``a``. NaN
        without held-out validation scores (:attr:`has_p_values`)."""
        return self.p_values_from_scores(self.decision_function(table))

    def p_values_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """:meth:`p_values` for scores already computed (e.g. ``score_table(...).scores``).

        NaN when there is no held-out reference (:attr:`has_p_values`): a model fitted without
        validation sequences holds its training sequences' scores, which it fits better than new
        data, so p-values against them would come out too small.
        """
        if not self.has_p_values:
            return np.full(np.shape(scores), np.nan)
        return normal_p_values(scores, self.validation_scores_)

    @property
    def has_p_values(self) -> bool:
        """Whether held-out normal scores give p-values: not without validation scores (a
        federation's global model), nor against the training sequences' own (a model fitted
        without validation sequences)."""
        self._check_fitted()
        fit = getattr(self, "fit_result_", None)
        return self.validation_scores_.size > 0 and not (fit is not None and fit.monitored == "training")

    def predict(self, table: EventTable, threshold: float | None = None) -> np.ndarray:
        """1 for sequences scoring above the threshold (default ``threshold_``), else 0."""
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)):
            raise TypeError(f"predict(threshold=...) takes a number, not {type(threshold).__name__}")
        scores = self.decision_function(table)
        t = self.threshold_ if threshold is None else float(threshold)
        return (scores > t).astype(np.int8)

    def explain(self, table: EventTable, sequence_id: object, top_k: int = 3) -> SequenceExplanation:
        """Per-event surprisal of one sequence, with the top-``k`` expected events at each step.

        ``sequence_id`` is compared as text, as ids are read (``3`` finds ``"3"``).
        """
        self._check_fitted()
        _check_table(table)
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise ValueError(
                f"explain(top_k=...) takes how many expected events to list, at least 1; got {top_k!r}"
            )
        ids = table.grouped().ids
        hits = np.nonzero(ids.astype(str) == str(sequence_id))[0]
        if len(hits) == 0:
            raise DataError(f"{table.source}: no sequence with id {sequence_id!r}")
        sub = table.subset(ids[hits[:1]])
        scored = self.score_table(sub, expected_k=top_k)
        return self.explanation(scored, 0)

    def explanation(self, scored: ScoredTable, i: int) -> SequenceExplanation:
        """Build the explanation of sequence ``i`` of a table scored with ``expected_k > 0``."""
        data, ev = scored.encoded, scored.events
        if ev.expected is None or ev.expected_p is None:
            raise ValueError("explanation() needs a table scored with score_table(..., expected_k=k)")
        vocab = self.encoder_.vocab
        sl = ev.of(i)
        n = sl.stop - sl.start
        tokens = data.tokens[sl]
        raw = scored.raw_events[sl].tolist() if scored.raw_events is not None else None
        names = self.encoder_.numeric_names
        context_names = self.encoder_.context_names
        # whole columns as Python lists first: a sequence may hold a million events
        residuals = ev.residual[sl].tolist()
        any_unseen = (data.context[sl] == 0).any(axis=1).tolist() if context_names else [False] * n
        orders: list[str] | list[None] = scored.order_texts(sl) or [None] * n
        expected_ctx = self._expected_context(ev, data, sl)
        # an unseen event's context is not judged (NaN): shown as none
        context_sur: list[float | None] = (
            [None if math.isnan(x) else x for x in ev.context_surprisal[sl].tolist()]
            if ev.context_surprisal is not None
            else [None] * n
        )
        columns = zip(
            tokens.tolist(),
            ev.surprisal[sl].tolist(),
            ev.rank[sl].tolist(),
            ev.score[sl].tolist(),
            ev.expected[sl].tolist(),
            ev.expected_p[sl].tolist(),
            strict=True,
        )
        events = []
        for t, (token, surprisal, rank, score, exp_ids, exp_p) in enumerate(columns):
            events.append(
                EventExplanation(
                    position=t,
                    event=str(raw[t]) if raw is not None else vocab.token(token),
                    surprisal=surprisal,
                    rank=rank,
                    expected=tuple((vocab.token(a), p) for a, p in zip(exp_ids, exp_p, strict=True)),
                    unseen=token == UNK,
                    # a missing value (NaN: it adds nothing to the score) is shown as missing; an
                    # unseen event's numbers are not judged (NaN throughout) and not shown
                    numeric_residuals=(
                        {}
                        if token == UNK and not any(math.isfinite(r) for r in residuals[t])
                        else dict(zip(names, residuals[t], strict=True))
                    ),
                    score=score,
                    unseen_context=(
                        scored.unseen_context(sl.start + t, context_names) if any_unseen[t] else {}
                    ),
                    order=orders[t],
                    context_surprisal=context_sur[t],
                    expected_context=expected_ctx(t),
                )
            )
        if ev.end_surprisal is not None and ev.end_rank is not None:
            end_ids = ev.end_expected[i] if ev.end_expected is not None else ()
            end_p = ev.end_expected_p[i] if ev.end_expected_p is not None else ()
            events.append(
                EventExplanation(
                    position=len(tokens),
                    event=vocab.token(END),
                    surprisal=float(ev.end_surprisal[i]),
                    rank=int(ev.end_rank[i]),
                    expected=tuple(
                        (vocab.token(int(a)), float(p)) for a, p in zip(end_ids, end_p, strict=True)
                    ),
                    unseen=False,
                    numeric_residuals={},
                    score=float(ev.end_surprisal[i]),
                )
            )
        label = None if data.labels is None else int(data.labels[i])
        end = None if ev.end_surprisal is None else float(ev.end_surprisal[i])
        base = float(scored.scores[i] if scored.events_part is None else scored.events_part[i])
        terms = self._score_terms(base, end)
        if scored.context_score is not None and ev.context_surprisal is not None and n:
            largest = float(np.fmax.reduce(ev.context_surprisal[sl]))  # fmax: unseen events left out
            terms["context_surprisal"] = 0.0 if math.isnan(largest) else largest
            terms["context_score"] = float(scored.context_score[i])
        p_value = float(self.p_values_from_scores(scored.scores[i : i + 1])[0])
        _, culprit = scored.context_culprits(np.array([i]))
        return SequenceExplanation(
            sequence_id=str(data.ids[i]),
            score=float(scored.scores[i]),
            threshold=self.threshold_,
            flagged=bool(scored.scores[i] > self.threshold_),
            events=tuple(events),
            label=label,
            score_parts=self._score_parts(terms, end is not None),
            score_terms=terms,
            p_value=None if math.isnan(p_value) else p_value,
            context_position=int(culprit[0] - data.offsets[i]) if len(culprit) else None,
        )

    def expected_context_at(self, scored: ScoredTable, row: int) -> dict[str, tuple[str, float]]:
        """The context values the model expected at event ``row`` (of all events of ``scored``)
        where the actual ones differ, with their probabilities (as
        :attr:`~common.explanation.EventExplanation.expected_context`)."""
        return self._expected_context(scored.events, scored.encoded, slice(row, row + 1))(0)

    def _expected_context(
        self, ev: EventScores, data: EncodedSequences, sl: slice
    ) -> Callable[[int], dict[str, tuple[str, float]]]:
        """Event ``t`` of ``sl`` -> the context values its model expected where the actual ones
        differ (:attr:`EventExplanation.expected_context`); none for hashed categories, whose
        names the model does not know, or an event unseen in training (not judged)."""
        context = self.encoder_.context
        if ev.context_expected is None or ev.context_expected_p is None or context.hashed:
            return lambda t: {}
        names = self.encoder_.context_names
        values = [context.columns[name] for name in names]
        ids, probs = ev.context_expected[sl].tolist(), ev.context_expected_p[sl].tolist()
        actual, tokens = data.context[sl].tolist(), data.tokens[sl].tolist()

        def expected(t: int) -> dict[str, tuple[str, float]]:
            if tokens[t] == UNK:
                return {}
            return {
                name: (values[j][ids[t][j] - 1] if ids[t][j] else "<unseen>", probs[t][j])
                for j, name in enumerate(names)
                if ids[t][j] != actual[t][j]
            }

        return expected

    def _score_terms(self, score: float, end_surprisal: float | None) -> dict[str, float]:
        """The numbers of :meth:`_score_parts` for a score without context part: ``steps`` (the
        aggregate of the event scores) and, when the END step enters apart, ``end_weight`` and
        ``end_surprisal`` (:meth:`explanation` adds ``context_surprisal``, the sequence's largest,
        and ``context_score``, that on the events' scale, with a context part)."""
        sc = self.score_config_
        if end_surprisal is None or sc.aggregate not in WEIGHTED_END_AGGREGATES:
            return {"steps": score}
        part = sc.end_weight * end_surprisal
        return {"steps": score - part, "end_weight": sc.end_weight, "end_surprisal": end_surprisal}

    def _score_parts(self, terms: dict[str, float], has_end: bool) -> str:
        """How the sequence score comes from its event scores (:meth:`_score_terms`), in words."""
        sc = self.score_config_
        steps = {
            "mean": "mean event score",
            "window": f"largest mean event score over {sc.window} events",
            "window-min": f"smallest mean event score over {sc.window} events",
            "max": "largest step score",
            "topk-miss": f"share of steps outside the model's top {sc.top_k} guesses",
        }[sc.aggregate]
        if not has_end:
            text = steps
        elif "end_weight" not in terms:
            text = f"{steps} (the END step counted as one more step)"
        else:
            weight, end = terms["end_weight"], terms["end_surprisal"]
            text = (
                f"{steps} {terms['steps']:.3f} + END weight {weight:.4g} × END surprisal "
                f"{end:.3f} ({weight * end:.3f})"
            )
        if "context_score" not in terms:
            return text
        if "end_weight" not in terms:
            text = f"{text} {terms['steps']:.3f}"
        fusion = self.context_fusion_
        assert fusion is not None
        return (
            f"the larger of: {text}; and the largest context surprisal {terms['context_surprisal']:.3f} "
            f"on the events' scale ({fusion.shift:.4g} + {fusion.scale:.4g} × it = "
            f"{terms['context_score']:.3f})"
        )

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a model directory: safetensors weights and JSON for everything else (no pickle).

        ``path`` is created if missing; an earlier model directory is replaced,
        any other non-empty folder refused (:func:`check_model_folder`).
        """
        self._check_fitted()
        out = check_model_folder(path)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        meta: dict[str, Any] = {
            "format": DETECTOR_FORMAT,
            "format_version": FORMAT_VERSION,
            "seqwatch_version": __version__,
            "config": to_flat(self.config),
            "shape": {
                "vocab_size": self.network_shape.vocab_size,
                "context_sizes": list(self.network_shape.context_sizes),
                "n_numeric": self.network_shape.n_numeric,
            },
            "threshold": self.threshold_,
            "end_weight": self.end_weight_,
            "context_fusion": None if self.context_fusion_ is None else self.context_fusion_.to_dict(),
            "global_threshold": self.global_threshold_,
            "validation_scores": self.validation_scores_.tolist(),
            "calibrated_for": scoring_keys(self.config, self.network_shape.n_numeric),
            "fit": dataclasses.asdict(self.fit_result_) if self.fit_result_ else None,
        }
        meta_path = out / DETECTOR_META
        if self.config.vocab.hash_key:  # the institutions' shared secret is in the config: owner only
            meta_path.unlink(missing_ok=True)
            fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(meta, indent=1))
        else:
            meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        (out / ENCODER_FILE).write_text(json.dumps(self.encoder_.to_dict()), encoding="utf-8")
        return out

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | None = None, threads: int | None = None
    ) -> SequenceDetector:
        """Load a model directory written by :meth:`save` (or by the federation).

        ``device`` and ``threads`` replace the saved ``train.device`` and
        ``train.threads``: where and with how many CPU threads this host runs it.
        A model trained on ``cuda`` runs on the CPU where there is no CUDA device.
        """
        p = Path(path)
        for name in (WEIGHTS_FILE, DETECTOR_META, ENCODER_FILE):
            if not (p / name).is_file():
                raise ModelFileError(f"{p}: not a seqwatch model directory ({name} is missing)")
        try:
            meta = json.loads((p / DETECTOR_META).read_text(encoding="utf-8"))
            enc_data = json.loads((p / ENCODER_FILE).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{p}: unreadable model metadata ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != DETECTOR_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ModelFileError(
                f"{p / DETECTOR_META}: not a seqwatch model ({found!r}, expected {DETECTOR_FORMAT!r})"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{p / DETECTOR_META}: model format version {meta.get('format_version')!r}; this seqwatch "
                f"reads version {FORMAT_VERSION}: re-train the model with this version"
            )
        try:
            # models saved before the END step or the event-aware numeric head existed lack their keys
            flat = with_legacy_defaults(meta["config"])
            if device is not None:
                flat["train.device"] = device
            else:
                flat["train.device"] = _device_here(str(flat.get("train.device", "auto")), p)
            if threads is not None:
                flat["train.threads"] = threads
            try:
                config = parse_detector_config(flat)
            except ConfigError as exc:  # the saved config, edited or from another version
                raise ModelFileError(f"{p / DETECTOR_META}: {exc}; fix it or re-train the model") from exc
            try:
                encoder = Encoder.from_dict(enc_data, hash_key=config.vocab.hash_key, need_key=True)
            except ConfigError as exc:  # the hash key and the saved events disagree
                raise ModelFileError(f"{p}: {exc}") from exc
            shape = NetworkShape(
                vocab_size=int(meta["shape"]["vocab_size"]),
                context_sizes=tuple(int(x) for x in meta["shape"]["context_sizes"]),
                n_numeric=int(meta["shape"]["n_numeric"]),
            )
            threshold = _saved_number(meta, "threshold")
            saved_scores = meta.get("validation_scores", [])
            if not all(finite_number(v) for v in saved_scores):
                raise ValueError("'validation_scores' must be finite numbers")
            validation_scores = np.asarray(saved_scores, dtype=np.float64)
            global_threshold = (
                None if meta.get("global_threshold") is None else _saved_number(meta, "global_threshold")
            )
            end_weight = None if meta.get("end_weight") is None else _saved_number(meta, "end_weight")
            context_fusion = ContextFusion.from_dict(meta.get("context_fusion"))
            fit_result = _fit_result_from(meta.get("fit"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ModelFileError(
                f"{p}: damaged model metadata ({type(exc).__name__}: {exc}); re-save or re-train the model"
            ) from exc
        _check_calibrated_for(meta.get("calibrated_for"), scoring_keys(config, shape.n_numeric), p)
        try:  # what fit refuses, a hand-edited config must not bring back
            _check_vocabulary(encoder, config, str(p / DETECTOR_META))
        except ConfigError as exc:
            raise ModelFileError(f"{p / DETECTOR_META}: {exc} (in its config)") from exc
        except DataError as exc:  # names the file already
            raise ModelFileError(str(exc)) from exc
        if shape_of(encoder) != shape:
            raise ModelFileError(
                f"{p}: {ENCODER_FILE} implies sizes {shape_of(encoder)}, {DETECTOR_META} says {shape}; "
                f"the files come from different models: re-save or re-train the model"
            )
        model = NextEventModel(config.model, shape)
        try:
            weights = load_file(str(p / WEIGHTS_FILE))
            model.load_state_dict(weights)
        except (RuntimeError, OSError, SafetensorError) as exc:
            raise ModelFileError(
                f"{p / WEIGHTS_FILE}: unreadable, or weights that do not match the saved config ({exc})"
            ) from exc
        broken = next(
            (k for k, w in weights.items() if w.is_floating_point() and not torch.isfinite(w).all()), None
        )
        if broken is not None:
            raise ModelFileError(
                f"{p / WEIGHTS_FILE}: weights {broken!r} hold NaN or infinite values (a damaged file, or a "
                f"training run that diverged); re-train the model"
            )
        model.eval()
        det = cls.from_parts(
            config,
            encoder,
            model,
            threshold=threshold,
            validation_scores=validation_scores,
            global_threshold=global_threshold,
            end_weight=end_weight,
            context_fusion=context_fusion,
        )
        det.fit_result_ = fit_result
        return det


def _saved_number(meta: dict[str, Any], key: str) -> float:
    """``meta[key]`` as a float, refused unless it is a finite number and not negative: every
    score is (surprisals, squared residuals and fractions are), so a negative threshold would
    flag every sequence and a negative END weight reward a surprising end."""
    value = meta[key]
    if not finite_number(value) or value < 0:
        raise ValueError(f"{key!r} must be a finite number of at least 0, got {value!r}")
    return float(value)


def scoring_keys(config: DetectorConfig, n_numeric: int) -> dict[str, Any]:
    """The config keys, with their values, that change how a fitted network's output becomes a
    score (saved as ``calibrated_for``): its threshold, END weight and validation scores hold
    for these values only. A key that cannot change this model's scores is left out: the window
    of a non-window aggregate, the top-k of any but ``topk-miss``, the numeric weight of a model
    without numbers (the batch size and the fixed END weight, which a saved model replaces by
    its own, never count)."""
    sc = config.score
    keys: dict[str, Any] = {"model.end-event": config.model.end_event, "score.aggregate": sc.aggregate}
    if sc.aggregate in ("window", "window-min"):
        keys["score.window"] = sc.window
    if sc.aggregate == "topk-miss":
        keys["score.top-k"] = sc.top_k
    if n_numeric:
        keys["score.numeric-weight"] = sc.numeric_weight
    return keys


def _check_calibrated_for(saved: object, now: dict[str, Any], folder: Path) -> None:
    """Refuse a model whose config was changed, after calibration, in a key that changes its
    scores: its threshold and p-values would judge scores of one kind by those of another.

    Raises:
        ModelFileError: naming the key, both values and the file. Models saved before
            ``calibrated_for`` existed are not checked.
    """
    if saved is None:
        return
    if not isinstance(saved, dict):
        raise ModelFileError(f"{folder / DETECTOR_META}: 'calibrated_for' is not a table; re-train the model")
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        what = "; ".join(_change_text(k, saved, now) for k in changed)
        raise ModelFileError(
            f"{folder / DETECTOR_META}: its config was changed after calibration: {what}. The threshold, "
            f"END weight and validation scores were computed with the old value(s): restore them, or fit "
            f"a model with the new ones (seqwatch fit --config {folder} takes the rest of its settings)"
        )


def _change_text(key: str, saved: dict[str, Any], now: dict[str, Any]) -> str:
    """``"score.aggregate = 'max' (calibrated with 'mean')"``, or with a key only one side reads."""
    if key not in saved:
        return f"{key} = {now[key]!r} (not read at calibration)"
    if key not in now:
        return f"{key} no longer read (calibrated with {saved[key]!r})"
    return f"{key} = {now[key]!r} (calibrated with {saved[key]!r})"


def _scores_alike(a: ScoreConfig, b: ScoreConfig) -> bool:
    """Whether two score configs give the same scores (the batch size and whether the END weight
    is fitted do not change a score once the weight is set)."""
    return dataclasses.replace(a, batch_size=b.batch_size, fit_end_weight=b.fit_end_weight) == b


def _fit_result_from(saved: object) -> FitResult | None:
    """The saved training summary (None for models trained by a federation or before it was saved)."""
    if saved is None:
        return None
    if not isinstance(saved, dict):
        raise TypeError(f"'fit' is a {type(saved).__name__}, not a table")
    return FitResult(
        best_epoch=int(saved["best_epoch"]),
        best_val_loss=float(saved["best_val_loss"]),
        history=[{str(k): float(v) for k, v in row.items()} for row in saved["history"]],
        train_events_per_second=float(saved["train_events_per_second"]),
        monitored=str(saved["monitored"]),
    )


def _check_vocabulary(encoder: Encoder, config: DetectorConfig, source: str) -> None:
    """Refuse a vocabulary that leaves nothing to learn or to score.

    Raises:
        DataError: ``vocab.min-count`` kept no event type.
        ConfigError: ``score.top-k`` covers every id the model can predict, so that
            ``topk-miss`` would score every sequence 0.
    """
    vocab = encoder.vocab
    if not vocab.tokens:
        raise DataError(
            f"{source}: vocab.min-count = {config.vocab.min_count} keeps no event type (all "
            f"{vocab.cut_types:,} distinct events occur fewer times in training): lower vocab.min-count"
        )
    candidates = next_event_choices(len(vocab), config.model.end_event)
    if config.score.aggregate == "topk-miss" and config.score.top_k >= candidates:
        end = " and <end>" if config.model.end_event else ""
        raise ConfigError(
            f"score.top-k = {config.score.top_k} is not below the {candidates} ids the model can predict "
            f"({len(vocab.tokens)} event types, <unk>{end}): with score.aggregate = 'topk-miss' every "
            f"event would be among the top-k and every score 0; set score.top-k below {candidates}"
        )


def _check_table(table: object, name: str = "table") -> None:
    """``table`` must be an :class:`EventTable`; anything else is refused with how to make one."""
    if not isinstance(table, EventTable):
        raise TypeError(
            f"{name} must be an EventTable, not {type(table).__name__}: read a file with "
            "common.tableio.read_table(path, ColumnMap(...)), or wrap a DataFrame with "
            "common.tableio.from_frame(frame, ColumnMap(...))"
        )


def _encoded(encoder: Encoder, grouped: Sequences, table: EventTable) -> EncodedSequences:
    """``encoder.encode(grouped)``; a missing feature column is named with ``table``'s source."""
    try:
        return encoder.encode(grouped)
    except DataError as exc:
        raise DataError(f"{table.source}: {exc}") from exc


def _normal_sequences(table: EventTable) -> Sequences:
    """The grouped view of ``table`` without its labelled anomalies."""
    g = table.grouped()
    if g.labels is None or not g.labels.any():
        return g
    log.info("%s: dropping %d labelled anomalous sequences before fitting", table.source, int(g.labels.sum()))
    return g.take(np.flatnonzero(g.labels == 0))
