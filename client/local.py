"""An institution's work in a federated run, as plain functions (no Flower types).

The ClientApp (:mod:`client.app`) unpacks a message, calls one function here
and packs the result. Inputs are dataclasses, numpy arrays and torch state
dicts; outputs are dataclasses of *aggregates* (counts, histograms, losses) and
model weights. Nothing returned here holds a raw event token, a raw context
value or a sequence id — only the local report written to disk does.

Local data layout: the node's training table loses its labelled anomalies and
is split (grouped by content, seeded by ``train.seed``) into a training part
and a held-out normal validation part (``train.validation-fraction``), exactly
as ``seqwatch fit`` does. Validation serves the validation loss and threshold
calibration; the labelled test table (if any) serves detection metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from client.data import NodeData
from common.config import DetectorConfig, with_overrides
from common.detector import SequenceDetector, holdout_split
from common.encoding import Encoder
from common.errors import TrainingError
from common.events import EventTable
from common.metrics import Confusion, confusion_at, detection_report, histogram_counts, unresolved_rate
from common.model import NextEventModel, resolve_device, set_threads, shape_of
from common.protocol import SetupStats, count_categories, key_fingerprint
from common.scaling import FeatureStats
from common.scoring import ContextFusion, score_events, spread_moments
from common.train import diverged_message, evaluate_loss, make_optimizer, train_epochs
from common.vocab import UNK, count_tokens

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]


# --------------------------------------------------------------------------- local data


@dataclass(frozen=True, eq=False)
class LocalData:
    """A node's data, split for federated training."""

    train: EventTable
    validation: EventTable
    test: EventTable | None
    source: str

    @property
    def labelled_test(self) -> bool:
        return self.test is not None and self.test.has_labels and len(self.test) > 0


def _normal_only(table: EventTable) -> EventTable:
    g = table.grouped()
    if g.labels is None or not g.labels.any():
        return table
    return table.subset(g.ids[g.labels == 0])


@lru_cache(maxsize=8)
def prepare(node: NodeData, validation_fraction: float, seed: int) -> LocalData:
    """Normal training split + held-out validation (cached per node and settings)."""
    train = _normal_only(node.train)
    if len(train) == 0:
        from common.errors import DataError

        raise DataError(f"{node.source}: no normal training sequences")
    fit, val = holdout_split(train, validation_fraction, seed)
    if len(fit) == 0 or len(val) == 0:  # nothing to hold out: train and validate on the same sequences
        why = (
            "train.validation-fraction = 0"
            if validation_fraction <= 0
            else "too few distinct sequences to hold out validation data"
        )
        log.warning(
            "%s: %s: early stopping and the threshold use the training sequences themselves",
            node.source,
            why,
        )
        fit, val = train, train
    return LocalData(train=fit, validation=val, test=node.test, source=node.source)


# --------------------------------------------------------------------------- set-up statistics


def setup_statistics(data: LocalData, hash_key: str, key_source: str) -> SetupStats:
    """Keyed-hash token and category counts and numeric statistics of the training split."""
    g = data.train.grouped()
    return SetupStats(
        token_counts=count_tokens(g.events, hash_key),
        context_names=tuple(g.context_names),
        context_counts=count_categories(g.context, g.context_names, hash_key),
        numeric=FeatureStats.compute(tuple(g.numeric_names), g.numeric),
        n_sequences=len(g),
        n_events=g.n_events,
        key_fingerprint=key_fingerprint(hash_key),
        key_source=key_source,
        has_test=data.labelled_test,
    )


# --------------------------------------------------------------------------- model helpers


def build_detector(
    cfg: DetectorConfig,
    encoder: Encoder,
    state: StateDict,
    *,
    threshold: float = float("inf"),
    end_weight: float | None = None,
    context_fusion: ContextFusion | None = None,
) -> SequenceDetector:
    """A detector with the given (global) weights; the threshold is set by :meth:`calibrate` later.

    ``end_weight``: the federation's fitted END weight (default ``score.end-weight``);
    ``context_fusion``: its context fusion (default none: no context part).
    """
    model = NextEventModel(cfg.model, shape_of(encoder))
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    model.eval()
    return SequenceDetector.from_parts(
        cfg, encoder, model, threshold=threshold, end_weight=end_weight, context_fusion=context_fusion
    )


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _scores(det: SequenceDetector, table: EventTable | None) -> np.ndarray:
    if table is None or len(table) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.asarray(det.decision_function(table), dtype=np.float64)


def calibration_table(data: LocalData) -> EventTable:
    """The held-out normal validation sequences (the training split if there are none)."""
    return data.validation if len(data.validation) else data.train


def validation_scores(det: SequenceDetector, data: LocalData) -> np.ndarray:
    """Scores of :func:`calibration_table` under ``det``."""
    return _scores(det, calibration_table(data))


# --------------------------------------------------------------------------- training


