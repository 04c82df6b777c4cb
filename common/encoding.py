"""Turn grouped event tables into integer/float arrays the model consumes.

An :class:`Encoder` is fitted on training data only (vocabulary, context
categories, numeric scaler) and then encodes any table into
:class:`EncodedSequences`, a CSR layout: ``offsets[i]:offsets[i+1]`` are the
rows of sequence ``i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from common.config import VocabConfig
from common.errors import ConfigError, DataError
from common.events import GAP, take_rows
from common.scaling import FeatureStats, Scaler
from common.vocab import UNK, ContextVocabulary, Vocabulary, key_fingerprint


class GroupedEvents(Protocol):
    """What :meth:`common.events.EventTable.grouped` provides."""

    @property
    def ids(self) -> np.ndarray: ...
    @property
    def offsets(self) -> np.ndarray: ...
    @property
    def events(self) -> np.ndarray: ...
    @property
    def numeric(self) -> np.ndarray: ...
    @property
    def context(self) -> np.ndarray: ...
    @property
    def labels(self) -> np.ndarray | None: ...
    @property
    def numeric_names(self) -> tuple[str, ...]: ...
    @property
    def context_names(self) -> tuple[str, ...]: ...


@dataclass
class EncodedSequences:
    """Encoded sequences in CSR layout.

    tokens:  (N,)   int64 event ids
    context: (N, C) int64 category ids (0 = unseen)
    numeric: (N, F) float32 scaled features (NaN = missing)
    offsets: (S+1,) int64
    """

    ids: np.ndarray
    offsets: np.ndarray
    tokens: np.ndarray
    context: np.ndarray
    numeric: np.ndarray
    labels: np.ndarray | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, index: np.ndarray) -> EncodedSequences:
        """Sequences at positions ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        offsets, rows = take_rows(self.offsets, index)
        return EncodedSequences(
            ids=self.ids[index],
            offsets=offsets,
            tokens=self.tokens[rows],
            context=self.context[rows],
            numeric=self.numeric[rows],
            labels=None if self.labels is None else self.labels[index],
        )


def _by_name(values: np.ndarray, have: tuple[str, ...], want: tuple[str, ...], kind: str) -> np.ndarray:
    """The columns ``want`` of ``values`` (whose columns are named ``have``), in that order."""
    if tuple(have) == tuple(want):
        return values
    missing = [n for n in want if n not in have]
    if missing:
        hint = (
            f"; {GAP!r} comes from timestamps: read the order column as time"
            if GAP in missing and kind == "numeric"
            else ""
        )
        raise DataError(
            f"the model reads {kind} feature(s) {list(want)}, the table has {list(have)}: missing "
            f"{missing}; name them in the column map ({kind}=...){hint}"
        )
    return values[:, [list(have).index(n) for n in want]]


