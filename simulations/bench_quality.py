"""Benchmark: detection quality on real data (ADFA-LD, HDFS, OpenStack), written to docs/.

ADFA-LD, standard split: fit on the 833 training traces (a content-grouped
10 % held out for early stopping and threshold calibration), test on the 4,372
validation-normal plus 746 attack traces. One row per model variant and
sequence aggregate: AUROC, AUPRC, detection rate at 1 % and 5 % false alarms,
and precision/recall/F1 at the threshold calibrated on validation normals.

    python -m simulations.bench_quality adfa --out docs/quality_adfa.json

HDFS, DeepLog split (its normal test file is missing): 5 folds of the 4,855
normal training sessions, grouped by unique sequence. For each fold, fit on the
other four, set the threshold at <= 1 % false alarms on the held-out fold, and
measure recall on all 16,838 abnormal sessions.

    python -m simulations.bench_quality hdfs --out docs/quality_hdfs.json

ADFA-LD coverage diagnostic (not the standard protocol): the validation
normals are split in two halves (seeded); the default detector is fitted on
the training traces alone and on the training traces plus half A, and both
are scored on half B plus all attacks. It measures how much of the gap to
a perfect ranking comes from normal programs missing from the training data.

    python -m simulations.bench_quality adfa-coverage --out docs/quality_adfa_coverage.json

ADFA-LD seed spread: the standard split again with several seeds (each seed
draws the hold-out split and initialises and shuffles the training), giving
mean, standard deviation and range of every row, i.e. how far one seeded run
can be trusted.

    python -m simulations.bench_quality adfa-seeds --models lstm,gru --seeds 5 \
        --config simulations/configs/adfa-detector.toml --out docs/quality_adfa_seeds.json

Context fusion on the project's synthetic sessions (no shared data needed):
the default detector fitted on the same seeded sessions four times, seeing the
events alone, then the time gaps, then the amounts, then the device, channel and
country too; AUROC and detection per attack type on the test sessions, over
several seeds. It measures what fusing the context buys on attacks that reuse
ordinary events.

    python -m simulations.bench_quality synthetic-context --seeds 3 --out docs/quality_synthetic_context.json

OpenStack (the AECID sequence files, both versions, each on Landauer et
al.'s split: 1 % of the normal instances to train on, the other normal and
all abnormal instances to test on): the same rows as ADFA-LD, per version.

    python -m simulations.bench_quality openstack --out docs/quality_openstack.json

Benchmarks, not tests: minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.argtypes import confidence
from common.config import (
    AGGREGATES,
    MODEL_KINDS,
    DetectorConfig,
    ScoreConfig,
    load_config_file,
    parse_detector_config,
    to_flat,
    with_overrides,
)
from common.datasets import load_adfa_ld, load_hdfs, load_openstack, shared_data_dir, shared_data_missing
from common.detector import SequenceDetector, content_groups, holdout_mask, holdout_split
from common.errors import DataError
from common.events import ColumnMap, EventTable
from common.metrics import detection_by_group, detection_report, threshold_for_far
from common.scoring import (
    WEIGHTED_END_AGGREGATES,
    ContextFusion,
    EventScores,
    aggregate,
    context_fusion_from_moments,
    end_weight_from_moments,
    spread_moments,
)
from common.tableio import from_frame
from simulations.cli import Parser, output_file, positive_int, run_main
from simulations.synthetic import SYNTHETIC_COLUMNS, SyntheticSpec, generate

log = logging.getLogger("bench_quality")


def adfa(src: Path, base: DetectorConfig, kinds: list[str], epochs: int | None, seed: int) -> dict[str, Any]:
    splits = load_adfa_ld(src)
    rows = standard_split(splits["train"], splits["test"], base, kinds, epochs, seed)
    return {"dataset": "ADFA-LD standard split", "rows": rows}


def openstack(
    src: Path, base: DetectorConfig, kinds: list[str], epochs: int | None, seed: int
) -> dict[str, Any]:
    """Both OpenStack versions, each on its own split (Landauer et al.: 1 % of the normal
    instances to train on, the rest and every abnormal one to test on)."""
    rows = []
    for version in ("kalaki", "loghub"):
        splits = load_openstack(src, version)
        for row in standard_split(splits["train"], splits["test"], base, kinds, epochs, seed):
            rows.append({"version": version, **row})
    return {"dataset": "OpenStack (AECID sequences, Landauer et al.'s split)", "rows": rows}


def _fitted(
    base: DetectorConfig, fit_table: EventTable, seed: int, epochs: int | None, kind: str | None = None
) -> tuple[DetectorConfig, SequenceDetector, tuple[EventTable, EventTable], float]:
    """``base`` with this seed (and model kind and epochs, when given), fitted on ``fit_table``
    less a content-grouped hold-out: (config, detector, (fit part, hold-out), seconds to fit)."""
    overrides: dict[str, Any] = {"train": {"seed": seed}}
    if kind is not None:
        overrides["model"] = {"kind": kind}
    if epochs:
        overrides["train"]["epochs"] = epochs
    cfg = with_overrides(base, **overrides)
    train, validation = holdout_split(fit_table, cfg.train.validation_fraction, seed)
    det = SequenceDetector(cfg)
    t0 = time.perf_counter()
    det.fit(train, validation)
    return cfg, det, (train, validation), time.perf_counter() - t0


def standard_split(
    fit_table: EventTable,
    test: EventTable,
    base: DetectorConfig,
    kinds: list[str],
    epochs: int | None,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per model kind, aggregate and END-step use: fit on ``fit_table`` (a content-grouped
    part held out for early stopping and calibration), score the labelled ``test``."""
    rows = []
    for kind in kinds:
        cfg, det, (train, validation), fit_s = _fitted(base, fit_table, seed, epochs, kind=kind)
        scored = det.score_table(test)
        labels = scored.encoded.labels
        if labels is None:
            raise DataError(f"{test.source}: the test split has no labels")
        val_events = det.score_table(validation).events
        for agg, end in _variants(cfg):
            test_ev, val_ev = (
                (scored.events, val_events) if end else (_no_end(scored.events), _no_end(val_events))
            )
            sc, fusion = _score_parts(cfg, agg, val_ev)
            scores = aggregate(test_ev, sc, fusion)
            cal = cfg.calibration
            threshold = threshold_for_far(aggregate(val_ev, sc, fusion), cal.false_alarm_rate, cal.confidence)
            rep = detection_report(labels, scores, threshold)
            types = scored.attack_types
            rows.append(
                {
                    "model": kind,
                    "aggregate": agg,
                    "end_step": end,
                    "default": end
                    and kind == DetectorConfig().model.kind
                    and agg == DetectorConfig().score.aggregate,
                    "end_weight": sc.end_weight if end and agg in WEIGHTED_END_AGGREGATES else None,
                    "auroc": rep["auroc"],
                    "auprc": rep["auprc"],
                    "dr_at_1pct_far": rep["detection_rate_at_1pct_far"],
                    "dr_at_5pct_far": rep["detection_rate_at_5pct_far"],
                    "precision": rep["precision"],
                    "recall": rep["recall"],
                    "f1": rep["f1"],
                    "false_alarm_rate": rep["false_alarm_rate"],
                    "by_attack_type": None
                    if types is None
                    else detection_by_group(labels, scores, types, threshold),
                    "best_epoch": det.fit_result_.best_epoch if det.fit_result_ else None,
                    "fit_sequences": len(train),
                    "validation_sequences": len(validation),
                    "fit_seconds": round(fit_s, 1),
                }
            )
            log.info(
                "%s %-9s END %-5s auroc %.4f dr@1%% %.3f",
                kind,
                agg,
                end,
                rep["auroc"],
                rep["detection_rate_at_1pct_far"],
            )
    return rows


