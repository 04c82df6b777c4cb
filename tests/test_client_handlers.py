"""ClientApp handlers called with built Messages and Contexts, and whole federations run in-process.

``FakeGrid`` (:class:`simulations.inprocess.InProcessGrid`) stands in for
Flower's Grid: it hands every message straight to the ClientApp with the
node's :class:`~flwr.app.Context` (as the SuperNode would) and keeps every
message and reply, so tests can inspect exactly what leaves a node. No Ray,
no SuperLink: these tests are fast.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from safetensors.numpy import load_file

from client import app as client_app
from client import local
from client.data import node_data, simulation_data
from common.config import parse_config
from common.detector import SequenceDetector
from common.events import EventTable
from common.metrics import unresolved_rate
from common.model import build_model, shape_of
from common.protocol import (
    ENCODER_RECORD,
    FUSION_SCALE,
    FUSION_SHIFT,
    SetupStats,
    encoder_to_config,
    merge_setup,
)
from common.scoring import MIN_SPREAD_SEQUENCES, N_SPREAD_MOMENTS, ContextFusion
from common.tableio import write_table
from server.app import run_federation
from simulations.inprocess import InProcessGrid as FakeGrid
from simulations.inprocess import set_server_identity, sim_nodes
from simulations.synthetic import SyntheticSpec, load_synthetic

TINY = {
    "model.hidden": 12,
    "model.embed-dim": 8,
    "model.context-dim": 2,
    "model.layers": 1,
    "federation.histogram-bins": 40,
    "train.batch-size": 16,
    "federation.local-epochs": 1,
    "model.context-head": True,  # the demo data has device, channel and country: exercise that path
}
SIM = {**TINY, "data.synthetic-users": 24}
R = TypeVar("R", ArrayRecord, MetricRecord, ConfigRecord)


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    set_server_identity()


def context_for(run_config: dict[str, Any], node_config: dict[str, Any], node_id: int = 7) -> Context:
    return Context(
        run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(), run_config=run_config
    )


def instruction(content: RecordDict, message_type: str) -> Message:
    msg = Message(content, dst_node_id=7, message_type=message_type)
    msg.metadata.__dict__["_message_id"] = "ins-1"
    return msg


# Indexing a RecordDict or a record gives the union of every record or value type Flower allows:
# these narrow it where a test uses it, and fail the test when it is not the expected type.


def record(content: RecordDict, name: str, kind: type[R]) -> R:
    """The record ``name`` of a message's content, checked to be a ``kind``."""
    rec = content[name]
    if not isinstance(rec, kind):
        raise AssertionError(f"record {name!r} is a {type(rec).__name__}, not a {kind.__name__}")
    return rec


def number(rec: ConfigRecord | MetricRecord, key: str) -> float:
    """The value ``key`` of a record, checked to be one number (int or float, not bool)."""
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AssertionError(f"{key!r} is {value!r}, not a number")
    return value


def numbers(rec: ConfigRecord | MetricRecord, key: str) -> list[float]:
    """The value ``key`` of a record, checked to be a list of numbers (ints or floats, not bools)."""
    value = rec[key]
    if not isinstance(value, list):
        raise AssertionError(f"{key!r} is {value!r}, not a list")
    out = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(out) != len(value):
        raise AssertionError(f"{key!r} holds other values than numbers: {value!r}")
    return out


# --------------------------------------------------------------------------- handlers one by one


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """Set-up replies of two simulated nodes merged into the shared encoder, plus initial weights."""
    set_server_identity()
    rc = dict(SIM)
    reports = []
    for nc in sim_nodes(2):
        reply = client_app.setup(instruction(RecordDict({}), "query.setup"), context_for(rc, nc))
        reports.append(SetupStats.from_config(dict(reply.content["setup"])))
    merged = merge_setup(reports, parse_config(rc).detector.vocab)
    cfg = parse_config(rc).detector
    model = build_model(cfg.model, shape_of(merged.encoder), seed=0)
    return {
        "rc": rc,
        "reports": reports,
        "encoder": ConfigRecord(encoder_to_config(merged.encoder, merged.key_fingerprint)),
        "arrays": ArrayRecord({k: v.detach() for k, v in model.state_dict().items()}),
    }


