"""Units of the federation: set-up merging, encoder on the wire, strategy hooks, run directory."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from helpers import StubGrid, strategy_of

from common.config import FederationConfig, VocabConfig
from common.errors import ConfigError
from common.events import EventTable
from common.metrics import confusion_at, roc_auc_from_histograms, threshold_from_histogram
from common.protocol import (
    SIMULATION_HASH_KEY,
    SetupStats,
    count_categories,
    encoder_from_config,
    encoder_to_config,
    key_fingerprint,
    merge_setup,
    resolve_hash_key,
    round_edges,
)
from common.scaling import FeatureStats, Scaler
from common.vocab import ContextVocabulary, TokenHasher, Vocabulary
from server.rundir import METRIC_COLUMNS, RunDir
from server.strategy import (
    RecordingFedAdam,
    RecordingFedAvg,
    RecordingFedProx,
    RecordingFedTrimmedAvg,
    RecordingKrum,
    RecordingMixin,
    aggregate_evaluate_metrics,
    arrays_to_numpy,
)
from simulations.partition import partition
from simulations.synthetic import SYNTHETIC_KEYS, SyntheticSpec, load_synthetic

KEY = "shared-secret"


@pytest.fixture(scope="module")
def parts() -> list[EventTable]:
    train = load_synthetic(SyntheticSpec(institutions=3, users=24, seed=3))["train"]
    return partition(train, 3, "natural", key=SYNTHETIC_KEYS["institution"])


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Instruction messages need a run id outside a Flower process."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def stats_of(table: EventTable, key: str = KEY) -> SetupStats:
    g = table.grouped()
    from common.vocab import count_tokens

    return SetupStats(
        token_counts=count_tokens(g.events, key),
        context_names=g.context_names,
        context_counts=count_categories(g.context, g.context_names, key),
        numeric=FeatureStats.compute(g.numeric_names, g.numeric),
        n_sequences=len(g),
        n_events=g.n_events,
        key_fingerprint=key_fingerprint(key),
    )


def pooled(parts: list[EventTable]) -> EventTable:
    return EventTable.concat(parts)


# --------------------------------------------------------------------------- set-up merging


def test_merged_vocab_equals_vocab_fitted_on_pooled_data(parts: list[EventTable]) -> None:
    vocab_cfg = VocabConfig(max_size=20, min_count=2)
    shared = merge_setup([stats_of(p) for p in parts], vocab_cfg)
    whole = pooled(parts).grouped()
    fitted = Vocabulary.fit(whole.events, max_size=20, min_count=2, hash_key=KEY)
    assert shared.encoder.vocab.tokens == fitted.tokens
    assert shared.encoder.vocab.counts == fitted.counts
    assert shared.n_sequences == len(whole) and shared.n_events == whole.n_events
    # hashed: no raw token in the shared vocabulary
    raw = set(map(str, whole.events))
    assert not raw & set(shared.encoder.vocab.tokens)


def test_merged_context_vocab_equals_pooled_hashed_categories(parts: list[EventTable]) -> None:
    shared = merge_setup([stats_of(p) for p in parts], VocabConfig(max_size=5000))
    whole = pooled(parts).grouped()
    local = ContextVocabulary.fit(whole.context_names, whole.context, 5000)
    h = TokenHasher(KEY)
    for name in whole.context_names:
        assert shared.encoder.context.columns[name] == sorted(h(v) for v in local.columns[name])
    assert shared.encoder.context.hashed


def test_merged_scaler_equals_pooled_scaler(parts: list[EventTable]) -> None:
    shared = merge_setup([stats_of(p) for p in parts], VocabConfig())
    whole = pooled(parts).grouped()
    fitted = Scaler.fit(whole.numeric_names, whole.numeric)
    assert shared.encoder.scaler.names == fitted.names
    np.testing.assert_allclose(shared.encoder.scaler.mean, fitted.mean, rtol=1e-10)
    np.testing.assert_allclose(shared.encoder.scaler.std, fitted.std, rtol=1e-10)


def test_setup_stats_survive_the_wire(parts: list[EventTable]) -> None:
    s = stats_of(parts[0])
    record = ConfigRecord(s.to_config())
    back = SetupStats.from_config(dict(ConfigRecord.inflate(record.deflate())))
    assert back.token_counts == s.token_counts
    assert back.context_counts == s.context_counts
    assert back.numeric.names == s.numeric.names
    np.testing.assert_array_equal(back.numeric.sq_dev, s.numeric.sq_dev)
    assert back.key_fingerprint == s.key_fingerprint


def test_merge_refuses_different_keys_and_columns(parts: list[EventTable]) -> None:
    with pytest.raises(ConfigError, match="different hash keys"):
        merge_setup([stats_of(parts[0]), stats_of(parts[1], key="other")], VocabConfig())
    odd = stats_of(parts[1])
    odd.context_names = ("device",)
    with pytest.raises(ConfigError, match="feature columns"):
        merge_setup([stats_of(parts[0]), odd], VocabConfig())
    with pytest.raises(ConfigError, match="no node"):
        merge_setup([], VocabConfig())


def test_merge_takes_the_same_columns_in_another_order(parts: list[EventTable]) -> None:
    """Column maps follow each file's header; nodes encode by name, so the order may differ."""
    reports = [stats_of(p) for p in parts]
    names = reports[1].numeric.names
    reports[1].numeric = reports[1].numeric.reordered(names[::-1])
    reports[1].context_names = reports[1].context_names[::-1]
    shared = merge_setup(reports, VocabConfig())
    assert shared.encoder.numeric_names == tuple(sorted(names))  # the orders differ: by name
    whole = pooled(parts).grouped()
    fitted = Scaler.fit(whole.numeric_names, whole.numeric)
    by_name = [fitted.names.index(n) for n in shared.encoder.numeric_names]
    np.testing.assert_allclose(shared.encoder.scaler.mean, fitted.mean[by_name], rtol=1e-10)
    np.testing.assert_allclose(shared.encoder.scaler.std, fitted.std[by_name], rtol=1e-10)
    same = merge_setup([stats_of(p) for p in parts], VocabConfig())
    assert same.encoder.numeric_names == names[::-1][::-1]  # the nodes agree: their order


