"""Strategy factory and the recording hooks of a seqwatch run.

:func:`make_strategy` picks a Flower strategy by ``federation.strategy`` and
mixes in :class:`RecordingMixin`, which overrides only the narrow hooks
(``configure_*`` to number rounds on after a resume, ``aggregate_train`` and
``aggregate_evaluate`` to record). ``Strategy.start()`` is used as it is.

After each round's evaluation the mixin commits the round to the
:class:`~server.rundir.RunDir`: the global checkpoint, a metrics row
(``metrics.jsonl`` + ``metrics.csv``) and ``state.json``. An optional
``evaluate_config`` callback adds round-specific entries (the federation's END
weight under the new global weights) to every evaluate message; they are
recorded in the round's metrics row too.

Evaluation metrics are aggregated by :func:`aggregate_evaluate_metrics`
(given to the strategy as ``evaluate_metrics_aggr_fn``): validation loss is a
mean weighted by validation events, while confusion counts and score
histograms are *summed*, so precision, recall, F1 and the histogram AUROC are
exact global figures, not means of per-client figures.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from common.config import FederationConfig, krum_quorum
from common.metrics import Confusion, roc_auc_from_histograms
from server.replies import arrays_problem, metrics_problem, usable
from server.rundir import RunDir

log = logging.getLogger(__name__)

NUM_EXAMPLES = "num-examples"
COMPUTE_SECONDS = "compute-seconds"
#: Row key: wall seconds of the round's evaluate-config callback (the END weight's query to the nodes).
EVAL_CONFIG_SECONDS = "eval-config-seconds"
CONFUSION_KEYS = ("tp", "fp", "tn", "fn")
HIST_NORMAL = "hist-normal"
HIST_ANOMALOUS = "hist-anomalous"


# --------------------------------------------------------------------------- metric aggregation


def _metric_record(content: RecordDict) -> MetricRecord:
    return next(iter(content.metric_records.values()))


def as_float(value: object, default: float = math.nan) -> float:
    """A MetricRecord scalar as float (``default`` for a missing or list value)."""
    return float(value) if isinstance(value, (int, float)) else default


def as_int(value: object) -> int:
    """A MetricRecord count as int (0 for a missing or list value)."""
    return int(value) if isinstance(value, (int, float)) else 0


def as_floats(value: object) -> list[float]:
    """A MetricRecord list of numbers ([] for a missing or scalar value)."""
    return [float(v) for v in value] if isinstance(value, list) else []


def as_ints(value: object) -> list[int]:
    """A MetricRecord list of counts ([] for a missing or scalar value)."""
    return [int(v) for v in value] if isinstance(value, list) else []


def compute_seconds(metrics: list[MetricRecord], prefix: str) -> dict[str, float]:
    """Sum and maximum of the clients' ``compute-seconds`` (handler wall time), when they report it."""
    secs = [as_float(m.get(COMPUTE_SECONDS)) for m in metrics if COMPUTE_SECONDS in m]
    if not secs:
        return {}
    return {f"{prefix}-compute-seconds": float(np.sum(secs)), f"{prefix}-compute-max": float(np.max(secs))}


def aggregate_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """``train-loss`` weighted by training events; ``train-events`` and ``train-nodes`` summed;
    ``train-compute-seconds`` (sum) and ``train-compute-max`` of the clients' compute time."""
    metrics = [_metric_record(r) for r in records]
    weights = np.array([as_float(m.get(weight_key), 0.0) for m in metrics])
    losses = np.array([as_float(m.get("train-loss")) for m in metrics])
    total = float(weights.sum())
    loss = float((weights * losses).sum() / total) if total > 0 else float(np.nanmean(losses))
    return MetricRecord(
        {
            "train-loss": loss,
            "train-events": int(total),
            "train-nodes": len(metrics),
            **compute_seconds(metrics, "train"),
        }
    )


