"""What coordinator and institutions exchange: set-up statistics, the shared encoder, agreed histogram edges.

Used by both sides (:mod:`server.app` and :mod:`client.app`/:mod:`client.local`), so it
lives in ``common``. Pure functions, no Flower types. The wire format is plain ``dict``s of str,
int, float, bool and lists of those, which the apps wrap in a Flower
``ConfigRecord``.

Protocol (phase 1 of a run):

1. every node reports :class:`SetupStats` of its *normal training split*:
   HMAC-hashed event-token counts, hashed category counts per context column,
   mergeable numeric :class:`~common.scaling.FeatureStats` and the feature
   names, plus a fingerprint of its hash key. Raw tokens never leave a node;
2. the server checks that every node used the same key and the same feature
   columns, and :func:`merge_setup` builds the shared vocabulary (top
   ``vocab.max-size`` hashed tokens seen ``vocab.min-count`` times), the context
   vocabularies (hashed categories) and the :class:`~common.scaling.Scaler` of
   the pooled statistics — exactly what fitting on the pooled data would give;
3. every later message carries the shared encoder (:func:`encoder_to_config`) so
   a fresh ClientApp process can rebuild it with :func:`encoder_from_config`.

Hash key of a node: node config ``hash-key``, else run config ``vocab.hash-key``,
else :data:`SIMULATION_HASH_KEY` (public, for simulations only: it hides
nothing from anyone who reads this file).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.config import VocabConfig
from common.encoding import Encoder
from common.errors import ConfigError
from common.scaling import FeatureStats, Scaler
from common.scoring import ContextFusion
from common.vocab import ContextVocabulary, Vocabulary, key_fingerprint

log = logging.getLogger(__name__)

SIMULATION_HASH_KEY = "seqwatch-simulation-key:not-a-secret"
"""Hash key used when neither node config ``hash-key`` nor run config
``vocab.hash-key`` is set. It is public: fine for simulations, no protection
in a real deployment (clients warn when they fall back to it)."""

#: Name of the ConfigRecord that carries the shared encoder in every message after set-up.
ENCODER_RECORD = "encoder"
#: Keys of the encoder in that ConfigRecord.
ENC_TOKENS = "enc.tokens"
ENC_CONTEXT_NAMES = "enc.context-names"
ENC_CONTEXT_PREFIX = "enc.context."
ENC_NUMERIC_NAMES = "enc.numeric-names"
ENC_MEAN = "enc.mean"
ENC_STD = "enc.std"
ENC_FINGERPRINT = "enc.key-fingerprint"


def resolve_hash_key(node_key: object, run_key: str) -> tuple[str, str]:
    """``(key, source)``: node config ``hash-key``, else run config ``vocab.hash-key``, else the
    simulation key."""
    if isinstance(node_key, str) and node_key:
        return node_key, "node-config"
    if run_key:
        return run_key, "run-config"
    return SIMULATION_HASH_KEY, "simulation-default"


# --------------------------------------------------------------------------- node statistics


@dataclass
class SetupStats:
    """What one node reports in the set-up phase (all tokens and categories hashed)."""

    token_counts: Counter[str]
    context_names: tuple[str, ...]
    context_counts: dict[str, Counter[str]]
    numeric: FeatureStats
    n_sequences: int
    n_events: int
    key_fingerprint: str
    key_source: str = "node-config"
    has_test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        """Plain dict for a ConfigRecord."""
        tokens = sorted(self.token_counts)
        out: dict[str, Any] = {
            "token-keys": tokens,
            "token-counts": [int(self.token_counts[t]) for t in tokens],
            "context-names": list(self.context_names),
            "numeric-names": list(self.numeric.names),
            "stats-count": [float(x) for x in self.numeric.count],
            "stats-sum": [float(x) for x in self.numeric.total],
            "stats-sq-dev": [float(x) for x in self.numeric.sq_dev],
            "n-sequences": int(self.n_sequences),
            "n-events": int(self.n_events),
            "key-fingerprint": self.key_fingerprint,
            "key-source": self.key_source,
            "has-test": bool(self.has_test),
        }
        for j, name in enumerate(self.context_names):
            counts = self.context_counts.get(name, Counter())
            keys = sorted(counts)
            out[f"context.{j}.keys"] = keys
            out[f"context.{j}.counts"] = [int(counts[k]) for k in keys]
        return out

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> SetupStats:
        """Inverse of :meth:`to_config` (raises ConfigError on a malformed reply)."""
        try:
            tokens = [str(t) for t in data["token-keys"]]
            counts = [int(c) for c in data["token-counts"]]
            if len(tokens) != len(counts):
                raise ValueError("token-keys and token-counts differ in length")
            context_names = tuple(str(c) for c in data["context-names"])
            context_counts: dict[str, Counter[str]] = {}
            for j, name in enumerate(context_names):
                keys = [str(k) for k in data[f"context.{j}.keys"]]
                vals = [int(v) for v in data[f"context.{j}.counts"]]
                if len(keys) != len(vals):
                    raise ValueError(f"context.{j} keys and counts differ in length")
                context_counts[name] = Counter(dict(zip(keys, vals, strict=True)))
            names = tuple(str(n) for n in data["numeric-names"])
            stats = FeatureStats(
                names,
                np.asarray(data["stats-count"], dtype=np.float64).reshape(len(names)),
                np.asarray(data["stats-sum"], dtype=np.float64).reshape(len(names)),
                np.asarray(data["stats-sq-dev"], dtype=np.float64).reshape(len(names)),
            )
            if any(c < 0 for c in counts) or any(v < 0 for c in context_counts.values() for v in c.values()):
                raise ValueError("negative counts")
            if not all(np.isfinite(a).all() for a in (stats.count, stats.total, stats.sq_dev)):
                raise ValueError("numeric statistics that are not finite")
            if (stats.count < 0).any() or (stats.sq_dev < 0).any():
                raise ValueError("negative numeric statistics")
            return cls(
                token_counts=Counter(dict(zip(tokens, counts, strict=True))),
                context_names=context_names,
                context_counts=context_counts,
                numeric=stats,
                n_sequences=int(data["n-sequences"]),
                n_events=int(data["n-events"]),
                key_fingerprint=str(data["key-fingerprint"]),
                key_source=str(data.get("key-source", "node-config")),
                has_test=bool(data.get("has-test", False)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"malformed set-up reply: {exc}") from exc


def count_categories(values: np.ndarray, names: Sequence[str], hash_key: str) -> dict[str, Counter[str]]:
    """Keyed-hashed category counts per context column (``values``: (N, C) raw strings)."""
    from common.vocab import count_tokens

    return {name: count_tokens(values[:, j], hash_key) for j, name in enumerate(names)}


# --------------------------------------------------------------------------- merging


@dataclass
class SharedSetup:
    """The merged set-up: the shared encoder and a summary for ``setup.json``."""

    encoder: Encoder
    n_nodes: int
    n_sequences: int
    n_events: int
    nodes_with_test: int

    @property
    def key_fingerprint(self) -> str:
        """Fingerprint of the nodes' hash key (the encoder's)."""
        return self.encoder.key_print

    def summary(self) -> dict[str, Any]:
        return {
            "nodes": self.n_nodes,
            "train_sequences": self.n_sequences,
            "train_events": self.n_events,
            "nodes_with_test_data": self.nodes_with_test,
            "vocab_size": len(self.encoder.vocab),
            "context_sizes": list(self.encoder.context.sizes()),
            "numeric_features": list(self.encoder.numeric_names),
            "context_features": list(self.encoder.context_names),
            "key_fingerprint": self.key_fingerprint,
        }


def merge_context(
    counts: Iterable[Mapping[str, Counter[str]]], names: Sequence[str], max_size: int
) -> dict[str, list[str]]:
    """Per column: the ``max_size`` most frequent hashed categories, sorted (as ContextVocabulary.fit)."""
    merged: dict[str, Counter[str]] = {n: Counter() for n in names}
    for part in counts:
        for n in names:
            merged[n].update(part.get(n, Counter()))
    out: dict[str, list[str]] = {}
    for n in names:
        top = sorted(merged[n].items(), key=lambda kv: (-kv[1], kv[0]))[:max_size]
        out[n] = sorted(k for k, _ in top)
    return out


def _agreed_order(orders: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """The column order every node reports, or the names sorted when the orders differ."""
    return orders[0] if all(o == orders[0] for o in orders) else tuple(sorted(orders[0]))


def merge_setup(reports: Sequence[SetupStats], vocab: VocabConfig) -> SharedSetup:
    """Merge the nodes' statistics into the shared encoder.

    Raises:
        ConfigError: no reports, nodes with different hash keys, or different feature columns.
    """
    if not reports:
        raise ConfigError("set-up: no node replied with statistics")
    prints = {r.key_fingerprint for r in reports}
    if len(prints) != 1:
        raise ConfigError(
            f"set-up: the nodes use {len(prints)} different hash keys; give every node the same "
            f"node config 'hash-key' (or the run config 'vocab.hash-key')"
        )
    first = reports[0]
    for r in reports[1:]:
        same_numeric = set(r.numeric.names) == set(first.numeric.names)
        if not same_numeric or set(r.context_names) != set(first.context_names):
            raise ConfigError(
                "set-up: nodes disagree on feature columns: numeric "
                f"{list(first.numeric.names)} vs {list(r.numeric.names)}, context "
                f"{list(first.context_names)} vs {list(r.context_names)}; all institutions must "
                f"export the same columns"
            )
    # the nodes' column order when they agree on one, else by name (nodes encode by name either way)
    numeric_order = _agreed_order([r.numeric.names for r in reports])
    context_order = _agreed_order([r.context_names for r in reports])
    tokens: Counter[str] = Counter()
    for r in reports:
        tokens.update(r.token_counts)
    shared_vocab = Vocabulary.from_counts(tokens, max_size=vocab.max_size, min_count=vocab.min_count)
    context = ContextVocabulary(
        merge_context((r.context_counts for r in reports), context_order, vocab.max_size),
        hashed=True,
    )
    stats = FeatureStats.merge_all(r.numeric.reordered(numeric_order) for r in reports)
    if stats.unobserved():
        raise ConfigError(
            f"set-up: no node has a single value of numeric feature(s) {list(stats.unobserved())}; "
            f"fill them in or leave them out of the institutions' column maps"
        )
    scaler = Scaler.from_stats(stats)
    if not shared_vocab.tokens:
        raise ConfigError(
            f"set-up: no event token reaches vocab.min-count = {vocab.min_count} across the nodes"
        )
    return SharedSetup(
        encoder=Encoder(shared_vocab, context, scaler, key_print=first.key_fingerprint),
        n_nodes=len(reports),
        n_sequences=sum(r.n_sequences for r in reports),
        n_events=sum(r.n_events for r in reports),
        nodes_with_test=sum(1 for r in reports if r.has_test),
    )


# --------------------------------------------------------------------------- encoder on the wire


def encoder_to_config(encoder: Encoder, key_print: str) -> dict[str, Any]:
    """The shared encoder as flat ConfigRecord values (hashed tokens and categories only)."""
    out: dict[str, Any] = {
        ENC_TOKENS: list(encoder.vocab.tokens),
        ENC_CONTEXT_NAMES: list(encoder.context_names),
        ENC_NUMERIC_NAMES: list(encoder.numeric_names),
        ENC_MEAN: [float(x) for x in encoder.scaler.mean],
        ENC_STD: [float(x) for x in encoder.scaler.std],
        ENC_FINGERPRINT: key_print,
    }
    for j, name in enumerate(encoder.context_names):
        out[f"{ENC_CONTEXT_PREFIX}{j}"] = list(encoder.context.columns[name])
    return out


def encoder_from_config(data: Mapping[str, Any], hash_key: str) -> Encoder:
    """Rebuild the shared encoder on a node; raw tokens are hashed with the node's ``hash_key``.

    Raises:
        ConfigError: the message lacks the encoder, or the node's key is not the federation's.
    """
    try:
        expected = str(data[ENC_FINGERPRINT])
        tokens = [str(t) for t in data[ENC_TOKENS]]
        context_names = [str(c) for c in data[ENC_CONTEXT_NAMES]]
        columns = {n: [str(v) for v in data[f"{ENC_CONTEXT_PREFIX}{j}"]] for j, n in enumerate(context_names)}
        numeric = tuple(str(n) for n in data[ENC_NUMERIC_NAMES])
        mean = np.asarray(data[ENC_MEAN], dtype=np.float64).reshape(len(numeric))
        std = np.asarray(data[ENC_STD], dtype=np.float64).reshape(len(numeric))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"message does not carry the shared encoder ({exc})") from exc
    if key_fingerprint(hash_key) != expected:
        raise ConfigError(
            "this node's hash key differs from the one the federation was set up with; "
            "check node config 'hash-key' / run config 'vocab.hash-key'"
        )
    return Encoder(
        Vocabulary(tokens=tokens, hash_key=hash_key),
        ContextVocabulary(columns, hash_key=hash_key, hashed=True),
        Scaler(numeric, mean, std),
        key_print=expected,
    )


# --------------------------------------------------------------------------- score parts

#: ConfigRecord keys of the federation's :class:`~common.scoring.ContextFusion` (both or neither).
FUSION_SHIFT = "context-shift"
FUSION_SCALE = "context-scale"


def fusion_to_config(fusion: ContextFusion | None) -> dict[str, float]:
    """The federation's context fusion as ConfigRecord values; none without a context part."""
    return {} if fusion is None else {FUSION_SHIFT: float(fusion.shift), FUSION_SCALE: float(fusion.scale)}


