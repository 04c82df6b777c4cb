"""Typed configuration, parsed once.

Every knob of seqwatch lives in one of the frozen dataclasses below. Flat,
dotted, kebab-case keys (``model.hidden``, ``train.epochs``) are the single
external spelling: the same keys appear in ``[tool.flwr.app.config]`` (Flower
run config), in ``seqwatch fit --config FILE`` (TOML or JSON) and under
``"config"`` in a saved model's ``detector.json``. :func:`parse_config` turns such a flat mapping
into an :class:`AppConfig` and names any unknown, missing or mistyped key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from common.errors import ConfigError

MODEL_KINDS = ("lstm", "gru", "rnn", "cnn-lstm")
AGGREGATES = ("mean", "max", "window", "window-min", "topk-miss")
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the next-event network (see :mod:`common.model`)."""

    kind: str = "lstm"
    embed_dim: int = 64
    context_dim: int = 8
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    conv_channels: int = 64
    conv_kernel: int = 3
    #: Also predict the end of every sequence (an END target after its last
    #: event): sequences cut short, or running on where normal ones stop, score
    #: as surprising at their end.
    end_event: bool = True
    #: Predict an event's numeric values (amount, time gap) knowing which event it
    #: is: ``p(event, numbers | history) = p(event | history) · p(numbers | event,
    #: history)``. Without it the numbers are predicted before the event is known,
    #: as one guess for whatever comes next (a payment's amount and a page view's 0
    #: averaged), and ordinary events carry large residuals.
    numeric_given_event: bool = True
    #: Predict an event's categorical context values (device, channel, country)
    #: knowing the event and the history, as the numbers are: their surprisal is
    #: the score's context part, so an unlikely device or country is scored, not
    #: only read (see :class:`common.scoring.ContextFusion`). No effect without
    #: context columns. Off by default: it ranks better on the synthetic
    #: institutions large and small, but at its threshold an institution with
    #: about 75 validation sessions sees twice the false alarms (docs/results.md,
    #: "Context fusion").
    context_head: bool = False
    #: The context head also reads the previous event's context values (their embeddings)
    #: directly: a session's device or country usually stays the same, which a head reading
    #: only the recurrent state learns slowly on a few hundred sessions (docs/results.md).
    context_previous: bool = True
    #: The context head learns from a detached copy of the recurrent state and the next event's
    #: embedding: its loss trains the head and the context embeddings, never the event model.
    context_detached: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("model.kind", self.kind, MODEL_KINDS)
        _positive("model.embed-dim", self.embed_dim)
        _positive("model.context-dim", self.context_dim)
        _positive("model.hidden", self.hidden)
        _positive("model.layers", self.layers)
        if self.layers > MAX_LAYERS:
            raise ConfigError(f"config key 'model.layers' must be at most {MAX_LAYERS}, got {self.layers!r}")
        _unit("model.dropout", self.dropout, closed=False)
        _positive("model.conv-channels", self.conv_channels)
        _positive("model.conv-kernel", self.conv_kernel)


