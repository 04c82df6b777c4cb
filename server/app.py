"""seqwatch ServerApp: drives set-up, training rounds, federated calibration and the final report.

The phases (message types in :mod:`client.app`):

1. **set-up** (``query.setup``) — or, when ``<run-dir>/<run-name>/state.json``
   exists, **resume**: reload ``setup.json`` and the last committed checkpoint
   and run only the rounds still missing up to ``federation.num-server-rounds``
   (numbered on from the last completed round);
2. **rounds** — ``strategy.start(...)`` with the recording hooks of
   :mod:`server.strategy` (checkpoint, metrics, state after every round);
   when the END weight or the context fusion is fitted (:func:`fits_score_parts`), each
   round's evaluation is preceded by ``query.calib_spread`` under the new global weights,
   so every node scores its round with the same federation END weight and context fusion
   that calibration would fit (per-round AUROC and the final one measure the same score);
3. **calibration** — ``query.calib_spread`` (when they are fitted: summed moments of
   the validation scores' parts give the federation's END weight and context fusion,
   :func:`common.scoring.end_weight_from_moments` and
   :func:`common.scoring.context_fusion_from_moments`; skipped when the last round's
   evaluation already fitted them under the same weights and nodes), then
   ``query.calib_hist``: the global threshold at
   ``calibration.false-alarm-rate`` from the summed validation histograms on
   the fixed log-spaced edges :func:`common.protocol.round_edges` (fixed, so
   that no node has to send its largest score to agree them; the counts still
   place each validation score within one bin, about 0.4 % wide for the default
   ``federation.histogram-bins``: fewer bins reveal less);
4. **final report** — ``query.report``: every node writes its local report; the
   server sums the counts into ``final.json``, saves the global model to
   ``<run>/model`` and logs a summary table.

Everything that is not message plumbing lives in :mod:`common.protocol`,
:mod:`server.strategy` and :mod:`server.rundir`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from common.config import AppConfig, parse_config, to_flat, with_legacy_defaults, with_overrides
from common.encoding import Encoder
from common.errors import ConfigError
from common.metrics import threshold_from_histogram, unresolved_rate
from common.model import build_model, shape_of
from common.protocol import (
    ENC_CONTEXT_NAMES,
    ENCODER_RECORD,
    SIMULATION_HASH_KEY,
    SetupStats,
    encoder_to_config,
    fusion_to_config,
    key_fingerprint,
    merge_setup,
    round_edges,
)
from common.scoring import (
    N_SPREAD_MOMENTS,
    ContextFusion,
    context_fusion_from_moments,
    end_weight_from_moments,
    end_weight_is_fitted,
)
from server.replies import Check, metrics_problem, usable
from server.rundir import RunDir
from server.strategy import (
    CONFUSION_KEYS,
    arrays_to_numpy,
    as_floats,
    as_int,
    as_ints,
    confusion_figures,
    histogram_auroc,
    make_strategy,
    numpy_to_arrays,
    sum_lists,
)

log = logging.getLogger(__name__)

app = ServerApp()

_OUR_LOGGERS = ("server", "client", "common", "simulations")


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point: parse the run config and run the federation."""
    route_logs_to_flower()
    run_federation(grid, parse_config(context.run_config))


def route_logs_to_flower() -> None:
    """Send INFO records of seqwatch's loggers through Flower's handlers (shown by ``flwr run --stream``)."""
    flwr_logger = logging.getLogger("flwr")
    for name in _OUR_LOGGERS:
        ours = logging.getLogger(name)
        ours.setLevel(logging.INFO)
        for handler in flwr_logger.handlers:
            if handler not in ours.handlers:
                ours.addHandler(handler)
        ours.propagate = not flwr_logger.handlers


# --------------------------------------------------------------------------- messaging


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Node ids once at least ``minimum`` are connected (raises after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} node(s) connected after {timeout:.0f} s, need {minimum}")
        log.info("waiting for nodes: %d connected, need %d", len(nodes), minimum)
        time.sleep(1.0)


