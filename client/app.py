"""seqwatch ClientApp: thin handlers that unpack a message, call :mod:`client.local`, pack the reply.

Message types (the ServerApp in :mod:`server.app` sends them in this order):

======================  ===========================================================
``query.setup``         reply ConfigRecord ``setup``: keyed-hash token / category
                        counts, numeric feature statistics, feature names, key
                        fingerprint (:class:`common.protocol.SetupStats`)
``train``               local epochs from the global weights; reply ``arrays`` +
                        MetricRecord ``train-loss``, ``num-examples`` (training events),
                        ``compute-seconds`` (wall time of the handler)
``evaluate``            reply ``val-loss``, ``num-examples`` (validation events),
                        ``compute-seconds`` (wall time of the handler),
                        ``tp fp tn fn`` at the local threshold (fitted on local
                        validation; END weight ``end-weight`` and context fusion
                        ``context-shift`` / ``context-scale`` when the message
                        has them, else fitted locally too), ``hist-normal`` /
                        ``hist-anomalous`` on the fixed edges
                        ``round_edges(hist-bins)``
``query.calib_spread``  reply ``spread-moments`` of the parts of the validation
                        scores (:func:`common.scoring.spread_moments`), from
                        which the server fits the END weight and the context
                        fusion: before each round's ``evaluate`` and before
                        calibration (only sent when ``score.fit-end-weight``
                        applies or the model has a context head)
``query.calib_hist``    reply ``hist`` of validation scores (with ``end-weight``
                        and the context fusion)
                        on the fixed edges ``round_edges(hist-bins)``
``query.report``        write the local report into ``output-dir``; reply confusion
                        counts at the local and the global threshold + histograms
======================  ===========================================================

Every message after set-up carries the shared encoder in a ConfigRecord named
``encoder`` (see :func:`common.protocol.encoder_to_config`), so a fresh ``flwr-clientapp``
process can serve any message. Replies hold only hashed tokens, counts,
statistics and weights. Errors are logged here in full and reach the server
only as their type (a data error's text could quote raw data).

Node config: ``data-path`` (deployment data, see :mod:`client.data`),
``hash-key`` (the institutions' shared secret; else run config
``vocab.hash-key``, else, in a simulation only, the public simulation key), ``output-dir``
(local report).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import local
from client.data import describe, is_simulation, node_data
from common.config import AppConfig, DetectorConfig, parse_config
from common.errors import ConfigError
from common.protocol import (
    ENCODER_RECORD,
    encoder_from_config,
    fusion_from_config,
    resolve_hash_key,
    round_edges,
)

log = logging.getLogger(__name__)

app = ClientApp()

_warned_default_key = False


@dataclass
class Node:
    """Everything a handler needs about this node."""

    app_config: AppConfig
    cfg: DetectorConfig
    data: local.LocalData
    hash_key: str
    key_source: str
    simulation: bool


@contextmanager
def _guard(phase: str) -> Iterator[None]:
    """Log failures locally in full; let only a sanitised message leave the node."""
    try:
        yield
    except ConfigError as exc:
        log.exception("seqwatch client: %s failed", phase)
        raise RuntimeError(f"seqwatch client {phase} failed: {exc}") from None
    except Exception as exc:
        log.exception("seqwatch client: %s failed", phase)
        raise RuntimeError(
            f"seqwatch client {phase} failed: {type(exc).__name__} (details in the node's log)"
        ) from None


def load_node(context: Context) -> Node:
    """Parse the run config, resolve the hash key and load this node's (cached) data."""
    global _warned_default_key
    app_config = parse_config(context.run_config)
    key, source = resolve_hash_key(context.node_config.get("hash-key"), app_config.detector.vocab.hash_key)
    simulation = is_simulation(context.node_config)
    if source == "simulation-default" and not simulation:
        # the simulation key is public: the coordinator could hash a dictionary of event names with it
        raise ConfigError(
            "no hash key (node config 'hash-key', e.g. seqwatch-node --hash-key-file, or run config "
            "'vocab.hash-key'): this node does not send event tokens hashed with the public simulation key"
        )
    if source == "simulation-default" and not _warned_default_key:
        _warned_default_key = True
        log.info("no hash key set: simulated nodes use the public simulation key")
    cfg = local.local_config(app_config.detector, key, simulation=simulation)
    node = node_data(context.node_config, app_config.data)
    data = local.prepare(node, cfg.train.validation_fraction, cfg.train.seed)
    return Node(app_config, cfg, data, key, source, simulation)


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get("config", ConfigRecord())