def test_setup_handler_reports_counts_of_the_training_split(shared: dict[str, Any]) -> None:
    rc = shared["rc"]
    app_cfg = parse_config(rc)
    node = node_data(sim_nodes(2)[0], app_cfg.data)
    data = local.prepare(node, app_cfg.detector.train.validation_fraction, app_cfg.detector.train.seed)
    rep = shared["reports"][0]
    assert rep.n_sequences == len(data.train) and rep.n_events == data.train.n_events
    assert sum(rep.token_counts.values()) == data.train.n_events
    assert rep.context_names == ("device", "channel", "country")
    assert rep.numeric.names == ("amount", "gap_seconds")
    assert rep.has_test and rep.key_source == "simulation-default"


def test_prepare_without_a_hold_out_validates_on_the_training_split(caplog: pytest.LogCaptureFixture) -> None:
    app_cfg = parse_config(dict(SIM))
    node = node_data(sim_nodes(2)[0], app_cfg.data)
    with caplog.at_level("WARNING"):
        data = local.prepare(node, 0.0, 0)
    assert data.validation is data.train and len(data.train) == len(node.train)
    assert "train.validation-fraction = 0" in caplog.text


def test_train_handler_replies_weights_and_training_events(shared: dict[str, Any]) -> None:
    content = RecordDict(
        {
            "arrays": shared["arrays"],
            ENCODER_RECORD: shared["encoder"],
            "config": ConfigRecord({"local-epochs": 1, "proximal-mu": 0.1, "server-round": 2}),
        }
    )
    ctx = context_for(shared["rc"], sim_nodes(2)[1])
    reply = client_app.train(instruction(content, "train"), ctx)
    arrays = record(reply.content, "arrays", ArrayRecord)
    assert set(arrays) == set(shared["arrays"])
    for k in arrays:
        assert arrays[k].shape == shared["arrays"][k].shape
    m = record(reply.content, "metrics", MetricRecord)
    assert m["num-examples"] == shared["reports"][1].n_events
    assert np.isfinite(number(m, "train-loss")) and number(m, "train-loss") > 0
    # weights moved
    w0, w1 = shared["arrays"]["event_head.weight"].numpy(), arrays["event_head.weight"].numpy()
    assert not np.allclose(w0, w1)
    # the same node repeats its round exactly, whatever node id the simulation gave its partition
    again = record(client_app.train(instruction(content, "train"), ctx).content, "arrays", ArrayRecord)
    np.testing.assert_array_equal(again["event_head.weight"].numpy(), w1)
    other_ctx = context_for(shared["rc"], sim_nodes(2)[1], node_id=8)
    other = record(client_app.train(instruction(content, "train"), other_ctx).content, "arrays", ArrayRecord)
    np.testing.assert_array_equal(other["event_head.weight"].numpy(), w1)
    # another round draws another random stream
    record(content, "config", ConfigRecord)["server-round"] = 3
    later = record(client_app.train(instruction(content, "train"), ctx).content, "arrays", ArrayRecord)
    assert not np.allclose(later["event_head.weight"].numpy(), w1)