def ask_all(
    grid: Grid,
    message_type: str,
    content: RecordDict,
    node_ids: Sequence[int],
    timeout: float,
    check: Check | None = None,
) -> list[Message]:
    """Send one message per node and return the successful replies (failures are logged).

    ``check`` (:mod:`server.replies`) drops replies the server cannot use, as failures.

    Raises:
        RuntimeError: no node replied successfully.
    """
    messages = [Message(content, dst_node_id=n, message_type=message_type) for n in node_ids]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    for r in replies:
        if r.has_error():
            log.warning("%s: node %d failed: %s", message_type, r.metadata.src_node_id, r.error.reason)
    missing = len(node_ids) - len(replies)
    if missing:
        log.warning("%s: %d node(s) did not reply within %.0f s", message_type, missing, timeout)
    dropped: list[str] = []
    if check is not None:
        replies, dropped = usable(replies, check, message_type)
    ok = [r for r in replies if not r.has_error()]
    if not ok:
        reasons = [str(r.error.reason) for r in replies if r.has_error()] + dropped
        why = "; ".join(reasons) or "no replies"
        raise RuntimeError(f"{message_type}: no node replied successfully ({why})")
    return ok


def _metrics(msg: Message) -> MetricRecord:
    return next(iter(msg.content.metric_records.values()))


def _setup_problem(msg: Message) -> str | None:
    """What is wrong with a ``query.setup`` reply, or None."""
    record = msg.content.config_records.get("setup")
    if record is None:
        return "no 'setup' record"
    try:
        SetupStats.from_config(dict(record))
    except ConfigError as exc:
        return str(exc)
    return None


def _bins(histogram_bins: int) -> int:
    """Counts in a histogram on :func:`round_edges` for ``federation.histogram-bins``."""
    return len(round_edges(histogram_bins)) - 1


# --------------------------------------------------------------------------- phases


def _redacted(cfg: AppConfig) -> dict[str, Any]:
    """The run config as flat keys, the hash key replaced by its fingerprint (a changed key shows)."""
    flat = to_flat(cfg)
    if flat.get("vocab.hash-key"):
        flat["vocab.hash-key"] = f"<set, fingerprint {key_fingerprint(str(flat['vocab.hash-key']))[:12]}>"
    return flat


#: Model keys that act only with another one on: without it, what they say changes nothing.
_ONLY_WITH = {"model.context-previous": "model.context-head", "model.context-detached": "model.context-head"}


def _model_keys(flat: dict[str, Any]) -> dict[str, Any]:
    keys = {k: v for k, v in flat.items() if k.startswith("model.")}
    return {k: v for k, v in keys.items() if k not in _ONLY_WITH or keys.get(_ONLY_WITH[k])}


def setup_phase(grid: Grid, cfg: AppConfig, run: RunDir) -> tuple[Encoder, str, ArrayRecord]:
    """Collect the nodes' hashed statistics, merge them, build the initial model, write setup.json."""
    fed = cfg.federation
    nodes = wait_for_nodes(grid, fed.min_nodes, fed.round_timeout)
    ask = RecordDict({"config": ConfigRecord({})})
    replies = ask_all(grid, "query.setup", ask, nodes, fed.round_timeout, _setup_problem)
    reports = [SetupStats.from_config(dict(r.content.config_records["setup"])) for r in replies]
    shared = merge_setup(reports, cfg.detector.vocab)
    encoder = shared.encoder
    shape = shape_of(encoder)
    model = build_model(cfg.detector.model, shape, seed=cfg.detector.train.seed)
    n_params = sum(p.numel() for p in model.parameters())
    run.save_setup(
        {
            "format": "seqwatch-federated-setup",
            "format_version": 1,
            "summary": shared.summary(),
            "key_sources": sorted({r.key_source for r in reports}),
            "parameters": int(n_params),
            "config": _redacted(cfg),
            "encoder": encoder.to_dict(),
        }
    )
    log.info(
        "setup: %d node(s), %d training sequences, vocabulary %d, context %s, numeric %s, %d parameters",
        shared.n_nodes,
        shared.n_sequences,
        len(encoder.vocab),
        list(encoder.context_names),
        list(encoder.numeric_names),
        n_params,
    )
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return encoder, shared.key_fingerprint, arrays