def _encoder(msg: Message, node: Node) -> Any:
    record = msg.content.config_records.get(ENCODER_RECORD)
    if record is None:
        raise ConfigError(f"message lacks the '{ENCODER_RECORD}' record (the shared encoder)")
    return encoder_from_config(record, node.hash_key)


def _state(msg: Message) -> dict[str, Any]:
    return msg.content.array_records["arrays"].to_torch_state_dict()


def _number(conf: ConfigRecord, key: str, default: float | None = None) -> float:
    """A numeric config value (ConfigError when missing without default, or not a number)."""
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"message config '{key}' must be a number, got {value!r}")
    return float(value)


def _edges(conf: ConfigRecord) -> np.ndarray:
    """The fixed histogram edges :func:`round_edges` for the message's ``hist-bins``."""
    if "hist-bins" not in conf:
        raise ConfigError("message lacks 'hist-bins'")
    return round_edges(int(_number(conf, "hist-bins")))


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


@app.query("setup")
def setup(msg: Message, context: Context) -> Message:
    """Hashed counts and feature statistics of the local training split."""
    with _guard("setup"):
        node = load_node(context)
        stats = local.setup_statistics(node.data, node.hash_key, node.key_source)
        log.info("setup: %s", describe(node_data(context.node_config, node.app_config.data)))
        return _reply(msg, setup=ConfigRecord(stats.to_config()))


def node_seed(context: Context) -> int:
    """What tells this node's random stream apart: its partition in a simulation, else its node id.

    Flower draws simulated node ids at random for every run; the partition is what
    stays the same, so a simulated run repeats itself from one ``flwr run`` to the next.
    """
    if is_simulation(context.node_config):
        return int(context.node_config["partition-id"])
    return int(context.node_id)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local epochs from the global weights."""
    t0 = time.perf_counter()
    with _guard("train"):
        node = load_node(context)
        conf = _config(msg)
        encoder = _encoder(msg, node)
        out = local.train_round(
            node.cfg,
            encoder,
            _state(msg),
            node.data,
            epochs=int(_number(conf, "local-epochs", node.app_config.federation.local_epochs)),
            proximal_mu=_number(conf, "proximal-mu", 0.0),
            server_round=int(_number(conf, "server-round", 1)),
            node_seed=node_seed(context),
        )
        return _reply(
            msg,
            arrays=ArrayRecord(out.state),
            metrics=MetricRecord(
                {
                    "train-loss": float(out.loss),
                    "num-examples": int(out.n_events),
                    "train-sequences": int(out.n_sequences),
                    "compute-seconds": time.perf_counter() - t0,
                }
            ),
        )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Validation loss, and detection counts + score histograms on labelled test data."""
    t0 = time.perf_counter()
    with _guard("evaluate"):
        node = load_node(context)
        conf = _config(msg)
        encoder = _encoder(msg, node)
        end_weight = _number(conf, "end-weight") if "end-weight" in conf else None
        out = local.evaluate_round(
            node.cfg,
            encoder,
            _state(msg),
            node.data,
            _edges(conf),
            end_weight=end_weight,
            context_fusion=fusion_from_config(conf) if end_weight is not None else None,
        )
        c = out.confusion
        return _reply(
            msg,
            metrics=MetricRecord(
                {
                    "val-loss": float(out.val_loss),
                    "num-examples": int(out.val_events),
                    "tp": int(c.tp),
                    "fp": int(c.fp),
                    "tn": int(c.tn),
                    "fn": int(c.fn),
                    "hist-normal": [int(x) for x in out.hist_normal],
                    "hist-anomalous": [int(x) for x in out.hist_anomalous],
                    "test-sequences": int(out.test_sequences),
                    "compute-seconds": time.perf_counter() - t0,
                }
            ),
        )