def adfa_seeds(
    src: Path, base: DetectorConfig, kinds: list[str], epochs: int | None, seeds: int, first_seed: int
) -> dict[str, Any]:
    if seeds < 1:
        raise DataError(f"--seeds must be at least 1, got {seeds}")
    used = list(range(first_seed, first_seed + seeds))
    runs = [adfa(src, base, kinds, epochs, s)["rows"] for s in used]
    rows = []
    for same in zip(*runs, strict=True):  # one row per variant, in the same order every seed
        row: dict[str, Any] = {k: same[0][k] for k in ("model", "aggregate", "end_step", "default")}
        for metric in ("auroc", "dr_at_1pct_far", "dr_at_5pct_far"):
            vals = np.array([r[metric] for r in same], dtype=np.float64)
            row[metric] = {
                "mean": float(vals.mean()),
                "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "min": float(vals.min()),
                "max": float(vals.max()),
                "per_seed": vals.tolist(),
            }
        rows.append(row)
        log.info(
            "%s %-9s END %-5s auroc %.4f +- %.4f (%.4f..%.4f over %d seeds)",
            row["model"],
            row["aggregate"],
            row["end_step"],
            row["auroc"]["mean"],
            row["auroc"]["sd"],
            row["auroc"]["min"],
            row["auroc"]["max"],
            len(used),
        )
    return {"dataset": "ADFA-LD standard split, several seeds", "seeds": used, "rows": rows}