#: Federation settings that change how rounds train: a resumed run that changes them mixes two
#: trainings in one model, which the resume warning says.
_TRAINING_KEYS = (
    "federation.strategy",
    "federation.local-epochs",
    "federation.fraction-train",
    "federation.proximal-mu",
    "federation.server-lr",
    "federation.trim-beta",
    "federation.krum-byzantine",
)


def resume_phase(
    cfg: AppConfig, run: RunDir
) -> tuple[Encoder, str, ArrayRecord, int, Path | None, str] | None:
    """Reload a committed run: (encoder, key fingerprint, arrays, last round, strategy state, strategy)."""
    state = run.read_state()
    if state is None:
        return None
    if not run.setup_path.is_file() or not state.checkpoint.is_file():
        log.warning("%s: state.json without setup.json or checkpoint; starting the run over", run.root)
        return None
    setup = run.load_setup()
    # a run started before a model key existed trained with that key's old value
    before, now = _model_keys(with_legacy_defaults(setup.get("config", {}))), _model_keys(to_flat(cfg))
    if before and before != now:
        changed = {k: (before.get(k), now.get(k)) for k in now if before.get(k) != now.get(k)}
        raise ConfigError(
            f"run '{cfg.federation.run_name}' in {run.root} was started with other model settings "
            f"{changed} (old, new); use the same settings or another federation.run-name"
        )
    old_flat, new_flat = dict(setup.get("config", {})), _redacted(cfg)
    drift = sorted(
        k
        for k in new_flat
        if k.startswith(("data.", "vocab.")) and k in old_flat and old_flat[k] != new_flat[k]
    )
    if drift:
        log.warning(
            "resuming with changed %s; the shared encoder of the first attempt is kept", ", ".join(drift)
        )
    retrained = [
        f"{k} {old_flat[k]!r} -> {new_flat[k]!r}"
        for k in _TRAINING_KEYS
        if k in old_flat and k in new_flat and old_flat[k] != new_flat[k]
    ]
    if retrained:
        log.warning(
            "resuming with changed %s: rounds 1-%d ran with the old settings, the rest run with the new "
            "(final.json records the new ones); give another federation.run-name to train with them from "
            "the start",
            ", ".join(retrained),
            state.last_round,
        )
    encoder = Encoder.from_dict(setup["encoder"])
    arrays = numpy_to_arrays(run.load_checkpoint(state.checkpoint))
    run.truncate_metrics(state.last_round)
    log.info("resuming run '%s' after round %d (%s)", cfg.federation.run_name, state.last_round, run.root)
    return (
        encoder,
        str(setup["summary"]["key_fingerprint"]),
        arrays,
        state.last_round,
        state.strategy_state,
        state.strategy,
    )