def fusion_from_config(conf: Mapping[str, Any]) -> ContextFusion | None:
    """Inverse of :func:`fusion_to_config`.

    Raises:
        ConfigError: only one of the two keys, or a value that is not a finite number (the
            scale positive).
    """
    present = [k for k in (FUSION_SHIFT, FUSION_SCALE) if k in conf]
    if not present:
        return None
    if len(present) == 1:
        raise ConfigError(
            f"the message carries {present[0]!r} without its pair: the server and this node run "
            f"different seqwatch versions"
        )
    try:
        return ContextFusion(shift=float(conf[FUSION_SHIFT]), scale=float(conf[FUSION_SCALE]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the message's context fusion is invalid ({exc})") from exc


# --------------------------------------------------------------------------- score histograms


def round_edges(bins: int) -> np.ndarray:
    """Fixed edges for every score histogram: per-round evaluation, calibration, final report.

    0, then ``20 * bins`` log-spaced edges from 1e-3 to 1e4 (4,000 bins of about
    0.4 % width for the default 200): sequence scores are non-negative (nats plus
    a squared numeric residual, or a fraction for ``topk-miss``) and their range
    is not known in advance, so the bins are narrow in relative terms. The
    histogram AUROC differs from the exact one by at most the share of
    (anomalous, normal) pairs whose scores are within one bin of each other; a
    threshold from the summed validation histograms
    (:func:`common.metrics.threshold_from_histogram`) is at most one bin,
    about 0.4 %, above the exact quantile of the pooled scores. Because the
    edges are fixed, no node has to reveal its largest score to agree them.
    Scores beyond 1e4 fall in the last bin.
    """
    return np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 20 * int(bins))])