@dataclass(frozen=True)
class TrainConfig:
    """Local training loop (see :mod:`common.train`)."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    chunk_len: int = 128
    patience: int = 3
    numeric_weight: float = 1.0
    loss_weighting: str = "event"
    unk_dropout: float = 0.0
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        _positive("train.epochs", self.epochs)
        _positive("train.batch-size", self.batch_size)
        _positive("train.lr", self.lr)
        _nonnegative("train.weight-decay", self.weight_decay)
        _positive("train.clip-norm", self.clip_norm)
        _positive("train.chunk-len", self.chunk_len)
        _nonnegative("train.patience", self.patience)
        _nonnegative("train.numeric-weight", self.numeric_weight)
        _choice("train.loss-weighting", self.loss_weighting, ("event", "sequence"))
        _unit("train.unk-dropout", self.unk_dropout, closed=False)
        _unit("train.validation-fraction", self.validation_fraction, closed=False)
        _nonnegative("train.seed", self.seed)
        _nonnegative("train.threads", self.threads)
        if self.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:(0|[1-9]\d*)", self.device):
            raise ConfigError(f"train.device = {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass(frozen=True)
class ScoreConfig:
    """How event scores become a sequence score (see :mod:`common.scoring`)."""

    aggregate: str = "mean"
    window: int = 10
    top_k: int = 9
    numeric_weight: float = 1.0
    batch_size: int = 64
    #: Weight of the END step's surprisal added to the averaging aggregates
    #: (mean, window, window-min); max and topk-miss count END as one more step.
    #: With ``fit_end_weight`` this is only the fallback (too little validation data).
    end_weight: float = 0.25
    #: Fit the END weight on the validation normals: the ratio of the spreads
    #: of the two parts there (see :func:`common.scoring.end_weight_from_moments`).
    fit_end_weight: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("score.aggregate", self.aggregate, AGGREGATES)
        _nonnegative("score.end-weight", self.end_weight)
        _positive("score.window", self.window)
        _positive("score.top-k", self.top_k)
        _nonnegative("score.numeric-weight", self.numeric_weight)
        _positive("score.batch-size", self.batch_size)


@dataclass(frozen=True)
class VocabConfig:
    """Event vocabulary (see :mod:`common.vocab`)."""

    max_size: int = 5000
    min_count: int = 1
    hash_key: str = ""

    def __post_init__(self) -> None:
        _check_types(self)
        _positive("vocab.max-size", self.max_size)
        _positive("vocab.min-count", self.min_count)


@dataclass(frozen=True)
class CalibrationConfig:
    """Threshold calibration on validation normal scores.

    ``confidence`` (0 = off): the threshold holds ``false_alarm_rate`` on new
    normal data with this probability, not just on the validation normals
    (:func:`common.metrics.allowed_above`); it needs more of them and sets a
    higher threshold.
    """

    false_alarm_rate: float = 0.01
    contamination: float = 0.0
    confidence: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        _unit("calibration.false-alarm-rate", self.false_alarm_rate, closed=False)
        _unit("calibration.contamination", self.contamination, closed=False)
        _unit("calibration.confidence", self.confidence, closed=False)
        if self.confidence > 0 and self.contamination > 0:
            raise ConfigError(
                "config key 'calibration.confidence' applies to calibration.false-alarm-rate, not to "
                "calibration.contamination; set one of them to 0"
            )

    @property
    def rate(self) -> float:
        """The rate the threshold targets: ``contamination`` when set, else ``false_alarm_rate``."""
        return self.contamination if self.contamination > 0 else self.false_alarm_rate

    @property
    def rule(self) -> str:
        """What :attr:`rate` is, in words: ``"contamination"`` or ``"false-alarm rate"``."""
        return "contamination" if self.contamination > 0 else "false-alarm rate"

    @property
    def target(self) -> str:
        """The rule and its rate in words: ``false-alarm rate 0.01`` (``... with confidence 0.9``)."""
        text = f"{self.rule} {self.rate:g}"
        return f"{text} with confidence {self.confidence:.10g}" if self.confidence > 0 else text


def krum_quorum(byzantine: int) -> int:
    """The fewest updates among which Krum can outvote ``byzantine`` Byzantine ones (n > 2f + 2)."""
    return 2 * byzantine + 3


@dataclass(frozen=True)
class FederationConfig:
    """Server-side knobs of a federated run (see :mod:`server.app`)."""

    num_server_rounds: int = 10
    strategy: str = "fedavg"
    local_epochs: int = 2
    fraction_train: float = 1.0
    min_nodes: int = 2
    proximal_mu: float = 0.01
    server_lr: float = 0.05
    trim_beta: float = 0.2
    krum_byzantine: int = 0
    histogram_bins: int = 200
    run_name: str = "default"
    run_dir: str = "runs"
    round_timeout: float = 600.0

    def __post_init__(self) -> None:
        _check_types(self)
        _positive("federation.num-server-rounds", self.num_server_rounds)
        _choice("federation.strategy", self.strategy, STRATEGIES)
        _positive("federation.local-epochs", self.local_epochs)
        _unit("federation.fraction-train", self.fraction_train, closed=True)
        if self.fraction_train == 0:
            raise ConfigError(
                "config key 'federation.fraction-train' must be > 0 (the share of nodes that train each "
                "round), got 0"
            )
        _positive("federation.min-nodes", self.min_nodes)
        _nonnegative("federation.proximal-mu", self.proximal_mu)
        _positive("federation.server-lr", self.server_lr)
        _unit("federation.trim-beta", self.trim_beta, closed=False)
        if self.trim_beta >= 0.5:  # Flower's FedTrimmedAvg: each end trims a share below one half
            raise ConfigError(
                f"config key 'federation.trim-beta' must be in [0, 0.5), got {self.trim_beta!r}"
            )
        name = self.run_name
        if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or name != name.strip():
            raise ConfigError(
                f"config key 'federation.run-name' = {name!r}: give a folder name (no '/', not '.' or "
                f"'..', no surrounding spaces); runs go to federation.run-dir/<run-name>"
            )
        _nonnegative("federation.krum-byzantine", self.krum_byzantine)
        quorum = krum_quorum(self.krum_byzantine)
        if self.strategy == "krum" and self.krum_byzantine and self.min_nodes < quorum:
            raise ConfigError(
                f"config key 'federation.min-nodes' = {self.min_nodes} is too few for "
                f"'federation.krum-byzantine' = {self.krum_byzantine}: Krum tells honest updates from f "
                f"Byzantine ones only among more than 2f + 2 nodes; set min-nodes to at least {quorum}, "
                f"or lower krum-byzantine"
            )
        _positive("federation.histogram-bins", self.histogram_bins)
        _positive("federation.round-timeout", self.round_timeout)


@dataclass(frozen=True)
class DataConfig:
    """Where simulated institutions get their data (simulation only)."""

    dataset: str = "synthetic"
    partitioner: str = "natural"
    alpha: float = 0.5
    synthetic_users: int = 600
    seed: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("data.dataset", self.dataset, ("synthetic", "adfa-ld", "hdfs", "openstack"))
        _choice("data.partitioner", self.partitioner, ("iid", "dirichlet", "natural"))
        _positive("data.alpha", self.alpha)
        _positive("data.synthetic-users", self.synthetic_users)
        _nonnegative("data.seed", self.seed)


@dataclass(frozen=True)
class DetectorConfig:
    """Everything a local detector needs: model, training, scoring, vocab, threshold."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        _check_sections(self)