def training_phase(
    grid: Grid,
    cfg: AppConfig,
    run: RunDir,
    enc_conf: dict[str, Any],
    arrays: ArrayRecord,
    done: int,
    strategy_state: Path | None,
    strategy_before: str,
    spread_memo: ScoreFitMemo | None = None,
) -> ArrayRecord:
    """Run rounds ``done + 1 .. num-server-rounds``; returns the latest global weights.

    ``spread_memo`` remembers the END weight fitted for each round's evaluation.
    """
    fed = cfg.federation
    remaining = fed.num_server_rounds - done
    if remaining <= 0:
        log.info(
            "run '%s' already has %d round(s) (federation.num-server-rounds = %d): no training; "
            "raise num-server-rounds to train on, or use another federation.run-name",
            fed.run_name,
            done,
            fed.num_server_rounds,
        )
        return arrays
    strategy = make_strategy(fed, client_lr=cfg.detector.train.lr)
    round_score_fit = None
    if fits_score_parts(cfg, enc_conf):

        def round_score_fit(
            round_arrays: ArrayRecord, round_grid: Grid, nodes: list[int]
        ) -> dict[str, float]:
            """The federation's END weight and context fusion under this round's global weights,
            for its evaluation."""
            try:
                weight, fusion, n_val, replied = federation_score_fit(
                    round_grid, cfg, enc_conf, round_arrays, nodes
                )
            except RuntimeError as exc:
                log.warning("round END weight and context fusion: %s; nodes fit their own this round", exc)
                return {}
            if spread_memo is not None:
                spread_memo.remember(round_arrays, replied, weight, fusion, n_val)
            return {"end-weight": weight, **fusion_to_config(fusion)}

    strategy.setup_recording(  # type: ignore[attr-defined]
        run,
        initial_arrays=arrays,
        round_offset=done,
        total_rounds=fed.num_server_rounds,
        extra_records={ENCODER_RECORD: ConfigRecord(enc_conf)},
        evaluate_config=round_score_fit,
        histogram_bins=_bins(fed.histogram_bins),
    )
    if strategy_state is not None and strategy_before == fed.strategy and strategy_state.is_file():
        strategy.load_strategy_state(run.load_checkpoint(strategy_state))  # type: ignore[attr-defined]
    train_config = ConfigRecord(
        {
            "local-epochs": fed.local_epochs,
            "proximal-mu": fed.proximal_mu if fed.strategy == "fedprox" else 0.0,
        }
    )
    evaluate_config = ConfigRecord({"hist-bins": fed.histogram_bins})
    # Flower's strategies sample the nodes of a round (federation.fraction-train < 1) with Python's
    # global `random`: seed it, so that a simulated run repeats itself (a resumed run from the rounds
    # already done). The replies are aggregated in a fixed order (server.strategy.reply_order) and
    # simulated nodes seed their training by partition, not by Flower's random node ids.
    random.seed(cfg.detector.train.seed * 1_000_003 + done)
    strategy.start(
        grid=grid,
        initial_arrays=arrays,
        num_rounds=remaining,
        timeout=fed.round_timeout,
        train_config=train_config,
        evaluate_config=evaluate_config,
    )
    return strategy.global_arrays  # type: ignore[attr-defined,no-any-return]


def fits_score_parts(cfg: AppConfig, enc_conf: dict[str, Any]) -> bool:
    """Whether the federation fits score parts on the nodes' validation moments: the END weight
    (``score.fit-end-weight`` with an END step) or the context fusion (a context head and context
    columns in the shared encoder)."""
    model = cfg.detector.model
    return (model.end_event and end_weight_is_fitted(cfg.detector.score)) or (
        model.context_head and bool(enc_conf.get(ENC_CONTEXT_NAMES))
    )


@dataclass
class ScoreFitMemo:
    """The federation END weight and context fusion last fitted, and under which global weights
    and nodes.

    The last round's evaluation fits it under the final global weights; calibration
    reuses that answer rather than asking every node for the same validation pass again.
    The weights are compared by identity: the strategy hands the very ``ArrayRecord`` it
    evaluated back as its final weights.
    """

    arrays: ArrayRecord | None = None
    nodes: tuple[int, ...] = ()
    weight: float = 0.0
    fusion: ContextFusion | None = None
    n_val: int = 0

    def remember(
        self,
        arrays: ArrayRecord,
        nodes: Sequence[int],
        weight: float,
        fusion: ContextFusion | None,
        n_val: int,
    ) -> None:
        self.arrays, self.nodes = arrays, tuple(sorted(nodes))
        self.weight, self.fusion, self.n_val = weight, fusion, n_val

    def lookup(
        self, arrays: ArrayRecord, nodes: Sequence[int]
    ) -> tuple[float, ContextFusion | None, int] | None:
        """(weight, fusion, validation sequences) when fitted under these weights on these nodes,
        else None."""
        if self.arrays is arrays and self.nodes == tuple(sorted(nodes)):
            return self.weight, self.fusion, self.n_val
        return None