def test_evaluate_and_calibration_handlers(shared: dict[str, Any]) -> None:
    ctx = context_for(shared["rc"], sim_nodes(2)[0])
    base = {"arrays": shared["arrays"], ENCODER_RECORD: shared["encoder"]}
    ev = client_app.evaluate(
        instruction(RecordDict({**base, "config": ConfigRecord({"hist-bins": 40})}), "evaluate"), ctx
    )
    m = record(ev.content, "metrics", MetricRecord)
    assert len(numbers(m, "hist-normal")) == len(numbers(m, "hist-anomalous")) == 800
    tp, fp, tn, fn = (number(m, k) for k in ("tp", "fp", "tn", "fn"))
    assert tp + fp + tn + fn == number(m, "test-sequences") > 0
    assert sum(numbers(m, "hist-normal")) + sum(numbers(m, "hist-anomalous")) == number(m, "test-sequences")
    assert number(m, "num-examples") > 0 and number(m, "val-loss") > 0
    spread = client_app.calib_spread(
        instruction(RecordDict({**base, "config": ConfigRecord({})}), "query.calib_spread"), ctx
    )
    spread_metrics = record(spread.content, "metrics", MetricRecord)
    moments = numbers(spread_metrics, "spread-moments")
    assert len(moments) == N_SPREAD_MOMENTS and moments[0] == number(spread_metrics, "num-examples") > 0
    hist = client_app.calib_hist(
        instruction(
            RecordDict({**base, "config": ConfigRecord({"hist-bins": 40, "end-weight": 0.5})}),
            "query.calib_hist",
        ),
        ctx,
    )
    hist_metrics = record(hist.content, "metrics", MetricRecord)
    counts = numbers(hist_metrics, "hist")
    assert len(counts) == 800 and sum(counts) == number(hist_metrics, "num-examples") == moments[0]
    heavier_reply = client_app.calib_hist(
        instruction(
            RecordDict({**base, "config": ConfigRecord({"hist-bins": 40, "end-weight": 5.0})}),
            "query.calib_hist",
        ),
        ctx,
    )
    heavier = numbers(record(heavier_reply.content, "metrics", MetricRecord), "hist")
    # a larger END weight moves every validation score up: the histogram's mass shifts right
    assert _mean_bin(heavier) > _mean_bin(counts)
    # the federation's context fusion reaches the scores (the demo data has device, channel, country)
    fused_conf = ConfigRecord({"hist-bins": 40, "end-weight": 0.5, FUSION_SHIFT: 50.0, FUSION_SCALE: 1.0})
    fused_reply = client_app.calib_hist(
        instruction(RecordDict({**base, "config": fused_conf}), "query.calib_hist"), ctx
    )
    fused = numbers(record(fused_reply.content, "metrics", MetricRecord), "hist")
    assert sum(fused) == sum(counts) and _mean_bin(fused) > _mean_bin(counts)
    half = ConfigRecord({"hist-bins": 40, "end-weight": 0.5, FUSION_SHIFT: 1.0})
    with pytest.raises(RuntimeError, match="without its pair"):
        client_app.calib_hist(instruction(RecordDict({**base, "config": half}), "query.calib_hist"), ctx)


def _mean_bin(counts: list[float]) -> float:
    return float(np.dot(np.arange(len(counts)), counts) / sum(counts))


def test_handler_errors_do_not_leak_data(tmp_path: Path) -> None:
    bad = tmp_path / "train.csv"
    bad.write_text("sequence,order,event,label\ns1,0,zqsecret_tok,0\ns1,1,zqsecret_tok,zqsecretlabel\n")
    ctx = context_for(dict(TINY), {"data-path": str(tmp_path), "hash-key": "k"})
    with pytest.raises(RuntimeError) as info:
        client_app.setup(instruction(RecordDict({}), "query.setup"), ctx)
    assert "zqsecret" not in str(info.value) and "DataError" in str(info.value)


def test_node_with_another_hash_key_is_refused(shared: dict[str, Any]) -> None:
    nc = {**sim_nodes(2)[0], "hash-key": "not-the-federation-key"}
    content = RecordDict(
        {
            "arrays": shared["arrays"],
            ENCODER_RECORD: shared["encoder"],
            "config": ConfigRecord({"local-epochs": 1}),
        }
    )
    with pytest.raises(RuntimeError, match="hash key differs"):
        client_app.train(instruction(content, "train"), context_for(shared["rc"], nc))
    with pytest.raises(RuntimeError, match="encoder"):
        client_app.train(
            instruction(RecordDict({"arrays": shared["arrays"]}), "train"), context_for(shared["rc"], nc)
        )