@dataclass(frozen=True)
class AppConfig:
    """The whole run config of the Flower app."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        _check_sections(self)


def _check_sections(obj: Any) -> None:
    """Each section of a config built in Python is its section class (not, say, a dict)."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        if not isinstance(value, kind):
            whole = (
                f"parse_detector_config({{'{f.name}.<key>': value}}) or "
                f"with_overrides(config, {f.name}={{...}})"
                if isinstance(obj, DetectorConfig)
                else f"parse_config({{'{f.name}.<key>': value}})"
            )
            raise ConfigError(
                f"config section '{f.name}' must be a {kind.__name__}, got {type(value).__name__} "
                f"{value!r}: build it as {kind.__name__}(...), or the whole config with {whole}"
            )


_DETECTOR_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "score": ScoreConfig,
    "vocab": VocabConfig,
    "calibration": CalibrationConfig,
}
_APP_SECTIONS: dict[str, type] = {
    **_DETECTOR_SECTIONS,
    "federation": FederationConfig,
    "data": DataConfig,
}

APP_SECTIONS: tuple[str, ...] = tuple(_APP_SECTIONS)
"""The sections of a run config (``model``, ``train``, ..., ``federation``, ``data``)."""

Scalar = bool | int | float | str
T = TypeVar("T")


def _key(section: str, name: str) -> str:
    return f"{section}.{name.replace('_', '-')}"