@dataclass
class TrainOutcome:
    state: dict[str, torch.Tensor]
    loss: float
    n_events: int
    n_sequences: int
    seconds: float


def train_round(
    cfg: DetectorConfig,
    encoder: Encoder,
    state: StateDict,
    data: LocalData,
    *,
    epochs: int,
    proximal_mu: float = 0.0,
    server_round: int = 1,
    node_seed: int = 0,
) -> TrainOutcome:
    """``epochs`` local epochs from the global weights (FedProx term when ``proximal_mu > 0``).

    Shuffling and dropout are seeded by ``train.seed``, the round and
    ``node_seed`` (the node's partition or id), so that institutions do not all draw the same
    random stream and a rerun of the same round on the same node repeats itself.
    """
    t0 = time.perf_counter()
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    enc = encoder.encode(data.train.grouped())
    model = NextEventModel(cfg.model, shape_of(encoder))
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    model.to(device)
    optimizer = make_optimizer(model, cfg.train)
    seeds = np.random.SeedSequence([cfg.train.seed, int(server_round), int(node_seed) % (1 << 63)])
    rng = np.random.default_rng(seeds)
    torch.manual_seed(int(seeds.generate_state(1, np.uint64)[0] % (1 << 63)))
    stats = train_epochs(
        model, enc, cfg.train, optimizer, epochs=epochs, device=device, rng=rng, proximal_mu=proximal_mu
    )
    for epoch, es in enumerate(stats, start=1):
        if not math.isfinite(es.loss):
            raise TrainingError(diverged_message(epoch, cfg.train))
    return TrainOutcome(
        state=cpu_state(model),
        loss=float(stats[-1].loss) if stats else float("nan"),
        n_events=len(enc.tokens),
        n_sequences=len(enc),
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalOutcome:
    """Aggregates of one evaluation (counts at the locally calibrated threshold)."""

    val_loss: float
    val_events: int
    confusion: Confusion
    hist_normal: list[int]
    hist_anomalous: list[int]
    test_sequences: int


def _hist(scores: np.ndarray, edges: np.ndarray) -> list[int]:
    if scores.size == 0:
        return [0] * (len(edges) - 1)
    return [int(x) for x in histogram_counts(scores, edges)]


def _split_scores(scores: np.ndarray, table: EventTable) -> tuple[np.ndarray, np.ndarray]:
    labels = table.grouped().labels
    y = np.zeros(len(scores), dtype=bool) if labels is None else np.asarray(labels).astype(bool)
    return scores[~y], scores[y]


def evaluate_round(
    cfg: DetectorConfig,
    encoder: Encoder,
    state: StateDict,
    data: LocalData,
    edges: np.ndarray,
    *,
    end_weight: float | None = None,
    context_fusion: ContextFusion | None = None,
) -> EvalOutcome:
    """Validation loss; with labelled test data, confusion counts and score histograms.

    ``end_weight`` and ``context_fusion``: the federation's for this round; without
    ``end_weight`` both are fitted on the local validation sequences (as the threshold always is).
    """
    set_threads(cfg.train.threads)
    det = build_detector(cfg, encoder, state)
    device = resolve_device(cfg.train.device)
    det.model_.to(device)
    val = det.encode(data.validation)
    vs = evaluate_loss(det.model_, val, cfg.train, device)
    # local threshold (and END weight unless given), on the validation sequences just encoded
    # (or the training split)
    det.fit_scoring(
        val if len(val) else det.encode(data.train), end_weight=end_weight, context_fusion=context_fusion
    )
    threshold = det.threshold_
    confusion = Confusion(0, 0, 0, 0)
    hist_n = hist_a = [0] * (len(edges) - 1)
    n_test = 0
    if data.labelled_test:
        assert data.test is not None
        scores = _scores(det, data.test)
        labels = data.test.grouped().labels
        assert labels is not None
        confusion = confusion_at(labels, scores, threshold)
        normal, anomalous = _split_scores(scores, data.test)
        hist_n, hist_a = _hist(normal, edges), _hist(anomalous, edges)
        n_test = len(scores)
    return EvalOutcome(
        val_loss=float(vs.loss),
        val_events=int(vs.events),
        confusion=confusion,
        hist_normal=hist_n,
        hist_anomalous=hist_a,
        test_sequences=n_test,
    )


# --------------------------------------------------------------------------- federated calibration


def calibration_spread(
    cfg: DetectorConfig, encoder: Encoder, state: StateDict, data: LocalData
) -> list[float]:
    """:func:`~common.scoring.spread_moments` of the validation scores under the global weights.

    The server sums them over nodes into the federation's END weight and context fusion.
    """
    det = build_detector(cfg, encoder, state)
    det.model_.to(det.device)
    events = score_events(det.model_, det.encode(calibration_table(data)), cfg.score, det.device)
    return [float(x) for x in spread_moments(events, cfg.score)]


def calibration_histogram(
    cfg: DetectorConfig,
    encoder: Encoder,
    state: StateDict,
    data: LocalData,
    edges: np.ndarray,
    *,
    end_weight: float,
    context_fusion: ContextFusion | None = None,
) -> list[int]:
    """Validation-score counts on the agreed edges (:func:`~common.protocol.round_edges`)."""
    det = build_detector(cfg, encoder, state, end_weight=end_weight, context_fusion=context_fusion)
    return _hist(validation_scores(det, data), edges)


# --------------------------------------------------------------------------- final report


@dataclass
class ReportOutcome:
    """What the node tells the server after its final report: counts only."""

    local: Confusion
    global_: Confusion
    hist_normal: list[int]
    hist_anomalous: list[int]
    test_sequences: int
    test_events: int
    unknown_events: int
    output_dir: Path
    files: list[str] = field(default_factory=list)


def final_report(
    cfg: DetectorConfig,
    encoder: Encoder,
    state: StateDict,
    data: LocalData,
    *,
    global_threshold: float,
    end_weight: float,
    context_fusion: ContextFusion | None = None,
    edges: np.ndarray,
    output_dir: Path,
    extra: Mapping[str, Any] | None = None,
) -> ReportOutcome:
    """Score the node's test data with the global weights and write the local report.

    Scores with the federation's ``end_weight`` and ``context_fusion``. Writes into ``output_dir``:
    ``model/`` (the global weights with this node's encoder, the END weight,
    local threshold and the global one; ``seqwatch score --model``
    reads it, ``--threshold global`` picks the federation's threshold),
    ``scores.csv`` (as ``seqwatch score`` writes it, plus ``global_threshold``
    and ``flagged_global``) and ``metrics.json`` (detection report at both
    thresholds when the test data is labelled).
    """
    import json

    from client.results import score_frame

    det = build_detector(cfg, encoder, state, end_weight=end_weight, context_fusion=context_fusion)
    for table in (data.train, data.validation, data.test):
        if table is not None and len(table):
            encoder.vocab.learn_names(table.grouped().events)  # raw names for the local report only
    val_scores = validation_scores(det, data)
    local_threshold = det.calibrate(val_scores)
    det.global_threshold_ = float(global_threshold)
    cal = det.config.calibration
    note = unresolved_rate(len(val_scores), cal.rate, cal.confidence)
    if note:
        log.warning("local threshold: %s; the global one pools every node's", note)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    det.save(output_dir / "model")
    files = ["model"]
    metrics: dict[str, Any] = {
        "source": data.source,
        "local_threshold": local_threshold,
        "global_threshold": float(global_threshold),
        "train_sequences": len(data.train),
        "validation_sequences": len(data.validation),
        **({"local_threshold_note": note} if note else {}),
        **dict(extra or {}),
    }
    local = glob = Confusion(0, 0, 0, 0)
    hist_n = hist_a = [0] * (len(edges) - 1)
    n_test = n_events = n_unknown = 0
    if data.test is not None and len(data.test):
        scored = det.score_table(data.test, expected_k=2)
        frame = score_frame(det, scored, local_threshold, top_events=3)
        if not len(data.validation):  # the reference would be the training split's own scores
            frame["p_value"] = np.nan
            metrics["p_value_note"] = "no p-values: no validation sequences were held out"
        frame["global_threshold"] = float(global_threshold)
        frame["flagged_global"] = frame["score"] > float(global_threshold)
        frame.to_csv(output_dir / "scores.csv", index=False)
        files.append("scores.csv")
        scores = np.asarray(scored.scores, dtype=np.float64)
        n_test, n_events = len(scores), len(scored.encoded.tokens)
        n_unknown = int((scored.encoded.tokens == UNK).sum())
        metrics["test_sequences"] = n_test
        if data.labelled_test:
            labels = np.asarray(scored.encoded.labels)
            local = confusion_at(labels, scores, local_threshold)
            glob = confusion_at(labels, scores, global_threshold)
            metrics["local"] = {
                **detection_report(labels, scores, local_threshold),
                "threshold_source": "local",
            }
            metrics["global"] = {
                **detection_report(labels, scores, global_threshold),
                "threshold_source": "global",
            }
            normal, anomalous = _split_scores(scores, data.test)
            hist_n, hist_a = _hist(normal, edges), _hist(anomalous, edges)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    files.append("metrics.json")
    return ReportOutcome(
        local=local,
        global_=glob,
        hist_normal=hist_n,
        hist_anomalous=hist_a,
        test_sequences=n_test,
        test_events=n_events,
        unknown_events=n_unknown,
        output_dir=output_dir,
        files=files,
    )


def local_config(cfg: DetectorConfig, hash_key: str, *, simulation: bool) -> DetectorConfig:
    """The detector config a node works with: its own hash key; one torch thread per simulated node."""
    changes: dict[str, dict[str, Any]] = {"vocab": {"hash_key": hash_key}}
    if simulation and cfg.train.threads == 0:
        changes["train"] = {"threads": 1}
    return with_overrides(cfg, **changes)