def federation_score_fit(
    grid: Grid, cfg: AppConfig, enc_conf: dict[str, Any], arrays: ArrayRecord, nodes: Sequence[int]
) -> tuple[float, ContextFusion | None, int, tuple[int, ...]]:
    """(END weight, context fusion, validation sequences, the nodes that replied) from the summed
    spread moments of the nodes' validation scores."""
    content = RecordDict(
        {"arrays": arrays, ENCODER_RECORD: ConfigRecord(enc_conf), "config": ConfigRecord({})}
    )

    def check(msg: Message) -> str | None:
        return metrics_problem(msg, vectors={"spread-moments": N_SPREAD_MOMENTS}) or (
            "'spread-moments' counts a negative number of sequences"
            if as_floats(_metrics(msg)["spread-moments"])[0] < 0
            else None
        )

    replies = ask_all(grid, "query.calib_spread", content, nodes, cfg.federation.round_timeout, check)
    parts = [as_floats(_metrics(r)["spread-moments"]) for r in replies]
    # exactly rounded sums: the same weight whatever order the replies came in
    moments = np.array([math.fsum(p[i] for p in parts) for i in range(N_SPREAD_MOMENTS)])
    replied = tuple(int(r.metadata.src_node_id) for r in replies)
    weight = end_weight_from_moments(moments, cfg.detector.score)
    fusion = context_fusion_from_moments(moments, weight)  # None without a context head: its part is 0
    return weight, fusion, int(moments[0]), replied


def calibration_phase(
    grid: Grid,
    cfg: AppConfig,
    enc_conf: dict[str, Any],
    arrays: ArrayRecord,
    spread_memo: ScoreFitMemo | None = None,
) -> dict[str, Any]:
    """Global threshold from the summed validation-score histograms on agreed edges.

    The END weight and context fusion come from ``spread_memo`` when the last round fitted
    them under these weights on the same nodes, else from a ``query.calib_spread`` round.
    """
    fed, cal = cfg.federation, cfg.detector.calibration
    nodes = wait_for_nodes(grid, fed.min_nodes, fed.round_timeout)
    encoder = ConfigRecord(enc_conf)
    score = cfg.detector.score
    end_weight, fusion = score.end_weight, None
    if fits_score_parts(cfg, enc_conf):
        known = spread_memo.lookup(arrays, nodes) if spread_memo is not None else None
        if known is None:
            end_weight, fusion, n_val, _ = federation_score_fit(grid, cfg, enc_conf, arrays, nodes)
        else:
            end_weight, fusion, n_val = known
        log.info(
            "calibration: END weight %.4g, context part %s, from %d validation sequences%s",
            end_weight,
            "none" if fusion is None else f"{fusion.shift:.4g} + {fusion.scale:.4g} × largest surprisal",
            n_val,
            " (fitted for the last round's evaluation)" if known is not None else "",
        )
    edges = round_edges(fed.histogram_bins)
    content = RecordDict(
        {
            "arrays": arrays,
            ENCODER_RECORD: encoder,
            "config": ConfigRecord(
                {"hist-bins": fed.histogram_bins, "end-weight": end_weight, **fusion_to_config(fusion)}
            ),
        }
    )
    bins = _bins(fed.histogram_bins)

    def check(msg: Message) -> str | None:
        return metrics_problem(msg, histograms=("hist",), bins=bins) or (
            "an empty 'hist'" if not _metrics(msg)["hist"] else None
        )

    hists = ask_all(grid, "query.calib_hist", content, nodes, fed.round_timeout, check)
    counts = np.asarray(sum_lists(as_ints(_metrics(r).get("hist")) for r in hists), dtype=np.int64)
    rate = cal.rate
    threshold = threshold_from_histogram(counts, edges, rate, cal.confidence)
    log.info(
        "calibration: global threshold %.6g at %s (%d validation sequences from %d node(s))",
        threshold,
        cal.target,
        int(counts.sum()),
        len(hists),
    )
    note = unresolved_rate(int(counts.sum()), rate, cal.confidence)
    if note:
        log.warning("calibration: %s (pooled from %d node(s))", note, len(hists))
    return {
        "global_threshold": float(threshold),
        "end_weight": float(end_weight),
        "context_fusion": None if fusion is None else fusion.to_dict(),
        "rule": "contamination" if cal.contamination > 0 else "false-alarm-rate",
        "rate": float(rate),
        "confidence": float(cal.confidence),
        "bins": len(edges) - 1,
        "validation_sequences": int(counts.sum()),
        "nodes": len(hists),
    }