#: What each row of ``synthetic-context`` lets the model see, cumulatively.
_GAPS_ONLY = dataclasses.replace(SYNTHETIC_COLUMNS, numeric=(), context=())
CONTEXT_VARIANTS: tuple[tuple[str, ColumnMap], ...] = (
    ("events", dataclasses.replace(_GAPS_ONLY, order="position", time=False)),
    ("+ time gaps", _GAPS_ONLY),
    ("+ amounts", dataclasses.replace(SYNTHETIC_COLUMNS, context=())),
    ("+ device, channel, country", SYNTHETIC_COLUMNS),
)


def synthetic_context(
    base: DetectorConfig, epochs: int | None, seeds: int, first_seed: int, users: int
) -> dict[str, Any]:
    """One row per seed and :data:`CONTEXT_VARIANTS` entry: the default detector fitted on
    the same synthetic training sessions (a content-grouped part held out), scored on the
    test sessions, overall and per attack type."""
    if seeds < 1:
        raise DataError(f"--seeds must be at least 1, got {seeds}")
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        frames = generate(SyntheticSpec(users=users, seed=seed))
        for frame in frames.values():  # positions in time order, for the variant without timestamps
            frame["position"] = (
                frame.sort_values("timestamp", kind="stable").groupby("sequence_id").cumcount()
            )
        for name, columns in CONTEXT_VARIANTS:
            fit_table = from_frame(frames["train"], columns, source=f"synthetic[train, seed={seed}]")
            test = from_frame(frames["test"], columns, source=f"synthetic[test, seed={seed}]")
            _, det, (train, validation), fit_s = _fitted(base, fit_table, seed, epochs)
            scored = det.score_table(test)
            labels, types = scored.encoded.labels, scored.attack_types
            if labels is None or types is None:
                raise DataError(f"{test.source}: the test sessions have no labels or attack types")
            rep = detection_report(labels, scored.scores, det.threshold_)
            rows.append(
                {
                    "seed": seed,
                    "sees": name,
                    "numeric": list(test.numeric),
                    "context": list(test.context),
                    "auroc": rep["auroc"],
                    "auprc": rep["auprc"],
                    "dr_at_1pct_far": rep["detection_rate_at_1pct_far"],
                    "dr_at_5pct_far": rep["detection_rate_at_5pct_far"],
                    "recall": rep["recall"],
                    "false_alarm_rate": rep["false_alarm_rate"],
                    "by_attack_type": detection_by_group(labels, scored.scores, types, det.threshold_),
                    "fit_sequences": len(train),
                    "validation_sequences": len(validation),
                    "test_sequences": len(scored.scores),
                    "fit_seconds": round(fit_s, 1),
                }
            )
            log.info(
                "seed %d %-28s auroc %.4f dr@1%% %.3f",
                seed,
                name,
                rep["auroc"],
                rep["detection_rate_at_1pct_far"],
            )
    return {"dataset": f"synthetic sessions ({users} users, 3 institutions pooled)", "rows": rows}