@app.query("calib_spread")
def calib_spread(msg: Message, context: Context) -> Message:
    """Moments of the validation scores' two parts under the global weights (for the END weight)."""
    with _guard("calib_spread"):
        node = load_node(context)
        encoder = _encoder(msg, node)
        moments = local.calibration_spread(node.cfg, encoder, _state(msg), node.data)
        return _reply(msg, metrics=MetricRecord({"spread-moments": moments, "num-examples": int(moments[0])}))


def _end_weight(conf: ConfigRecord, node: Node) -> float:
    return _number(conf, "end-weight", node.cfg.score.end_weight)


@app.query("calib_hist")
def calib_hist(msg: Message, context: Context) -> Message:
    """Validation-score histogram under the global weights on the fixed edges."""
    with _guard("calib_hist"):
        node = load_node(context)
        conf = _config(msg)
        encoder = _encoder(msg, node)
        edges = _edges(conf)
        counts = local.calibration_histogram(
            node.cfg,
            encoder,
            _state(msg),
            node.data,
            edges,
            end_weight=_end_weight(conf, node),
            context_fusion=fusion_from_config(conf),
        )
        return _reply(msg, metrics=MetricRecord({"hist": counts, "num-examples": int(sum(counts))}))


def output_dir(context: Context, conf: ConfigRecord) -> Path:
    """Node config ``output-dir``; in simulation ``<run path>/clients/partition-<id>``."""
    given = context.node_config.get("output-dir")
    if isinstance(given, str) and given:
        return Path(given).expanduser()
    run_name = str(conf.get("run-name", "default"))
    if is_simulation(context.node_config) and conf.get("run-path"):
        return (
            Path(str(conf["run-path"])) / "clients" / f"partition-{int(context.node_config['partition-id'])}"
        )
    out = Path("seqwatch-output") / run_name / f"node-{context.node_id}"
    log.warning("no node config 'output-dir'; writing the local report to %s", out.resolve())
    return out


@app.query("report")
def report(msg: Message, context: Context) -> Message:
    """Write the local report; reply confusion counts at both thresholds and score histograms."""
    with _guard("report"):
        node = load_node(context)
        conf = _config(msg)
        encoder = _encoder(msg, node)
        out = local.final_report(
            node.cfg,
            encoder,
            _state(msg),
            node.data,
            global_threshold=_number(conf, "global-threshold"),
            end_weight=_end_weight(conf, node),
            context_fusion=fusion_from_config(conf),
            edges=_edges(conf),
            output_dir=output_dir(context, conf),
            extra={"run_name": str(conf.get("run-name", "")), "hash_key_source": node.key_source},
        )
        log.info("local report written to %s", out.output_dir)
        values: dict[str, Any] = {
            "hist-normal": [int(x) for x in out.hist_normal],
            "hist-anomalous": [int(x) for x in out.hist_anomalous],
            "test-sequences": int(out.test_sequences),
            "test-events": int(out.test_events),
            "unknown-events": int(out.unknown_events),
            "num-examples": int(out.test_sequences),
        }
        for prefix, c in (("local", out.local), ("global", out.global_)):
            values.update(
                {f"{prefix}-tp": c.tp, f"{prefix}-fp": c.fp, f"{prefix}-tn": c.tn, f"{prefix}-fn": c.fn}
            )
        return _reply(
            msg, metrics=MetricRecord({k: v if isinstance(v, list) else int(v) for k, v in values.items()})
        )