def _summed(metrics: Iterable[MetricRecord], prefix: str) -> dict[str, Any]:
    ms = list(metrics)
    counts = {k: sum(as_int(m.get(f"{prefix}-{k}")) for m in ms) for k in CONFUSION_KEYS}
    return {**counts, **confusion_figures(**counts)}


def report_phase(
    grid: Grid,
    cfg: AppConfig,
    run: RunDir,
    enc_conf: dict[str, Any],
    arrays: ArrayRecord,
    calibration: dict[str, Any],
) -> dict[str, Any]:
    """Every node writes its local report; sum the counts into the global figures."""
    fed = cfg.federation
    nodes = wait_for_nodes(grid, fed.min_nodes, fed.round_timeout)
    conf: dict[str, Any] = {
        "global-threshold": float(calibration["global_threshold"]),
        "end-weight": float(calibration["end_weight"]),
        **fusion_to_config(ContextFusion.from_dict(calibration.get("context_fusion"))),
        "hist-bins": fed.histogram_bins,
        "run-name": fed.run_name,
        "run-path": str(run.root),
    }
    content = RecordDict(
        {"arrays": arrays, ENCODER_RECORD: ConfigRecord(enc_conf), "config": ConfigRecord(conf)}
    )
    report_counts = tuple(f"{p}-{k}" for p in ("local", "global") for k in CONFUSION_KEYS)

    def check(msg: Message) -> str | None:
        return metrics_problem(
            msg,
            counts=("test-sequences", "test-events", "unknown-events", *report_counts),
            histograms=("hist-normal", "hist-anomalous"),
            bins=_bins(fed.histogram_bins),
        )

    replies = ask_all(grid, "query.report", content, nodes, fed.round_timeout, check)
    ms = [_metrics(r) for r in replies]
    normal = sum_lists(as_ints(m.get("hist-normal")) for m in ms)
    anomalous = sum_lists(as_ints(m.get("hist-anomalous")) for m in ms)
    test_events = sum(as_int(m.get("test-events")) for m in ms)
    unknown = sum(as_int(m.get("unknown-events")) for m in ms)
    per_node = [
        {
            "node_id": int(r.metadata.src_node_id),
            "test_sequences": as_int(m.get("test-sequences")),
            "local": _summed([m], "local"),
            "global": _summed([m], "global"),
        }
        for r, m in zip(replies, ms, strict=True)
    ]
    return {
        "nodes": len(replies),
        "test_sequences": sum(as_int(m.get("test-sequences")) for m in ms),
        "test_anomalous": int(sum(anomalous)),
        "unknown_event_rate": unknown / test_events if test_events else None,
        "auroc_histogram": histogram_auroc(normal, anomalous),
        "global_threshold": _summed(ms, "global"),
        "local_thresholds": _summed(ms, "local"),
        "per_node": per_node,
    }


def known_hash_key(cfg: AppConfig, key_print: str) -> str | None:
    """The federation's hash key when the server knows it (run config or simulation key), else None."""
    run_key = cfg.detector.vocab.hash_key
    if run_key and key_fingerprint(run_key) == key_print:
        return run_key
    if key_fingerprint(SIMULATION_HASH_KEY) == key_print:
        return SIMULATION_HASH_KEY
    return None


def save_global_model(
    cfg: AppConfig,
    run: RunDir,
    encoder: Encoder,
    arrays: ArrayRecord,
    calibration: dict[str, Any],
    key: str | None,
) -> Path:
    """The final global model as a seqwatch model directory (``seqwatch score --model``)."""
    import torch

    from common.detector import SequenceDetector
    from common.model import NextEventModel

    detector_cfg = with_overrides(cfg.detector, vocab={"hash_key": key or ""})
    model = NextEventModel(detector_cfg.model, shape_of(encoder))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays_to_numpy(arrays).items()})
    model.eval()
    threshold = float(calibration["global_threshold"])
    det = SequenceDetector.from_parts(
        detector_cfg,
        encoder,
        model,
        threshold=threshold,
        global_threshold=threshold,
        end_weight=float(calibration["end_weight"]),
        context_fusion=ContextFusion.from_dict(calibration.get("context_fusion")),
    )
    return det.save(run.model_dir)