# --------------------------------------------------------------------------- privacy


def distinctive_nodes(tmp_path: Path, n: int) -> tuple[list[dict[str, Any]], set[str]]:
    """Deployment-style node folders whose raw tokens, context values and ids all start with 'zq'."""
    tables = load_synthetic(SyntheticSpec(institutions=n, users=8 * n, seed=5))
    raw: set[str] = set()
    nodes = []
    for i in range(n):
        folder = tmp_path / f"node{i}"
        for split, table in tables.items():
            f = table.frame.copy()
            f = f[f["sequence"].str.startswith(f"inst{i}-")].reset_index(drop=True)
            f["sequence"] = "zqseq_" + f["sequence"].astype(str)
            f["event"] = "zqtok_" + f["event"].astype(str)
            for c in table.context:
                f[c] = "zqctx_" + f[c].astype(str)
            t = EventTable(f, numeric=table.numeric, context=table.context, time_ordered=table.time_ordered)
            write_table(t, folder / f"{split}.csv")
            for col in ("sequence", "event", *table.context):
                raw.update(map(str, f[col].unique()))
        nodes.append(
            {
                "data-path": str(folder),
                "hash-key": "institutions-secret",
                "output-dir": str(tmp_path / f"out{i}"),
            }
        )
    return nodes, raw


def strings_in(content: RecordDict) -> Iterator[str]:
    """Every string in a message's records; numbers and arrays are checked to be numeric."""
    for name, record in content.items():
        yield name
        if isinstance(record, ConfigRecord):
            for key, value in record.items():
                yield key
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str):
                        yield v
                    elif isinstance(v, bytes):
                        yield v.decode("latin-1")
        elif isinstance(record, MetricRecord):
            for key, value in record.items():
                yield key
                for v in value if isinstance(value, list) else [value]:
                    assert isinstance(v, (int, float)), (name, key)
        elif isinstance(record, ArrayRecord):
            for key, arr in record.items():
                yield key
                assert arr.numpy().dtype.kind == "f", (name, key)
        else:  # pragma: no cover
            raise AssertionError(f"unexpected record {name}: {type(record)}")


def test_no_raw_token_or_sequence_content_leaves_a_client(tmp_path: Path) -> None:
    nodes, raw = distinctive_nodes(tmp_path, 2)
    rc = {
        **TINY,
        "federation.num-server-rounds": 1,
        "federation.run-dir": str(tmp_path / "runs"),
        "federation.run-name": "privacy",
    }
    grid = FakeGrid(rc, nodes)
    final = run_federation(grid, parse_config(rc))
    assert final["report"]["test_sequences"] > 0
    kinds = {r.metadata.message_type for r in grid.replies}
    assert kinds == {
        "query.setup",
        "train",
        "evaluate",
        "query.calib_spread",
        "query.calib_hist",
        "query.report",
    }
    assert not any(r.has_error() for r in grid.replies)
    for reply in grid.replies:
        for s in strings_in(reply.content):
            assert "zq" not in s, (reply.metadata.message_type, s[:80])
            assert s not in raw
    # the data really held those tokens, and each node's own report (local files) keeps them
    assert any(t.startswith("zqtok_") for t in raw)
    for nc in nodes:
        scores = (Path(nc["output-dir"]) / "scores.csv").read_text()
        assert "zqseq_" in scores and "zqtok_" in scores


# --------------------------------------------------------------------------- whole federations in-process


def run_in_process(
    tmp_path: Path, name: str, rounds: int, *, users: int = SIM["data.synthetic-users"], **kw: Any
) -> tuple[FakeGrid, dict[str, Any]]:
    rc = {
        **SIM,
        "data.synthetic-users": users,
        "federation.num-server-rounds": rounds,
        "federation.run-dir": str(tmp_path),
        "federation.run-name": name,
    }
    grid = FakeGrid(rc, sim_nodes(2), **kw)
    return grid, run_federation(grid, parse_config(rc))