class Encoder:
    """Vocabulary + context categories + numeric scaler, fitted on training data."""

    def __init__(
        self,
        vocab: Vocabulary,
        context: ContextVocabulary,
        scaler: Scaler,
        *,
        key_print: str = "",
    ) -> None:
        self.vocab = vocab
        self.context = context
        self.scaler = scaler
        #: Fingerprint (:func:`~common.vocab.key_fingerprint`) of the hash key of the tokens and
        #: categories; "" when they are not hashed.
        self.key_print = key_print or (key_fingerprint(vocab.hash_key) if vocab.hash_key else "")

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return self.scaler.names

    @property
    def context_names(self) -> tuple[str, ...]:
        return tuple(self.context.columns)

    @classmethod
    def fit(
        cls,
        grouped: GroupedEvents,
        *,
        numeric_names: tuple[str, ...],
        context_names: tuple[str, ...],
        vocab_config: VocabConfig,
        vocab: Vocabulary | None = None,
        scaler: Scaler | None = None,
        source: str = "training data",
    ) -> Encoder:
        """Fit on training data (``source`` names it in errors); a shared ``vocab``/``scaler``
        (federation) is used as given."""
        if vocab is None:
            vocab = Vocabulary.fit(
                grouped.events,
                max_size=vocab_config.max_size,
                min_count=vocab_config.min_count,
                hash_key=vocab_config.hash_key,
            )
        elif vocab.hash_key:
            vocab.learn_names(grouped.events)
        ctx = ContextVocabulary.fit(context_names, grouped.context, vocab_config.max_size)
        if scaler is None:
            stats = FeatureStats.compute(numeric_names, grouped.numeric)
            if stats.unobserved():
                raise DataError(
                    f"{source}: numeric feature(s) {list(stats.unobserved())} have no value in the "
                    f"training data: fill them in, or leave them out (--numeric-cols / the column map)"
                )
            scaler = Scaler.from_stats(stats)
        return cls(vocab, ctx, scaler)

    def encode(self, grouped: GroupedEvents) -> EncodedSequences:
        """Ids, category ids and scaled numbers of ``grouped``'s events.

        Feature columns are matched to the fitted ones by name, in any order;
        columns the encoder was not fitted on are ignored.

        Raises:
            DataError: a feature the encoder was fitted on is missing.
        """
        tokens = self.vocab.encode(grouped.events)
        raw_context = _by_name(grouped.context, grouped.context_names, self.context_names, "context")
        context = (
            self.context.encode(raw_context)
            if self.context.columns
            else np.zeros((len(tokens), 0), dtype=np.int64)
        )
        numeric = self.scaler.transform(
            _by_name(grouped.numeric, grouped.numeric_names, self.numeric_names, "numeric")
        )
        stats = {
            "events": len(tokens),
            "unknown_events": int((tokens == UNK).sum()),
            "unknown_context": int((context == 0).sum()),
            "missing_numeric": int(np.isnan(numeric).sum()),
        }
        return EncodedSequences(
            ids=np.asarray(grouped.ids),
            offsets=np.asarray(grouped.offsets, dtype=np.int64),
            tokens=tokens,
            context=context,
            numeric=numeric,
            labels=None if grouped.labels is None else np.asarray(grouped.labels),
            stats=stats,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vocab": self.vocab.to_dict(),
            "context": self.context.to_dict(),
            "scaler": self.scaler.to_dict(),
        }
        if self.context.hashed:
            out["context_hashed"] = True
        if self.key_print:
            out["key_fingerprint"] = self.key_print
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], hash_key: str = "", *, need_key: bool = False) -> Encoder:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: the tokens are hashed and ``hash_key`` is another key than
                theirs, or (``need_key``: the encoder is to encode data) no key is given, or a
                key for tokens that are not hashed.
        """
        hashed = bool(data.get("context_hashed", False))
        saved_print = str(data.get("key_fingerprint", ""))
        keyed = bool(saved_print) or bool(dict(data["vocab"]).get("hashed", False))
        if hash_key and saved_print and key_fingerprint(hash_key) != saved_print:
            raise ConfigError(
                "vocab.hash-key differs from the key this model's events were hashed with; "
                "give the key it was trained with"
            )
        if need_key and keyed and not hash_key:
            raise ConfigError(
                "this model's events are keyed-hashed and no vocab.hash-key is set, so every event "
                "would be unknown; set vocab.hash-key (in the model's detector.json) to the key it "
                "was trained with"
            )
        if need_key and hash_key and not keyed:
            raise ConfigError(
                "vocab.hash-key is set but this model's events were not hashed, so every event would "
                "be unknown; remove vocab.hash-key (from the model's detector.json)"
            )
        for column, values in dict(data["context"]).items():
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"context column {column!r} must list its values as text, got {values!r}")
            if len(set(values)) != len(values):
                raise ValueError(f"context column {column!r} lists a value twice")
        return cls(
            Vocabulary.from_dict(data["vocab"], hash_key=hash_key),
            ContextVocabulary(data["context"], hash_key=hash_key if hashed else "", hashed=hashed),
            Scaler.from_dict(data["scaler"]),
            key_print=saved_print,
        )
