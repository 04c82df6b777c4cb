from pathlib import Path

import pytest

from common.config import (
    AppConfig,
    DetectorConfig,
    load_config_file,
    parse_config,
    parse_detector_config,
    to_flat,
    with_overrides,
)
from common.errors import ConfigError


def test_defaults_round_trip_through_flat_keys():
    cfg = AppConfig()
    assert parse_config(to_flat(cfg)) == cfg
    det = DetectorConfig()
    assert parse_detector_config(to_flat(det)) == det


def test_pyproject_defaults_match_dataclass_defaults():
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    run_config = data["tool"]["flwr"]["app"]["config"]
    assert parse_config(run_config) == AppConfig()
    assert set(run_config) == set(to_flat(AppConfig())), "every knob needs a default in pyproject"


def test_ci_tests_the_oldest_versions_pyproject_accepts():
    """``.ci/floor.txt`` pins each data library at the floor of its pyproject range."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {m[1]: m[2] for d in deps if (m := re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d))}
    pins = dict(
        line.split("==")
        for line in (root / ".ci" / "floor.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )

    def release(version: str) -> tuple[int, ...]:
        parts = [int(p) for p in version.split(".")]
        return tuple(parts + [0] * (3 - len(parts)))

    for name in ("numpy", "pandas", "pyarrow"):
        assert release(pins[name]) == release(floors[name]), name


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.hiden'.*model.hidden"):
        parse_config({"model.hiden": 3})


def test_mistyped_key_is_named():
    with pytest.raises(ConfigError, match=r"'train.epochs' must be int, got str"):
        parse_config({"train.epochs": "ten"})
    with pytest.raises(ConfigError, match=r"'model.dropout' must be float"):
        parse_config({"model.dropout": True})


def test_int_is_accepted_for_float_and_values_are_validated():
    assert parse_config({"train.lr": 1}).detector.train.lr == 1.0
    with pytest.raises(ConfigError, match=r"model.kind"):
        parse_config({"model.kind": "transformer"})
    with pytest.raises(ConfigError, match=r"calibration.false-alarm-rate"):
        parse_config({"calibration.false-alarm-rate": 1.5})


def test_config_file_nested_and_dotted(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('"train.epochs" = 2\n[model]\nkind = "gru"\nhidden = 32\n')
    cfg = parse_detector_config(load_config_file(p))
    assert cfg.model.kind == "gru" and cfg.model.hidden == 32 and cfg.train.epochs == 2
    j = tmp_path / "c.json"
    j.write_text('{"score": {"aggregate": "max"}}')
    assert parse_detector_config(load_config_file(j)).score.aggregate == "max"
    bad = tmp_path / "bad.toml"
    bad.write_text("model = [")
    with pytest.raises(ConfigError, match=r"bad.toml"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.toml")


def test_with_overrides():
    cfg = with_overrides(DetectorConfig(), model={"kind": "cnn-lstm"}, train={"epochs": 1})
    assert cfg.model.kind == "cnn-lstm" and cfg.train.epochs == 1


def test_direct_construction_and_overrides_name_the_bad_key():
    """Library users building configs in Python get a ConfigError naming the key, not a TypeError."""
    import math

    from common.config import ModelConfig, TrainConfig

    for build, key in (
        (lambda: TrainConfig(lr=math.inf), "train.lr"),
        (lambda: TrainConfig(lr=math.nan), "train.lr"),
        (lambda: ModelConfig(hidden="64"), "model.hidden"),  # type: ignore[arg-type]
        (lambda: TrainConfig(epochs=2.5), "train.epochs"),  # type: ignore[arg-type]
        (lambda: TrainConfig(device=None), "train.device"),  # type: ignore[arg-type]
        (lambda: with_overrides(DetectorConfig(), model={"hiddn": 4}), "model.hiddn"),
        (lambda: with_overrides(DetectorConfig(), modle={"hidden": 4}), "modle"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build()


def test_calibration_confidence_is_for_the_false_alarm_rule():
    assert DetectorConfig().calibration.confidence == 0.0
    cfg = parse_detector_config({"calibration.confidence": 0.9})
    assert cfg.calibration.target == "false-alarm rate 0.01 with confidence 0.9"
    with pytest.raises(ConfigError, match=r"'calibration\.confidence' must be in \[0, 1\)"):
        parse_detector_config({"calibration.confidence": 1.0})
    with pytest.raises(ConfigError, match=r"applies to calibration\.false-alarm-rate"):
        parse_detector_config({"calibration.confidence": 0.9, "calibration.contamination": 0.05})


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "simulations" / "configs").glob("*.toml")), ids=str
)
def test_every_shipped_config_parses(path: Path) -> None:
    """Detector configs (``*-detector*.toml``, for bench_quality) and run configs (for the experiments)."""
    flat = load_config_file(path)
    if "detector" in path.name:
        parse_detector_config(flat)
    else:
        parse_config(flat)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("federation.trim-beta", 0.6, r"'federation.trim-beta' must be in \[0, 0.5\)"),
        ("federation.fraction-train", 0.0, "'federation.fraction-train' must be > 0"),
        ("federation.run-name", "../escape", "'federation.run-name' = '../escape': give a folder name"),
        ("federation.run-name", "", "'federation.run-name' = '': give a folder name"),
        ("federation.run-name", "..", "give a folder name"),
    ],
)
def test_federation_values_flower_or_the_file_system_would_refuse_later(key, value, message):
    """Refused where the config is parsed, before any work: Flower's FedTrimmedAvg takes beta < 0.5,
    a fraction of 0 trains no node, and a run name is one folder inside the run directory."""
    with pytest.raises(ConfigError, match=message):
        parse_config({key: value})


def test_a_saved_models_config_and_odd_files(tmp_path):
    import json

    saved = {
        "format": "seqwatch-detector",
        "config": to_flat(with_overrides(DetectorConfig(), model={"hidden": 16}, train={"device": "cuda:1"})),
    }
    model = tmp_path / "model"
    model.mkdir()
    (model / "detector.json").write_text(json.dumps(saved), encoding="utf-8")
    for path in (model, model / "detector.json"):  # the folder, or its detector.json
        cfg = parse_detector_config(load_config_file(path))
        assert cfg.model.hidden == 16 and cfg.train.device == "auto"  # the device was the model's host's
        assert cfg.model.end_event and cfg.model.numeric_given_event
    # a model saved before the END step and the event-aware numeric head: fitted without them
    # (and the context head's previous-context input and detached training, which came later still)
    assert cfg.model.context_previous and cfg.model.context_detached
    for key in (
        "model.end-event",
        "model.numeric-given-event",
        "model.context-previous",
        "model.context-detached",
    ):
        del saved["config"][key]
    (model / "detector.json").write_text(json.dumps(saved), encoding="utf-8")
    old = parse_detector_config(load_config_file(model))
    assert not old.model.end_event and not old.model.numeric_given_event
    assert not old.model.context_previous and not old.model.context_detached
    for device in ("cuda:01", "cuda:abc", "cuda:", "cuda:-1"):
        with pytest.raises(ConfigError, match="use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            parse_detector_config({"train.device": device})
    upper = tmp_path / "c.JSON"
    upper.write_text('{"train.epochs": 3}', encoding="utf-8")
    assert load_config_file(upper) == {"train.epochs": 3}
    bom = tmp_path / "c.toml"
    bom.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 4\n")  # as Windows Notepad saves it
    assert load_config_file(bom) == {"train.epochs": 4}
    listed = tmp_path / "l.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds a table of keys, not list"):
        load_config_file(listed)
    for key in ("train.seed", "data.seed"):
        with pytest.raises(ConfigError, match=f"'{key}' must be >= 0, got -1"):
            parse_config({key: -1})


def test_every_key_is_documented_with_its_default():
    """docs/configuration.md has a row per key, with the default the dataclasses give it."""
    import json

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].startswith("`") and "." in cells[1]:
            rows[cells[1].strip("`")] = cells[2].strip("`")
    flat = to_flat(AppConfig())
    assert set(rows) == set(flat)
    for key, value in flat.items():
        assert rows[key] == json.dumps(value), key
