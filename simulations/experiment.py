"""Federated vs centralized vs local-only: one comparison on the same partitions and test sequences.

    python -m simulations.experiment --config simulations/configs/adfa.toml --out docs/experiments/adfa \\
        [--clients 5] [--rounds N] [--local-epochs E] [--strategy fedavg] [--set KEY=VALUE ...] \\
        [--modes federated,centralized,local] [--engine inprocess|flower]

The config file holds flat run-config keys (``"data.dataset" = "adfa-ld"``), the
same file ``flwr run . --run-config FILE`` accepts. ``--clients`` defaults to
the config's ``federation.min-nodes`` (every client takes part in every round).

**Partitions.** Built once, by the code path the ClientApp uses
(:func:`client.data.node_data` with the simulation node config
``partition-id``/``num-partitions``, then :func:`client.local.prepare`): each
client has a training split, a held-out normal validation split (content-grouped,
``train.validation-fraction``) and its IID share of the labelled test set. The
*pooled test set* is the union of the clients' test shares; every mode is scored
on exactly these sequences (their ids' SHA-256 is recorded per evaluation).

**Modes.**

* ``federated`` — the real federation: the ServerApp logic
  (:func:`server.app.run_federation`: set-up, rounds, federated calibration,
  reports) with the real ClientApp handlers, either in-process
  (:mod:`simulations.inprocess`, default: fast) or through
  ``flwr run . --stream`` (``--engine flower``: managed SuperLink, Ray); both
  are deterministic and train the same weights (``tests/test_simulation.py``). The
  per-round metrics come from the run dir's ``metrics.jsonl`` (AUROC there is
  the exact-to-one-bin histogram AUROC over all clients' test shares); the final
  global model (``<run>/model``) is then scored on the pooled test set, with
  the federation's global threshold (validation histograms at
  ``calibration.false-alarm-rate``).
* ``centralized`` — one :class:`~common.detector.SequenceDetector` on the union
  of the clients' training splits, early-stopped and calibrated on the union of
  their validation splits.
* ``local`` (local-only) — each client fits on its own training split,
  calibrated on its own validation split; evaluated on its own test share and
  on the pooled test set (mean and worst over clients are reported).

**Epoch budget.** Every training sequence is seen the same number of times in
every mode: centralized and local-only models train for
``num-server-rounds x local-epochs`` epochs (``--central-epochs`` overrides).
They keep :class:`SequenceDetector`'s early stopping on validation loss
(``train.patience``), which can only shorten their training; the federation
trains all its rounds and keeps the last global model.

**Threads.** ``train.threads = 0`` means one torch thread for every mode (what
simulated ClientApps use), so timings compare and results do not depend on the
thread count.

Outputs in ``--out``: ``comparison.json`` (command line, config, partitions,
every figure), ``comparison.md`` (the table), ``auroc_per_round.png`` and
``roc.png`` (``recall_per_round.png`` instead when the test set holds anomalous
sequences only, as HDFS's does; neither when it holds normal ones only),
``scores.csv`` (every mode's score per pooled test sequence) and
``federated_metrics.jsonl`` (the run's per-round rows). Run directories go to
``--work-dir`` (default ``runs/experiments/<out name>-<hash of its path>``, see
:func:`default_work_dir`); ``--resume`` continues
the federated run committed there (the app's own resume: only the missing
rounds are trained, with the same seeds, so the result equals a fresh run's)
instead of starting over. Every figure comes from
:mod:`common.metrics` (AUROC, AUPRC, detection rate at 1 %/5 % false alarms,
F1 at the mode's calibrated threshold).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import shlex
import shutil
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import AppConfig, load_config_file, parse_config, to_flat, with_overrides
from common.errors import ConfigError
from common.events import EventTable
from common.metrics import unresolved_rate
from simulations.cli import (
    LOG_LEVELS,
    Parser,
    log_level,
    output_folder,
    positive_int,
    run_main,
    setup_logging,
)

log = logging.getLogger("simulations.experiment")
PROG = "python -m simulations.experiment"

MODES = ("federated", "centralized", "local")
ENGINES = ("inprocess", "flower")
FORMAT = "seqwatch-experiment-comparison"
TABLE_KEYS = (
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("detection_rate_at_1pct_far", "DR@1%FAR"),
    ("detection_rate_at_5pct_far", "DR@5%FAR"),
    ("f1", "F1"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("false_alarm_rate", "FAR"),
)
METRIC_KEYS = tuple(k for k, _ in TABLE_KEYS)


# --------------------------------------------------------------------------- configuration


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML would read it (``0.5``, ``true``, ``'x'``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def run_config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The effective flat run config: file, then ``--set``, then the dedicated options."""
    flat = dict(load_config_file(args.config)) if args.config else {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE")
        flat[key.strip()] = parse_value(value.strip())
    if args.rounds is not None:
        flat["federation.num-server-rounds"] = args.rounds
    if args.local_epochs is not None:
        flat["federation.local-epochs"] = args.local_epochs
    if args.strategy is not None:
        flat["federation.strategy"] = args.strategy
    return flat


def _hide_key(arg: str) -> str:
    """A command-line argument with the value of ``vocab.hash-key=...`` hidden."""
    return "vocab.hash-key=<set>" if arg.startswith("vocab.hash-key=") else arg


def _redacted(flat: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(flat)
    if out.get("vocab.hash-key"):
        out["vocab.hash-key"] = "<set>"
    return out


# --------------------------------------------------------------------------- partitions


@dataclass
class Partitions:
    """The clients' data as their ClientApps see it, and the pooled tables."""

    clients: list[Any]  # client.local.LocalData
    train: EventTable
    #: Every client's held-out validation sequences: what the federation calibrates on.
    validation: EventTable
    test: EventTable
    #: ``validation`` without copies of any client's training sequences: the centralized
    #: detector's, whose training set holds every client's (:func:`without_copies`).
    central_validation: EventTable

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for k, c in enumerate(self.clients):
            labels = c.test.grouped().labels if c.test is not None else None
            rows.append(
                {
                    "partition": k,
                    "train_sequences": len(c.train),
                    "train_events": int(c.train.n_events),
                    "validation_sequences": len(c.validation),
                    "test_sequences": len(c.test) if c.test is not None else 0,
                    "test_anomalous": int(labels.sum()) if labels is not None else None,
                }
            )
        return rows


def build_partitions(cfg: AppConfig, n_clients: int) -> Partitions:
    """Each simulated node's data exactly as :func:`client.app.load_node` gets it."""
    from client import local
    from client.data import node_data
    from simulations.inprocess import sim_nodes

    train = cfg.detector.train
    clients = [
        local.prepare(node_data(nc, cfg.data), train.validation_fraction, train.seed)
        for nc in sim_nodes(n_clients)
    ]
    tests = [c.test for c in clients if c.test is not None and len(c.test)]
    if len(tests) != len(clients):
        raise ConfigError(
            f"data.dataset = {cfg.data.dataset!r} gives some clients no test data; "
            f"the comparison needs a labelled test share on every client"
        )
    train_all = EventTable.concat([c.train for c in clients])
    validation_all = EventTable.concat([c.validation for c in clients])
    return Partitions(
        clients=clients,
        train=train_all,
        validation=validation_all,
        test=EventTable.concat(tests),
        central_validation=without_copies(validation_all, train_all),
    )


def without_copies(validation: EventTable, train: EventTable) -> EventTable:
    """``validation`` without the sequences whose content is also in ``train``.

    Each client holds out whole content groups of its own data, but a sequence held
    out by one client can be a copy of one that another client trains on; pooled for
    the centralized detector, such copies would flatter its early stopping and lower
    its threshold (HDFS: about half the pooled validation sessions).
    """
    from common.detector import content_groups

    if len(validation) == 0 or len(train) == 0:
        return validation
    both = EventTable.concat([train, validation])
    group_of = dict(zip(both.grouped().ids.tolist(), content_groups(both).tolist(), strict=True))
    seen = {group_of[i] for i in train.grouped().ids.tolist()}
    keep = np.array([group_of[i] not in seen for i in validation.grouped().ids.tolist()], dtype=bool)
    dropped = int((~keep).sum())
    if dropped:
        log.info(
            "pooled validation: %d of %d sequences copy a training sequence; left out", dropped, len(keep)
        )
    if keep.all():
        return validation
    return validation.subset(validation.grouped().ids[keep])


# --------------------------------------------------------------------------- evaluation


def fingerprint(ids: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the (id, label) pairs in scoring order."""
    h = hashlib.sha256()
    for i, y in zip(ids, labels, strict=True):
        h.update(f"{i}\t{int(y)}\n".encode())
    return h.hexdigest()


@dataclass
class Evaluation:
    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    report: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.report,
            "test_fingerprint": fingerprint(self.ids, self.labels),
        }


def evaluate(det: Any, table: EventTable, threshold: float) -> Evaluation:
    """Score ``table`` with ``det`` and compute :func:`common.metrics.detection_report` at ``threshold``."""
    from common.metrics import detection_report

    g = table.grouped()
    labels = np.zeros(len(g.ids), dtype=np.int8) if g.labels is None else np.asarray(g.labels, dtype=np.int8)
    scores = np.asarray(det.decision_function(table), dtype=np.float64)
    return Evaluation(
        ids=np.asarray(g.ids),
        labels=labels,
        scores=scores,
        report=detection_report(labels, scores, threshold),
    )


def set_torch_threads(cfg: AppConfig) -> int:
    import torch

    threads = cfg.detector.train.threads or 1
    torch.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------- modes


#: Every file an experiment writes into ``--out``.
OUTPUTS = (
    "comparison.json",
    "comparison.md",
    "auroc_per_round.png",
    "roc.png",
    "recall_per_round.png",
    "scores.csv",
    "federated_metrics.jsonl",
)


def default_work_dir(out: Path) -> Path:
    """``runs/experiments/<out name>-<8 hex digits of its absolute path>``: two outputs of one name
    (``A/adfa``, ``B/adfa``) never share, and so never replace, each other's runs."""
    digest = hashlib.sha256(str(out.resolve()).encode("utf-8")).hexdigest()[:8]
    return Path("runs") / "experiments" / f"{out.name}-{digest}"


def run_federated(
    flat: Mapping[str, Any],
    cfg: AppConfig,
    parts: Partitions,
    n_clients: int,
    work_dir: Path,
    engine: str,
    flower_timeout: float,
    resume: bool = False,
) -> tuple[dict[str, Any], Evaluation, list[dict[str, Any]]]:
    """Run the federation, then score its global model on the pooled test set.

    ``resume``: keep a committed run in the work dir and let :func:`server.app.run_federation`
    train only the missing rounds (it refuses other model settings); else start over.
    """
    from common.detector import SequenceDetector
    from server.rundir import RunDir

    run = RunDir(Path(cfg.federation.run_dir) / cfg.federation.run_name)
    if run.root.exists() and not resume:
        log.warning(
            "starting over: replacing the earlier federated run in %s (--resume continues it)", run.root
        )
        shutil.rmtree(run.root)  # a fresh run: run_federation would resume a committed one
    t0 = time.monotonic()
    extra: dict[str, Any] = {"engine": engine}
    if engine == "inprocess":
        from simulations.inprocess import run_in_process

        grid, final = run_in_process(flat, n_clients, record=False)
        messages: dict[str, int] = {}
        for kind, n, _ in grid.calls:
            messages[kind] = messages.get(kind, 0) + n
        extra["messages"] = messages
    else:
        from simulations.flower_engine import run_flower

        res = run_flower(flat, num_supernodes=n_clients, work_dir=work_dir / "flower", timeout=flower_timeout)
        extra["flwr_run"] = {"returncode": res.returncode, "seconds": res.seconds, "command": res.command}
        if not res.ok or not run.final_path.is_file():
            raise RuntimeError(f"flwr run failed (exit {res.returncode}):\n{res.output[-4000:]}")
        final = json.loads(run.final_path.read_text(encoding="utf-8"))
    seconds = time.monotonic() - t0
    rounds = run.read_metrics()
    set_torch_threads(cfg)
    det = SequenceDetector.load(run.model_dir)
    threshold = float(final["calibration"]["global_threshold"])
    ev = evaluate(det, parts.test, threshold)
    fed_rep = final["report"]
    mine = ev.report
    agree = all(fed_rep["global_threshold"][k] == mine[k] for k in ("tp", "fp", "tn", "fn"))
    if not agree:
        log.warning(
            "the federation's summed counts at the global threshold %s differ from the pooled scoring %s",
            {k: fed_rep["global_threshold"][k] for k in ("tp", "fp", "tn", "fn")},
            {k: mine[k] for k in ("tp", "fp", "tn", "fn")},
        )
    result = {
        **extra,
        "metrics": ev.to_json(),
        "threshold_source": "federated calibration (summed validation histograms)",
        "rounds_completed": final["rounds_completed"],
        "resumed_after_round": final.get("resumed_after_round"),
        "strategy": final["strategy"],
        "seconds": round(seconds, 1),
        "federation_report": {
            "auroc_histogram": fed_rep.get("auroc_histogram"),
            "global_threshold": fed_rep.get("global_threshold"),
            "local_thresholds": fed_rep.get("local_thresholds"),
            "test_sequences": fed_rep.get("test_sequences"),
            "counts_agree_with_pooled_scoring": agree,
        },
        "calibration": final["calibration"],
        "run_dir": str(run.root),
        "model_dir": str(run.model_dir),
    }
    return result, ev, rounds


def fit_detector(cfg: AppConfig, epochs: int, train: EventTable, validation: EventTable) -> tuple[Any, float]:
    from common.detector import SequenceDetector

    dcfg = with_overrides(cfg.detector, train={"epochs": int(epochs), "threads": set_torch_threads(cfg)})
    t0 = time.monotonic()
    det = SequenceDetector(dcfg).fit(train, validation)
    return det, time.monotonic() - t0


def _fit_info(det: Any, seconds: float, epochs: int) -> dict[str, Any]:
    fr = det.fit_result_
    return {
        "epochs_budget": int(epochs),
        "epochs_trained": len(fr.history) if fr else None,
        "best_epoch": fr.best_epoch if fr else None,
        "best_val_loss": fr.best_val_loss if fr else None,
        "fit_seconds": round(seconds, 1),
    }


def run_centralized(cfg: AppConfig, parts: Partitions, epochs: int) -> tuple[dict[str, Any], Evaluation]:
    det, secs = fit_detector(cfg, epochs, parts.train, parts.central_validation)
    ev = evaluate(det, parts.test, det.threshold_)
    log.info(
        "centralized: AUROC %.4f (best epoch %s)", ev.report["auroc"] or math.nan, det.fit_result_.best_epoch
    )
    return {
        **_fit_info(det, secs, epochs),
        "metrics": ev.to_json(),
        "threshold_source": "calibrated on the pooled validation splits",
        "seconds": round(secs, 1),
    }, ev


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _mean_worst(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean of every figure over clients, and the figures of the worst client (lowest AUROC; lowest
    recall when AUROC is undefined, e.g. a test set without normal sequences)."""
    mean: dict[str, Any] = {k: _mean(rows, k) for k in METRIC_KEYS}
    key = "auroc" if any(r.get("auroc") is not None for r in rows) else "recall"
    values = [float(r[key]) if r.get(key) is not None else np.inf for r in rows]
    worst_i = int(np.argmin(values))
    worst: dict[str, Any] = {k: rows[worst_i].get(k) for k in METRIC_KEYS}
    worst["client"] = rows[worst_i].get("client")
    worst["ranked_by"] = key
    return mean, worst


def run_local(
    cfg: AppConfig, parts: Partitions, epochs: int
) -> tuple[dict[str, Any], list[Evaluation], list[Evaluation]]:
    clients: list[dict[str, Any]] = []
    pooled_evs, own_evs = [], []
    t0 = time.monotonic()
    for k, c in enumerate(parts.clients):
        det, secs = fit_detector(cfg, epochs, c.train, c.validation)
        own = evaluate(det, c.test, det.threshold_)
        pooled = evaluate(det, parts.test, det.threshold_)
        own_evs.append(own)
        pooled_evs.append(pooled)
        clients.append(
            {
                "client": k,
                **_fit_info(det, secs, epochs),
                "threshold": det.threshold_,
                "own_test": own.to_json(),
                "pooled_test": pooled.to_json(),
            }
        )
        log.info(
            "local-only client %d: AUROC own share %.4f, pooled %.4f",
            k,
            own.report["auroc"] or math.nan,
            pooled.report["auroc"] or math.nan,
        )
    pooled_mean, pooled_worst = _mean_worst([{"client": c["client"], **c["pooled_test"]} for c in clients])
    own_mean, own_worst = _mean_worst([{"client": c["client"], **c["own_test"]} for c in clients])
    return (
        {
            "clients": clients,
            "pooled_mean": pooled_mean,
            "pooled_worst": pooled_worst,
            "own_mean": own_mean,
            "own_worst": own_worst,
            "threshold_source": "each client calibrated on its own validation split",
            "seconds": round(time.monotonic() - t0, 1),
        },
        pooled_evs,
        own_evs,
    )


# --------------------------------------------------------------------------- outputs


def _cell(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(mode, metrics, note) rows of the comparison table."""
    rows: list[tuple[str, dict[str, Any], str]] = []
    if "federated" in results:
        r = results["federated"]
        note = f"{r['strategy']}, {r['rounds_completed']} rounds"
        if r.get("resumed_after_round"):
            note += f" (resumed after round {r['resumed_after_round']})"
        rows.append(("federated", r["metrics"], note))
    if "centralized" in results:
        r = results["centralized"]
        rows.append(("centralized", r["metrics"], f"{r['epochs_trained']} epochs (best {r['best_epoch']})"))
    if "local" in results:
        r = results["local"]
        n = len(r["clients"])
        rows.append(("local-only mean", r["pooled_mean"], f"{n} clients, pooled test"))
        rows.append(
            ("local-only worst", r["pooled_worst"], f"client {r['pooled_worst']['client']}, pooled test")
        )
        rows.append(("local-only mean (own share)", r["own_mean"], "each client's own test share"))
        rows.append(
            ("local-only worst (own share)", r["own_worst"], f"client {r['own_worst']['client']}, own share")
        )
    return rows


def calibration_lines(
    data: Mapping[str, Any], rate: float, modes: Sequence[str] = MODES, confidence: float = 0.0
) -> list[str]:
    """How many normal validation sequences set each mode's threshold, and whether they resolve ``rate``
    (with ``confidence``, :func:`common.metrics.unresolved_rate`)."""
    pooled = data.get("pooled_validation_sequences")
    per_client = [int(c["validation_sequences"]) for c in data.get("clients", [])]
    if pooled is None or not per_client:
        return []
    parts, checks = [], []
    central = int(data.get("centralized_validation_sequences", pooled))
    if "federated" in modes and "centralized" in modes and central == pooled:
        parts.append(f"on {pooled} pooled normal validation sequences (federated, centralized)")
        checks.append(("Pooled", int(pooled)))
    else:
        if "federated" in modes:
            parts.append(f"on {pooled} pooled normal validation sequences (federated)")
            checks.append(("Pooled", int(pooled)))
        if "centralized" in modes:
            copies = f", the pooled ones less {pooled - central} copies of training sequences"
            parts.append(
                f"on {central} normal validation sequences (centralized{copies if central < pooled else ''})"
            )
            checks.append(("Centralized", central))
    if "local" in modes:
        parts.append(f"on {min(per_client)}–{max(per_client)} per client (local-only)")
        checks.append(("Smallest client", min(per_client)))
    if not parts:
        return []
    text = f"Thresholds are calibrated {' and '.join(parts)}."
    for who, n in checks:
        note = unresolved_rate(n, rate, confidence)
        if note:
            text += f" {who}: {note}."
    return [text, ""]


def classes_in_test(data: Mapping[str, Any]) -> str:
    """What the pooled test set holds: ``"both"`` classes, or only ``"anomalous"`` / ``"normal"``."""
    test = data["pooled_test"]
    if test["anomalous"] == test["sequences"]:
        return "anomalous"
    return "normal" if test["anomalous"] == 0 else "both"


def markdown(comparison: Mapping[str, Any]) -> str:
    res = comparison["results"]
    data = comparison["data"]
    cal = parse_config(comparison["run_config"]).detector.calibration
    head = "| mode | " + " | ".join(t for _, t in TABLE_KEYS) + " | notes |"
    sep = "|" + "---|" * (len(TABLE_KEYS) + 2)
    lines = [
        f"# {data['dataset']}: federated vs centralized vs local-only",
        "",
        f"{comparison['clients']} clients, `{data['partitioner']}` partition"
        + (f" (alpha = {data['alpha']})" if data["partitioner"] == "dirichlet" else "")
        + f", data seed {data['seed']}; pooled test set: {data['pooled_test']['sequences']} sequences "
        f"({data['pooled_test']['anomalous']} anomalous), the same for every mode "
        f"(SHA-256 `{data['pooled_test']['fingerprint'][:16]}…`). F1/precision/recall/FAR at each mode's "
        f"calibrated threshold ({cal.target}"
        " on normal validation data); DR@x%FAR reads the test labels (evaluation figure only).",
        "",
        head,
        sep,
    ]
    for mode, m, note in table_rows(res):
        lines.append(f"| {mode} | " + " | ".join(_cell(m.get(k)) for k, _ in TABLE_KEYS) + f" | {note} |")
    lines.append("")
    classes = classes_in_test(data)
    if classes != "both":
        rates = ("recall", "the false-alarm rate")
        measurable, unmeasurable = rates if classes == "anomalous" else rates[::-1]
        lines += [
            f"The pooled test set holds {classes} sequences only, so AUROC and the detection rates at "
            f"fixed false-alarm rates are undefined, and {unmeasurable} at each threshold cannot be "
            f"measured on it: compare {measurable} only, each at the threshold its mode calibrated. "
            + (
                "`recall_per_round.png` takes the place of the ROC and per-round AUROC plots."
                if classes == "anomalous"
                else "There are no ROC or per-round plots."
            ),
            "",
        ]
    lines += calibration_lines(data, cal.rate, comparison["modes"], cal.confidence)
    if "federated" in res and "centralized" in res:
        fa, ca = res["federated"]["metrics"]["auroc"], res["centralized"]["metrics"]["auroc"]
        if fa is not None and ca is not None:
            lines.append(f"AUROC federated − centralized: {fa - ca:+.4f}.")
            lines.append("")
    rule = comparison["epoch_rule"]
    lines.append(f"Epoch budget: {rule['text']}")
    lines.append("")
    if "local" in res:
        lines += [
            "Local-only, per client (recall at the client's own threshold):",
            "",
            "| client | train seqs | AUROC own share | AUROC pooled | recall own share | recall pooled "
            "| best epoch |",
            "|---|---|---|---|---|---|---|",
        ]
        part = {p["partition"]: p for p in data["clients"]}
        for c in res["local"]["clients"]:
            own, pooled = c["own_test"], c["pooled_test"]
            lines.append(
                f"| {c['client']} | {part[c['client']]['train_sequences']} | {_cell(own['auroc'])} "
                f"| {_cell(pooled['auroc'])} | {_cell(own['recall'])} | {_cell(pooled['recall'])} "
                f"| {c['best_epoch']} |"
            )
        lines.append("")
    lines += ["Command:", "", "```", comparison["command"], "```", ""]
    return "\n".join(lines)


def plot_rounds(
    path: Path, rounds: list[dict[str, Any]], results: Mapping[str, Any], title: str, metric: str = "auroc"
) -> None:
    """The federation's ``metric`` per round against the other modes' final figures.

    ``metric``: ``"auroc"``, or ``"recall"`` when the test set holds one class (AUROC undefined);
    a round's recall is at each node's own threshold, the final model's at the global one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = {"auroc": "AUROC", "recall": "recall"}[metric]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if rounds:
        xs = [int(r["round"]) for r in rounds]
        ys = [float(r[metric]) if r.get(metric) is not None else np.nan for r in rounds]
        per_round = "histogram AUROC" if metric == "auroc" else "recall at the nodes' own thresholds"
        ax.plot(xs, ys, "o-", color="C0", label=f"federated (per round, {per_round})")
        if "federated" in results and results["federated"]["metrics"][metric] is not None:
            final = "exact AUROC" if metric == "auroc" else "recall at the global threshold"
            ax.plot(
                [xs[-1]],
                [results["federated"]["metrics"][metric]],
                "*",
                color="C0",
                ms=12,
                label=f"federated final model ({final})",
            )
        ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 10)])
    lines = []
    if "centralized" in results:
        lines.append((results["centralized"]["metrics"][metric], "centralized", "C1", "--"))
    if "local" in results:
        lines.append((results["local"]["pooled_mean"][metric], "local-only mean (pooled test)", "C2", ":"))
        lines.append((results["local"]["pooled_worst"][metric], "local-only worst (pooled test)", "C3", ":"))
    for y, label, color, style in lines:
        if y is not None:
            ax.axhline(y, color=color, linestyle=style, label=f"{label}: {y:.3f}")
    ax.set_xlabel("round")
    ax.set_ylabel(f"{name} on the pooled test set")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(path: Path, curves: list[tuple[str, Evaluation, dict[str, Any]]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for label, ev, style in curves:
        if ev.labels.min() == ev.labels.max():
            continue  # one class only: no ROC
        fpr, tpr, _ = roc_curve(ev.labels, ev.scores)
        auc = ev.report["auroc"]
        ax.plot(fpr, tpr, label=f"{label} ({auc:.3f})", **style)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false-alarm rate")
    ax.set_ylabel("detection rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_scores(path: Path, test: Evaluation, columns: list[tuple[str, Evaluation]]) -> None:
    import pandas as pd

    frame = pd.DataFrame({"sequence": test.ids, "label": test.labels})
    for name, ev in columns:
        if not np.array_equal(ev.ids, test.ids):
            raise AssertionError(f"{name} was scored on other sequences than the pooled test set")
        frame[name] = ev.scores
    frame.to_csv(path, index=False, float_format="%.6g")


def _git() -> dict[str, Any]:
    """Commit of the code that ran, and whether the working tree differed from it."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "modified_files": [line[3:] for line in status.splitlines() if line.strip()]}


def _versions() -> dict[str, str]:
    import flwr
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": getattr(flwr, "__version__", "?"),
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Compare federated, centralized and local-only training on the same partitions.",
    )
    p.add_argument("--config", required=True, help="TOML run config (flat dotted keys, as flwr run takes)")
    p.add_argument("--out", required=True, help="output folder (comparison.json, .md, plots)")
    p.add_argument(
        "--clients", type=positive_int, help="simulated clients (default: federation.min-nodes of the config)"
    )
    p.add_argument("--rounds", type=positive_int, help="federation.num-server-rounds")
    p.add_argument("--local-epochs", type=positive_int, help="federation.local-epochs")
    p.add_argument("--strategy", help="federation.strategy")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any run-config key (repeatable)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--engine", choices=ENGINES, default="inprocess", help="how the federation runs")
    p.add_argument(
        "--central-epochs", type=positive_int, help="epochs of centralized/local-only (default rounds x E)"
    )
    p.add_argument(
        "--work-dir", help="run directories (default runs/experiments/<out name>-<hash of its path>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the federated run committed in the work dir (e.g. after raising --rounds)",
    )
    p.add_argument(
        "--flower-timeout", type=float, default=3600.0, help="seconds for flwr run (--engine flower)"
    )
    p.add_argument("--log-level", type=log_level, default="INFO", help=f"one of {', '.join(LOG_LEVELS)}")
    return p


def run(argv: Sequence[str], args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Run the comparison; returns what ``comparison.json`` holds.

    ``args``: ``argv`` already parsed by :func:`build_parser` (``argv`` is still recorded).
    """
    args = args if args is not None else build_parser().parse_args(list(argv))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    git_info = _git()  # at the start: the code that is about to run
    t0 = time.monotonic()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"--modes: unknown {bad}; choose from {', '.join(MODES)}")
    out = output_folder(args.out)
    work_dir = output_folder(args.work_dir or default_work_dir(out), "--work-dir")
    flat = run_config_of(args)
    if "data.dataset" not in flat:
        raise ConfigError(
            f"{args.config}: no data.dataset, so this is not an experiment config (a detector config for "
            f"'seqwatch fit --config' or bench_quality?); experiment configs name their data set, as "
            f"simulations/configs/{{adfa,hdfs,openstack,synthetic}}.toml do"
        )
    clients = args.clients or int(flat.get("federation.min-nodes", 2))
    if clients < 1:
        raise ConfigError("--clients must be >= 1")
    flat["federation.min-nodes"] = clients
    flat["federation.run-dir"] = str(work_dir)
    flat["federation.run-name"] = "federated"
    cfg = parse_config(flat)  # refuses unknown or mistyped keys, as flwr run would
    fed = cfg.federation
    epochs = args.central_epochs or fed.num_server_rounds * fed.local_epochs
    set_torch_threads(cfg)
    log.info(
        "experiment: %s, %d clients (%s), modes %s, engine %s, %d rounds x %d local epochs, %d epochs",
        cfg.data.dataset,
        clients,
        cfg.data.partitioner,
        ",".join(modes),
        args.engine,
        fed.num_server_rounds,
        fed.local_epochs,
        epochs,
    )

    parts = build_partitions(cfg, clients)
    out.mkdir(parents=True, exist_ok=True)  # only once the data is there: a failed start leaves nothing
    work_dir.mkdir(parents=True, exist_ok=True)
    g = parts.test.grouped()
    test_labels = np.zeros(len(g.ids), dtype=np.int8) if g.labels is None else np.asarray(g.labels, np.int8)
    pooled_print = fingerprint(np.asarray(g.ids), test_labels)
    log.info(
        "partitions: train %s, pooled test %d sequences (%d anomalous)",
        [len(c.train) for c in parts.clients],
        len(parts.test),
        int(test_labels.sum()),
    )

    results: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []
    curves: list[tuple[str, Evaluation, dict[str, Any]]] = []
    score_cols: list[tuple[str, Evaluation]] = []
    timings: dict[str, float] = {}
    if "federated" in modes:
        t = time.monotonic()
        try:
            results["federated"], ev, rounds = run_federated(
                flat, cfg, parts, clients, work_dir, args.engine, args.flower_timeout, args.resume
            )
        except ConfigError as exc:
            if not args.resume:
                raise
            raise ConfigError(f"{exc} (here: drop --resume, or give another --work-dir)") from exc
        timings["federated"] = time.monotonic() - t
        curves.append(("federated", ev, {"color": "C0", "lw": 2}))
        score_cols.append(("federated", ev))
        with open(out / "federated_metrics.jsonl", "w", encoding="utf-8") as fh:
            for row in rounds:
                fh.write(json.dumps(row) + "\n")
    if "centralized" in modes:
        t = time.monotonic()
        results["centralized"], ev = run_centralized(cfg, parts, epochs)
        timings["centralized"] = time.monotonic() - t
        curves.append(("centralized", ev, {"color": "C1", "lw": 2, "ls": "--"}))
        score_cols.append(("centralized", ev))
    if "local" in modes:
        t = time.monotonic()
        results["local"], pooled_evs, _ = run_local(cfg, parts, epochs)
        timings["local"] = time.monotonic() - t
        for k, ev in enumerate(pooled_evs):
            curves.append((f"local-only client {k}", ev, {"color": "C2", "lw": 0.8, "alpha": 0.7}))
            score_cols.append((f"local-{k}", ev))

    prints = {name: ev.to_json()["test_fingerprint"] for name, ev in score_cols}
    if any(p != pooled_print for p in prints.values()):
        raise AssertionError(f"modes were scored on different test sequences: {prints}")

    shown = [_hide_key(a) for a in argv]
    command = shlex.join([Path(sys.executable).name, "-m", "simulations.experiment", *shown])
    config_text = Path(args.config).read_text(encoding="utf-8")
    if load_config_file(args.config).get("vocab.hash-key"):
        config_text = "<not recorded: the file sets vocab.hash-key>"
    comparison: dict[str, Any] = {
        "format": FORMAT,
        "format_version": 1,
        "command": command,
        "argv": shown,
        "cwd": str(Path.cwd()),
        "config_file": str(args.config),
        "config_file_text": config_text,
        "run_config": _redacted(to_flat(cfg)),
        "engine": args.engine,
        "clients": clients,
        "modes": modes,
        "epoch_rule": {
            "federated": f"{fed.num_server_rounds} rounds x {fed.local_epochs} local epoch(s)",
            "centralized_epochs": epochs,
            "local_epochs": epochs,
            "patience": cfg.detector.train.patience,
            "text": (
                f"federated {fed.num_server_rounds} rounds x {fed.local_epochs} local epoch(s) on every "
                f"client; centralized and local-only up to {epochs} epochs "
                + (
                    "(--central-epochs)"
                    if args.central_epochs
                    else "(rounds x local epochs: same passes over every training sequence)"
                )
                + f", with early stopping on validation loss (patience {cfg.detector.train.patience})."
            ),
        },
        "threads": cfg.detector.train.threads or 1,
        "data": {
            "dataset": cfg.data.dataset,
            "partitioner": cfg.data.partitioner,
            "alpha": cfg.data.alpha,
            "seed": cfg.data.seed,
            "clients": parts.summary(),
            "pooled_train_sequences": len(parts.train),
            "pooled_validation_sequences": len(parts.validation),
            "centralized_validation_sequences": len(parts.central_validation),
            "pooled_test": {
                "sequences": len(parts.test),
                "anomalous": int(test_labels.sum()),
                "fingerprint": pooled_print,
            },
        },
        "results": results,
        "rounds": rounds,
        "table": [
            {"mode": mode, **{k: m.get(k) for k in METRIC_KEYS}, "note": note}
            for mode, m, note in table_rows(results)
        ],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "versions": _versions(),
        "git": git_info,
        "started": started,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if "federated" in results and "centralized" in results:
        fa, ca = results["federated"]["metrics"]["auroc"], results["centralized"]["metrics"]["auroc"]
        comparison["auroc_gap_federated_minus_centralized"] = None if fa is None or ca is None else fa - ca
    # what an earlier run left in --out and this one does not write again (its plots of other modes,
    # its federated rows) would read as this run's
    for name in set(OUTPUTS) - ({"federated_metrics.jsonl"} if "federated" in results else set()):
        (out / name).unlink(missing_ok=True)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=1) + "\n", encoding="utf-8")
    (out / "comparison.md").write_text(markdown(comparison), encoding="utf-8")
    title = f"{cfg.data.dataset}, {clients} clients, {cfg.data.partitioner}" + (
        f" (α={cfg.data.alpha:g})" if cfg.data.partitioner == "dirichlet" else ""
    )
    classes = classes_in_test(comparison["data"])
    if classes == "both":
        plot_rounds(out / "auroc_per_round.png", rounds, results, title)
        plot_roc(out / "roc.png", curves, title)
    elif classes == "anomalous":  # HDFS has no normal test set: no ROC; recall per round, not AUROC
        plot_rounds(out / "recall_per_round.png", rounds, results, title, metric="recall")
    test_ev = score_cols[0][1] if score_cols else None
    if test_ev is not None:
        write_scores(out / "scores.csv", test_ev, score_cols)
    log.info("wrote %s", out)
    return comparison


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    logging.getLogger("flwr").propagate = False  # Flower's logger has its own console handler
    comparison = run(argv, args)
    print(markdown(comparison))  # the final table, for the console
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: a user mistake is one error line and exit 2 (:func:`simulations.cli.run_main`)."""
    return run_main(PROG, _main, argv, log_format=None)  # _main sets the level from --log-level


if __name__ == "__main__":
    sys.exit(main())