def test_setup_reply_with_negative_or_non_finite_statistics_is_malformed(parts: list[EventTable]) -> None:
    good = stats_of(parts[0]).to_config()
    for key, value in (("token-counts", -1), ("stats-sum", float("nan"))):
        bad = dict(good)
        bad[key] = [value] * len(good[key])
        with pytest.raises(ConfigError, match="malformed set-up reply"):
            SetupStats.from_config(bad)


def test_hash_key_resolution() -> None:
    assert resolve_hash_key("node-secret", "run-secret") == ("node-secret", "node-config")
    assert resolve_hash_key("", "run-secret") == ("run-secret", "run-config")
    assert resolve_hash_key(None, "") == (SIMULATION_HASH_KEY, "simulation-default")
    assert key_fingerprint("a") == key_fingerprint("a") != key_fingerprint("b")


# --------------------------------------------------------------------------- encoder on the wire


def test_encoder_round_trip_encodes_like_each_other_and_refuses_other_key(parts: list[EventTable]) -> None:
    shared = merge_setup([stats_of(p) for p in parts], VocabConfig())
    wire = encoder_to_config(shared.encoder, shared.key_fingerprint)
    record = ConfigRecord.inflate(ConfigRecord(wire).deflate())
    assert all("login" not in str(v) for v in record.values())
    enc_a = encoder_from_config(record, KEY)
    enc_b = encoder_from_config(record, KEY)
    for p in parts:
        g = p.grouped()
        e = enc_a.encode(g)
        assert e.stats["unknown_events"] == 0 and e.stats["unknown_context"] == 0
        np.testing.assert_array_equal(e.tokens, enc_b.encode(g).tokens)
        np.testing.assert_array_equal(e.context, enc_b.encode(g).context)
    with pytest.raises(ConfigError, match="hash key differs"):
        encoder_from_config(record, "wrong-key")