def confusion_figures(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 and false-alarm rate of summed counts, each only where it is defined
    (:meth:`Confusion.defined`, the nodes' ``detection_report`` rule): a metric record holds no None."""
    figures = Confusion(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn)).defined()
    return {name.replace("_", "-"): value for name, value in figures.items()}


def histogram_auroc(normal: Iterable[int], anomalous: Iterable[int]) -> float | None:
    n, a = np.asarray(list(normal), dtype=np.int64), np.asarray(list(anomalous), dtype=np.int64)
    if n.size == 0 or a.size == 0 or n.sum() == 0 or a.sum() == 0:
        return None
    return roc_auc_from_histograms(n, a)


def sum_lists(values: Iterable[Iterable[int]]) -> list[int]:
    total: np.ndarray | None = None
    for v in values:
        arr = np.asarray(list(v), dtype=np.int64)
        if arr.size == 0:
            continue
        total = arr.copy() if total is None else total + arr
    return [] if total is None else [int(x) for x in total]


def aggregate_evaluate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Exact global evaluation figures from the clients' replies.

    Input keys per reply: ``val-loss``, ``num-examples`` (validation events),
    ``tp fp tn fn`` (at each client's locally calibrated threshold),
    ``hist-normal`` / ``hist-anomalous`` (test scores on the round's fixed edges).
    Output: ``val-loss`` (event-weighted), ``val-events``, ``eval-nodes``, the
    summed counts, ``precision recall f1 false-alarm-rate`` of the summed counts,
    ``auroc`` of the summed histograms (absent when one class is missing) and
    ``eval-compute-seconds`` / ``eval-compute-max`` (when clients report ``compute-seconds``).
    """
    metrics = [_metric_record(r) for r in records]
    weights = np.array([as_float(m.get(weight_key), 0.0) for m in metrics])
    losses = np.array([as_float(m.get("val-loss")) for m in metrics])
    total = float(weights.sum())
    ok = weights > 0
    val_loss = float((weights[ok] * losses[ok]).sum() / total) if total > 0 else math.nan
    counts = {k: sum(as_int(m.get(k)) for m in metrics) for k in CONFUSION_KEYS}
    out: dict[str, Any] = {
        "val-loss": val_loss,
        "val-events": int(total),
        "eval-nodes": len(metrics),
        **counts,
        **confusion_figures(**counts),
        **compute_seconds(metrics, "eval"),
    }
    auroc = histogram_auroc(
        sum_lists(as_ints(m.get(HIST_NORMAL)) for m in metrics),
        sum_lists(as_ints(m.get(HIST_ANOMALOUS)) for m in metrics),
    )
    if auroc is not None:
        out["auroc"] = auroc
    return MetricRecord(out)


# --------------------------------------------------------------------------- arrays


def arrays_to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.numpy()) for k, v in arrays.items()}


def numpy_to_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


# --------------------------------------------------------------------------- recording mixin


def reply_order(msg: Message) -> tuple[int, bytes]:
    """Sort key that fixes the order in which the replies of a round are aggregated.

    Replies arrive in whatever order the nodes finish, and that order is the
    aggregate's summation order: float rounding then differs from run to run and
    grows over the rounds. Ordering by a digest of the reply's arrays (errors last;
    not its metrics, which hold timings) makes the aggregate a function of the
    replies alone.
    """
    if msg.has_error():
        return (1, b"")
    digest = hashlib.blake2b(digest_size=16)
    for record in msg.content.array_records.values():
        for key, arr in record.items():
            digest.update(key.encode("utf-8"))
            digest.update(arr.data)
    return (0, digest.digest())


class RecordingMixin:
    """Hooks that record every round of a Flower strategy into a :class:`RunDir`.

    ``round_offset``: rounds already completed by an earlier (resumed) attempt;
    ``start()`` counts its rounds from 1 and the mixin adds the offset, so the
    numbering in messages (``server-round``), checkpoints and metrics goes on.
    ``global_arrays`` always holds the latest global weights; ``extra_records``
    (the shared encoder) are attached to every train and evaluate message, next
    to Flower's ``arrays`` and ``config`` records. ``evaluate_config(arrays,
    grid, node_ids)``, when given, returns entries added to the ``config``
    record of the round's evaluate messages (and to its metrics row).
    """

    strategy_name: str = ""

    def setup_recording(
        self,
        run: RunDir,
        *,
        initial_arrays: ArrayRecord,
        round_offset: int = 0,
        total_rounds: int | None = None,
        on_round: Callable[[int, dict[str, Any]], None] | None = None,
        extra_records: Mapping[str, ConfigRecord] | None = None,
        evaluate_config: Callable[[ArrayRecord, Grid, list[int]], Mapping[str, float]] | None = None,
        histogram_bins: int | None = None,
    ) -> None:
        self.run = run
        #: Bins of the evaluate replies' histograms (``len(round_edges(hist-bins)) - 1``); None: unchecked.
        self.histogram_bins = histogram_bins
        self.extra_records = dict(extra_records or {})
        self.evaluate_config = evaluate_config
        self._evaluate_extra: dict[str, float] = {}
        self.round_offset = int(round_offset)
        self.total_rounds = total_rounds
        self.global_arrays = initial_arrays
        self.on_round = on_round
        self.history: list[dict[str, Any]] = []
        self._round_started = time.monotonic()
        self._train_row: dict[str, Any] = {}
        self._evaluate_config_row: dict[str, float] = {}
        self._asked: dict[str, set[int]] = {}
        self._replied: dict[str, set[int]] = {}

    # -- numbering ------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._round_started = time.monotonic()
        self._train_row = {}
        messages = super().configure_train(server_round + self.round_offset, arrays, config, grid)  # type: ignore[misc]
        out = self._with_extra(messages)
        self._asked = {"train": {int(m.metadata.dst_node_id) for m in out}}
        self._replied = {}
        return out

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_evaluate(server_round + self.round_offset, arrays, config, grid)  # type: ignore[misc]
        out = self._with_extra(messages)
        nodes = [int(m.metadata.dst_node_id) for m in out]
        self._asked["evaluate"] = set(nodes)
        self._evaluate_extra = {}
        self._evaluate_config_row = {}
        if out and self.evaluate_config is not None:
            started = time.monotonic()
            self._evaluate_extra = dict(self.evaluate_config(arrays, grid, nodes))
            # its own exchange with the nodes (the END weight's query): part of the round's time
            self._evaluate_config_row = {EVAL_CONFIG_SECONDS: round(time.monotonic() - started, 3)}
            key = self.configrecord_key  # type: ignore[attr-defined]
            for msg in out:
                # a copy per message: the strategy hands the same record to every message and round,
                # so writing into it would carry this round's entries into the next ones
                msg.content[key] = ConfigRecord({**msg.content.config_records[key], **self._evaluate_extra})
        return out

    def _with_extra(self, messages: Iterable[Message]) -> list[Message]:
        """Attach the extra records (the shared encoder) to every message."""
        out = list(messages)
        for msg in out:
            for name, record in self.extra_records.items():
                msg.content[name] = record
        return out

    # -- aggregation hooks ------------------------------------------------------------------
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        weight_key = self.weighted_by_key  # type: ignore[attr-defined]

        def check(msg: Message) -> str | None:
            return arrays_problem(msg, self.global_arrays) or metrics_problem(
                msg, positive=(weight_key,), numbers=("train-loss",)
            )

        replies, dropped = usable(
            sorted(replies, key=reply_order), check, f"round {rnd} train", same_metric_keys=True
        )
        failures = sum(1 for m in replies if m.has_error()) + len(dropped)
        self._replied["train"] = {int(m.metadata.src_node_id) for m in replies if not m.has_error()}
        if not self._replied["train"]:
            reasons = [str(m.error.reason) for m in replies if m.has_error()] + dropped
            raise RuntimeError(
                f"round {rnd}: no node returned a usable update ({'; '.join(reasons) or 'no replies'}); "
                f"the run stops here, rounds 1-{rnd - 1} are kept: fix the cause and start the run again "
                f"with the same federation.run-name to resume"
            )
        arrays, metrics = super().aggregate_train(rnd, replies)  # type: ignore[misc]
        if arrays is not None:
            self.global_arrays = arrays
        row: dict[str, Any] = {"train-failures": failures}
        if metrics is not None:
            row.update({k: v for k, v in metrics.items()})
        else:
            row["train-nodes"] = 0
        self._train_row = row
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        rnd = server_round + self.round_offset
        weight_key = self.weighted_by_key  # type: ignore[attr-defined]

        def check(msg: Message) -> str | None:
            return metrics_problem(
                msg,
                counts=(weight_key, *CONFUSION_KEYS),
                nan_numbers=("val-loss",),
                histograms=(HIST_NORMAL, HIST_ANOMALOUS),
                bins=self.histogram_bins,
                optional=(*CONFUSION_KEYS, HIST_NORMAL, HIST_ANOMALOUS),  # a node without test data
            )

        replies, dropped = usable(replies, check, f"round {rnd} evaluate", same_metric_keys=True)
        failures = sum(1 for m in replies if m.has_error()) + len(dropped)
        self._replied["evaluate"] = {int(m.metadata.src_node_id) for m in replies if not m.has_error()}
        metrics = super().aggregate_evaluate(rnd, replies)  # type: ignore[misc]
        row: dict[str, Any] = {
            "round": rnd,
            **self._train_row,
            "eval-failures": failures,
            **self._node_counts(),
            **self._evaluate_extra,
            **self._evaluate_config_row,
        }
        if metrics is not None:
            row.update({k: v for k, v in metrics.items()})
        else:
            row["eval-nodes"] = 0
        row["seconds"] = round(time.monotonic() - self._round_started, 3)
        row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.commit(rnd, row)
        return metrics

    def _node_counts(self) -> dict[str, Any]:
        """Dropout record of the round: nodes asked (train or evaluate), nodes that answered every
        message they got without error, and the ids of the others (error replies *and* missing
        replies, e.g. a SuperNode that died: the SuperLink answers for it once its heartbeat lapses)."""
        sampled = set().union(*self._asked.values()) if self._asked else set()
        failed = {
            n for phase, ids in self._asked.items() for n in ids if n not in self._replied.get(phase, set())
        }
        return {
            "nodes-sampled": len(sampled),
            "nodes-replied": len(sampled) - len(failed),
            "nodes-failed": len(failed),
            "failed-node-ids": sorted(failed),
        }

    # -- commit -------------------------------------------------------------------------------
    def strategy_state(self) -> dict[str, np.ndarray] | None:
        """Server optimiser state to checkpoint (FedAdam's moments), else None."""
        m_t = getattr(self, "m_t", None)
        v_t = getattr(self, "v_t", None)
        if not m_t or not v_t:
            return None
        out = {f"m_t/{k}": np.asarray(v) for k, v in m_t.items()}
        out.update({f"v_t/{k}": np.asarray(v) for k, v in v_t.items()})
        return out

    def load_strategy_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`strategy_state` saved (no-op for stateless strategies)."""
        if not hasattr(self, "m_t"):
            return
        setattr(self, "m_t", {k[4:]: np.asarray(v) for k, v in state.items() if k.startswith("m_t/")})  # noqa: B010
        setattr(self, "v_t", {k[4:]: np.asarray(v) for k, v in state.items() if k.startswith("v_t/")})  # noqa: B010

    def commit(self, server_round: int, row: dict[str, Any]) -> None:
        self.run.commit_round(
            server_round,
            arrays_to_numpy(self.global_arrays),
            row,
            strategy=self.strategy_name,
            strategy_state=self.strategy_state(),
        )
        self.history.append(row)
        log.info("%s", format_round(row, self.total_rounds))
        if self.on_round is not None:
            self.on_round(server_round, row)


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def format_round(row: Mapping[str, Any], total: int | None = None) -> str:
    """``round 2/3: train-loss 1.2300 val-loss 1.3100 auroc 0.910 f1 0.800 ...`` (one log line)."""
    of = f"/{total}" if total else ""
    return (
        f"round {row.get('round')}{of}: train-loss {_fmt(row.get('train-loss'))} "
        f"val-loss {_fmt(row.get('val-loss'))} auroc {_fmt(row.get('auroc'), '.3f')} "
        f"f1 {_fmt(row.get('f1'), '.3f')} precision {_fmt(row.get('precision'), '.3f')} "
        f"recall {_fmt(row.get('recall'), '.3f')} "
        f"(nodes {row.get('train-nodes', 0)} train / {row.get('eval-nodes', 0)} eval"
        f"{', ' + str(row['nodes-failed']) + ' failed' if row.get('nodes-failed') else ''}, "
        f"{_fmt(row.get('seconds'), '.1f')} s)"
    )


class RecordingFedAvg(RecordingMixin, FedAvg):
    strategy_name = "fedavg"


class RecordingFedProx(RecordingMixin, FedProx):
    strategy_name = "fedprox"


class RecordingFedAdam(RecordingMixin, FedAdam):
    strategy_name = "fedadam"


class RecordingFedMedian(RecordingMixin, FedMedian):
    strategy_name = "fedmedian"


class RecordingFedTrimmedAvg(RecordingMixin, FedTrimmedAvg):
    strategy_name = "fedtrimmedavg"


class _QuorumKrum(Krum):
    """Krum that warns when a round's usable updates are too few to outvote its Byzantine ones."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        n, f = sum(1 for m in replies if not m.has_error()), self.num_malicious_nodes
        if f and n < krum_quorum(f):
            log.warning(
                "round %d: Krum chose among %d update(s), but outvoting %d Byzantine node(s) needs at "
                "least %d (federation.krum-byzantine): this round's model is not protected",
                server_round,
                n,
                f,
                krum_quorum(f),
            )
        return super().aggregate_train(server_round, replies)


class RecordingKrum(RecordingMixin, _QuorumKrum):
    strategy_name = "krum"


STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "fedavg": RecordingFedAvg,
    "fedprox": RecordingFedProx,
    "fedadam": RecordingFedAdam,
    "fedmedian": RecordingFedMedian,
    "fedtrimmedavg": RecordingFedTrimmedAvg,
    "krum": RecordingKrum,
}


def make_strategy(fed: FederationConfig, *, client_lr: float = 0.1) -> Strategy:
    """The strategy named by ``federation.strategy`` with the recording hooks (call ``setup_recording``)."""
    common: dict[str, Any] = {
        "fraction_train": fed.fraction_train,
        "fraction_evaluate": 1.0,
        "min_train_nodes": fed.min_nodes,
        "min_evaluate_nodes": fed.min_nodes,
        "min_available_nodes": fed.min_nodes,
        "weighted_by_key": NUM_EXAMPLES,
        "train_metrics_aggr_fn": aggregate_train_metrics,
        "evaluate_metrics_aggr_fn": aggregate_evaluate_metrics,
    }
    name = fed.strategy
    cls: Any = STRATEGY_CLASSES[name]
    if name == "fedprox":
        return cls(**common, proximal_mu=fed.proximal_mu)
    if name == "fedadam":
        return cls(**common, eta=fed.server_lr, eta_l=client_lr)
    if name == "fedtrimmedavg":
        return cls(**common, beta=fed.trim_beta)
    if name == "krum":
        return cls(**common, num_malicious_nodes=fed.krum_byzantine)
    return cls(**common)