def _cell(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def summary_table(final: dict[str, Any]) -> list[str]:
    """Lines of the final detection-quality table."""
    rep = final["report"]
    lines = [
        f"final detection quality of run '{final['run_name']}' after {final['rounds_completed']} round(s):",
        f"  {rep['test_sequences']} test sequences ({rep['test_anomalous']} anomalous) on {rep['nodes']} "
        f"node(s), AUROC (histogram) {_cell(rep['auroc_histogram'])}",
        f"{'threshold':<22}{'precision':>10}{'recall':>9}{'F1':>8}{'FAR':>8}{'tp':>7}{'fp':>7}{'tn':>8}{'fn':>7}",
    ]
    g_thr = final["calibration"]["global_threshold"]
    for title, row in (
        (f"global ({g_thr:.4g})", rep["global_threshold"]),
        ("local (per node)", rep["local_thresholds"]),
    ):
        lines.append(
            # a figure undefined for these counts is absent (n/a)
            f"{title:<22}{_cell(row.get('precision')):>10}{_cell(row.get('recall')):>9}"
            f"{_cell(row.get('f1')):>8}{_cell(row.get('false-alarm-rate')):>8}"
            f"{row['tp']:>7}{row['fp']:>7}{row['tn']:>8}{row['fn']:>7}"
        )
    lines.append(f"global model: {final['model_dir']}; per-round metrics: {final['metrics']}")
    return lines


def run_federation(grid: Grid, cfg: AppConfig) -> dict[str, Any]:
    """All phases; returns what ``final.json`` holds."""
    fed = cfg.federation
    t0 = time.monotonic()
    run = RunDir(Path(fed.run_dir) / fed.run_name)
    log.info("seqwatch run '%s' (%s strategy) in %s", fed.run_name, fed.strategy, run.root)
    resumed = resume_phase(cfg, run)
    if resumed is None:
        run.reset()
        encoder, key_print, arrays = setup_phase(grid, cfg, run)
        done, strat_state, strat_before = 0, None, fed.strategy
    else:
        encoder, key_print, arrays, done, strat_state, strat_before = resumed
    enc_conf = encoder_to_config(encoder, key_print)
    spread_memo = ScoreFitMemo()
    arrays = training_phase(grid, cfg, run, enc_conf, arrays, done, strat_state, strat_before, spread_memo)
    state = run.read_state()
    rounds = state.last_round if state else done
    calibration = calibration_phase(grid, cfg, enc_conf, arrays, spread_memo)
    report = report_phase(grid, cfg, run, enc_conf, arrays, calibration)
    key = known_hash_key(cfg, key_print)
    if key is None:
        log.warning(
            "the nodes' hash key is not known to the server: set vocab.hash-key in %s/detector.json "
            "to the institutions' key before scoring with the global model",
            run.model_dir,
        )
    model_dir = save_global_model(cfg, run, encoder, arrays, calibration, key)
    history = run.read_metrics()
    final = {
        "format": "seqwatch-federated-final",
        "format_version": 1,
        "run_name": fed.run_name,
        "run_path": str(run.root),
        "strategy": fed.strategy,
        "rounds_completed": rounds,
        "resumed_after_round": done if resumed is not None else None,
        "calibration": calibration,
        "report": report,
        "last_round": history[-1] if history else None,
        "model_dir": str(model_dir),
        "hash_key_known": key is not None,
        "metrics": str(run.metrics_jsonl),
        "seconds": round(time.monotonic() - t0, 2),
    }
    run.save_final(final)
    for line in summary_table(final):
        log.info("%s", line)
    return final