def adfa_coverage(src: Path, base: DetectorConfig, epochs: int | None, seed: int) -> dict[str, Any]:
    splits = load_adfa_ld(src)
    train, test = splits["train"], splits["test"]
    g = test.grouped()
    if g.labels is None:
        raise DataError(f"{src}: the ADFA-LD test split has no labels")
    normal, attacks = g.ids[g.labels == 0], g.ids[g.labels == 1]
    # whole content groups to one half: 48 % of the normals of a random half by id have an exact
    # copy in the other half, which a model fitted on that half would simply have memorised
    in_a = holdout_mask(content_groups(test.subset(normal)), 0.5, seed)
    half_a, half_b = normal[in_a], normal[~in_a]
    evaluation = test.subset(np.concatenate([half_b, attacks]))
    cfg = with_overrides(base, train={"seed": seed, **({"epochs": epochs} if epochs else {})})
    rows = []
    wider = EventTable.concat([train, test.subset(half_a)])
    variants = (("training traces", train), ("training traces + half A of the validation normals", wider))
    for name, table in variants:
        fit, validation = holdout_split(table, cfg.train.validation_fraction, seed)
        det = SequenceDetector(cfg).fit(fit, validation)
        scored = det.score_table(evaluation)
        labels = scored.encoded.labels
        assert labels is not None
        threshold_far = float((scored.scores[labels == 0] > det.threshold_).mean())
        rep = detection_report(labels, scored.scores, det.threshold_)
        rows.append(
            {
                "fitted_on": name,
                "fit_sequences": len(fit),
                "end_weight": det.end_weight_,
                "auroc": rep["auroc"],
                "auprc": rep["auprc"],
                "dr_at_1pct_far": rep["detection_rate_at_1pct_far"],
                "dr_at_5pct_far": rep["detection_rate_at_5pct_far"],
                "test_far_at_threshold": threshold_far,
            }
        )
        log.info("%s: auroc %.4f (fit on %d sequences)", name, rep["auroc"], len(fit))
    return {
        "dataset": "ADFA-LD coverage diagnostic (validation normals halved by content; not the standard "
        "protocol)",
        "evaluated_on": {"normal_half_a": len(half_a), "normal_half_b": len(half_b), "attacks": len(attacks)},
        "rows": rows,
    }


def _group_halves(groups: np.ndarray, seed: int) -> np.ndarray:
    """Half A (True) of the sequences: a random half of the content ``groups`` (ids 0..G-1), whole."""
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    in_a = np.random.default_rng(seed).permutation(n_groups) < n_groups // 2
    return in_a[groups]


def _across_halves(
    normal: np.ndarray, abnormal: np.ndarray, halves: np.ndarray, rate: float, confidence: float
) -> list[tuple[float, float]]:
    """For a threshold set on each half of ``normal`` (``halves`` and its complement): the rate at
    which the *other* half's sessions exceed it, and the recall on ``abnormal``."""
    return [
        (float((normal[~side] > t).mean()), float((abnormal > t).mean()))
        for side in (halves, ~halves)
        for t in [threshold_for_far(normal[side], rate, confidence)]
    ]


