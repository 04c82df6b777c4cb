"""The comparison runner (simulations.experiment) on tiny synthetic data, and the ready run configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from common.config import load_config_file, parse_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [
    REPO / "simulations" / "configs" / f"{name}.toml" for name in ("adfa", "hdfs", "openstack", "synthetic")
]

TINY_TOML = """
"data.dataset" = "synthetic"
"data.partitioner" = "natural"
"data.synthetic-users" = 24
"federation.min-nodes" = 2
"federation.histogram-bins" = 40
"federation.local-epochs" = 1
"model.hidden" = 12
"model.embed-dim" = 8
"model.context-dim" = 2
"model.layers" = 1
"train.batch-size" = 16
"""


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from simulations.experiment import run

    tmp = tmp_path_factory.mktemp("experiment")
    config = tmp / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp / "out"
    argv = ["--config", str(config), "--out", str(out), "--work-dir", str(tmp / "work")]
    return run([*argv, "--clients", "2", "--rounds", "2"]), out


def test_comparison_files_and_table(comparison: tuple[dict, Path]) -> None:
    result, out = comparison
    for name in ("comparison.json", "comparison.md", "auroc_per_round.png", "roc.png", "scores.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "comparison.json").read_text()) == json.loads(json.dumps(result))
    assert result["modes"] == ["federated", "centralized", "local"] and result["clients"] == 2
    assert "--clients 2 --rounds 2" in result["command"] and "tiny.toml" in result["command"]
    assert result["run_config"]["federation.num-server-rounds"] == 2
    assert '"data.synthetic-users" = 24' in result["config_file_text"]
    # the same epoch budget: rounds x local epochs
    assert result["results"]["centralized"]["epochs_budget"] == 2
    assert all(c["epochs_budget"] == 2 for c in result["results"]["local"]["clients"])
    # per-round federated metrics from the run dir, and the federation's final model
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    assert all("auroc" in r and r["train-compute-seconds"] > 0 for r in result["rounds"])
    assert Path(result["results"]["federated"]["model_dir"], "model.safetensors").is_file()
    assert result["results"]["federated"]["federation_report"]["counts_agree_with_pooled_scoring"]
    modes = [row["mode"] for row in result["table"]]
    assert modes[:4] == ["federated", "centralized", "local-only mean", "local-only worst"]
    for row in result["table"]:
        for key in ("auroc", "auprc", "detection_rate_at_1pct_far", "detection_rate_at_5pct_far", "f1"):
            assert 0.0 <= row[key] <= 1.0, (row["mode"], key)
    local = result["results"]["local"]
    worst = min(c["pooled_test"]["auroc"] for c in local["clients"])
    assert local["pooled_worst"]["auroc"] == worst
    mean = sum(c["pooled_test"]["auroc"] for c in local["clients"]) / 2
    assert local["pooled_mean"]["auroc"] == pytest.approx(mean)
    md = (out / "comparison.md").read_text()
    assert "| federated |" in md and "| centralized |" in md and "| local-only worst |" in md
    # the tiny run's few validation sequences cannot resolve 1 % false alarms, and the table says so
    pooled = result["data"]["pooled_validation_sequences"]
    assert f"calibrated on {pooled} pooled normal validation sequences" in md
    assert "cannot resolve a rate of 0.01" in md and "at least 100 needed" in md


def test_all_modes_are_scored_on_identical_test_sequences(comparison: tuple[dict, Path]) -> None:
    from client.data import node_data
    from simulations.inprocess import sim_nodes

    result, out = comparison
    res = result["results"]
    pooled = result["data"]["pooled_test"]
    prints = [
        res["federated"]["metrics"]["test_fingerprint"],
        res["centralized"]["metrics"]["test_fingerprint"],
    ]
    prints += [c["pooled_test"]["test_fingerprint"] for c in res["local"]["clients"]]
    assert set(prints) == {pooled["fingerprint"]}
    sizes = [res["federated"]["metrics"]["n_sequences"], res["centralized"]["metrics"]["n_sequences"]]
    sizes += [c["pooled_test"]["n_sequences"] for c in res["local"]["clients"]]
    assert set(sizes) == {pooled["sequences"]}
    # the pooled test set is exactly the union of the test shares the ClientApps hold
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"sequence", "label", "federated", "centralized", "local-0", "local-1"}
    cfg = parse_config(load_config_file(Path(result["config_file"])))
    shares = [node_data(nc, cfg.data).test for nc in sim_nodes(2)]
    assert all(s is not None for s in shares)
    share_ids = [set(map(str, s.grouped().ids)) for s in shares if s is not None]
    assert not share_ids[0] & share_ids[1]
    assert {r["sequence"] for r in rows} == share_ids[0] | share_ids[1]
    assert len(rows) == pooled["sequences"] == sum(len(s) for s in share_ids)
    # each local-only client was also scored on its own share
    own = [c["own_test"]["n_sequences"] for c in res["local"]["clients"]]
    assert own == [len(s) for s in share_ids]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_ready_configs_parse_for_the_runner_and_for_flwr_run(path: Path) -> None:
    from flwr.common.config import parse_config_args

    ours = load_config_file(path)
    cfg = parse_config(ours)  # unknown or mistyped keys raise
    # flwr run --run-config FILE reads the same flat keys
    assert parse_config_args([str(path)]) == ours
    assert cfg.federation.min_nodes >= 2


def test_recall_per_round_plot_for_a_one_class_test_set(tmp_path: Path) -> None:
    """HDFS's test set is all anomalous: the per-round plot shows recall, not an undefined AUROC."""
    from simulations.experiment import plot_rounds

    rounds = [{"round": 1, "recall": 0.2, "auroc": None}, {"round": 2, "recall": 0.8, "auroc": None}]
    results = {
        "federated": {"metrics": {"recall": 0.9, "auroc": None}},
        "centralized": {"metrics": {"recall": 0.85, "auroc": None}},
        "local": {
            "pooled_mean": {"recall": 0.4, "auroc": None},
            "pooled_worst": {"recall": 0.1, "auroc": None},
        },
    }
    plot_rounds(tmp_path / "recall_per_round.png", rounds, results, "one class", metric="recall")
    assert (tmp_path / "recall_per_round.png").stat().st_size > 0