def test_saved_federated_encoder_reloads_with_key(parts: list[EventTable]) -> None:
    from common.encoding import Encoder

    shared = merge_setup([stats_of(p) for p in parts], VocabConfig())
    data = json.loads(json.dumps(shared.encoder.to_dict()))
    assert data["context_hashed"] is True
    enc = Encoder.from_dict(data, hash_key=KEY)
    e = enc.encode(parts[0].grouped())
    assert e.stats["unknown_events"] == 0 and e.stats["unknown_context"] == 0
    with pytest.raises(ValueError, match="hash-key"):
        Encoder.from_dict(data).encode(parts[0].grouped())


def test_edges() -> None:
    e = round_edges(10)
    assert e[0] == 0.0 and len(e) == 201 and np.all(np.diff(e) > 0)
    assert e[1] == pytest.approx(1e-3) and e[-1] == pytest.approx(1e4)


# --------------------------------------------------------------------------- strategy hooks


def _train_reply(weights: dict[str, np.ndarray], loss: float, n: int) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord({"train-loss": loss, "num-examples": n, "train-sequences": 3}),
        }
    )
    return Message(content, dst_node_id=0, message_type="train")


def _eval_reply(scores: np.ndarray, labels: np.ndarray, threshold: float, edges: np.ndarray) -> Message:
    from common.metrics import histogram_counts

    c = confusion_at(labels, scores, threshold)
    content = RecordDict(
        {
            "metrics": MetricRecord(
                {
                    "val-loss": 2.0,
                    "num-examples": 10,
                    "tp": c.tp,
                    "fp": c.fp,
                    "tn": c.tn,
                    "fn": c.fn,
                    "hist-normal": [int(x) for x in histogram_counts(scores[labels == 0], edges)],
                    "hist-anomalous": [int(x) for x in histogram_counts(scores[labels == 1], edges)],
                    "test-sequences": len(scores),
                }
            )
        }
    )
    return Message(content, dst_node_id=0, message_type="evaluate")


def test_aggregate_does_not_depend_on_the_order_replies_arrive_in(tmp_path) -> None:
    """Float sums depend on their order; the mixin aggregates replies in a fixed one."""
    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.integers(-3, 4, 500)  # mixed magnitudes: rounding shows
    weights = [{"w": (rng.normal(size=500) * scales).astype(np.float32)} for _ in range(5)]
    sizes = [137, 911, 58, 4021, 333]
    replies = [_train_reply(w, 1.0, n) for w, n in zip(weights, sizes, strict=True)]
    # without the fixed order the sum really differs: plain FedAvg on two orders
    plain = [FedAvg(min_available_nodes=1).aggregate_train(1, order)[0] for order in (replies, replies[::-1])]
    assert plain[0] is not None and plain[1] is not None
    assert not np.array_equal(plain[0]["w"].numpy(), plain[1]["w"].numpy())
    results: list[np.ndarray] = []
    for order in (replies, replies[::-1], [replies[i] for i in (3, 0, 4, 1, 2)]):
        strategy = strategy_of(RecordingMixin, FederationConfig(min_nodes=1))
        run = RunDir(tmp_path / f"run{len(results)}")
        run.reset()
        strategy.setup_recording(run, initial_arrays=ArrayRecord({"w": Array(np.zeros(500, np.float32))}))
        arrays, _ = strategy.aggregate_train(1, order)
        assert arrays is not None
        results.append(arrays["w"].numpy())
    assert all(np.array_equal(results[0], r) for r in results[1:])


def _node(msg: Message, node_id: int) -> Message:
    """``msg``'s content as node ``node_id``'s reply."""
    asked = Message(RecordDict(), dst_node_id=node_id, message_type=msg.metadata.message_type)
    return Message(msg.content, reply_to=asked)