def hdfs(
    src: Path, base: DetectorConfig, folds: int, epochs: int | None, seed: int, confidence: float
) -> dict[str, Any]:
    splits = load_hdfs(src)
    train, abnormal = splits["train"], splits["test_abnormal"]
    groups = content_groups(train)
    rng = np.random.default_rng(seed)
    fold_of_group = rng.permutation(int(groups.max()) + 1) % folds
    fold = fold_of_group[groups]
    ids = train.grouped().ids
    cfg = base
    if epochs:
        cfg = with_overrides(cfg, train={"epochs": epochs})
    per_agg: dict[tuple[str, bool], list[dict[str, Any]]] = {v: [] for v in _variants(cfg)}
    for k in range(folds):
        held = train.subset(ids[fold == k])
        rest = train.subset(ids[fold != k])
        det = SequenceDetector(with_overrides(cfg, train={"seed": seed + k})).fit(rest)
        held_all = det.score_table(held).events
        ab_all = det.score_table(abnormal).events
        # the fold's content groups in two halves, half of the groups each (not half of the sessions:
        # one content repeated hundreds of times would make up a half alone): a threshold set on one
        # half is checked on the other
        halves = _group_halves(content_groups(held), seed + k)
        for agg, end in per_agg:
            held_events, ab_events = (held_all, ab_all) if end else (_no_end(held_all), _no_end(ab_all))
            sc, fusion = _score_parts(cfg, agg, held_events)
            held_scores = aggregate(held_events, sc, fusion)
            ab_scores = aggregate(ab_events, sc, fusion)
            cal = cfg.calibration
            threshold = threshold_for_far(held_scores, cal.false_alarm_rate, cal.confidence)
            recall = float((ab_scores > threshold).mean())
            far = float((held_scores > threshold).mean())
            crossed = _across_halves(held_scores, ab_scores, halves, cal.false_alarm_rate, cal.confidence)
            confident = _across_halves(held_scores, ab_scores, halves, cal.false_alarm_rate, confidence)
            # the whole fold's threshold at --confidence: the protocol with that rule
            sure = threshold_for_far(held_scores, cal.false_alarm_rate, confidence)
            per_agg[(agg, end)].append(
                {
                    "fold": k,
                    "held_out_normal": len(held),
                    "threshold": threshold,
                    "end_weight": sc.end_weight if end and agg in WEIGHTED_END_AGGREGATES else None,
                    "recall": recall,
                    "false_alarm_rate": far,
                    "cross_half_false_alarm_rate": float(np.mean([c[0] for c in crossed])),
                    "cross_half_recall": float(np.mean([c[1] for c in crossed])),
                    "recall_confident": float((ab_scores > sure).mean()),
                    "false_alarm_rate_confident": float((held_scores > sure).mean()),
                    "cross_half_false_alarm_rate_confident": float(np.mean([c[0] for c in confident])),
                    "cross_half_recall_confident": float(np.mean([c[1] for c in confident])),
                }
            )
            log.info(
                "fold %d %-10s END %-5s recall %.4f at FAR %.4f (held-out %d); across halves: "
                "FAR %.4f, recall %.4f (at confidence %g: FAR %.4f, recall %.4f)",
                k,
                agg,
                end,
                recall,
                far,
                len(held),
                per_agg[(agg, end)][-1]["cross_half_false_alarm_rate"],
                per_agg[(agg, end)][-1]["cross_half_recall"],
                confidence,
                per_agg[(agg, end)][-1]["cross_half_false_alarm_rate_confident"],
                per_agg[(agg, end)][-1]["cross_half_recall_confident"],
            )
    n_ab, n_norm = 16838, 553366
    rows = []
    for (agg, end), folds_rows in per_agg.items():
        recalls = np.array([r["recall"] for r in folds_rows])
        fars = np.array([r["false_alarm_rate"] for r in folds_rows])
        cross_fars = np.array([r["cross_half_false_alarm_rate"] for r in folds_rows])
        cross_recalls = np.array([r["cross_half_recall"] for r in folds_rows])
        confident_fars = np.array([r["cross_half_false_alarm_rate_confident"] for r in folds_rows])
        r, f = float(recalls.mean()), float(cross_fars.mean())
        rows.append(
            {
                "aggregate": agg,
                "end_step": end,
                "configured": end and agg == cfg.score.aggregate,
                "recall_mean": r,
                "recall_min": float(recalls.min()),
                # at most the target by construction: the threshold was set on these sessions
                "false_alarm_rate_mean": float(fars.mean()),
                # measured: threshold from one half of the fold's content groups, rate on the other
                "cross_half_false_alarm_rate_mean": f,
                "cross_half_false_alarm_rate_max": float(cross_fars.max()),
                "cross_half_recall_mean": float(cross_recalls.mean()),
                # the same with the thresholds at calibration.confidence = --confidence
                "confidence": confidence,
                "recall_confident_mean": float(np.mean([r["recall_confident"] for r in folds_rows])),
                "recall_confident_min": float(np.min([r["recall_confident"] for r in folds_rows])),
                "false_alarm_rate_confident_mean": float(
                    np.mean([r["false_alarm_rate_confident"] for r in folds_rows])
                ),
                "cross_half_false_alarm_rate_confident_mean": float(confident_fars.mean()),
                "cross_half_false_alarm_rate_confident_max": float(confident_fars.max()),
                "cross_half_recall_confident_mean": float(
                    np.mean([r["cross_half_recall_confident"] for r in folds_rows])
                ),
                "precision_at_paper_balance_estimate": r * n_ab / (r * n_ab + f * n_norm)
                if r + f > 0
                else None,
                "folds": folds_rows,
            }
        )
    return {
        "dataset": "HDFS DeepLog split (normal test set missing; FAR estimated by grouped 5-fold CV)",
        "abnormal_sessions": len(abnormal),
        "rows": rows,
    }