def train_rounds(grid: FakeGrid) -> list[int]:
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    return sorted({int(number(record(m.content, "config", ConfigRecord), "server-round")) for m in train})


def test_federation_writes_run_dir_and_loadable_model(tmp_path: Path) -> None:
    grid, final = run_in_process(tmp_path, "full", 2, users=64)  # enough validation to fit the END weight
    run = tmp_path / "full"
    assert final["calibration"]["validation_sequences"] >= MIN_SPREAD_SEQUENCES
    assert train_rounds(grid) == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").glob("round-*")) == [
        "round-0001.safetensors",
        "round-0002.safetensors",
    ]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and all(r["eval-nodes"] == 2 for r in rows)
    assert json.loads((run / "final.json").read_text())["rounds_completed"] == 2
    rep = final["report"]
    per_node = rep["per_node"]
    assert rep["global_threshold"]["tp"] == sum(n["global"]["tp"] for n in per_node)
    g = rep["global_threshold"]
    assert g["tp"] + g["fp"] + g["tn"] + g["fn"] == rep["test_sequences"]
    # the global model scores with the simulation key; the local reports agree with the replies
    det = SequenceDetector.load(run / "model")
    assert det.global_threshold_ == pytest.approx(final["calibration"]["global_threshold"])
    # the END weight was fitted on the pooled validation moments and travels with the model
    weight = final["calibration"]["end_weight"]
    assert weight != det.config.score.end_weight and det.end_weight_ == pytest.approx(weight)
    # every round is evaluated with the federation's END weight under that round's weights: the last
    # round's model is the final one, so its weight and AUROC are the final ones
    assert all(r["end-weight"] > 0 for r in rows) and rows[-1]["end-weight"] == pytest.approx(weight)
    assert rows[-1]["auroc"] == pytest.approx(rep["auroc_histogram"])
    # the context fusion likewise (the demo data has device, channel and country)
    fusion = ContextFusion.from_dict(final["calibration"]["context_fusion"])
    assert fusion is not None and det.context_fusion_ == fusion
    assert rows[-1]["context-scale"] == pytest.approx(fusion.scale)
    assert rows[-1]["context-shift"] == pytest.approx(fusion.shift)
    # ... so calibration reuses the last round's fit: one spread query per node and round, none more
    spread = [m for m in grid.sent if m.metadata.message_type == "query.calib_spread"]
    assert len(spread) == 2 * 2
    for pid in (0, 1):
        d = run / "clients" / f"partition-{pid}"
        metrics = json.loads((d / "metrics.json").read_text())
        local_det = SequenceDetector.load(d / "model")
        assert local_det.global_threshold_ == pytest.approx(final["calibration"]["global_threshold"])
        assert local_det.end_weight_ == pytest.approx(weight) and local_det.context_fusion_ == fusion
        assert (d / "scores.csv").is_file() and "global" in metrics and "local" in metrics
        # a node with too few validation sequences for the target rate is told so in its report
        far = parse_config({**SIM}).detector.calibration.false_alarm_rate
        assert metrics["validation_sequences"] * far < 1  # tiny nodes: the note must be there
        assert metrics["local_threshold_note"] == unresolved_rate(metrics["validation_sequences"], far)
    totals = {
        k: sum(
            json.loads((run / f"clients/partition-{p}/metrics.json").read_text())["global"][k] for p in (0, 1)
        )
        for k in ("tp", "fp", "tn", "fn")
    }
    assert totals == {k: g[k] for k in totals}
    test_table = load_synthetic(SyntheticSpec(institutions=2, users=64, seed=0))["test"]
    scores = det.decision_function(test_table)
    assert np.isfinite(scores).all()