def test_classes_in_test() -> None:
    from simulations.experiment import classes_in_test

    def held(anomalous: int) -> dict:
        return {"pooled_test": {"sequences": 5, "anomalous": anomalous}}

    assert [classes_in_test(held(a)) for a in (5, 0, 2)] == ["anomalous", "normal", "both"]


def test_user_mistakes_are_one_line_and_leave_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each mistake: one 'error:' line, exit 2, no traceback, and no output folder created."""
    from simulations.experiment import main

    monkeypatch.chdir(tmp_path)
    good = tmp_path / "tiny.toml"
    good.write_text(TINY_TOML)
    detector = tmp_path / "detector.toml"
    detector.write_text('[score]\naggregate = "max"\n')
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text(TINY_TOML + '"train.learning-rate" = 0.1\n')
    adfa = tmp_path / "adfa.toml"
    adfa.write_text(TINY_TOML.replace('"synthetic"', '"adfa-ld"', 1).replace('"natural"', '"iid"', 1))
    monkeypatch.setenv("SEQWATCH_SHARED_DATA", str(tmp_path / "nodata"))
    out = tmp_path / "out"
    cases = [
        (["--config", str(bad_key)], "unknown config key 'train.learning-rate'"),
        (["--config", str(detector)], "no data.dataset, so this is not an experiment config"),
        (["--config", str(tmp_path / "missing.toml")], "missing.toml"),
        (["--config", str(good), "--set", "foo"], "--set 'foo': use KEY=VALUE"),
        (["--config", str(good), "--modes", "fed"], "--modes: unknown ['fed']"),
        (["--config", str(adfa)], f"SEQWATCH_SHARED_DATA = '{tmp_path / 'nodata'}' is not a folder"),
    ]
    for argv, needle in cases:
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        lines = [
            line for line in err.splitlines() if line.startswith("python -m simulations.experiment: error:")
        ]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, (argv, err)
        assert not out.exists() and not (tmp_path / "runs").exists(), argv
    assert main(["--config", str(good), "--out", str(good)]) == 2
    assert "is a file; name a folder" in capsys.readouterr().err
    for flag in ("--rounds", "--clients", "--central-epochs"):
        assert main(["--config", str(good), "--out", str(out), flag, "0"]) == 2
        assert f"argument {flag}: must be > 0" in capsys.readouterr().err
    assert main(["--config", str(good), "--out", str(out), "--log-level", "bogus"]) == 2
    assert "argument --log-level: use one of DEBUG" in capsys.readouterr().err


def test_calibration_lines_name_only_the_modes_that_ran() -> None:
    from simulations.experiment import calibration_lines

    data = {"pooled_validation_sequences": 400, "clients": [{"validation_sequences": 150}] * 2}
    (central, _) = calibration_lines(data, 0.01, ["centralized"])
    assert "(centralized)" in central and "per client" not in central
    (local, _) = calibration_lines(data, 0.01, ["local"])
    assert "pooled" not in local and "150–150 per client (local-only)" in local
    (every, _) = calibration_lines(data, 0.01)
    assert "(federated, centralized) and on 150–150 per client (local-only)" in every
    (apart, _) = calibration_lines({**data, "centralized_validation_sequences": 350}, 0.01)
    assert "on 400 pooled normal validation sequences (federated)" in apart
    assert "on 350 normal validation sequences (centralized, the pooled ones less 50 copies" in apart


def test_pooled_validation_leaves_out_copies_of_training_sequences() -> None:
    """A sequence one client holds out may copy one another client trains on."""
    import pandas as pd

    from common.events import ColumnMap
    from common.tableio import from_frame
    from simulations.experiment import without_copies

    def table(rows: dict[str, list[str]]):  # type: ignore[no-untyped-def]
        frame = pd.DataFrame(
            [(sid, ev) for sid, events in rows.items() for ev in events], columns=["sequence_id", "event"]
        )
        return from_frame(frame, ColumnMap())

    train = table({"t1": ["a", "b"], "t2": ["c"]})
    validation = table({"v1": ["a", "b"], "v2": ["a"], "v3": ["c"], "v4": ["b", "a"]})
    kept = without_copies(validation, train)
    assert sorted(kept.grouped().ids.tolist()) == ["v2", "v4"]
    assert without_copies(table({"v2": ["a"]}), train).grouped().ids.tolist() == ["v2"]


def test_two_outputs_of_one_name_never_share_a_work_folder(tmp_path: Path) -> None:
    from simulations.experiment import default_work_dir

    a, b = default_work_dir(tmp_path / "A" / "same"), default_work_dir(tmp_path / "B" / "same")
    assert a != b and a.parent == b.parent == Path("runs") / "experiments"
    assert a.name.startswith("same-") and default_work_dir(tmp_path / "A" / "same") == a


def test_a_run_of_fewer_modes_leaves_no_earlier_output_behind(
    comparison: tuple[dict, Path], tmp_path: Path
) -> None:
    import shutil

    from simulations.experiment import run

    _, first = comparison
    out = tmp_path / "out"
    shutil.copytree(first, out)
    assert (out / "federated_metrics.jsonl").is_file() and (out / "auroc_per_round.png").is_file()
    config = next(first.parent.glob("*.toml"))
    argv = ["--config", str(config), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    result = run([*argv, "--clients", "2", "--rounds", "2", "--modes", "centralized"])
    assert result["modes"] == ["centralized"]
    assert not (out / "federated_metrics.jsonl").exists()  # the earlier federation's rows
    assert (out / "comparison.json").is_file()


def test_hdfs_bench_halves_split_content_groups_not_sessions() -> None:
    """Each content group lies wholly in one half, and each half holds half of the groups, however
    many sessions a group repeats (the holdout_mask split by sessions let one content fill a half)."""
    import numpy as np

    from simulations.bench_quality import _group_halves

    groups = np.r_[np.zeros(600, dtype=np.int64), np.arange(1, 40).repeat(3)]  # one content x 600
    for seed in range(10):
        half = _group_halves(groups, seed)
        in_a = [bool(half[groups == g][0]) for g in range(40)]
        assert all((half[groups == g] == a).all() for g, a in enumerate(in_a))
        assert sum(in_a) == 20