_SCALAR_FIELDS: dict[str, tuple[tuple[str, str, type], ...]] = {}


def _scalar_fields(cls: type) -> tuple[tuple[str, str, type], ...]:
    """(key, field name, type) of ``cls``'s bool/int/float/str fields (worked out once per class)."""
    if cls.__name__ not in _SCALAR_FIELDS:
        section = next(name for name, c in _APP_SECTIONS.items() if c is cls)
        hints = get_type_hints(cls)
        _SCALAR_FIELDS[cls.__name__] = tuple(
            (_key(section, f.name), f.name, hints[f.name])
            for f in fields(cls)
            if hints[f.name] in (bool, int, float, str)
        )
    return _SCALAR_FIELDS[cls.__name__]


#: Largest whole number a config key takes (a C int): beyond it torch and numpy overflow.
MAX_INT = 2**31 - 1
#: Most recurrent layers a model may stack (more would not train, and a typo of many more would
#: build layers for hours before running out of memory).
MAX_LAYERS = 64


def finite_number(value: object) -> bool:
    """A finite number as JSON or TOML holds it: not ``true``/``false`` (which Python counts as
    1 and 0), not text, not NaN or infinite, and not an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_types(obj: Any) -> None:
    """Each field of a config section has its declared type (configs built in Python are checked too)."""
    for key, name, kind in _scalar_fields(type(obj)):
        _coerce(key, getattr(obj, name), kind)


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Check one value against its declared type; ints are accepted for floats."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and is_number and isinstance(value, int):
        if abs(value) > MAX_INT:  # torch and numpy take 64-bit integers at most; no knob needs more
            raise ConfigError(f"config key '{key}' must be at most {MAX_INT:,} in size, got {value!r}")
        return value
    if kind is float and is_number:
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key '{key}' must be {kind.__name__}, got {type(value).__name__} {value!r}")


def _parse_sections(flat: Mapping[str, Any], sections: Mapping[str, type]) -> dict[str, Any]:
    known: dict[str, tuple[str, str, type]] = {}
    for section, cls in sections.items():
        hints = get_type_hints(cls)
        for f in fields(cls):
            known[_key(section, f.name)] = (section, f.name, hints[f.name])
    values: dict[str, dict[str, Any]] = {s: {} for s in sections}
    for key, value in flat.items():
        if key in known:
            section, name, kind = known[key]
            values[section][name] = _coerce(key, value, kind)
        else:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
    try:
        return {s: cls(**values[s]) for s, cls in sections.items()}
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(str(exc)) from exc


def parse_detector_config(flat: Mapping[str, Any]) -> DetectorConfig:
    """Parse flat dotted keys (only detector sections) into a :class:`DetectorConfig`."""
    return DetectorConfig(**_parse_sections(flat, _DETECTOR_SECTIONS))


def parse_config(flat: Mapping[str, Any]) -> AppConfig:
    """Parse a Flower ``context.run_config`` (or any flat mapping) into an :class:`AppConfig`.

    Missing keys take their defaults; unknown or mistyped keys raise
    :class:`ConfigError` naming the key.
    """
    parts = _parse_sections(flat, _APP_SECTIONS)
    detector = DetectorConfig(**{s: parts[s] for s in _DETECTOR_SECTIONS})
    return AppConfig(detector=detector, federation=parts["federation"], data=parts["data"])


def to_flat(config: Any) -> dict[str, Scalar]:
    """Inverse of the parsers: a (Detector|App)Config as flat dotted keys."""
    sections = _APP_SECTIONS if isinstance(config, AppConfig) else _DETECTOR_SECTIONS
    out: dict[str, Scalar] = {}
    for section in sections:
        holder = (
            config.detector if isinstance(config, AppConfig) and section in _DETECTOR_SECTIONS else config
        )
        obj = getattr(holder, section)
        for f in fields(obj):
            out[_key(section, f.name)] = getattr(obj, f.name)
    return out


#: Model keys that saved models and runs from before the key existed lack, with the value
#: they were trained with: the END step, the event-aware numeric head, the context head and its
#: previous-context input and detached training came later.
LEGACY_MODEL_DEFAULTS: dict[str, Any] = {
    "model.end-event": False,
    "model.numeric-given-event": False,
    "model.context-head": False,
    "model.context-previous": False,
    "model.context-detached": False,
}


def with_legacy_defaults(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config (flat keys) with :data:`LEGACY_MODEL_DEFAULTS` for the keys it lacks."""
    return {**LEGACY_MODEL_DEFAULTS, **flat}


