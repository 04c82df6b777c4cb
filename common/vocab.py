"""Event vocabulary: PAD/UNK/BOS ids, fitted on training data only.

Tokens can be keyed-hashed (HMAC-SHA256, key from config) before they are
counted, so that institutions can agree a shared vocabulary by exchanging
hashed counts without revealing raw tokens. A hashed vocabulary maps a raw
token by hashing it with the same key; tokens never seen in training map to UNK.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import hashes, hmac

from common.events import text_codes

logger = logging.getLogger(__name__)

PAD, UNK, BOS = 0, 1, 2
#: The boundary id: as an *input* it marks the start of a sequence (BOS); as a
#: *target* it marks its end, so a model trained with ``model.end-event`` also
#: learns where sequences stop (as GPT's single end-of-text token does).
END = BOS
SPECIALS = ("<pad>", "<unk>", "<end>")
HASH_HEX_CHARS = 32  # 128 bits of the HMAC-SHA256 digest


class TokenHasher:
    """Keyed hash of event tokens (HMAC-SHA256, truncated to 128 bits, hex)."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("TokenHasher needs a non-empty key")
        self._key = key.encode("utf-8")

    def __call__(self, token: str) -> str:
        mac = hmac.HMAC(self._key, hashes.SHA256())
        mac.update(token.encode("utf-8"))
        return mac.finalize().hex()[:HASH_HEX_CHARS]

    def many(self, tokens: Iterable[str]) -> dict[str, str]:
        """Hash each distinct token once: ``{raw: hashed}``."""
        return {t: self(t) for t in set(tokens)}


_FINGERPRINT_INPUT = "\x00seqwatch hash-key fingerprint v1"


def key_fingerprint(hash_key: str) -> str:
    """A keyed hash of a fixed string: equal fingerprints mean equal keys (the key is not revealed)."""
    return TokenHasher(hash_key)(_FINGERPRINT_INPUT)


def count_tokens(tokens: np.ndarray, hash_key: str = "") -> Counter[str]:
    """Count event tokens as text, keyed-hashing them first when ``hash_key`` is set."""
    codes, texts = text_codes(tokens)
    if hash_key:
        hasher = TokenHasher(hash_key)
        texts = np.array([hasher(t) for t in texts], dtype=object)
    out: Counter[str] = Counter()
    for text, n in zip(texts, np.bincount(codes, minlength=len(texts)).tolist(), strict=True):
        out[text] += n
    return out


@dataclass
class Vocabulary:
    """Token ↔ id mapping. Ids 0, 1, 2 are PAD, UNK and the BOS/END boundary.

    ``tokens`` holds the (possibly hashed) keys of ids 3.. in id order.
    ``hash_key`` non-empty means raw tokens are hashed before lookup.
    ``names`` optionally maps hashed keys back to raw tokens, for local
    explanations only; it is never sent to other parties. ``cut_types`` and
    ``cut_events``: how many distinct tokens of the counts it was built from
    were left out (``max_size``, ``min_count``), and how many events they
    had: such tokens encode as UNK, like tokens never seen.
    """

    tokens: list[str]
    hash_key: str = ""
    counts: list[int] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    cut_types: int = 0
    cut_events: int = 0

    def __post_init__(self) -> None:
        self._index = pd.Index(self.tokens)
        if not self._index.is_unique:
            raise ValueError("vocabulary tokens must be unique")

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], *, max_size: int, min_count: int = 1, hash_key: str = ""
    ) -> Vocabulary:
        """Keep the ``max_size`` most frequent tokens seen at least ``min_count`` times.

        Ties are broken by the token string, so every party derives the same
        vocabulary from the same merged counts.
        """
        kept = sorted(((t, c) for t, c in counts.items() if c >= min_count), key=lambda tc: (-tc[1], tc[0]))[
            :max_size
        ]
        seen = [c for c in counts.values() if c > 0]
        return cls(
            tokens=[t for t, _ in kept],
            hash_key=hash_key,
            counts=[c for _, c in kept],
            cut_types=len(seen) - len(kept),
            cut_events=sum(seen) - sum(c for _, c in kept),
        )

    @classmethod
    def fit(cls, tokens: np.ndarray, *, max_size: int, min_count: int = 1, hash_key: str = "") -> Vocabulary:
        """Fit on the raw event tokens of the training data."""
        vocab = cls.from_counts(
            count_tokens(tokens, hash_key), max_size=max_size, min_count=min_count, hash_key=hash_key
        )
        if hash_key:
            vocab.learn_names(tokens)
        return vocab

    def learn_names(self, tokens: np.ndarray) -> None:
        """Remember raw names of hashed tokens seen locally (for explanations)."""
        if not self.hash_key:
            return
        hashed = TokenHasher(self.hash_key).many(str(t) for t in pd.unique(tokens))
        known = set(self.tokens)
        self.names.update({h: raw for raw, h in hashed.items() if h in known})

    def __len__(self) -> int:
        """Size of the id space, specials included."""
        return len(self.tokens) + len(SPECIALS)

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """Map raw tokens to ids (int64); unseen tokens become UNK."""
        codes, keys = text_codes(np.asarray(tokens, dtype=object))
        if self.hash_key:
            hasher = TokenHasher(self.hash_key)
            keys = np.array([hasher(t) for t in keys], dtype=object)
        ids = self._index.get_indexer(keys)
        ids = np.where(ids < 0, UNK - len(SPECIALS), ids) + len(SPECIALS)
        return ids.astype(np.int64)[codes]

    def token(self, idx: int) -> str:
        """A readable name for an id (raw token where known)."""
        if idx < len(SPECIALS):
            return SPECIALS[idx]
        key = self.tokens[idx - len(SPECIALS)]
        return self.names.get(key, key)

    def to_dict(self, *, with_names: bool = True) -> dict[str, object]:
        out: dict[str, object] = {"tokens": self.tokens, "counts": self.counts, "hashed": bool(self.hash_key)}
        if self.cut_types:
            out["cut"] = {"types": self.cut_types, "events": self.cut_events}
        if with_names and self.names:
            out["names"] = self.names
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object], hash_key: str = "") -> Vocabulary:
        tokens = [str(t) for t in data["tokens"]]  # type: ignore[attr-defined]
        counts = [int(c) for c in data.get("counts", [])]  # type: ignore[attr-defined]
        names = {str(k): str(v) for k, v in dict(data.get("names", {})).items()}  # type: ignore[call-overload]
        cut = dict(data.get("cut") or {})  # type: ignore[call-overload]
        return cls(
            tokens=tokens,
            hash_key=hash_key,
            counts=counts,
            names=names,
            cut_types=int(cut.get("types", 0)),
            cut_events=int(cut.get("events", 0)),
        )


