"""The ``seqwatch`` command line, driven in-process on a tiny synthetic data set.

One tiny model is trained once per module (2 epochs, hidden 16) and reused by
the score / explain / report tests, so the whole file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from client import cli
from client.cli import main
from client.datafiles import LAYOUT_FILE
from client.results import write_frame
from common.detector import ScoredTable, SequenceDetector
from common.errors import ConfigError, DataError, ModelFileError
from common.events import CANONICAL, ColumnMap
from common.tableio import read_table

NORMAL_EVENTS = ("open", "read", "write", "close", "stat", "mmap")
ATTACK_EVENTS = ("execve", "socket", "connect")
TINY_CONFIG = """\
[model]
hidden = 16
embed-dim = 8
layers = 1

[train]
epochs = 2
device = "cpu"
seed = 0
threads = 1
"""
SCORE_COLUMNS = [
    "sequence_id",
    "score",
    "flagged",
    "threshold",
    "n_events",
    "unknown_events",
    "top_events",
    "label",
    "p_value",
]
EVENT_COLUMNS = ["sequence_id", "position", "order", "event", "unseen", "score", "surprisal", "rank"]
METRIC_KEYS = {
    "auroc",
    "auprc",
    "precision",
    "recall",
    "f1",
    "false_alarm_rate",
    "tp",
    "fp",
    "tn",
    "fn",
    "threshold",
    "detection_rate_at_1pct_far",
    "detection_rate_at_5pct_far",
    "n_sequences",
    "n_anomalous",
    "threshold_source",
}


def _normal_sequence(rng: np.random.Generator) -> list[str]:
    """open, then read/write/stat/mmap loops, then close: a small Markov chain."""
    n = int(rng.integers(10, 31))
    events = ["open"]
    while len(events) < n - 1:
        events.append(str(rng.choice(("read", "write", "stat", "mmap"), p=(0.5, 0.3, 0.1, 0.1))))
    events.append("close")
    return events


def _anomalous_sequence(rng: np.random.Generator) -> list[str]:
    """A normal sequence with a burst of unseen events in the middle."""
    events = _normal_sequence(rng)
    at = len(events) // 2
    burst = [str(rng.choice(ATTACK_EVENTS)) for _ in range(4)]
    return events[:at] + burst + events[at:]


def make_frame(seed: int, n_normal: int, n_anomalous: int, prefix: str) -> pd.DataFrame:
    """Canonical long table (sequence, order, event, label), as ``seqwatch convert`` writes."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_normal + n_anomalous):
        anomalous = k >= n_normal
        events = _anomalous_sequence(rng) if anomalous else _normal_sequence(rng)
        sid = f"{prefix}{k:03d}"
        rows += [(sid, pos, ev, int(anomalous)) for pos, ev in enumerate(events)]
    return pd.DataFrame(rows, columns=["sequence", "order", "event", "label"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train/test CSVs, the tiny config and one model fitted through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    train = root / "train.csv"
    test = root / "test.csv"
    make_frame(1, 40, 0, "tr").to_csv(train, index=False)
    make_frame(2, 20, 4, "te").to_csv(test, index=False)
    config = root / "tiny.toml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    model = root / "model"
    code = main(["fit", "--data", str(train), "--config", str(config), "--out", str(model), "--quiet"])
    assert code == 0
    return {"root": root, "train": train, "test": test, "config": config, "model": model}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("seqwatch: error: "), err
    return lines[0]


def test_fit_prints_progress_threshold_and_saves(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    code = main(
        [
            "fit",
            "--data",
            str(workspace["train"]),
            "--config",
            str(workspace["config"]),
            "--model",
            "gru",
            "--epochs",
            "2",
            "--false-alarm-rate",
            "0.05",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "training data: 40 sequences" in captured.out
    assert "threshold:" in captured.out and "false-alarm rate 0.05" in captured.out
    assert f"model saved to {out}" in captured.out
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    # a loss still falling at the last epoch says that more epochs may help
    best = re.search(r"best epoch (\d) of 2", captured.out)
    assert best is not None
    assert ("still falling at the last epoch" in captured.out) == (best.group(1) == "2")
    # 4 held-out sequences cannot resolve 5 % false alarms: say so, and how many it needs
    assert "cannot resolve a rate of 0.05" in captured.err and "at least 20 needed" in captured.err
    meta = json.loads((out / "detector.json").read_text(encoding="utf-8"))
    assert meta["config"]["model.kind"] == "gru"
    assert meta["config"]["model.hidden"] == 16
    layout = json.loads((out / LAYOUT_FILE).read_text(encoding="utf-8"))
    assert layout["columns"]["sequence"] == "sequence"
    assert layout["columns"]["order"] == "order"


def test_fit_with_confidence_sets_a_higher_threshold_and_says_how_many_it_needs(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    base = ["fit", "--data", str(workspace["train"]), "--config", str(workspace["config"]), "--epochs", "1"]
    code = main([*base, "--false-alarm-rate", "0.3", "--confidence", "0.9", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "(false-alarm rate 0.3 with confidence 0.9 on 4 normal validation sequences)" in captured.out
    # 4 held out: the plain rule may leave 1 above the threshold, 0.9 confidence needs 7
    assert "cannot hold a false-alarm rate of 0.3 with confidence 0.9 (at least 7 needed)" in captured.err
    meta = json.loads((out / "detector.json").read_text(encoding="utf-8"))
    assert meta["config"]["calibration.confidence"] == 0.9
    assert meta["threshold"] == max(meta["validation_scores"])
    # --confidence 0 at scoring time drops it: the plain rule leaves 1 of the 4 above
    scoring = ["score", "--model", str(out), "--data", str(workspace["test"])]
    code = main([*scoring, "--out", str(tmp_path / "s.csv"), "--confidence", "0"])
    assert code == 0 and "(false-alarm rate 0.3 on the 4 normal validation" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "s.csv")["threshold"].iloc[0] == sorted(meta["validation_scores"])[-2]
    assert main([*base, "--confidence", "1", "--out", str(tmp_path / "m2")]) == 2
    assert "argument --confidence: must be at least 0 and below 1" in capsys.readouterr().err


def test_score_recalibrates_the_local_threshold_from_saved_validation_scores(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from common.detector import SequenceDetector
    from common.metrics import threshold_for_far

    saved = SequenceDetector.load(workspace["model"])
    base = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--out", str(tmp_path / "s.csv"), "--false-alarm-rate", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    expected = threshold_for_far(saved.validation_scores_, 0.5)
    assert expected < saved.threshold_
    assert f"threshold recalibrated: {expected:.6g} (false-alarm rate 0.5 on the 4 normal" in captured.out
    assert np.allclose(pd.read_csv(tmp_path / "s.csv")["threshold"], expected)
    assert SequenceDetector.load(workspace["model"]).threshold_ == saved.threshold_  # the model is untouched
    explain = ["explain", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*explain, "--sequence", "te000", "--json", "--false-alarm-rate", "0.5"])
    explained = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert code == 0 and explained["threshold"] == pytest.approx(expected)
    code = main([*base, "--out", str(tmp_path / "g.csv"), "--confidence", "0.9", "--threshold", "global"])
    assert code == 2
    assert "saved with the model; drop --threshold global" in capsys.readouterr().err
    globless = tmp_path / "global-model"
    saved.validation_scores_ = np.zeros(0)
    saved.save(globless)
    score_globless = ["score", "--model", str(globless), "--data", str(workspace["test"])]
    code = main([*score_globless, "--out", str(tmp_path / "x.csv"), "--confidence", "0.9"])
    assert code == 2 and "keeps no validation scores" in capsys.readouterr().err
    score_global = [*score_globless, "--threshold", "global"]
    assert main([*score_global, "--out", str(tmp_path / "y.csv"), "--confidence", "0.9"]) == 2
    assert "this model keeps none" in capsys.readouterr().err  # one error that says both


def test_fit_warns_when_the_hold_out_holds_few_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """60 sequences of 3 distinct contents: the hold-out keeps copies together, so the threshold
    rests on one or two patterns; fit says so."""
    patterns = [["login", "view", "pay"], ["login", "view", "view", "logout"], ["login", "pay", "logout"]]
    rows = [(f"u{i}", pos, ev) for i in range(60) for pos, ev in enumerate(patterns[i % 3])]
    data = tmp_path / "few.csv"
    pd.DataFrame(rows, columns=["sequence", "order", "event"]).to_csv(data, index=False)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    code = main(
        ["fit", "--data", str(data), "--config", str(config), "--epochs", "1", "--out", str(tmp_path / "m")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "hold only 1 distinct sequence(s)" in captured.err and "--validation FILE" in captured.err


def test_fit_reports_repairs_and_custom_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = make_frame(3, 30, 0, "u").rename(columns={"sequence": "user", "event": "action", "order": "step"})
    frame["device"] = np.where(np.arange(len(frame)) % 7 == 0, "", "laptop")
    frame["channel"] = "web"  # not mapped: fit says so
    data = tmp_path / "custom.csv"
    frame.to_csv(data, index=False)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    flags = ["--sequence-col", "user", "--event-col", "action", "--order-col", "step"]
    flags += ["--context-cols", "device"]
    code = main(["fit", "--data", str(data), "--config", str(config), "--out", str(tmp_path / "m"), *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "repaired" in captured.out and "missing context 'device'" in captured.out
    assert "columns not used: channel (" in captured.out
    # score reuses the saved column map: no flags needed for the same layout
    out = str(tmp_path / "s.csv")
    code = main(["score", "--model", str(tmp_path / "m"), "--data", str(data), "--out", out])
    assert code == 0, capsys.readouterr().err
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) == 30 and "label" in scores.columns


def test_score_warns_when_most_events_are_unknown_to_the_model(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another system's log scored with this model: every sequence scores high, and score says why."""
    other = pd.read_csv(workspace["test"])
    other["event"] = "other-" + other["event"].astype(str)
    other.to_csv(tmp_path / "other.csv", index=False)
    out = str(tmp_path / "s.csv")
    assert (
        main(
            ["score", "--model", str(workspace["model"]), "--data", str(tmp_path / "other.csv"), "--out", out]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "100% of the events are unknown to the model" in err and "belong together" in err
    assert (
        main(["score", "--model", str(workspace["model"]), "--data", str(workspace["test"]), "--out", out])
        == 0
    )
    assert "unknown to the model" not in capsys.readouterr().err  # the attack events alone: a few %


def test_fit_reports_the_vocabulary_and_what_it_left_out(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "small-vocab.toml"
    config.write_text(TINY_CONFIG + "\n[vocab]\nmax-size = 3\n", encoding="utf-8")
    model = str(tmp_path / "m")
    assert main(["fit", "--data", str(workspace["train"]), "--config", str(config), "--out", model]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("vocabulary: 3 event types; the "))
    assert "rarer ones (" in line and "are read as <unk>, like events never seen (vocab.max-size 3" in line
    scores = str(tmp_path / "s.csv")
    assert main(["score", "--model", model, "--data", str(workspace["test"]), "--out", scores]) == 0
    assert "never seen in training, or among the rare ones the vocabulary left out" in capsys.readouterr().out


def test_score_and_explain_mark_context_values_unseen_in_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device never seen in training is marked on its own events: events file, top events, explain."""
    frame = make_frame(3, 30, 0, "u")
    frame["device"] = "laptop"
    frame["amount"] = np.random.default_rng(0).lognormal(3.0, 0.3, len(frame)).round(2)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.to_csv(train, index=False)
    new = (frame["sequence"] == "u000") & (frame["order"] >= 2)
    frame.loc[new, "device"] = "smart fridge"
    blank = (frame["sequence"] == "u001") & (frame["order"] == 1)
    huge = (frame["sequence"] == "u002") & (frame["order"] == 1)
    frame.loc[blank, "amount"] = np.nan
    frame.loc[huge, "amount"] = 1e6
    frame.to_csv(test, index=False)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    model = str(tmp_path / "m")
    fit = ["fit", "--data", str(train), "--config", str(config), "--out", model, "--context-cols", "device"]
    fit += ["--numeric-cols", "amount"]
    code = main(fit)
    assert code == 0, capsys.readouterr().err
    scores_path, events_path = tmp_path / "s.csv", tmp_path / "e.csv"
    base = ["--model", model, "--data", str(test)]
    outputs = ["--out", str(scores_path), "--events-out", str(events_path), "--top-events", "99"]
    code = main(["score", *base, *outputs])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"unknown context values: {int(new.sum())}" in captured.out
    events = pd.read_csv(events_path, keep_default_na=False)
    steps = events[events["event"] != "<end>"]
    marked = steps.loc[steps["unseen_device"], ["sequence_id", "position"]]
    assert list(zip(marked["sequence_id"], marked["position"], strict=True)) == [
        ("u000", int(p)) for p in frame.loc[new, "order"]
    ]
    assert not events.loc[events["event"] == "<end>", "unseen_device"].any()
    scores = pd.read_csv(scores_path, keep_default_na=False).set_index("sequence_id")
    assert "[unseen device]" in scores.loc["u000", "top_events"]
    assert "[unseen device]" not in "".join(scores.drop(index="u000")["top_events"])
    # numbers far from what the model expected, and missing ones, are named too
    assert (
        "pos 1: " in scores.loc["u001", "top_events"]
        and "[amount missing]" in scores.loc["u001", "top_events"]
    )
    assert re.search(r"pos 1: \w+ \[amount \+\d+\.\dσ\]", scores.loc["u002", "top_events"])
    assert "[amount missing]" not in "".join(scores.drop(index="u001")["top_events"])

    assert main(["explain", *base, "--sequence", "u000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("unseen context: device 'smart fridge'" in line for line in lines) == int(new.sum())
    assert main(["explain", *base, "--sequence", "u000", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [ev["unseen_context"] for ev in data["events"][:3]] == [{}, {}, {"device": "smart fridge"}]
    # each event's order value, to join it back to the data, and the score's terms as numbers
    assert [ev["order"] for ev in data["events"][:3]] == ["0", "1", "2"] and data["events"][-1][
        "order"
    ] is None
    terms = data["score_terms"]
    assert data["score"] == pytest.approx(
        terms["steps"] + terms["end_weight"] * terms["end_surprisal"], rel=1e-6
    )
    assert main(["explain", *base, "--sequence", "u001", "--json"]) == 0
    missing = json.loads(capsys.readouterr().out)["events"][1]["numeric_residuals"]
    assert missing["amount"] is None  # missing: it adds nothing to the score
    assert main(["explain", *base, "--sequence", "u001"]) == 0
    assert "amount missing" in capsys.readouterr().out


def _top_events_from_explanations(detector: SequenceDetector, scored: ScoredTable, n: int) -> list[str]:
    """What ``top_events`` must say, built sequence by sequence from ``explain``'s explanations."""
    from client.results import RESIDUAL_MARK, TOP_EVENT_EXPECTED, _short

    texts = []
    for i in range(len(scored.scores)):
        parts = []
        for ev in detector.explanation(scored, i).top_events(n):
            marks = " [unseen]" if ev.unseen else ""
            if ev.unseen_context:
                marks += f" [unseen {', '.join(ev.unseen_context)}]"
            for name, r in ev.numeric_residuals.items():
                if not np.isfinite(r):
                    marks += "" if ev.unseen else f" [{name} missing]"
                elif abs(r) >= RESIDUAL_MARK:
                    marks += f" [{name} {r:+.1f}σ]"
            guesses = ", ".join(_short(t) for t, _ in ev.expected[:TOP_EVENT_EXPECTED])
            parts.append(f"pos {ev.position}: {_short(ev.event)}{marks} (expected {guesses})")
        texts.append("; ".join(parts))
    return texts


@pytest.mark.parametrize("end_event", [True, False])
def test_top_events_agree_with_each_sequences_explanation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end_event: bool
) -> None:
    """The score table's top events, built for all sequences at once, are explain's, marks and all."""
    from client.cli import build_parser
    from client.results import load_model, read_for_model, top_events_texts

    rng = np.random.default_rng(5)
    frame = make_frame(4, 40, 10, "s")
    frame["device"] = rng.choice(["laptop", "phone"], len(frame))
    frame["amount"] = rng.lognormal(3.0, 0.5, len(frame)).round(2)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame[frame["label"] == 0].to_csv(train, index=False)
    frame.loc[rng.random(len(frame)) < 0.05, "device"] = "fridge"  # unseen context values
    frame.loc[rng.random(len(frame)) < 0.05, "amount"] = np.nan  # missing numbers
    frame.loc[rng.random(len(frame)) < 0.05, "amount"] = 1e6  # far from anything expected
    frame.loc[rng.random(len(frame)) < 0.03, "event"] = "never seen, and a name well over forty characters"
    frame.to_csv(test, index=False)
    config = tmp_path / "tiny.toml"
    end = "" if end_event else "end-event = false\n"
    config.write_text(TINY_CONFIG.replace("[model]\n", "[model]\n" + end), encoding="utf-8")
    model = str(tmp_path / "m")
    fit = ["fit", "--data", str(train), "--config", str(config), "--out", model]
    assert main([*fit, "--context-cols", "device", "--numeric-cols", "amount", "-q"]) == 0
    args = build_parser().parse_args(["score", "--model", model, "--data", str(test), "--out", "x.csv"])
    detector, layout = load_model(model, None)
    table = read_for_model(test, args, detector, layout)
    scored = detector.score_table(table, expected_k=3)
    for n in (1, 3, 99):
        assert top_events_texts(detector, scored, n) == _top_events_from_explanations(detector, scored, n)
    built_at_once = top_events_texts(detector, scored, 3)
    monkeypatch.setattr("client.results._TEXT_CHUNK", 7)  # a few sequences at a time
    assert top_events_texts(detector, scored, 3) == built_at_once
    texts = top_events_texts(detector, scored, 99)  # every event: each kind of mark is there
    assert any("[unseen]" in t for t in texts) and any("[unseen device]" in t for t in texts)
    assert any("[amount missing]" in t for t in texts) and any("σ]" in t for t in texts)
    assert any("<end>" in t for t in texts) == end_event
    assert top_events_texts(detector, scored, 0) == [""] * len(texts)
    # every event the model can name comes next, as many as it can: END too only with an END step
    from client.results import event_frame

    choices = len(detector.encoder_.vocab) - (1 if end_event else 2)
    all_of_them = event_frame(detector, detector.score_table(table, expected_k=999), table, 999)
    assert f"expected_{choices}" in all_of_them and f"expected_{choices + 1}" not in all_of_them


def test_score_writes_table_and_metrics(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    metrics_path = tmp_path / "metrics.json"
    code = main(
        [
            "score",
            "--model",
            str(workspace["model"]),
            "--data",
            str(workspace["test"]),
            "--out",
            str(out),
            "--metrics-json",
            str(metrics_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    scores = pd.read_csv(out, keep_default_na=False)
    assert list(scores.columns) == SCORE_COLUMNS
    assert len(scores) == 24
    assert scores["label"].sum() == 4
    # the unseen attack events are counted and named among the top events
    attacks = scores[scores["label"] == 1]
    assert (attacks["unknown_events"] == 4).all()
    assert (scores.loc[scores["label"] == 0, "unknown_events"] == 0).all()
    assert attacks["top_events"].str.contains(r"pos \d+: \w+ \[unseen\] \(expected ", regex=True).all()
    assert scores["top_events"].str.count("; ").eq(2).all()  # 3 events each (default)
    assert (scores["flagged"] == (scores["score"] > scores["threshold"])).all()
    # p-value: the share of the model's validation normals at least as high, counting the sequence
    validation = np.sort(SequenceDetector.load(workspace["model"]).validation_scores_)
    at_least = len(validation) - np.searchsorted(validation, scores["score"].to_numpy(), side="left")
    np.testing.assert_allclose(scores["p_value"], (1 + at_least) / (len(validation) + 1))
    assert "unknown events: 16 of" in captured.out
    assert "AUROC" in captured.out
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    assert set(metrics) == METRIC_KEYS
    assert metrics["threshold_source"] == "local"
    assert metrics["n_sequences"] == 24 and metrics["n_anomalous"] == 4
    assert metrics["auroc"] > 0.85  # unseen events stand out even for a 2-epoch, 16-unit model


def test_score_and_report_break_detection_down_by_attack_type(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = make_frame(2, 20, 4, "te")
    attack = {"te020": "Hydra_FTP", "te021": "Hydra_FTP", "te022": "Web_Shell", "te023": "Web_Shell"}
    frame["attack_type"] = frame["sequence"].map(attack).fillna("")
    data = tmp_path / "typed.csv"
    frame.to_csv(data, index=False)
    metrics_path = tmp_path / "metrics.json"
    base = ["--model", str(workspace["model"]), "--data", str(data)]
    code = main(["score", *base, "--out", str(tmp_path / "s.csv"), "--metrics-json", str(metrics_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    assert set(metrics) == METRIC_KEYS | {"by_attack_type"}
    groups = metrics["by_attack_type"]
    assert list(groups) == ["Hydra_FTP", "Web_Shell"]
    assert sum(g["n"] for g in groups.values()) == 4
    assert sum(g["detected"] for g in groups.values()) == metrics["tp"]
    assert all(0.0 <= g["auroc"] <= 1.0 for g in groups.values())
    lines = captured.out.splitlines()
    at = next(i for i, line in enumerate(lines) if "by attack type" in line)
    assert lines[at].split()[-5:] == ["n", "recall", "AUROC", "det@1%", "det@5%"]
    assert lines[at + 1].split()[:2] == ["Hydra_FTP", "2"] and lines[at + 2].split()[0] == "Web_Shell"
    code = main(["report", *base, "--out", str(tmp_path / "report"), "--top", "1", "-q"])
    assert code == 0 and "by attack type" in capsys.readouterr().out
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h3>By attack type</h3>" in html and "<th>Web_Shell</th>" in html
    assert "{&#x27;" not in html and "{'" not in html  # no dict printed as a metric value
    # without the column, the metrics are as before
    plain = ["--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main(["score", *plain, "--out", str(tmp_path / "plain.csv"), "--metrics-json", str(metrics_path)])
    assert code == 0 and "by attack type" not in capsys.readouterr().out
    assert set(json.loads(metrics_path.read_text(encoding="utf-8"))) == METRIC_KEYS


def test_score_parquet_output_and_top_events_off(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.parquet"
    base = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--out", str(out), "--top-events", "0", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    scores = pd.read_parquet(out)
    assert list(scores.columns) == SCORE_COLUMNS
    assert (scores["top_events"] == "").all()
    assert captured.err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, " (0 bytes)"), (1, " (1 byte)"), (999, " (999 bytes)"), (1000, " (1.0 kB)"), (999_950, " (1.0 MB)")],
)
def test_status_lines_give_a_files_size_in_readable_units(tmp_path: Path, size: int, text: str) -> None:
    from client.console import size_text

    path = tmp_path / "f"
    with path.open("wb") as f:
        f.truncate(size)
    assert size_text(path) == text
    assert size_text(tmp_path / "missing") == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_slow_steps_without_a_count_show_a_status_line_on_a_terminal(
    workspace: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    """Reading, listing the top events and writing each show a line on a terminal, erased after."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    out = tmp_path / "scores.csv"
    base = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"]), "--out", str(out)]
    assert main([*base, "--quiet"] if quiet else base) == 0
    shown = terminal.getvalue()
    if quiet:
        assert shown == ""
        return
    size = workspace["test"].stat().st_size / 1000
    assert f"reading {workspace['test']} ({size:,.1f} kB) …" in shown
    assert "listing each sequence's most surprising events …" in shown and f"writing {out} …" in shown
    assert shown.endswith("\r") and shown.rsplit("\r", 2)[-2].strip() == ""  # each line erased after


def test_score_events_out_explains_every_sequence_score(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per event and END step; they add up to the sequence score and agree with ``explain``."""
    scores_path, events_path = tmp_path / "scores.csv", tmp_path / "events.parquet"
    base = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--out", str(scores_path), "--events-out", str(events_path), "--event-expected", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = pd.read_parquet(events_path)
    scores = pd.read_csv(scores_path, keep_default_na=False).set_index("sequence_id")
    assert f"event scores written to {events_path} ({len(events)} rows)" in captured.out
    expected = ["expected_1", "expected_1_p", "expected_2", "expected_2_p"]
    assert list(events.columns) == [*EVENT_COLUMNS, *expected, "label"]
    assert len(events) == scores["n_events"].sum() + len(scores)  # every event, then one END step each
    is_end = events["event"] == "<end>"
    assert (events.groupby("sequence_id", observed=True)["position"].max() == scores["n_events"]).all()
    assert (
        events.loc[is_end, "position"].to_numpy()
        == scores.loc[events.loc[is_end, "sequence_id"], "n_events"].to_numpy()
    ).all()
    assert events.loc[is_end, "order"].isna().all()
    # every row, END rows included, carries its sequence's label: an integer column
    assert events["label"].dtype == np.int8
    assert (events["label"] == events["sequence_id"].map(scores["label"]).astype(int)).all()
    steps = events[~is_end]
    assert (steps["order"] == steps["position"]).all()  # the file's order column holds positions
    assert (events.groupby("sequence_id", observed=True)["unseen"].sum() == scores["unknown_events"]).all()
    assert set(steps.loc[steps["unseen"], "event"]) <= set(ATTACK_EVENTS)
    assert ((events["rank"] >= 1) & (events["expected_1_p"] >= events["expected_2_p"])).all()

    # "mean" + END: the mean event score plus the fitted END weight times the END surprisal
    end_weight = json.loads((workspace["model"] / "detector.json").read_text(encoding="utf-8"))["end_weight"]
    mean = steps.groupby("sequence_id", observed=True)["score"].mean()
    end = events[is_end].set_index("sequence_id")["surprisal"]
    rebuilt = (mean + end_weight * end).reindex(scores.index)
    np.testing.assert_allclose(rebuilt.to_numpy(), scores["score"].to_numpy(), rtol=1e-5)

    # the same figures as `seqwatch explain`
    explain = ["explain", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*explain, "--sequence", "te020", "--json", "--top-k", "2"])
    explained = json.loads(capsys.readouterr().out)["events"]
    rows = events[events["sequence_id"] == "te020"]
    assert code == 0 and len(rows) == len(explained)
    for ev, (_, row) in zip(explained, rows.iterrows(), strict=True):
        assert (ev["position"], ev["event"], ev["rank"], ev["unseen"]) == (
            row["position"],
            row["event"],
            row["rank"],
            row["unseen"],
        )
        assert ev["surprisal"] == pytest.approx(row["surprisal"], rel=1e-6)
        assert [tok for tok, _ in ev["expected"]] == [row["expected_1"], row["expected_2"]]


def test_score_events_out_with_timestamps_and_amounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = make_frame(5, 30, 0, "u").drop(columns="label")
    frame["ts"] = pd.Timestamp("2026-01-05T08:00:00Z") + pd.to_timedelta(frame["order"] * 90, unit="s")
    frame["amount"] = np.where(frame["event"] == "write", 120.0, 3.5)
    frame = frame.drop(columns="order")
    data = tmp_path / "timed.csv"
    frame.to_csv(data, index=False)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    flags = ["--order-col", "ts", "--numeric-cols", "amount"]
    code = main(
        ["fit", "--data", str(data), "--config", str(config), "--out", str(tmp_path / "m"), "-q", *flags]
    )
    assert code == 0, capsys.readouterr().err
    events_path = tmp_path / "events.csv"
    base = ["score", "--model", str(tmp_path / "m"), "--data", str(data), "--out", str(tmp_path / "s.csv")]
    code = main([*base, "--events-out", str(events_path), "--event-expected", "0", "-q"])
    assert code == 0, capsys.readouterr().err
    events = pd.read_csv(events_path)
    assert list(events.columns) == [*EVENT_COLUMNS, "residual_amount", "residual_gap_seconds"]
    steps = events[events["event"] != "<end>"]
    # timestamps come back as UTC times; the first event of a sequence has no gap to predict
    first = steps[steps["position"] == 0].set_index("sequence_id")["order"]
    assert (pd.to_datetime(first) == pd.Timestamp("2026-01-05T08:00:00Z")).all()
    assert steps.loc[steps["position"] > 0, "residual_amount"].notna().all()
    assert (steps["score"] >= steps["surprisal"] - 1e-6).all()  # plus the numeric part


def test_score_events_out_flag_errors(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--out", str(tmp_path / "s.csv"), "--event-expected", "2"])
    assert code == 2 and "--event-expected applies to --events-out only" in _one_error_line(
        capsys.readouterr().err
    )
    code = main([*base, "--out", str(tmp_path / "s.csv"), "--events-out", str(tmp_path / "." / "s.csv")])
    assert code == 2 and "must name different files" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "s.csv").exists()  # refused before any work


def test_outputs_where_nothing_can_be_written_are_refused_before_any_work(
    workspace: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An output under a file, in a folder that takes no new file or over a read-only file is
    one error line naming the flag, before the data is read or a model trained (it used to
    fail after the whole training or scoring pass, naming neither the flag nor the output)."""
    import os
    import tempfile

    a_file = tmp_path / "afile"
    a_file.write_text("x", encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    missing_data = str(tmp_path / "not-read.csv")  # never reached: the checks come first
    model = str(workspace["model"])
    score = ["score", "--model", model, "--data", missing_data]
    under_file = [
        (["fit", "--data", missing_data, "--out", str(a_file / "m")], "--out"),
        ([*score, "--out", str(a_file / "deeper" / "s.csv")], "--out"),
        (
            [*score, "--out", str(tmp_path / "s.csv"), "--events-out", str(a_file / "e.parquet")],
            "--events-out",
        ),
        (["report", "--model", model, "--data", missing_data, "--out", str(a_file / "r")], "--out"),
    ]
    for argv, flag in under_file:
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"seqwatch: error: {flag} ") and f"{a_file} is a file, not a folder" in line

    real_tempfile = tempfile.TemporaryFile

    def refusing(*args: object, dir: object = None, **kwargs: object) -> object:
        if dir is not None and Path(str(dir)) == locked:
            raise PermissionError(13, "Permission denied")
        return real_tempfile(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "TemporaryFile", refusing)  # root may write anywhere: simulated
    in_locked = [
        (["fit", "--data", missing_data, "--out", str(locked / "new" / "m")], "--out"),
        (
            [*score, "--out", str(tmp_path / "s.csv"), "--metrics-json", str(locked / "m.json")],
            "--metrics-json",
        ),
        (["convert", "hdfs", "--src", str(tmp_path), "--out", str(locked)], "--out"),
    ]
    for argv, flag in in_locked:
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"seqwatch: error: {flag} ") and f"cannot write in {locked}" in line, line
        assert "Permission denied" in line

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == a_file else real_access(p, mode))
    assert main([*score, "--out", str(tmp_path / "s.csv"), "--metrics-json", str(a_file)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("seqwatch: error: --metrics-json ") and "the file is read-only" in line
    assert a_file.read_text(encoding="utf-8") == "x" and not any(locked.iterdir())
    assert not (tmp_path / "s.csv").exists()
    from common.argtypes import file_to_write

    if Path("/dev/null").exists():  # a device takes output as a file does (metrics thrown away)
        assert file_to_write("/dev/null", "--metrics-json") == Path("/dev/null")


def test_score_global_threshold_missing_is_an_error(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--out", str(tmp_path / "s.csv"), "--threshold", "global"])
    assert code == 2
    assert "no global threshold" in _one_error_line(capsys.readouterr().err)


def test_outputs_and_flags_are_checked_before_any_work(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad output path or flag is one error line before the data is read or a model trained."""
    a_file, a_dir = tmp_path / "afile", tmp_path / "adir"
    a_file.write_text("x", encoding="utf-8")
    a_dir.mkdir()
    missing_data = str(tmp_path / "not-read.csv")  # never reached: the checks come first
    model, config = str(workspace["model"]), str(workspace["config"])
    cases = [
        (
            ["fit", "--data", missing_data, "--config", config, "--out", str(a_file)],
            "is a file; name a folder",
        ),
        (["score", "--model", model, "--data", missing_data, "--out", str(a_dir)], "name a .csv, .csv.gz"),
        (
            ["score", "--model", model, "--data", missing_data, "--out", str(tmp_path / "s.xlsx")],
            "name a .csv",
        ),
        (
            [
                *["score", "--model", model, "--data", missing_data],
                "--out",
                "x.csv",
                "--metrics-json",
                str(a_dir),
            ],
            "--metrics-json",
        ),
        (
            ["report", "--model", model, "--data", missing_data, "--out", str(a_file)],
            "is a file; name a folder",
        ),
        (
            ["score", "--model", model, "--data", missing_data, "--out", "s.csv", "--threshold", "global"],
            "no global threshold",
        ),
        (
            ["explain", "--model", model, "--data", missing_data, "--sequence", "x", "--threshold", "global"],
            "no global threshold",
        ),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert needle in line and "not-read.csv" not in line, (argv, line)
    assert a_file.read_text(encoding="utf-8") == "x" and not any(a_dir.iterdir())
    # flags with a range are refused by the parser, naming the flag
    code = main(["fit", "--data", missing_data, "--out", str(tmp_path / "m"), "--false-alarm-rate", "2"])
    assert code == 2
    assert "argument --false-alarm-rate: must be at least 0 and below 1" in capsys.readouterr().err
    code = main(["score", "--model", model, "--data", missing_data, "--out", "s.csv", "--device", "gpu"])
    assert code == 2
    assert "argument --device: use auto, cpu, cuda or cuda:N, not 'gpu'" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["fit", "--data", missing_data, "--out", str(tmp_path / "m"), "--device", "cuda"]) == 2
        assert "argument --device: cuda: no CUDA device is available here" in capsys.readouterr().err
        # a device from a config file is checked before the data are read
        gpu_config = tmp_path / "gpu.toml"
        gpu_config.write_text('[train]\ndevice = "cuda:1"\n', encoding="utf-8")
        assert (
            main(["fit", "--data", missing_data, "--out", str(tmp_path / "m"), "--config", str(gpu_config)])
            == 2
        )
        assert "train.device = 'cuda:1' but no CUDA device is available" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_column_map_beside_the_data_and_a_models_layout_file(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fit reads a columns.json beside its data, as a node does; --columns takes a model's columns.json."""
    frame = make_frame(5, 30, 0, "u").rename(columns={"sequence": "user", "event": "action"})
    frame["channel"] = np.where(np.arange(len(frame)) % 2 == 0, "web", "app")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    frame.to_csv(data_dir / "train.csv", index=False)
    beside = {"sequence": "user", "event": "action", "order": "order", "context": ["channel"]}
    (data_dir / "columns.json").write_text(json.dumps(beside), encoding="utf-8")
    config = str(workspace["config"])
    code = main(
        ["fit", "--data", str(data_dir / "train.csv"), "--config", config, "--out", str(tmp_path / "m")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (
        f"columns from {data_dir / 'columns.json'}" in captured.out and "columns not used" not in captured.out
    )
    layout = json.loads((tmp_path / "m" / LAYOUT_FILE).read_text(encoding="utf-8"))
    assert layout["columns"]["context"] == ["channel"]
    # the model's own columns.json (a data layout, not a plain column map) works as --columns
    elsewhere = tmp_path / "elsewhere.csv"
    frame.to_csv(elsewhere, index=False)
    argv = ["fit", "--data", str(elsewhere), "--config", config, "--out", str(tmp_path / "m2")]
    code = main([*argv, "--columns", str(tmp_path / "m" / LAYOUT_FILE)])
    assert code == 0, capsys.readouterr().err
    assert (
        json.loads((tmp_path / "m2" / LAYOUT_FILE).read_text(encoding="utf-8"))["columns"]
        == layout["columns"]
    )


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Restore this process's torch thread count after a test that sets it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("torch_threads")
def test_threads_flag_is_saved_by_fit_and_overrides_at_scoring(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.results import load_model

    argv = ["fit", "--data", str(workspace["train"]), "--config", str(workspace["config"]), "-q"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--threads", "2"]) == 0, capsys.readouterr().err
    assert load_model(tmp_path / "m", "cpu")[0].config.train.threads == 2
    assert load_model(tmp_path / "m", "cpu", 1)[0].config.train.threads == 1
    base = ["score", "--model", str(tmp_path / "m"), "--data", str(workspace["test"]), "-q"]
    assert main([*base, "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*base, "--out", str(tmp_path / "b.csv"), "--threads", "1"]) == 0
    capsys.readouterr()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    import torch

    assert torch.get_num_threads() == 1  # the last command's --threads


def test_threshold_is_named_for_what_it_is(workspace: dict[str, Path]) -> None:
    """A coordinator's model carries only the federation's threshold: it is called global."""
    from client.results import chosen_threshold, load_model

    detector, _ = load_model(workspace["model"], "cpu")
    assert chosen_threshold(detector, "local") == (detector.threshold_, "local")
    detector.global_threshold_ = detector.threshold_
    assert chosen_threshold(detector, "local") == (detector.threshold_, "global")
    assert chosen_threshold(detector, "global") == (detector.threshold_, "global")


def test_save_load_round_trip_gives_identical_scores(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from common.config import load_config_file, parse_detector_config
    from common.detector import SequenceDetector
    from common.events import CANONICAL
    from common.tableio import read_table

    train = read_table(workspace["train"], CANONICAL)
    test = read_table(workspace["test"], CANONICAL)
    config = parse_detector_config(load_config_file(workspace["config"]))
    fitted = SequenceDetector(config).fit(train)
    fitted.save(tmp_path / "m")
    loaded = SequenceDetector.load(tmp_path / "m")
    before = fitted.decision_function(test)
    assert np.array_equal(before, loaded.decision_function(test))
    assert loaded.threshold_ == fitted.threshold_
    assert loaded.end_weight_ == fitted.end_weight_

    # the CLI's scores (through a CSV file) are the loaded detector's, to the bit
    out = tmp_path / "s.csv"
    model = str(tmp_path / "m")
    code = main(["score", "--model", model, "--data", str(workspace["test"]), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    scores = pd.read_csv(out, dtype={"score": str})
    # Python's float() reads back exactly what was written (pandas 2's default parser may miss the last bit)
    assert np.array_equal(np.array([float(x) for x in scores["score"]]), before)
    assert list(scores["sequence_id"]) == [str(i) for i in test.grouped().ids]

    # a model saved before the END step existed loads as a model without it
    meta_path = tmp_path / "m" / "detector.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    assert meta["config"].pop("model.end-event") is True
    del meta["calibrated_for"]  # which such a model did not have either
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    old = SequenceDetector.load(tmp_path / "m")
    assert old.config.model.end_event is False
    assert old.score_table(test).events.end_surprisal is None


def test_a_model_saved_before_the_numeric_head_read_the_next_event_still_loads(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    from common.config import load_config_file, parse_detector_config, with_overrides
    from common.detector import SequenceDetector
    from common.events import ColumnMap
    from common.tableio import from_frame

    frame = make_frame(3, 30, 0, "am")
    frame["amount"] = np.random.default_rng(0).lognormal(size=len(frame))
    columns = ColumnMap(sequence="sequence", event="event", order="order", numeric=("amount",), label="label")
    table = from_frame(frame, columns)
    config = parse_detector_config(load_config_file(workspace["config"]))
    for given in (True, False):
        cfg = with_overrides(config, model={"numeric_given_event": given})
        fitted = SequenceDetector(cfg).fit(table)
        fitted.save(tmp_path / str(given))
        meta_path = tmp_path / str(given) / "detector.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        assert meta["config"]["model.numeric-given-event"] is given
        if not given:  # as saved before the key existed
            del meta["config"]["model.numeric-given-event"]
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
        loaded = SequenceDetector.load(tmp_path / str(given))
        assert loaded.config.model.numeric_given_event is given
        np.testing.assert_array_equal(loaded.decision_function(table), fitted.decision_function(table))


def test_an_unlikely_device_is_scored_through_the_context_part_and_saved(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    from common.config import DETECTOR_META, load_config_file, parse_detector_config, with_overrides
    from common.detector import SequenceDetector
    from common.events import ColumnMap
    from common.tableio import from_frame

    rng = np.random.default_rng(0)
    columns = ColumnMap(sequence="sequence", event="event", order="order", context=("device",), label="label")

    def with_devices(frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["sequence"].unique()
        device = dict(zip(ids, rng.choice(["phone", "laptop"], size=len(ids), p=[0.7, 0.3]), strict=True))
        return frame.assign(device=frame["sequence"].map(device))

    train = from_frame(with_devices(make_frame(5, 80, 0, "tr")), columns)
    validation = from_frame(with_devices(make_frame(6, 40, 0, "va")), columns)
    cfg = parse_detector_config(load_config_file(workspace["config"]))
    config = with_overrides(cfg, model={"context_head": True}, train={"epochs": 20, "lr": 0.02})
    det = SequenceDetector(config).fit(train, validation)
    assert det.context_fusion_ is not None and det.context_fusion_.scale > 0
    # the same events on a device never seen in training: the context part decides, and flags it
    one = make_frame(7, 1, 0, "x")
    usual = from_frame(one.assign(device="phone"), columns)
    tablet = from_frame(one.assign(device="tablet"), columns)
    s_usual, s_tablet = det.decision_function(usual)[0], det.decision_function(tablet)[0]
    assert s_tablet > det.threshold_ and s_tablet > s_usual + 1.0
    why = det.explain(tablet, "x000")
    assert why.score_parts is not None and why.score_terms is not None
    assert "largest context surprisal" in why.score_parts and why.score == pytest.approx(s_tablet)
    assert why.score_terms["context_score"] == pytest.approx(s_tablet)
    per_event = [ev.context_surprisal for ev in why.events[: why.n_events]]
    assert all(x is not None for x in per_event) and why.events[-1].context_surprisal is None  # END
    assert max(x for x in per_event if x is not None) == pytest.approx(why.score_terms["context_surprisal"])
    assert "context " in why.to_text() and why.to_dict()["events"][0]["context_surprisal"] == per_event[0]
    # what it expected instead: a device it knows, never the unseen one, on every event of the session
    from common.explanation import EventExplanation

    first = why.events[0]
    assert (
        first.expected_context["device"][0] in {"phone", "laptop"}
        and 0 < first.expected_context["device"][1] <= 1
    )
    assert all("device" in ev.expected_context for ev in why.events[: why.n_events])
    assert "expected context: device" in why.to_text()
    # the context set the score: its least expected event is marked, and shown however few are
    assert why.context_event is not None and why.context_event.context_surprisal == max(
        x for x in per_event if x is not None
    )
    culprit_line = f">> {why.context_event.position} "
    assert any(line.startswith(culprit_line) for line in why.to_text(highlight=1).splitlines())
    few = why.to_text(max_events=1, highlight=1)
    assert any(line.startswith(culprit_line) for line in few.splitlines())
    shown = f"showing the 1 most anomalous of {why.n_events} events, the event whose context set the score"
    assert shown in few
    assert det.explain(usual, "x000").context_event is None
    assert EventExplanation.from_dict(first.to_dict()) == first
    assert not any(ev.expected_context.get("device") for ev in det.explain(usual, "x000").events[1:3])
    # the score table's top events start with the event whose context set the score
    from client.results import event_frame, top_events_texts

    scored_tablet = det.score_table(tablet, expected_k=2)
    assert scored_tablet.context_driven().tolist() == [True]
    lead = top_events_texts(det, scored_tablet, 3)[0].split("; ")[0]
    assert re.fullmatch(
        r"context at pos \d+: device 'tablet' \(expected device '(phone|laptop)' \(0\.\d\d\)\)", lead
    )
    assert top_events_texts(det, scored_tablet, 3, det.threshold_)[0].startswith(lead)  # flagged
    # explain and the score table read one rule (ScoredTable.context_culprits): the same event
    assert lead.startswith(f"context at pos {why.context_position}: ")
    # where the model expected the values the event had, neither names that event
    as_expected = dataclasses.replace(
        scored_tablet,
        events=dataclasses.replace(
            scored_tablet.events, context_expected=scored_tablet.encoded.context.copy()
        ),
    )
    assert as_expected.context_driven().tolist() == [True] and len(as_expected.context_culprits()[0]) == 0
    assert det.explanation(as_expected, 0).context_event is None
    assert not top_events_texts(det, as_expected, 3, det.threshold_)[0].startswith("context at")
    unflagged = top_events_texts(det, scored_tablet, 3, float(scored_tablet.scores[0]))[0]
    assert not unflagged.startswith("context at") and unflagged.count("; ") == 2
    scored_usual = det.score_table(usual, expected_k=2)
    assert not scored_usual.context_driven().any()
    assert "context at" not in top_events_texts(det, scored_usual, 3)[0]
    # hashed categories (a federation's): the model cannot name what it expected, so the lead
    # gives the event's values and their surprisal
    det.encoder_.context.hashed = True
    try:
        hashed_lead = top_events_texts(det, scored_tablet, 3)[0].split("; ")[0]
    finally:
        det.encoder_.context.hashed = False
    assert re.fullmatch(r"context at pos \d+: device 'tablet' \(\d+\.\d nats\)", hashed_lead)
    frame = event_frame(det, det.score_table(tablet, expected_k=1), tablet, 1)
    np.testing.assert_allclose(
        frame["context_surprisal"].to_numpy()[:-1], np.array(per_event, float), rtol=1e-6
    )
    # what the head expected at every event, as explain names it where it differs; none at END
    assert [frame["context_expected_device"].iloc[t] for t in range(why.n_events)] == [
        ev.expected_context["device"][0] for ev in why.events[: why.n_events]
    ]
    np.testing.assert_allclose(
        frame["context_expected_device_p"].to_numpy()[:-1],
        [ev.expected_context["device"][1] for ev in why.events[: why.n_events]],
        rtol=1e-6,
    )
    assert pd.isna(frame["context_expected_device"].iloc[-1]) and np.isnan(
        frame["context_expected_device_p"].iloc[-1]
    )
    assert "context_expected_device" not in event_frame(det, det.score_table(tablet), tablet, 0)

    # another aggregate has other spreads: scored with it, the fusion is left out; a batch size is no score
    from common.config import ScoreConfig

    other = det.score_table(tablet, ScoreConfig(aggregate="max"))
    assert other.events_part is None and other.context_score is None
    bigger = det.score_table(tablet, dataclasses.replace(det.score_config_, batch_size=7))
    assert bigger.scores[0] == pytest.approx(s_tablet)

    # saved and loaded: the same scores and fusion
    det.save(tmp_path / "m")
    loaded = SequenceDetector.load(tmp_path / "m")
    assert loaded.context_fusion_ == det.context_fusion_
    np.testing.assert_array_equal(loaded.decision_function(validation), det.decision_function(validation))
    # a damaged fusion is refused when the model loads, not turned into NaN scores
    meta_path = tmp_path / "m" / DETECTOR_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["context_fusion"] = {"shift": "nan", "scale": -2}
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match="context fusion"):
        SequenceDetector.load(tmp_path / "m")

    # a model saved before the context head existed: context values are inputs only, as they were
    old = SequenceDetector(with_overrides(config, model={"context_head": False})).fit(train, validation)
    assert old.context_fusion_ is None and old.model_.context_trunk is None
    old.save(tmp_path / "old")
    meta_path = tmp_path / "old" / DETECTOR_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["config"]["model.context-head"], meta["context_fusion"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    reloaded = SequenceDetector.load(tmp_path / "old")
    assert reloaded.config.model.context_head is False and reloaded.context_fusion_ is None
    np.testing.assert_array_equal(reloaded.decision_function(tablet), old.decision_function(tablet))
    # a context-head model saved before its previous-context input and detached training: its head
    # reads the recurrent state and the next event only, and loads and scores as it did
    early = SequenceDetector(
        with_overrides(config, model={"context_previous": False, "context_detached": False})
    ).fit(train, validation)
    early.save(tmp_path / "first")
    meta_path = tmp_path / "first" / DETECTOR_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["config"]["model.context-previous"], meta["config"]["model.context-detached"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    again = SequenceDetector.load(tmp_path / "first")
    assert not again.config.model.context_previous and again.context_fusion_ == early.context_fusion_
    np.testing.assert_array_equal(again.decision_function(tablet), early.decision_function(tablet))


def test_explain_text_and_json(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base = ["explain", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--sequence", "te020"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("sequence te020")
    assert "UNSEEN" in captured.out and "expected:" in captured.out

    code = main([*base, "--sequence", "te020", "--json", "--top-k", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["sequence_id"] == "te020" and data["label"] == 1
    assert all(len(ev["expected"]) == 2 for ev in data["events"])
    assert sum(ev["unseen"] for ev in data["events"]) == 4
    # the score is told as its parts, which add up: mean event score + END weight x END surprisal
    events, end = data["events"][:-1], data["events"][-1]
    assert end["event"] == "<end>" and data["score_parts"].startswith("mean event score ")
    mean = float(data["score_parts"].split()[3])
    weight = float(data["score_parts"].split("END weight ")[1].split()[0])
    assert mean == pytest.approx(np.mean([ev["score"] for ev in events]), abs=1e-3)
    assert mean + weight * end["surprisal"] == pytest.approx(data["score"], rel=1e-3)
    detector = SequenceDetector.load(workspace["model"])
    table = read_table(workspace["test"], CANONICAL)
    ids = table.grouped().ids.astype(str)
    p = detector.p_values(table)[list(ids).index("te020")]
    assert data["p_value"] == pytest.approx(p) and 0 < p <= 1
    assert detector.explain(table, "te020").p_value == pytest.approx(p)

    code = main([*base, "--sequence", "te0200"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "no sequence with id 'te0200'" in line


def test_report_writes_html(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    base = ["report", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    code = main([*base, "--out", str(out), "--top", "3", "--title", "CLI test"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "CLI test" in html
    assert "threshold (false-alarm rate 0.01 on the 4 validation scores saved with the model; but " in html
    code = main([*base, "--out", str(tmp_path / "again"), "--top", "1", "--false-alarm-rate", "0.5", "-q"])
    again = (tmp_path / "again" / "report.html").read_text(encoding="utf-8")
    assert code == 0 and "false-alarm rate 0.5 on the 4 validation scores" in again
    assert "recalibrated for this report" in again
    assert (out / "scores.csv").is_file()
    assert ">p-value</th>" in html and " · p-value " in html  # top-sequence table and each explained one
    assert "report written to" in captured.out and "the 3 highest-scoring sequences explained" in captured.out
    assert "flagged " in captured.out and "unknown events:" in captured.out  # as score says them
    # 4 validation scores cannot resolve 1 %: the report says so beside the threshold
    assert "but 4 validation sequences cannot resolve a rate of 0.01" in html


@pytest.mark.parametrize(
    ("argv_tail", "needle"),
    [
        (["--event-col", "action"], "missing column 'action'"),
        (["--data-missing"], "file not found"),
        (["--bad-config"], "unknown config key 'model.hiden' (did you mean 'model.hidden'?)"),
    ],
    ids=["missing-column", "nonexistent-file", "unknown-config-key"],
)
def test_fit_errors_are_one_line(
    workspace: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv_tail: list[str],
    needle: str,
) -> None:
    data = str(workspace["train"])
    config = str(workspace["config"])
    tail = list(argv_tail)
    if tail == ["--data-missing"]:
        data, tail = str(tmp_path / "nope.csv"), []
    elif tail == ["--bad-config"]:
        bad = tmp_path / "bad.toml"
        bad.write_text("[model]\nhiden = 16\n", encoding="utf-8")
        config, tail = str(bad), []
    code = main(["fit", "--data", data, "--config", config, "--out", str(tmp_path / "m"), *tail])
    captured = capsys.readouterr()
    assert code == 2
    assert needle in _one_error_line(captured.err)
    assert "Traceback" not in captured.err
    assert not (tmp_path / "m").exists()


def test_fit_without_anything_to_hold_out_says_what_it_calibrated_on(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every sequence has the same content: the hold-out never takes all of it, so the model trains,
    # and the threshold is said to come from the training sequences (with a warning), not validation
    same = pd.DataFrame(
        {
            "sequence": np.repeat(["a", "b", "c"], 3),
            "event": ["login", "view", "logout"] * 3,
            "order": [0, 1, 2] * 3,
        }
    )
    data = tmp_path / "same.csv"
    same.to_csv(data, index=False)
    code = main(
        ["fit", "--data", str(data), "--config", str(workspace["config"]), "--out", str(tmp_path / "m")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "on 3 normal training sequences" in captured.out and "training loss" in captured.out
    assert "no normal validation sequences" in captured.err and "cannot resolve" not in captured.err
    # p-values against the training sequences' own scores would be too small: none, and said so
    scores = tmp_path / "s.csv"
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(data), "--out", str(scores)]) == 0
    assert "p-values: none; the model was fitted without validation sequences" in capsys.readouterr().out
    assert pd.read_csv(scores)["p_value"].isna().all()
    # nothing normal at all: one line that says what a model needs
    same["label"] = 1
    same.to_csv(data, index=False)
    code = main(
        ["fit", "--data", str(data), "--config", str(workspace["config"]), "--out", str(tmp_path / "n")]
    )
    assert code == 2
    assert "give sequences whose label is 0" in _one_error_line(capsys.readouterr().err)


def test_validation_fraction_zero_holds_nothing_out(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "no-holdout.toml"
    config.write_text(TINY_CONFIG + "validation-fraction = 0.0\n", encoding="utf-8")
    code = main(
        ["fit", "--data", str(workspace["train"]), "--config", str(config), "--out", str(tmp_path / "m")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    n_train = pd.read_csv(workspace["train"])["sequence"].nunique()
    assert f"on {n_train} normal training sequences" in captured.out
    assert "train.validation-fraction = 0 holds none out" in captured.err


def test_missing_model_dir_is_one_line(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (
        ["score", "--out", str(tmp_path / "s.csv")],
        ["explain", "--sequence", "te000"],
        ["report", "--out", str(tmp_path / "r")],
    ):
        code = main([*command, "--model", str(tmp_path / "no-model"), "--data", str(workspace["test"])])
        assert code == 2
        assert "model directory not found" in _one_error_line(capsys.readouterr().err)


def test_score_missing_data_file_and_undetectable_columns(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["score", "--model", str(workspace["model"]), "--out", str(tmp_path / "s.csv")]
    assert main([*base, "--data", str(tmp_path / "missing.csv")]) == 2
    assert "file not found" in _one_error_line(capsys.readouterr().err)

    odd = tmp_path / "odd.csv"
    pd.DataFrame({"who": ["a", "a"], "what": ["open", "close"]}).to_csv(odd, index=False)
    # a model without a saved column map falls back to header detection, which finds nothing here
    (workspace["root"] / "model-copy").mkdir(exist_ok=True)
    for name in ("model.safetensors", "detector.json", "encoder.json"):
        (workspace["root"] / "model-copy" / name).write_bytes((workspace["model"] / name).read_bytes())
    base[2] = str(workspace["root"] / "model-copy")
    assert main([*base, "--data", str(odd)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no sequence column found" in line and "--sequence-col" in line
    assert main([*base, "--data", str(odd), "--sequence-col", "who", "--event-col", "what"]) == 0
    capsys.readouterr()

    # the model read its events in the order column's order: without that column, file order
    # would feed it another sequence, so the missing column is an error like any other
    unordered = tmp_path / "unordered.csv"
    pd.read_csv(workspace["test"]).drop(columns="order").iloc[::-1].to_csv(unordered, index=False)
    base[2] = str(workspace["model"])
    assert main([*base, "--data", str(unordered)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no order column found: the model was fitted with order column 'order'" in line
    assert "--order-col" in line


def test_verbose_error_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-v", "explain", "--model", str(tmp_path), "--data", "x.csv", "--sequence", "a"])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" in captured.err
    assert captured.err.rstrip().splitlines()[-1].startswith("seqwatch: error: ")


@pytest.mark.parametrize(
    "failure",
    [
        MemoryError("Unable to allocate 90.9 TiB for an array with shape (100000000000000,)"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 100000000000000 bytes. Error code 12 (Cannot allocate memory)"
        ),
    ],
)
def test_out_of_memory_is_one_line_that_says_what_to_lower(
    failure: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run_out(args: object, console: object) -> int:
        raise failure

    monkeypatch.setattr(cli, "cmd_fit", run_out)
    assert main(["fit", "--data", "d.csv", "--out", "m"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("seqwatch: error: out of memory (") and "train.batch-size" in line
    assert "Unable to allocate 90.9 TiB" in line or "you tried to allocate 100000000000000 bytes" in line


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object, console: object) -> int:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(cli, "cmd_fit", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["fit", "--data", "d.csv", "--out", "m"])


def test_convert_missing_source_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["convert", "adfa-ld", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert code == 2
    _one_error_line(capsys.readouterr().err)
    out = str(tmp_path / "o")
    code = main(["convert", "hdfs", "--src", str(tmp_path), "--out", out, "--version", "loghub"])
    assert code == 2
    assert "openstack only" in _one_error_line(capsys.readouterr().err)
    (tmp_path / "afile").touch()
    code = main(["convert", "hdfs", "--src", str(tmp_path), "--out", str(tmp_path / "afile")])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out" in line and "is a file; name a folder" in line


@pytest.mark.parametrize("command", [[], ["convert"], ["fit"], ["score"], ["explain"], ["report"]])
def test_help_exits_zero(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seqwatch")
    assert "examples:" in out


def test_usage_errors_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert (
        capsys.readouterr().err
        == "seqwatch: error: the following arguments are required: COMMAND (see seqwatch --help)\n"
    )
    assert main(["fit"]) == 2  # --data and --out are required
    # one line, like every other error: no usage block of twenty flags before it
    assert capsys.readouterr().err == (
        "seqwatch fit: error: the following arguments are required: --data, --out (see seqwatch fit --help)\n"
    )
    assert main(["score", "--model", "m", "--data", "d", "--out", "o", "--threshold", "median"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seqwatch score: error: argument --threshold: invalid choice" in err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("seqwatch ")


@pytest.mark.parametrize(
    "module",
    [
        "client.cli",
        "client.supernode",
        "server.cli",
        "simulations.experiment",
        "simulations.bench_quality",
        "simulations.bench_throughput",
        "simulations.bench_federation",
    ],
)
def test_every_command_line_ends_a_usage_error_in_one_line(
    module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from common.argtypes import Parser

    parser = importlib.import_module(module).build_parser()
    assert isinstance(parser, Parser)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--no-such-flag"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err and "--help)" in err, err


def test_fit_saves_the_date_order_and_sessions_it_read_with_and_they_are_reused(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dd/mm bank: fit reads day first (a day past 12), so a score file with early-month dates
    only is read day first too; a model's columns.json reused as the column map, or beside the
    data of a federation node, brings its session gap."""
    import json

    from client.data import deployment_data

    def stream(days: range) -> str:
        rows = ["user,ts,event"]
        for user in ("u1", "u2", "u3"):
            for day in days:  # two sessions a day, 6 hours apart
                for hour in (8, 14):
                    rows += [
                        f"{user},{day:02d}/03/2024 {hour:02d}:{m:02d}:00,e{(m + day) % 4}" for m in range(5)
                    ]
        return "\n".join(rows) + "\n"

    train = tmp_path / "streams.csv"
    train.write_text(stream(range(5, 16)), encoding="utf-8")
    config = str(workspace["config"])
    flags = ["--sequence-col", "user", "--order-col", "ts", "--config", config]
    first = tmp_path / "m1"
    assert main(["fit", "--data", str(train), *flags, "--session-gap", "3600", "--out", str(first)]) == 0
    saved = json.loads((first / "columns.json").read_text(encoding="utf-8"))
    assert saved["session_gap"] == 3600.0 and saved["columns"]["day_first"] is True
    assert "training data: 66 sequences" in capsys.readouterr().out  # 3 users x 11 days x 2 sessions
    again = tmp_path / "m2"
    assert (
        main(
            [
                "fit",
                "--data",
                str(train),
                "--columns",
                str(first / "columns.json"),
                "--config",
                config,
                "--out",
                str(again),
            ]
        )
        == 0
    )
    assert "training data: 66 sequences" in capsys.readouterr().out
    early = tmp_path / "early.csv"
    early.write_text(stream(range(2, 5)), encoding="utf-8")
    out = tmp_path / "s.csv"
    assert main(["score", "--model", str(first), "--data", str(early), "--out", str(out)]) == 0
    assert "read month first" not in capsys.readouterr().err  # read as fit read: day first
    assert len(pd.read_csv(out)) == 18
    # the same with the order column renamed and named by flag: still timestamps, still day first
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(stream(range(2, 5)).replace("user,ts,", "user,when,"), encoding="utf-8")
    flags = ["--order-col", "when", "--out", str(tmp_path / "r.csv")]
    assert main(["score", "--model", str(first), "--data", str(renamed), *flags]) == 0
    assert "read month first" not in capsys.readouterr().err
    assert_frame_equal(pd.read_csv(tmp_path / "r.csv"), pd.read_csv(out))
    first_id = str(pd.read_csv(out)["sequence_id"].iloc[0])
    assert (
        main(["explain", "--model", str(first), "--data", str(early), "--sequence", first_id, "--json"]) == 0
    )
    stamps = [ev["order"] for ev in json.loads(capsys.readouterr().out)["events"][:2]]
    assert re.fullmatch(r"2024-03-0[234]T\d\d:\d\d:00Z", stamps[0]) and stamps[0] < stamps[1]
    node = tmp_path / "node"
    node.mkdir()
    (node / "train.csv").write_text(
        stream(range(5, 16)).replace("user,ts,", "sequence,order,"), encoding="utf-8"
    )
    layout = dict(saved, columns={**saved["columns"], "sequence": "sequence", "order": "order"})
    (node / "columns.json").write_text(json.dumps(layout), encoding="utf-8")
    assert len(deployment_data(str(node)).train) == 66


def test_help_is_fast_and_module_runs() -> None:
    """``python -m client --help`` works without importing torch or pandas."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['seqwatch', '--help']\n"
        "try:\n    runpy.run_module('client', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "heavy = [m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: seqwatch" in result.stdout


def test_end_weight_is_fitted_on_validation_normals_and_saved(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    import json

    from common.config import DETECTOR_META, ScoreConfig, load_config_file, parse_detector_config
    from common.detector import SequenceDetector
    from common.events import CANONICAL
    from common.tableio import read_table

    train = read_table(workspace["train"], CANONICAL)
    frame = make_frame(3, 30, 0, "va")
    frame.to_csv(tmp_path / "val.csv", index=False)
    validation = read_table(tmp_path / "val.csv", CANONICAL)
    config = parse_detector_config(load_config_file(workspace["config"]))
    det = SequenceDetector(config).fit(train, validation)

    # the ratio of the spreads of the two score parts on the validation normals
    parts = det.score_table(validation, ScoreConfig(end_weight=0.0))
    base, end = parts.scores, parts.events.end_surprisal
    assert end is not None
    assert det.end_weight_ == pytest.approx(float(base.std() / end.std()), rel=1e-6)
    assert det.end_weight_ != config.score.end_weight
    np.testing.assert_allclose(det.decision_function(validation), base + det.end_weight_ * end, rtol=1e-6)
    assert det.threshold_ <= float(np.max(det.decision_function(validation)))

    # a model saved before the weight was fitted scores with the configured one
    det.save(tmp_path / "m")
    meta_path = tmp_path / "m" / DETECTOR_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["end_weight"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert SequenceDetector.load(tmp_path / "m").end_weight_ == config.score.end_weight

    fixed = parse_detector_config({**load_config_file(workspace["config"]), "score.fit-end-weight": False})
    assert SequenceDetector(fixed).fit(train, validation).end_weight_ == fixed.score.end_weight


def test_count_progress_draws_a_bar_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.console import CountProgress

    with CountProgress(1000, desc="score", unit="event", quiet=False) as progress:
        progress(400)
    assert capsys.readouterr().err == ""  # not a terminal: silent
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with CountProgress(1000, desc="score", unit="event", quiet=False) as progress:
        progress(400)
        progress(600)
        assert progress._bar is not None and progress._bar.n == 1000
    err = capsys.readouterr().err
    assert "score:" in err and "/1.00k" in err  # tqdm redraws at its own pace; the bar was drawn
    with CountProgress(1000, desc="score", unit="event", quiet=True) as progress:
        progress(1000)
    assert capsys.readouterr().err == ""


def test_a_warning_during_a_progress_bar_gets_its_own_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from client.console import CountProgress, setup_logging

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    setup = setup_logging(verbose=0, quiet=False)
    try:
        with CountProgress(1000, desc="score", unit="event", quiet=False) as progress:
            progress(400)
            logging.getLogger("common.test").warning("look at this")
            progress(600)
    finally:
        setup.undo()
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert "seqwatch: warning: look at this" in lines  # a line of its own, not glued to the bar


def test_epoch_progress_shows_each_epochs_events_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.console import EpochProgress

    row = {"epoch": 1.0, "train_loss": 2.0, "val_loss": 2.5}
    with EpochProgress(2, quiet=False) as progress:
        progress.events(1, 900, 500)
        progress(1, row)
    assert capsys.readouterr().err == "epoch 1/2  train_loss 2.0000  val_loss 2.5000\n"  # a log: lines only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with EpochProgress(2, quiet=False) as progress:
        progress.events(1, 900, 500)
        progress.events(1, 900, 400)
        bar = progress._events
        assert bar is not None and (bar.n, bar.total) == (900, 900)
        progress(1, row)
        err = capsys.readouterr().err
        progress.events(2, 900, 300)  # a new epoch starts the inner bar again
        assert (bar.n, bar.total, bar.desc) == (300, 900, "epoch 2: ")
    redrawn = capsys.readouterr().err
    assert "fit:" in err and "epoch 1" in err and "/900" in err
    assert "epoch 2" in redrawn and "epoch 1" not in redrawn  # the restarted bar never shows the old epoch
    with EpochProgress(2, quiet=True) as progress:
        progress.events(1, 900, 900)
        progress(1, row)
    assert capsys.readouterr().err == ""


def test_fit_selects_like_the_table_level_split(workspace: dict[str, Path]) -> None:
    """fit() drops labelled anomalies and holds out on the grouped views, without copying the
    table; the model equals one fitted on the tables that :func:`holdout_split` gives."""
    import torch

    from common.config import load_config_file, parse_detector_config
    from common.detector import SequenceDetector, holdout_split
    from common.events import CANONICAL
    from common.tableio import from_frame

    table = from_frame(make_frame(4, 40, 6, "mix"), CANONICAL)
    g = table.grouped()
    assert g.labels is not None and int(g.labels.sum()) == 6
    config = parse_detector_config(load_config_file(workspace["config"]))
    fit, held_out = holdout_split(
        table.subset(g.ids[g.labels == 0]), config.train.validation_fraction, config.train.seed
    )
    assert len(fit) > 0 and len(held_out) > 0
    direct = SequenceDetector(config).fit(table)
    split = SequenceDetector(config).fit(fit, held_out)
    assert direct.encoder_.to_dict() == split.encoder_.to_dict()
    for a, b in zip(direct.model_.state_dict().values(), split.model_.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert (direct.threshold_, direct.end_weight_) == (split.threshold_, split.end_weight_)
    np.testing.assert_array_equal(direct.validation_scores_, split.validation_scores_)


def _nan_weights(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(d / "model.safetensors"))
    first = next(iter(weights))
    weights[first][0] = float("nan")
    save_file(weights, str(d / "model.safetensors"))


def test_damaged_model_directories_are_one_error_line(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbled weights or metadata, or files of different models: a ModelFileError, never another error."""
    import shutil

    from common.detector import SequenceDetector
    from common.errors import ModelFileError

    def damaged(name: str, edit: Callable[[Path], None]) -> Path:
        d = tmp_path / name
        shutil.copytree(workspace["model"], d)
        edit(d)
        return d

    def meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
        def edit(d: Path) -> None:
            data = json.loads((d / "detector.json").read_text(encoding="utf-8"))
            (d / "detector.json").write_text(json.dumps(change(data)), encoding="utf-8")

        return edit

    cases = {
        "garbage-weights": lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64),
        "empty-weights": lambda d: (d / "model.safetensors").write_bytes(b""),
        "meta-list": meta(lambda m: []),
        "no-threshold": meta(lambda m: {k: v for k, v in m.items() if k != "threshold"}),
        "text-threshold": meta(lambda m: {**m, "threshold": "abc"}),
        "null-threshold": meta(lambda m: {**m, "threshold": None}),
        "old-version": meta(lambda m: {**m, "format_version": 0}),
        "other-shape": meta(
            lambda m: {**m, "shape": {**m["shape"], "vocab_size": m["shape"]["vocab_size"] + 1}}
        ),
        "empty-encoder": lambda d: (d / "encoder.json").write_text("{}", encoding="utf-8"),
        # values a damaged (or hand-edited) file holds: refused, never scored with
        "nan-threshold": meta(lambda m: {**m, "threshold": float("nan")}),
        "bool-threshold": meta(lambda m: {**m, "threshold": True}),
        "quoted-threshold": meta(lambda m: {**m, "threshold": "4.5"}),
        "inf-global": meta(lambda m: {**m, "global_threshold": float("inf")}),
        "negative-threshold": meta(lambda m: {**m, "threshold": -1.0}),
        "negative-end-weight": meta(lambda m: {**m, "end_weight": -0.5}),
        "nan-validation": meta(lambda m: {**m, "validation_scores": [float("nan"), *m["validation_scores"]]}),
        "bad-config": meta(lambda m: {**m, "config": {**m["config"], "calibration.false-alarm-rate": 5.0}}),
        "nan-weights": _nan_weights,
        # a config edited into what fit refuses, or into a key its events were never hashed with
        "topk-all": meta(
            lambda m: {**m, "config": {**m["config"], "score.aggregate": "topk-miss", "score.top-k": 1000}}
        ),
        "key-unhashed": meta(lambda m: {**m, "config": {**m["config"], "vocab.hash-key": "secret"}}),
        # a key that changes the scores, edited after calibration: the threshold would judge
        # scores of one kind by another's
        "aggregate-edited": meta(lambda m: {**m, "config": {**m["config"], "score.aggregate": "max"}}),
        "end-step-off": meta(lambda m: {**m, "config": {**m["config"], "model.end-event": False}}),
        "calibrated-for-list": meta(lambda m: {**m, "calibrated_for": []}),
    }
    for name, edit in cases.items():
        d = damaged(name, edit)
        with pytest.raises(ModelFileError):
            SequenceDetector.load(d)
        out = str(tmp_path / f"{name}.csv")
        assert main(["score", "--model", str(d), "--data", str(workspace["test"]), "--out", out]) == 2, name
        line = _one_error_line(capsys.readouterr().err)
        assert str(d) in line, (name, line)


def test_a_saved_config_edited_in_a_key_that_changes_scores_is_refused_at_load(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    """The threshold, END weight and validation scores hold for the score settings they were
    calibrated with (``calibrated_for``); keys that cannot change this model's scores may change."""
    import shutil

    from common.detector import SequenceDetector
    from common.errors import ModelFileError

    def edited(name: str, config: dict[str, object], drop_record: bool = False) -> Path:
        d = tmp_path / name
        shutil.copytree(workspace["model"], d)
        meta = json.loads((d / "detector.json").read_text(encoding="utf-8"))
        meta["config"].update(config)
        if drop_record:
            del meta["calibrated_for"]
        (d / "detector.json").write_text(json.dumps(meta), encoding="utf-8")
        return d

    saved = json.loads((workspace["model"] / "detector.json").read_text(encoding="utf-8"))
    assert saved["calibrated_for"]["score.aggregate"] == saved["config"]["score.aggregate"] == "mean"
    with pytest.raises(ModelFileError) as raised:
        SequenceDetector.load(edited("window", {"score.aggregate": "window-min"}))
    message = str(raised.value)
    assert "score.aggregate = 'window-min' (calibrated with 'mean')" in message
    assert "score.window = 10 (not read at calibration)" in message and "restore them" in message
    # calibrated with window-min over 10 events, edited back to mean: the window is no longer read
    window = edited("window-min", {"score.aggregate": "mean"})
    meta = json.loads((window / "detector.json").read_text(encoding="utf-8"))
    meta["calibrated_for"].update({"score.aggregate": "window-min", "score.window": 10})
    (window / "detector.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"score\.window no longer read \(calibrated with 10\)"):
        SequenceDetector.load(window)
    # the window of a mean, the batch size, the fixed END weight and the threads change no score
    harmless: dict[str, object] = {
        "score.window": 50,
        "score.batch-size": 7,
        "score.end-weight": 0.9,
        "train.threads": 1,
    }
    reference = SequenceDetector.load(workspace["model"])
    loaded = SequenceDetector.load(edited("harmless", harmless))
    assert (loaded.threshold_, loaded.end_weight_) == (reference.threshold_, reference.end_weight_)
    # a model saved before the record existed is not checked
    SequenceDetector.load(edited("older", {"score.aggregate": "max"}, drop_record=True))


def test_saved_model_keeps_its_training_summary_and_save_never_mixes_folders(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from common.detector import SequenceDetector
    from common.errors import ModelFileError, NotFittedError

    with pytest.raises(NotFittedError) as raised:
        SequenceDetector().predict(None)  # type: ignore[arg-type]
    # as scikit-learn's
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, AttributeError)

    detector = SequenceDetector.load(workspace["model"])
    fit = detector.fit_result_
    assert fit is not None and fit.monitored == "validation" and len(fit.history) >= fit.best_epoch >= 1
    assert SequenceDetector.load(detector.save(tmp_path / "again")).fit_result_ == fit
    detector.save(tmp_path / "again")  # an earlier model's folder is replaced
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ModelFileError, match="holds other files and no seqwatch model"):
        detector.save(busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    # the CLI says so before it reads or trains anything
    code = main(["fit", "--data", str(tmp_path / "absent.csv"), "--out", str(busy)])
    assert code == 2
    assert "--out " + str(busy) + ": the folder holds other files" in _one_error_line(capsys.readouterr().err)


def test_library_contract_edges(workspace: dict[str, Path], tmp_path: Path) -> None:
    """Unfitted use raises NotFittedError; ids compare as text; a hash key is saved owner-only."""
    import stat

    from common.config import with_overrides
    from common.detector import SequenceDetector
    from common.errors import NotFittedError
    from common.events import CANONICAL
    from common.tableio import read_table

    fresh = SequenceDetector()
    for use in (lambda: fresh.network_shape, lambda: fresh.fit_scoring(None)):  # type: ignore[arg-type]
        with pytest.raises(NotFittedError):
            use()
    fresh.calibrate(np.array([1.0, 2.0]))  # a threshold alone does not make a fitted detector
    assert not fresh.is_fitted
    detector = SequenceDetector.load(workspace["model"])
    frame = pd.read_csv(workspace["test"])
    frame["sequence"] = pd.factorize(frame["sequence"])[0]  # integer ids: read as text
    frame.to_csv(tmp_path / "int_ids.csv", index=False)
    table = read_table(tmp_path / "int_ids.csv", CANONICAL)
    assert detector.explain(table, 0).sequence_id == "0"
    keyed = SequenceDetector(with_overrides(detector.config, vocab={"hash_key": "s3cret"}))
    keyed.__dict__.update({k: v for k, v in detector.__dict__.items() if k.endswith("_")})
    saved = keyed.save(tmp_path / "keyed")
    assert stat.S_IMODE((saved / "detector.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((detector.save(tmp_path / "plain") / "detector.json").stat().st_mode) != 0o600


def test_library_refuses_wrong_inputs_with_what_to_use_instead(workspace: dict[str, Path]) -> None:
    import torch

    from common.config import DetectorConfig
    from common.detector import SequenceDetector
    from common.events import CANONICAL
    from common.tableio import read_table

    detector = SequenceDetector.load(workspace["model"])
    frame = pd.read_csv(workspace["test"])
    with pytest.raises(TypeError, match=r"table must be an EventTable, not DataFrame: .*from_frame"):
        detector.decision_function(frame)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train must be an EventTable, not NoneType"):
        SequenceDetector().fit(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes a DetectorConfig, not dict: .*parse_detector_config"):
        SequenceDetector({"train.epochs": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config section 'train' must be a TrainConfig, got dict"):
        DetectorConfig(train={"epochs": 1})  # type: ignore[arg-type]
    table = read_table(workspace["test"], CANONICAL)
    with pytest.raises(TypeError, match=r"predict\(threshold=...\) takes a number, not str"):
        detector.predict(table, threshold="3")  # type: ignore[arg-type]
    assert (detector.predict(table, threshold=1e9) == 0).all()
    for top_k in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            detector.explain(table, "te000", top_k=top_k)
    # a table without a feature the model reads is named
    with pytest.raises(DataError, match=r"^[^:]*test.csv: the model reads"):
        no_device = SequenceDetector.load(workspace["model"])
        no_device.encoder_.context.columns = {"device": ["phone"]}  # as if fitted with a device column
        no_device.decision_function(table)
    # a model trained on a GPU scores on a host without one
    gpu = workspace["root"] / "gpu-model"
    if not gpu.exists():
        shutil.copytree(workspace["model"], gpu)
        meta = json.loads((gpu / "detector.json").read_text(encoding="utf-8"))
        meta["config"]["train.device"] = "cuda"
        (gpu / "detector.json").write_text(json.dumps(meta), encoding="utf-8")
    moved = SequenceDetector.load(gpu)
    if not torch.cuda.is_available():
        assert moved.device.type == "cpu"
    np.testing.assert_allclose(moved.decision_function(table), detector.decision_function(table), rtol=1e-5)


def test_fit_holds_out_the_fraction_keeps_the_callers_random_state_and_warns_of_few_validation(
    workspace: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from common.config import parse_detector_config
    from common.detector import SequenceDetector, content_groups, holdout_mask
    from common.events import CANONICAL, ColumnMap
    from common.tableio import from_frame, read_table

    # one path of events with other amounts or devices is other data, not a copy
    rows = [
        (f"s{i}", pos, ev, [10.0, 25.0, 10.0, 10.0][i], ["phone", "phone", "web", "phone"][i])
        for i in range(4)
        for pos, ev in enumerate(["login", "pay", "logout"])
    ]
    paths = pd.DataFrame(rows, columns=["sequence", "order", "event", "amount", "device"])
    table = from_frame(
        paths,
        ColumnMap(
            sequence="sequence", event="event", order="order", numeric=("amount",), context=("device",)
        ),
    )
    assert content_groups(table).tolist() == [0, 1, 2, 0]  # s3 copies s0; s1 and s2 differ

    # against plain tuples of rows, on many near-copies: one event, number (NaN or -0.0
    # among them), device or position apart
    rng = np.random.default_rng(0)
    base = [
        (str(e), float(a), str(d))
        for e, a, d in zip("abcab", [1.0, np.nan, 0.0, 2.0, 1.0], "pppwp", strict=True)
    ]
    variants = [base, base[:4], base[1:], base[::-1], [*base[:2], ("b", np.nan, "p"), *base[3:]]]
    variants += [[*base[:2], ("c", -0.0, "p"), *base[3:]], [*base[:4], ("b", 1.0, "w")]]
    picks = rng.integers(0, len(variants), size=60)
    rows = [(f"q{i:02d}", pos, *row) for i, v in enumerate(picks) for pos, row in enumerate(variants[v])]
    frame = pd.DataFrame(rows, columns=["sequence", "order", "event", "amount", "device"])
    mapped = ColumnMap(
        sequence="sequence", event="event", order="order", numeric=("amount",), context=("device",)
    )
    many = from_frame(frame, mapped)
    g = many.grouped()
    reference = [
        tuple(
            (str(g.events[r]), g.numeric[r].tobytes(), tuple(map(str, g.context[r])))
            for r in range(g.offsets[i], g.offsets[i + 1])
        )
        for i in range(len(g))
    ]
    assert content_groups(many).tolist() == pd.factorize(pd.Series(reference, dtype=object))[0].tolist()
    assert len(set(content_groups(many).tolist())) == len(set(picks.tolist())) == len(variants)

    # a large content group met early is passed over: the hold-out is still about the fraction
    groups = np.r_[np.zeros(50, dtype=np.int64), np.arange(1, 101)]
    for seed in range(20):
        assert holdout_mask(groups, 0.1, seed).sum() == 15, seed

    config = parse_detector_config(
        {"model.hidden": 16, "model.embed-dim": 8, "model.layers": 1, "train.epochs": 1}
    )
    train = read_table(workspace["train"], CANONICAL)
    torch.manual_seed(1234)
    expected_draw = torch.rand(3)
    torch.manual_seed(1234)
    detector = SequenceDetector(config)
    detector.global_threshold_ = 99.0  # as a federated model brings
    with caplog.at_level("WARNING"):
        detector.fit(train)
    assert torch.equal(torch.rand(3), expected_draw)  # fit left the caller's random state alone
    assert detector.global_threshold_ is None  # it belonged to the model fitted before
    assert len(detector.validation_scores_) == 4  # 10 % of 40 sequences
    assert "train.csv: 4 validation sequences cannot resolve a rate of 0.01" in caplog.text
    assert "or a larger train.validation-fraction" in caplog.text


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.tsv", "out.tsv.gz"])
@pytest.mark.parametrize("awkward", [False, True])
def test_written_frames_read_back_as_they_were(
    tmp_path: Path, name: str, awkward: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Score and event files: text as it is (quoted only where it must be), booleans True/False,
    times ISO 8601 UTC, missing values empty, whichever writer (Arrow's, in pieces, or pandas' for
    text that needs quotes) wrote them."""
    monkeypatch.setattr("client.results._WRITE_ROWS", 2)  # three rows: written in two pieces
    sep = "\t" if ".tsv" in name else ","
    token = f'say "hi"{sep} bye' if awkward else "login"
    frame = pd.DataFrame(
        {
            "sequence_id": pd.Categorical(["a", "a", "b"]),
            "event": pd.Categorical([token, "pay", None]),
            "order": pd.to_datetime([1.7e9, 1.7e9 + 0.25, np.nan], unit="s", utc=True),
            "unseen": [True, False, False],
            "score": np.array([1.5, np.nan, 3.0], dtype=np.float32),
            "rank": pd.array([1, 2, None], dtype="Int64"),
            "note": ["x", None, "z"],
        }
    )
    out = write_frame(frame, tmp_path / name)
    raw = gzip.decompress(out.read_bytes()) if name.endswith(".gz") else out.read_bytes()
    if not awkward:  # nothing quoted
        assert raw.decode().splitlines()[1].split(sep) == [
            "a",
            "login",
            "2023-11-14T22:13:20.000Z",
            "True",
            "1.5",
            "1",
            "x",
        ]
    back = pd.read_csv(out, sep=sep, keep_default_na=False, dtype=str)
    assert list(back.columns) == list(frame.columns)
    assert list(back["event"]) == [token, "pay", ""]
    assert list(back["order"]) == ["2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.250Z", ""]  # one unit
    assert list(back["unseen"]) == ["True", "False", "False"]
    assert [float(v) if v else None for v in back["score"]] == [1.5, None, 3.0]
    assert list(back["rank"]) == ["1", "2", ""] and list(back["note"]) == ["x", "", "z"]


@pytest.mark.parametrize("name", ["out.csv", "out.tsv"])
def test_written_frames_keep_one_time_format_and_odd_columns(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole seconds (midnight too) print as 2026-01-05T00:00:00Z in every piece; a year beyond
    2262 survives; nullable booleans, categories of any kind, pandas' NA, and non-text or repeated
    column names print as pandas prints them."""
    monkeypatch.setattr("client.results._WRITE_ROWS", 2)
    sep = "\t" if name.endswith(".tsv") else ","
    stamps = ["2026-01-05T00:00:00", "2026-01-05T08:00:00", "NaT", "3000-01-01T00:00:00"]
    times = pd.Series(np.array(stamps, dtype="datetime64[s]"))
    frame = pd.DataFrame(
        {
            "t": times.dt.tz_localize("UTC"),
            "flag": pd.array([True, False, True, None], dtype="boolean"),
            "cat": pd.Categorical([True, False, True, None]),
            "mixed": pd.Categorical([1, "a", 1, "a"]),
            "text": pd.array(["x", None, "z", "w"], dtype="string"),
        }
    )
    frame[0] = [1.5, 2.0, np.nan, 4.0]  # a column named by a number
    frame = pd.concat([frame, frame[["text"]]], axis=1)  # and one name twice
    out = write_frame(frame, tmp_path / name)
    lines = out.read_text().splitlines()
    assert lines[0].split(sep) == ["t", "flag", "cat", "mixed", "text", "0", "text"]
    rows = [line.split(sep) for line in lines[1:]]
    assert [r[0] for r in rows] == [
        "2026-01-05T00:00:00Z",
        "2026-01-05T08:00:00Z",
        "",
        "3000-01-01T00:00:00Z",
    ]
    assert [r[1] for r in rows] == ["True", "False", "True", ""] == [r[2] for r in rows]
    assert [r[3] for r in rows] == ["1", "a", "1", "a"]
    assert [r[4] for r in rows] == ["x", "", "z", "w"] == [r[6] for r in rows]
    assert [float(r[5]) if r[5] else None for r in rows] == [1.5, 2.0, None, 4.0]
    back = pd.read_csv(out, sep=sep)
    # (pandas 2.2 reads no year 3000 in nanoseconds: the first two)
    assert pd.to_datetime(back["t"].iloc[:2], utc=True).iloc[1] == pd.Timestamp("2026-01-05T08:00:00Z")


def test_fit_saves_the_encoding_it_read_and_score_reuses_it(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = make_frame(3, 30, 0, "w")
    frame["event"] = frame["event"] + "\u00e9"  # é: one byte in cp1252, not valid UTF-8 alone
    data = tmp_path / "windows.csv"
    frame.to_csv(data, index=False, encoding="cp1252")
    model = tmp_path / "model"
    base = ["--config", str(workspace["config"]), "-q"]
    assert main(["fit", "--data", str(data), "--encoding", "cp1252", "--out", str(model), *base]) == 0
    assert json.loads((model / LAYOUT_FILE).read_text(encoding="utf-8"))["encoding"] == "cp1252"
    out = tmp_path / "s.csv"
    assert main(["score", "--model", str(model), "--data", str(data), "--out", str(out), "-q"]) == 0
    assert pd.read_csv(out)["unknown_events"].eq(0).all()  # read as fit read them
    # a UTF-8 export read in the model's cp1252 would be garbled: said
    utf8 = tmp_path / "utf8.csv"
    frame.to_csv(utf8, index=False, encoding="utf-8")
    assert main(["score", "--model", str(model), "--data", str(utf8), "--out", str(out)]) == 0
    assert "but its text looks like UTF-8: pass --encoding utf-8" in capsys.readouterr().err
    # a model's columns.json saved again with a byte-order mark still brings its layout
    from client.datafiles import layout_file

    bom = tmp_path / "columns.json"
    bom.write_bytes(b"\xef\xbb\xbf" + (model / LAYOUT_FILE).read_bytes())
    layout = layout_file(bom)
    assert layout is not None and layout.encoding == "cp1252"
    # a flag still decides, and the old default's error says what to pass
    score = ["score", "--model", str(model), "--data", str(data), "--out", str(out)]
    code = main([*score, "--encoding", "utf-8"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "is not valid utf-8" in line and "--encoding cp1252" in line


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"session_gap": True},
            "key 'session_gap' must be a number of seconds > 0, or null for none; got True",
        ),
        ({"session_gap": 0}, "key 'session_gap' must be a number of seconds > 0"),
        ({"session_gap": "nan"}, "key 'session_gap' must be a number of seconds > 0"),
        ({"session_gap": float("inf")}, "key 'session_gap' must be a number of seconds > 0"),
        ({"block_size": 2.7}, "key 'block_size' must be a whole number of events > 0"),
        ({"block_size": -3}, "key 'block_size' must be a whole number of events > 0"),
        ({"session_gap": 5, "block_size": 5}, "keys 'session_gap' and 'block_size' are both set"),
        ({"encoding": 8}, "key 'encoding' must be text"),
        ({"format_version": 99}, "format_version 99 is not one this seqwatch reads"),
    ],
)
def test_a_layout_files_session_settings_are_checked_by_key(changes: dict[str, Any], message: str) -> None:
    from client.datafiles import DataLayout

    good = DataLayout(ColumnMap(sequence="user", event="action"), session_gap=60.0).to_dict()
    assert DataLayout.from_dict(
        {**good, "block_size": 10**20, "session_gap": None}, source="m.json"
    ).block_size
    with pytest.raises(
        ModelFileError, match=re.escape(f"m.json: {message}" if "format" not in message else message)
    ):
        DataLayout.from_dict({**good, **changes}, source="m.json")


def test_an_output_that_is_an_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """score --out (or --events-out) naming the --data file would destroy it: refused before any work."""
    data = tmp_path / "d.csv"
    data.write_text("sequence_id,event\ns,a\n", encoding="utf-8")
    for flag in ("--out", "--events-out"):
        other = [] if flag == "--out" else ["--out", str(tmp_path / "s.csv")]
        code = main(["score", "--model", str(tmp_path / "m"), "--data", str(data), flag, str(data), *other])
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and f"{flag} {data} is the --data file" in line, line
    inside = tmp_path / "r" / "scores.csv"
    inside.parent.mkdir()
    inside.write_text(data.read_text(encoding="utf-8"), encoding="utf-8")
    code = main(
        ["report", "--model", str(tmp_path / "m"), "--data", str(inside), "--out", str(inside.parent)]
    )
    assert code == 2 and "is the --data file" in _one_error_line(capsys.readouterr().err)
    assert (
        data.read_text(encoding="utf-8") == inside.read_text(encoding="utf-8") == "sequence_id,event\ns,a\n"
    )


def test_numbers_too_large_for_torch_are_refused_by_name(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whole numbers beyond a C int (and absurd depths) are one error line, not a torch overflow."""
    from common.config import parse_detector_config

    for key in ("model.hidden", "train.seed", "train.chunk-len"):
        with pytest.raises(ConfigError, match=re.escape(f"config key '{key}' must be at most 2,147,483,647")):
            parse_detector_config({key: 10**30})
    with pytest.raises(ConfigError, match=r"config key 'model\.layers' must be at most 64"):
        parse_detector_config({"model.layers": 1000})
    score = ["score", "--model", str(workspace["model"]), "--data", str(workspace["test"])]
    for flag in ("--top-events", "--threads"):
        code = main([*score, "--out", str(tmp_path / "s.csv"), flag, str(10**21)])
        line = capsys.readouterr().err.strip()
        assert code == 2 and f"argument {flag}: must be at most 2,147,483,647 in size" in line, line
    # an empty --out is no folder: the report would land where the user stands
    code = main(["report", "--model", str(workspace["model"]), "--data", str(workspace["test"]), "--out", ""])
    assert code == 2 and "--out is empty; name a folder" in _one_error_line(capsys.readouterr().err)


def test_fit_config_files_are_read_as_a_whole_or_refused(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = ["fit", "--data", str(workspace["train"]), "--out", str(tmp_path / "m")]

    def one_line(text: str, name: str) -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert main([*fit, "--config", str(path), "-q"]) == 2
        return _one_error_line(capsys.readouterr().err)

    # seqwatch keys both beside and inside [tool.flwr.app.config]: one set would be dropped
    mixed = '[model]\nhidden = 16\n[tool.flwr.app.config]\n"model.kind" = "gru"\n'
    assert "keys both in [tool.flwr.app.config] and beside it (model.hidden)" in one_line(mixed, "mixed.toml")
    # one key twice, dotted and in a table: refused, not one of the two silently read
    twice = '"model.kind" = "gru"\n[model]\nkind = "rnn"\n'
    assert one_line(twice, "twice.toml").endswith(
        "twice.toml: config key 'model.kind' is given twice (dotted and in a table); keep one"
    )
    # errors name the file they come from
    assert one_line("[model]\nhiden = 16\n", "typo.toml").endswith(
        "typo.toml: unknown config key 'model.hiden' (did you mean 'model.hidden'?)"
    )
    # a top-k that covers every id makes topk-miss score everything 0
    topk = '[score]\naggregate = "topk-miss"\ntop-k = 1000\n'
    assert "score.top-k = 1000 is not below the" in one_line(topk, "topk.toml")
    assert "vocab.min-count = 1000000 keeps no event type" in one_line(
        "[vocab]\nmin-count = 1000000\n", "mincount.toml"
    )
    # federation keys do nothing for a local fit: said, not silently dropped
    fed = tmp_path / "fed.toml"
    fed.write_text(workspace["config"].read_text(encoding="utf-8") + "[federation]\nlocal-epochs = 5\n")
    assert main([*fit, "--config", str(fed), "--out", str(tmp_path / "f")]) == 0
    assert "federation.local-epochs set the federation or its simulation" in capsys.readouterr().err
    # a model's folder gives the config it was fitted with, less the device of the host it was fitted on
    assert main([*fit, "--config", str(workspace["model"]), "--out", str(tmp_path / "again"), "-q"]) == 0
    again = json.loads((tmp_path / "again" / "detector.json").read_text(encoding="utf-8"))["config"]
    first = json.loads((workspace["model"] / "detector.json").read_text(encoding="utf-8"))["config"]
    assert first["train.device"] == "cpu" and again == {**first, "train.device": "auto"}
    assert main([*fit, "--seed", "-1"]) == 2
    assert "argument --seed: must be >= 0, got -1" in capsys.readouterr().err