def test_unusable_train_replies_are_dropped_as_failures(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """NaN weights, other shapes or keys and impossible counts never reach the average."""
    run = RunDir(tmp_path / "run")
    run.reset()
    strategy = strategy_of(RecordingMixin, FederationConfig(min_nodes=1))
    init = {"w": np.zeros(3, np.float32)}
    strategy.setup_recording(run, initial_arrays=ArrayRecord({k: Array(v) for k, v in init.items()}))
    good = _node(_train_reply({"w": np.ones(3, np.float32)}, 1.0, 10), 1)
    bad = {
        2: _train_reply({"w": np.array([np.nan, 0, 0], np.float32)}, 1.0, 10),
        3: _train_reply({"w": np.ones(1, np.float32)}, 1.0, 10),
        4: _train_reply({"w": np.ones(3, np.float32)}, 1.0, -90),
        5: _train_reply({"v": np.ones(3, np.float32)}, 1.0, 10),
        6: _train_reply({"w": np.ones(3, np.float64)}, 1.0, 10),
        7: _train_reply({"w": np.ones(3, np.float32)}, float("inf"), 10),
    }
    replies = [good, *(_node(m, n) for n, m in bad.items())]
    with caplog.at_level("WARNING"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    np.testing.assert_array_equal(arrays["w"].numpy(), 1.0)  # the good reply alone
    assert metrics["train-events"] == 10
    assert strategy._train_row["train-failures"] == 6
    for needle in ("NaN or infinite", "(1,)", "-90", "other keys", "float64", "'train-loss' is inf"):
        assert needle in caplog.text, needle
    assert strategy._replied["train"] == {1}
    # nothing usable at all: the round is not committed, the run stops with the reasons
    with pytest.raises(RuntimeError, match=r"round 2: no node returned a usable update \(node 2: .*NaN"):
        strategy.aggregate_train(2, [_node(_train_reply({"w": np.full(3, np.nan, np.float32)}, 1.0, 5), 2)])
    assert run.read_state() is None


def test_unusable_evaluate_replies_are_dropped(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    run = RunDir(tmp_path / "run")
    run.reset()
    strategy = strategy_of(RecordingMixin, FederationConfig(min_nodes=1))
    edges = round_edges(5)
    strategy.setup_recording(
        run, initial_arrays=ArrayRecord({"w": Array(np.zeros(2, np.float32))}), histogram_bins=len(edges) - 1
    )
    s, y = np.r_[np.ones(8), np.full(2, 9.0)], np.r_[np.zeros(8), np.ones(2)]
    good = _node(_eval_reply(s, y, 4.0, edges), 1)
    short = _node(_eval_reply(s, y, 4.0, edges), 2)
    short.content.metric_records["metrics"]["hist-normal"] = [5]
    negative = _node(_eval_reply(s, y, 4.0, edges), 3)
    negative.content.metric_records["metrics"]["fp"] = -3
    with caplog.at_level("WARNING"):
        ev = strategy.aggregate_evaluate(1, [good, short, negative])
    assert ev is not None and ev["eval-nodes"] == 1 and ev["tp"] == confusion_at(y, s, 4.0).tp
    assert "has 1 bins" in caplog.text and "'fp' = -3" in caplog.text
    row = run.read_metrics()[0]
    assert row["eval-failures"] == 2 and strategy._replied["evaluate"] == {1}


def test_calibration_uses_only_well_formed_histograms(caplog: pytest.LogCaptureFixture) -> None:
    """A histogram of another length (or with NaN) would move the global threshold or stop the server."""
    from common.config import parse_config
    from server.app import calibration_phase

    cfg = parse_config({"federation.histogram-bins": 5, "model.end-event": False, "federation.min-nodes": 1})
    edges = round_edges(5)
    rng = np.random.default_rng(0)
    good = [int(x) for x in np.histogram(rng.gamma(2.0, 1.0, 300), edges)[0]]

    class Replies(StubGrid):
        def get_node_ids(self) -> list[int]:
            return [1, 2, 3]

        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def,override]
            hists = {1: good, 2: [5], 3: [float("nan")] * len(good)}
            return [
                Message(RecordDict({"m": MetricRecord({"hist": hists[m.metadata.dst_node_id]})}), reply_to=m)
                for m in messages
            ]

    with caplog.at_level("WARNING"):
        out = calibration_phase(Replies(), cfg, {}, ArrayRecord({}))
    assert out["nodes"] == 1 and out["global_threshold"] == threshold_from_histogram(
        good, edges, cfg.detector.calibration.rate
    )
    assert "node 2: 'hist' has 1 bins" in caplog.text and "node 3: 'hist' holds nan" in caplog.text


@pytest.mark.parametrize("name", ["fedavg", "fedmedian", "fedadam", "krum"])
def test_recording_hooks_write_checkpoint_metrics_and_state(tmp_path, name: str) -> None:
    run = RunDir(tmp_path / "run")
    run.reset()
    strategy = strategy_of(RecordingMixin, FederationConfig(strategy=name, min_nodes=2))
    init = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}
    strategy.setup_recording(
        run, initial_arrays=ArrayRecord({k: Array(v) for k, v in init.items()}), round_offset=2
    )
    if name == "fedadam":  # FedOpt needs the arrays it sent (configure_train records them)
        assert isinstance(strategy, RecordingFedAdam)
        strategy.current_arrays = {k: v.copy() for k, v in init.items()}
    a = {"w": np.ones((2, 3), dtype=np.float32), "b": np.full(3, 2.0, dtype=np.float32)}
    b = {"w": np.full((2, 3), 4.0, dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}
    arrays, metrics = strategy.aggregate_train(1, [_train_reply(a, 1.0, 100), _train_reply(b, 3.0, 300)])
    assert arrays is not None and metrics is not None
    if name == "fedavg":
        np.testing.assert_allclose(arrays["w"].numpy(), 3.25)  # (1*100 + 4*300) / 400
        assert metrics["train-loss"] == pytest.approx(2.5) and metrics["train-events"] == 400
    if name == "fedmedian":
        np.testing.assert_allclose(arrays["w"].numpy(), 2.5)

    rng = np.random.default_rng(0)
    edges = round_edges(20)
    s1, y1 = rng.gamma(2.0, 1.0, 40) + 3 * np.r_[np.zeros(35), np.ones(5)], np.r_[np.zeros(35), np.ones(5)]
    s2, y2 = rng.gamma(2.0, 1.0, 30), np.zeros(30)  # a node without anomalies
    ev = strategy.aggregate_evaluate(1, [_eval_reply(s1, y1, 4.0, edges), _eval_reply(s2, y2, 5.0, edges)])
    assert ev is not None
    c1, c2 = confusion_at(y1, s1, 4.0), confusion_at(y2, s2, 5.0)
    assert ev["tp"] == c1.tp + c2.tp and ev["fp"] == c1.fp + c2.fp
    assert ev["tn"] == c1.tn + c2.tn and ev["fn"] == c1.fn + c2.fn
    tp, fp, fn = ev["tp"], ev["fp"], ev["fn"]
    assert ev["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    from common.metrics import histogram_counts

    s, y = np.r_[s1, s2], np.r_[y1, y2]
    expected_auc = roc_auc_from_histograms(
        histogram_counts(s[y == 0], edges), histogram_counts(s[y == 1], edges)
    )
    assert ev["auroc"] == pytest.approx(expected_auc)

    # round 1 of start() is round 3 of the run (two rounds done before a resume)
    ckpt = run.checkpoint_path(3)
    assert ckpt.is_file() and not list(run.checkpoints.glob(".*tmp*"))
    saved = run.load_checkpoint(ckpt)
    np.testing.assert_array_equal(saved["w"], arrays_to_numpy(strategy.global_arrays)["w"])
    state = run.read_state()
    assert state is not None and state.last_round == 3 and state.checkpoint == ckpt
    assert (state.strategy_state is not None) == (name == "fedadam")
    rows = run.read_metrics()
    assert len(rows) == 1 and rows[0]["round"] == 3 and rows[0]["tp"] == ev["tp"]
    lines = run.metrics_csv.read_text().splitlines()
    assert lines[0].split(",") == list(METRIC_COLUMNS) and len(lines) == 2


def test_configure_numbers_rounds_on_and_attaches_encoder(tmp_path) -> None:
    class Grid1(StubGrid):
        def get_node_ids(self) -> list[int]:
            return [11, 12]

    run = RunDir(tmp_path / "r")
    strategy = strategy_of(RecordingMixin, FederationConfig(min_nodes=2))
    enc = ConfigRecord({"enc.tokens": ["ab"]})
    init = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    strategy.setup_recording(run, initial_arrays=init, round_offset=4, extra_records={"encoder": enc})
    msgs = list(strategy.configure_train(1, init, ConfigRecord({"local-epochs": 1}), Grid1()))
    assert {m.metadata.dst_node_id for m in msgs} == {11, 12}
    assert all(m.content["config"]["server-round"] == 5 for m in msgs)
    assert all(m.content["encoder"]["enc.tokens"] == ["ab"] for m in msgs)
    msgs = list(strategy.configure_evaluate(1, init, ConfigRecord({"hist-bins": 5}), Grid1()))
    assert all(m.content["config"]["server-round"] == 5 and "encoder" in m.content for m in msgs)
    assert all("end-weight" not in m.content["config"] for m in msgs)


def test_evaluate_config_callback_reaches_every_evaluate_message_and_the_round_row(tmp_path) -> None:
    class Grid1(StubGrid):
        def get_node_ids(self) -> list[int]:
            return [11, 12]

    asked: list[tuple[list[int], np.ndarray]] = []

    def weight_for(arrays: ArrayRecord, grid: object, nodes: list[int]) -> dict[str, float]:
        asked.append((nodes, arrays["w"].numpy()))
        return {"end-weight": 0.375}

    run = RunDir(tmp_path / "r")
    run.reset()
    strategy = strategy_of(RecordingMixin, FederationConfig(min_nodes=2))
    init = ArrayRecord({"w": Array(np.full(2, 7.0, dtype=np.float32))})
    strategy.setup_recording(run, initial_arrays=init, evaluate_config=weight_for)
    msgs = list(strategy.configure_evaluate(1, init, ConfigRecord({"hist-bins": 5}), Grid1()))
    assert len(asked) == 1 and sorted(asked[0][0]) == [11, 12]  # asked once, for the sampled nodes
    np.testing.assert_array_equal(asked[0][1], 7.0)  # under the weights being evaluated
    assert all(m.content["config"]["end-weight"] == 0.375 for m in msgs)
    assert all(m.content["config"]["hist-bins"] == 5 for m in msgs)
    shared = ConfigRecord({"hist-bins": 5})  # the strategy hands one record to every round
    strategy.configure_evaluate(1, init, shared, Grid1())
    assert "end-weight" not in shared  # a round that fits no weight sends none
    edges = round_edges(5)
    s, y = np.r_[np.ones(8), np.full(2, 9.0)], np.r_[np.zeros(8), np.ones(2)]
    strategy.aggregate_evaluate(1, [_eval_reply(s, y, 4.0, edges), _eval_reply(s, y, 4.0, edges)])
    row = run.read_metrics()[0]
    assert row["end-weight"] == 0.375 and row["eval-config-seconds"] >= 0.0  # the query's own time
    assert all("eval-config-seconds" not in m.content["config"] for m in msgs)  # not sent to nodes


def test_fedadam_state_round_trip(tmp_path) -> None:
    strategy = strategy_of(RecordingFedAdam, FederationConfig(strategy="fedadam"))
    strategy.m_t = {"w": np.ones(3)}
    strategy.v_t = {"w": np.full(3, 2.0)}
    state = strategy.strategy_state()
    assert state is not None
    other = strategy_of(RecordingFedAdam, FederationConfig(strategy="fedadam"))
    other.load_strategy_state(state)
    assert other.v_t is not None
    np.testing.assert_array_equal(other.v_t["w"], 2.0)
    assert strategy_of(RecordingMixin, FederationConfig()).strategy_state() is None


def test_make_strategy_settings() -> None:
    prox = strategy_of(RecordingFedProx, FederationConfig(strategy="fedprox", proximal_mu=0.3))
    assert prox.proximal_mu == 0.3
    trimmed = strategy_of(RecordingFedTrimmedAvg, FederationConfig(strategy="fedtrimmedavg", trim_beta=0.1))
    assert trimmed.beta == 0.1
    krum = strategy_of(RecordingKrum, FederationConfig(strategy="krum", krum_byzantine=1, min_nodes=5))
    assert krum.num_malicious_nodes == 1
    assert strategy_of(RecordingFedAdam, FederationConfig(strategy="fedadam", server_lr=0.2)).eta == 0.2
    assert strategy_of(RecordingFedAvg, FederationConfig(min_nodes=3)).min_available_nodes == 3


def test_krum_needs_more_than_2f_plus_2_updates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The config refuses a quorum that cannot outvote f Byzantine nodes; a round short of it warns."""
    with pytest.raises(ConfigError, match=r"'federation.min-nodes' = 4 is too few .* at least 5"):
        FederationConfig(strategy="krum", krum_byzantine=1, min_nodes=4)
    FederationConfig(strategy="fedavg", krum_byzantine=1, min_nodes=2)  # only Krum reads it
    krum = strategy_of(RecordingKrum, FederationConfig(strategy="krum", krum_byzantine=1, min_nodes=5))
    run = RunDir(tmp_path / "run")
    run.reset()
    krum.setup_recording(run, initial_arrays=ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))}))
    w = [{"w": np.full(3, float(i), dtype=np.float32)} for i in range(5)]
    with caplog.at_level("WARNING"):
        krum.aggregate_train(1, [_train_reply(a, 1.0, 10) for a in w])
        assert "not protected" not in caplog.text
        arrays, _ = krum.aggregate_train(2, [_train_reply(a, 1.0, 10) for a in w[:4]])
    assert "round 2: Krum chose among 4 update(s), but outvoting 1 Byzantine node(s) needs at least 5" in (
        caplog.text
    )
    assert arrays is not None


def test_evaluate_aggregation_without_labels_has_no_auroc() -> None:
    rec = RecordDict(
        {
            "m": MetricRecord(
                {
                    "val-loss": 1.5,
                    "num-examples": 4,
                    "tp": 0,
                    "fp": 0,
                    "tn": 0,
                    "fn": 0,
                    "hist-normal": [0, 0],
                }
            )
        }
    )
    out = aggregate_evaluate_metrics([rec, rec], "num-examples")
    assert "auroc" not in out and out["val-loss"] == 1.5 and out["val-events"] == 8
    # no counts at all: none of the four is defined, and none is reported as 0
    assert not {"precision", "recall", "f1", "false-alarm-rate"} & set(out.keys())
    from server.strategy import confusion_figures

    assert confusion_figures(tp=0, fp=0, tn=10, fn=3) == {"recall": 0.0, "f1": 0.0, "false-alarm-rate": 0.0}


# --------------------------------------------------------------------------- run directory


def test_rundir_commit_truncate_and_reset(tmp_path) -> None:
    run = RunDir(tmp_path / "x")
    assert run.read_state() is None
    w = {"a": np.arange(4, dtype=np.float32)}
    for r in (1, 2):
        run.commit_round(r, w, {"round": r, "val-loss": float(r), "auroc": float("nan")}, strategy="fedavg")
    run.append_metrics({"round": 3, "val-loss": 3.0})  # written, but round 3 never committed
    state = run.read_state()
    assert state is not None and state.last_round == 2
    run.truncate_metrics(2)
    assert [r["round"] for r in run.read_metrics()] == [1, 2]
    assert run.read_metrics()[0]["auroc"] is None
    assert len(run.metrics_csv.read_text().splitlines()) == 3
    np.testing.assert_array_equal(run.load_checkpoint(run.checkpoint_path(2))["a"], w["a"])
    run.reset()
    assert run.read_state() is None and not run.metrics_jsonl.exists()


def test_metrics_csv_keeps_the_context_fusion_and_node_counts(tmp_path) -> None:
    import csv

    from common.protocol import FUSION_SCALE, FUSION_SHIFT

    run = RunDir(tmp_path / "x")
    row = {"round": 1, "end-weight": 0.3, FUSION_SHIFT: -0.25, FUSION_SCALE: 0.5, "nodes-sampled": 3}
    run.append_metrics({**row, "nodes-replied": 2, "nodes-failed": 1, "failed-node-ids": [7]})
    run.append_metrics({"round": 2, "end-weight": 0.4})  # no context head: its columns stay empty
    first, second = csv.DictReader(io.StringIO(run.metrics_csv.read_text()))
    assert (first[FUSION_SHIFT], first[FUSION_SCALE], first["nodes-failed"]) == ("-0.25", "0.5", "1")
    assert second[FUSION_SHIFT] == "" and second["end-weight"] == "0.4"
    assert "failed-node-ids" not in first  # a list: in metrics.jsonl only
    assert run.read_metrics()[0]["failed-node-ids"] == [7]
    assert not list(run.checkpoints.glob("*.safetensors"))


def test_histogram_threshold_is_conservative_on_pooled_validation() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.gamma(3.0, 1.0, n) for n in (300, 200, 500)]
    edges = round_edges(200)
    from common.metrics import histogram_counts

    counts = sum(histogram_counts(p, edges) for p in parts)
    t = threshold_from_histogram(counts, edges, 0.01)
    pooled_scores = np.concatenate(parts)
    assert np.mean(pooled_scores > t) <= 0.01
    exact = np.quantile(pooled_scores, 0.99)
    assert exact <= t <= exact * 1.01  # within a few 0.4 % bins of the exact quantile


def test_context_fusion_travels_as_both_keys_or_none() -> None:
    from common.protocol import FUSION_SCALE, FUSION_SHIFT, fusion_from_config, fusion_to_config
    from common.scoring import ContextFusion

    fusion = ContextFusion(shift=-0.25, scale=0.5)
    assert fusion_from_config(fusion_to_config(fusion)) == fusion
    assert fusion_to_config(None) == {} and fusion_from_config({"end-weight": 0.3}) is None
    for bad in (
        {FUSION_SHIFT: 1.0},
        {FUSION_SHIFT: 1.0, FUSION_SCALE: 0.0},
        {FUSION_SHIFT: "x", FUSION_SCALE: 1.0},
        {FUSION_SHIFT: float("nan"), FUSION_SCALE: 1.0},
        {FUSION_SHIFT: 0.0, FUSION_SCALE: float("inf")},
    ):
        with pytest.raises(ConfigError):
            fusion_from_config(bad)


def test_the_server_asks_for_score_moments_when_an_end_weight_or_a_context_part_is_fitted() -> None:
    from common.config import parse_config
    from common.protocol import ENC_CONTEXT_NAMES
    from server.app import fits_score_parts

    with_context = {ENC_CONTEXT_NAMES: ["device"]}
    assert fits_score_parts(parse_config({}), {})  # the END weight
    no_end = parse_config({"model.end-event": False, "model.context-head": True})
    assert not fits_score_parts(no_end, {}) and fits_score_parts(no_end, with_context)
    assert not fits_score_parts(parse_config({"model.end-event": False}), with_context)  # no context head
    assert not fits_score_parts(parse_config({"score.fit-end-weight": False}), {})