DETECTOR_FORMAT = "seqwatch-detector"
"""The ``format`` of a saved model's ``detector.json``, whose ``config`` is a config file's keys."""
DETECTOR_META = "detector.json"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into flat dotted keys.

    Nested tables (``[model]`` with ``hidden = 64``) and dotted keys
    (``"model.hidden" = 64``) are both accepted. A saved model's folder, or
    its ``detector.json``, gives the config the model was fitted with, less
    ``train.device`` (the default ``auto`` picks this host's).
    """
    p = Path(path)
    if p.is_dir() and (p / DETECTOR_META).is_file():
        p = p / DETECTOR_META
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_bytes().decode("utf-8-sig")
        raw = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot parse config file ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config file holds a table of keys, not {type(raw).__name__}")
    if raw.get("format") == DETECTOR_FORMAT and isinstance(raw.get("config"), dict):
        # a saved model's hyperparameters (as it was trained: keys it predates at their old values);
        # the device it trained on is its host's, not this one's
        raw = {k: v for k, v in with_legacy_defaults(raw["config"]).items() if k != "train.device"}
    try:
        return flatten(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys.

    Raises:
        ConfigError: one key given twice, dotted and in a table (``"model.kind"`` and
            ``kind`` under ``[model]``), which would leave one of the two values unread.
    """
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        parts = flatten(v, prefix=f"{key}.") if isinstance(v, Mapping) else {key: v}
        for dotted in parts:
            if dotted in out:
                raise ConfigError(f"config key '{dotted}' is given twice (dotted and in a table); keep one")
        out.update(parts)
    return out


def with_overrides(config: DetectorConfig, **sections: Mapping[str, Any]) -> DetectorConfig:
    """Return a copy of ``config`` with some fields of some sections replaced.

    ``with_overrides(cfg, model={"kind": "gru"})``.
    """
    changes: dict[str, Any] = {}
    section_names = [f.name for f in fields(config)]
    for section, values in sections.items():
        if section not in section_names:
            raise ConfigError(f"unknown config section {section!r} (known: {', '.join(section_names)})")
        current: Any = getattr(config, section)
        names = {f.name for f in fields(current)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(f'{section}.{k}' for k in unknown)} "
                f"(known in {section}: {', '.join(sorted(names))})"
            )
        changes[section] = dataclasses.replace(current, **values)
    return dataclasses.replace(config, **changes)


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"config key '{key}' = {value!r}: choose one of {', '.join(options)}")


def _finite(key: str, value: float) -> None:
    """Not infinite or NaN (its type was checked by :func:`_check_types`)."""
    if not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be finite, got {value!r}")


def _positive(key: str, value: float) -> None:
    _finite(key, value)
    if not value > 0:
        raise ConfigError(f"config key '{key}' must be > 0, got {value!r}")


def _nonnegative(key: str, value: float) -> None:
    _finite(key, value)
    if not value >= 0:
        raise ConfigError(f"config key '{key}' must be >= 0, got {value!r}")


def _unit(key: str, value: float, *, closed: bool) -> None:
    _finite(key, value)
    ok = 0 <= value <= 1 if closed else 0 <= value < 1
    if not ok:
        raise ConfigError(f"config key '{key}' must be in [0, 1{']' if closed else ')'}, got {value!r}")