def _variants(cfg: DetectorConfig) -> list[tuple[str, bool]]:
    """(aggregate, END step scored) pairs: every aggregate, and each again
    without the END step (an ablation) when the model predicts ends."""
    without = [(agg, False) for agg in AGGREGATES]
    return [(agg, True) for agg in AGGREGATES] + without if cfg.model.end_event else without


def _score_parts(
    cfg: DetectorConfig, agg: str, normal: EventScores
) -> tuple[ScoreConfig, ContextFusion | None]:
    """``cfg.score`` with aggregate ``agg`` and its END weight fitted on ``normal``, and the context
    fusion fitted there too, as a detector does."""
    sc = dataclasses.replace(cfg.score, aggregate=agg)
    moments = spread_moments(normal, sc)
    sc = dataclasses.replace(sc, end_weight=end_weight_from_moments(moments, sc))
    return sc, context_fusion_from_moments(moments, sc.end_weight)


def _no_end(events: EventScores) -> EventScores:
    """The same event scores with the END step left out of the aggregates."""
    return dataclasses.replace(
        events, end_surprisal=None, end_rank=None, end_expected=None, end_expected_p=None
    )


PROG = "python -m simulations.bench_quality"


def _model_kinds(text: str) -> list[str]:
    """argparse type of ``--models``: comma-separated model kinds, checked before any work."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in MODEL_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(MODEL_KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "dataset", choices=["adfa", "hdfs", "openstack", "adfa-coverage", "adfa-seeds", "synthetic-context"]
    )
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: shared data)")
    parser.add_argument(
        "--models",
        type=_model_kinds,
        default=list(MODEL_KINDS),
        help=f"ADFA, OpenStack: model kinds to compare, comma-separated (default: {','.join(MODEL_KINDS)})",
    )
    parser.add_argument("--config", type=Path, default=None, help="detector config file (TOML/JSON)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override train.epochs")
    parser.add_argument("--folds", type=positive_int, default=5, help="HDFS: folds of the normal sessions")
    parser.add_argument("--seed", type=int, default=0, help="seed (adfa-seeds: the first of --seeds)")
    parser.add_argument(
        "--seeds", type=positive_int, default=5, help="adfa-seeds, synthetic-context: number of seeds"
    )
    parser.add_argument(
        "--users",
        type=positive_int,
        default=1200,
        help="synthetic-context: users of the generator (default 1200)",
    )
    parser.add_argument(
        "--confidence",
        type=confidence,
        default=0.9,
        help="HDFS: also measure the half-fold thresholds at this calibration.confidence (default 0.9)",
    )
    parser.add_argument(
        "--out", type=output_file, default=None, help="also write the JSON here (e.g. docs/quality_adfa.json)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: a user mistake is one error line and exit 2 (:func:`simulations.cli.run_main`)."""
    return run_main(PROG, _run, argv)


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    base = parse_detector_config(load_config_file(args.config)) if args.config else DetectorConfig()
    if args.dataset == "synthetic-context":
        result = synthetic_context(base, args.epochs, args.seeds, args.seed, args.users)
    else:
        root = args.data or shared_data_dir()
        if root is None:
            raise DataError(f"{shared_data_missing()}, or pass --data")
        result = _on_real_data(args, root, base)
    result["command"] = f"{PROG} " + " ".join(argv)
    result["config"] = to_flat(base)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


def _on_real_data(args: argparse.Namespace, root: Path, base: DetectorConfig) -> dict[str, Any]:
    if args.dataset == "adfa":
        return adfa(root, base, args.models, args.epochs, args.seed)
    if args.dataset == "adfa-seeds":
        return adfa_seeds(root, base, args.models, args.epochs, args.seeds, args.seed)
    if args.dataset == "openstack":
        return openstack(root, base, args.models, args.epochs, args.seed)
    if args.dataset == "adfa-coverage":
        return adfa_coverage(root, base, args.epochs, args.seed)
    return hdfs(root, base, args.folds, args.epochs, args.seed, args.confidence)


if __name__ == "__main__":
    raise SystemExit(main())