def test_seqwatch_score_on_a_federated_model_gives_the_figures_the_run_reported(tmp_path: Path) -> None:
    """What an institution gets from ``seqwatch score`` on its own test file with the model the
    federation left it is what its report (and so the federation's totals) said, at both thresholds."""
    from client.cli import main as seqwatch

    run_in_process(tmp_path, "cli", 2, users=64)
    run = tmp_path / "cli"
    test = simulation_data(0, 2, parse_config({**SIM, "data.synthetic-users": 64}).data).test
    assert test is not None
    data = write_table(test, tmp_path / "alpha-test.csv")
    report = json.loads((run / "clients" / "partition-0" / "metrics.json").read_text())
    counts = ("tp", "fp", "tn", "fn")
    # the institution's model directory holds both thresholds; the federation's holds the global one
    for model, which in [
        (run / "clients" / "partition-0" / "model", "local"),
        (run / "clients" / "partition-0" / "model", "global"),
        (run / "model", "global"),
    ]:
        out = tmp_path / "metrics.json"
        argv = ["-q", "score", "--model", str(model), "--data", str(data), "--threshold", which]
        assert seqwatch([*argv, "--out", str(tmp_path / "scores.csv"), "--metrics-json", str(out)]) == 0
        got = json.loads(out.read_text())
        assert {k: got[k] for k in counts} == {k: report[which][k] for k in counts}, (model, which)
        assert got["threshold"] == pytest.approx(report[which]["threshold"])
        assert got["auroc"] == pytest.approx(report[which]["auroc"])


def test_a_simulated_federation_repeats_itself(tmp_path: Path) -> None:
    """Same config, same nodes: the same node order every round and bit-identical global weights
    (Flower samples nodes with Python's `random`, which the ServerApp seeds)."""
    outcomes = []
    for name in ("a", "b"):
        random.seed(None)  # whatever state the process is in
        rc = {
            **SIM,
            "federation.num-server-rounds": 2,
            "federation.run-dir": str(tmp_path),
            "federation.run-name": name,
        }
        grid = FakeGrid(rc, sim_nodes(4))
        run_federation(grid, parse_config(rc))
        order = [int(m.metadata.dst_node_id) for m in grid.sent if m.metadata.message_type == "train"]
        outcomes.append((order, load_file(str(tmp_path / name / "checkpoints" / "round-0002.safetensors"))))
    (order_a, w_a), (order_b, w_b) = outcomes
    assert order_a == order_b and len(order_a) == 8
    assert w_a.keys() == w_b.keys() and all(np.array_equal(w_a[k], w_b[k]) for k in w_a)


def test_node_seed_is_the_partition_in_a_simulation_and_the_node_id_in_a_deployment() -> None:
    def ctx(node_config: dict[str, Any]) -> Context:
        return Context(
            run_id=1, node_id=987654321, node_config=node_config, state=RecordDict(), run_config={}
        )

    assert client_app.node_seed(ctx({"partition-id": 3, "num-partitions": 4})) == 3
    assert client_app.node_seed(ctx({"data-path": "/srv/bank"})) == 987654321


class RayLikeGrid(FakeGrid):
    """Other node ids and the replies in another order, as each `flwr run` under Ray has them."""

    def __init__(self, run_config: dict[str, Any], node_configs: list[dict[str, Any]], id_offset: int):
        super().__init__(run_config, node_configs)
        self.contexts = {
            nid + id_offset: Context(
                run_id=c.run_id,
                node_id=nid + id_offset,
                node_config=c.node_config,
                state=c.state,
                run_config=c.run_config,
            )
            for nid, c in self.contexts.items()
        }

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        return super().send_and_receive(messages, timeout=timeout)[::-1]