_FLOAT_WHOLE = re.compile(r"-?\d+\.0")
ID_LIKE_SHARE = 0.5
"""A context column whose values are unique on more than this share of training rows looks like an id."""
ID_LIKE_MIN_ROWS = 50


class ContextVocabulary:
    """Per-column category ids for categorical context (0 = unseen/missing).

    ``hashed`` (default: whether ``hash_key`` is set) means the categories are
    keyed hashes (HMAC, as for event tokens), as in a federation's shared
    encoder; raw values are then hashed with ``hash_key`` before lookup.
    """

    def __init__(
        self, columns: Mapping[str, list[str]], *, hash_key: str = "", hashed: bool | None = None
    ) -> None:
        self.columns = {c: list(v) for c, v in columns.items()}
        self._index = {c: pd.Index(v) for c, v in self.columns.items()}
        self.hash_key = hash_key
        self.hashed = bool(hash_key) if hashed is None else bool(hashed)
        # Whole numbers in float columns were "1.0" in models saved before they read as "1" (in a
        # column that also held fractions): such a saved value also answers to its integer text.
        self._aliases: dict[str, pd.Index] = {}
        self._alias_ids: dict[str, np.ndarray] = {}
        for c, values in self.columns.items():
            known = set(values)
            whole = [v for v in values if _FLOAT_WHOLE.fullmatch(v) and v[:-2] not in known]
            self._aliases[c] = pd.Index([v[:-2] for v in whole])
            self._alias_ids[c] = self._index[c].get_indexer(whole)

    @classmethod
    def fit(cls, names: tuple[str, ...], values: np.ndarray, max_size: int) -> ContextVocabulary:
        """The ``max_size`` most frequent values of each column; warns of an id-like column
        (most of its training rows carry a value seen only there), which teaches the model
        nothing and reads as unseen on every new row."""
        cols: dict[str, list[str]] = {}
        for j, name in enumerate(names):
            codes, texts = text_codes(values[:, j])
            counts = np.bincount(codes, minlength=len(texts))
            kept = sorted(range(len(texts)), key=lambda i: (-counts[i], texts[i]))[:max_size]
            cols[name] = sorted(texts[kept].tolist())
            once = int((counts == 1).sum())
            if len(codes) >= ID_LIKE_MIN_ROWS and once > ID_LIKE_SHARE * len(codes):
                logger.warning(
                    "context column %r looks like an id: %d of its %d training values occur only once, so "
                    "they teach the model nothing and new ones read as unseen; leave it out of the "
                    "context columns, or group its values (e.g. a prefix)",
                    name,
                    once,
                    len(codes),
                )
        return cls(cols)

    def sizes(self) -> tuple[int, ...]:
        """Number of ids per column, the reserved 0 included."""
        return tuple(len(v) + 1 for v in self.columns.values())

    def encode(self, values: np.ndarray) -> np.ndarray:
        n = values.shape[0]
        out = np.zeros((n, len(self.columns)), dtype=np.int64)
        if self.hashed and self.columns and not self.hash_key:
            raise ValueError(
                "the context categories are keyed hashes; set vocab.hash-key to the federation's key"
            )
        hasher = TokenHasher(self.hash_key) if self.hashed and self.columns else None
        for j, name in enumerate(self.columns):
            codes, keys = text_codes(values[:, j])
            if hasher is not None:
                keys = np.array([hasher(k) for k in keys], dtype=object)
            ids = self._index[name].get_indexer(keys)
            if hasher is None and len(self._aliases[name]):
                at = self._aliases[name].get_indexer(keys)
                found = (ids < 0) & (at >= 0)
                ids[found] = self._alias_ids[name][at[found]]
            out[:, j] = (ids + 1)[codes]
        return out

    def to_dict(self) -> dict[str, list[str]]:
        return self.columns