def test_a_simulated_federation_does_not_depend_on_node_ids_or_reply_order(tmp_path: Path) -> None:
    """Flower's simulation draws node ids at random and replies come as nodes finish: the
    nodes seed their training by partition and the server sums replies in a fixed order."""
    outcomes = []
    for name, grid_of in (
        ("plain", lambda rc: FakeGrid(rc, sim_nodes(3))),
        ("ray-like", lambda rc: RayLikeGrid(rc, sim_nodes(3), id_offset=7919)),
    ):
        rc = {
            **SIM,
            "federation.num-server-rounds": 2,
            "federation.run-dir": str(tmp_path),
            "federation.run-name": name,
        }
        final = run_federation(grid_of(rc), parse_config(rc))
        weights = load_file(str(tmp_path / name / "checkpoints" / "round-0002.safetensors"))
        outcomes.append((weights, final["calibration"]))
    (w_a, cal_a), (w_b, cal_b) = outcomes
    assert all(np.array_equal(w_a[k], w_b[k]) for k in w_a)
    assert cal_a == cal_b  # END weight and global threshold too


def test_resume_runs_only_the_missing_rounds(tmp_path: Path) -> None:
    run_in_process(tmp_path, "res", 2)
    first = (tmp_path / "res/checkpoints/round-0002.safetensors").read_bytes()
    grid, final = run_in_process(tmp_path, "res", 3)
    assert train_rounds(grid) == [3]
    assert not any(m.metadata.message_type == "query.setup" for m in grid.sent)
    rows = [json.loads(line)["round"] for line in (tmp_path / "res/metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]
    assert (tmp_path / "res/checkpoints/round-0002.safetensors").read_bytes() == first
    assert final["rounds_completed"] == 3 and final["resumed_after_round"] == 2
    # already complete: no training, calibration and report again
    grid, final = run_in_process(tmp_path, "res", 3)
    assert train_rounds(grid) == [] and final["rounds_completed"] == 3


def test_resume_after_a_crash_mid_round(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_in_process(tmp_path, "crash", 3, fail_on=("evaluate", 2))
    state = json.loads((tmp_path / "crash/state.json").read_text())
    assert state["last_round"] == 1
    grid, _ = run_in_process(tmp_path, "crash", 3)
    assert train_rounds(grid) == [2, 3]
    rows = [json.loads(line)["round"] for line in (tmp_path / "crash/metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]
    csv_rounds = [
        line.split(",")[0] for line in (tmp_path / "crash/metrics.csv").read_text().splitlines()[1:]
    ]
    assert csv_rounds == ["1", "2", "3"]


def test_resume_with_another_strategy_says_the_model_mixes_two(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_in_process(tmp_path, "mix", 1)
    rc = {
        **SIM,
        "federation.strategy": "fedmedian",
        "federation.num-server-rounds": 2,
        "federation.run-dir": str(tmp_path),
        "federation.run-name": "mix",
    }
    with caplog.at_level(logging.WARNING):
        run_federation(FakeGrid(rc, sim_nodes(2)), parse_config(rc))
    assert "resuming with changed federation.strategy 'fedavg' -> 'fedmedian': rounds 1-1 ran" in caplog.text


def test_resume_refuses_another_model_shape(tmp_path: Path) -> None:
    run_in_process(tmp_path, "shape", 1)
    rc = {
        **SIM,
        "model.hidden": 20,
        "federation.num-server-rounds": 2,
        "federation.run-dir": str(tmp_path),
        "federation.run-name": "shape",
    }
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.hidden"):
        run_federation(FakeGrid(rc, sim_nodes(2)), parse_config(rc))


def test_a_run_started_before_a_model_key_existed_resumes_with_its_old_value(tmp_path: Path) -> None:
    from common.errors import ConfigError

    newer = ("model.numeric-given-event", "model.context-previous", "model.context-detached")
    old_head = {**SIM, **dict.fromkeys(newer, False), "federation.run-dir": str(tmp_path)}
    rc = {**old_head, "federation.num-server-rounds": 1, "federation.run-name": "old"}
    run_federation(FakeGrid(rc, sim_nodes(2)), parse_config(rc))
    setup_path = tmp_path / "old" / "setup.json"
    setup = json.loads(setup_path.read_text(encoding="utf-8"))
    for key in newer:  # as a run of an earlier release wrote it
        del setup["config"][key]
    setup_path.write_text(json.dumps(setup), encoding="utf-8")
    now = {
        **SIM,
        "federation.run-dir": str(tmp_path),
        "federation.num-server-rounds": 2,
        "federation.run-name": "old",
    }
    with pytest.raises(ConfigError, match=r"'model\.numeric-given-event': \(False, True\)") as err:
        run_federation(FakeGrid(now, sim_nodes(2)), parse_config(now))
    assert "'model.context-previous': (False, True)" in str(err.value)
    again = {**now, **dict.fromkeys(newer, False)}
    grid = FakeGrid(again, sim_nodes(2))
    assert run_federation(grid, parse_config(again))["resumed_after_round"] == 1
    # keys that act only with the context head: a run without it resumes whatever they say
    plain = {
        **SIM,
        "model.context-head": False,
        "federation.run-dir": str(tmp_path),
        "federation.run-name": "plain",
    }
    run_federation(
        FakeGrid({**plain, "federation.num-server-rounds": 1}, sim_nodes(2)),
        parse_config({**plain, "federation.num-server-rounds": 1}),
    )
    setup_path = tmp_path / "plain" / "setup.json"
    setup = json.loads(setup_path.read_text(encoding="utf-8"))
    del setup["config"]["model.context-previous"], setup["config"]["model.context-detached"]
    setup_path.write_text(json.dumps(setup), encoding="utf-8")
    resumed = {**plain, "federation.num-server-rounds": 2}
    assert run_federation(FakeGrid(resumed, sim_nodes(2)), parse_config(resumed))["resumed_after_round"] == 1


def test_deployment_data_folder_is_read_with_inferred_columns(tmp_path: Path) -> None:
    nodes, _ = distinctive_nodes(tmp_path, 1)
    node = node_data(nodes[0], parse_config({}).data)
    assert node.train.numeric == ("amount", "gap_seconds") and node.train.time_ordered
    assert node.train.context == ("device", "channel", "country")
    assert node.test is not None and node.test.has_labels


@pytest.mark.parametrize("strategy", ["fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum"])
def test_every_strategy_runs_a_round_in_process(tmp_path: Path, strategy: str) -> None:
    rc = {
        **SIM,
        "federation.strategy": strategy,
        "federation.proximal-mu": 0.05,
        "federation.num-server-rounds": 1,
        "federation.run-dir": str(tmp_path),
        "federation.run-name": strategy,
    }
    grid = FakeGrid(rc, sim_nodes(3))
    final = run_federation(grid, parse_config(rc))
    assert final["strategy"] == strategy and final["rounds_completed"] == 1
    assert not any(r.has_error() for r in grid.replies)
    mus = {m.content["config"]["proximal-mu"] for m in grid.sent if m.metadata.message_type == "train"}
    assert mus == ({0.05} if strategy == "fedprox" else {0.0})
    assert SequenceDetector.load(tmp_path / strategy / "model").is_fitted
    if strategy == "fedadam":
        assert (tmp_path / strategy / "checkpoints/round-0001.strategy.safetensors").is_file()


def test_a_deployment_node_without_a_hash_key_refuses_to_run(tmp_path: Path) -> None:
    """Outside a simulation the public simulation key would let the coordinator read event names."""
    from client.app import load_node
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="no hash key"):
        load_node(context_for(dict(SIM), {"data-path": str(tmp_path)}))
    # with a key the node goes on to its data (here: none, so a data error, not the key)
    with pytest.raises(Exception, match="train") as raised:
        load_node(context_for(dict(SIM), {"data-path": str(tmp_path), "hash-key": "s3cret"}))
    assert not isinstance(raised.value, ConfigError) or "hash key" not in str(raised.value)
