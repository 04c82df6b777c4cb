"""Numeric feature scaling with statistics that several parties can merge exactly.

Each party computes (count, sum, sum of squared deviations from its own mean)
per feature after a fixed, data-independent transform; merging is Chan et
al.'s pairwise formula, exact up to float rounding, and unlike a raw sum of
squares it keeps the spread of a feature with a large offset (epoch
milliseconds, say). Heavy-tailed features (amounts, durations, time gaps) go
through ``sign(x)·log1p(|x|)`` first. Infinite values count as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from common.config import finite_number
from common.errors import DataError

#: Features whose name contains one of these are log-transformed.
LOG_HINTS = ("gap", "amount", "duration", "size", "bytes", "count", "value", "price", "seconds")


def transform_kind(name: str) -> str:
    """``"log"`` for heavy-tailed features (by name), else ``"identity"``."""
    lowered = name.lower()
    return "log" if any(h in lowered for h in LOG_HINTS) else "identity"


def _transform(values: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
    out = np.array(values, dtype=np.float64, copy=True)
    out[np.isinf(out)] = np.nan  # no scale fits an infinity: it is a missing value
    for j, kind in enumerate(kinds):
        if kind == "log":
            out[:, j] = np.sign(out[:, j]) * np.log1p(np.abs(out[:, j]))
    return out


@dataclass
class FeatureStats:
    """Mergeable sufficient statistics of the transformed features (NaNs skipped)."""

    names: tuple[str, ...]
    count: np.ndarray
    total: np.ndarray
    #: Sum of squared deviations from this part's own mean, per feature.
    sq_dev: np.ndarray

    @classmethod
    def empty(cls, names: tuple[str, ...]) -> FeatureStats:
        z = np.zeros(len(names))
        return cls(names, z.copy(), z.copy(), z.copy())

    @classmethod
    def compute(cls, names: tuple[str, ...], values: np.ndarray) -> FeatureStats:
        """Statistics of ``values`` (rows × features, named ``names``).

        Raises:
            DataError: a feature's values are too large for its statistics (their sum or
                squares exceed float64, e.g. a 1e300 placeholder in a feature scaled as it is).
        """
        kinds = tuple(transform_kind(n) for n in names)
        x = _transform(values, kinds)
        ok = ~np.isnan(x)
        count = ok.sum(0).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.where(ok, x, 0.0).sum(0)
            mean = total / np.maximum(count, 1.0)
            dev = np.where(ok, x - mean, 0.0)
            sq_dev = (dev * dev).sum(0)
        for j in np.flatnonzero(~(np.isfinite(total) & np.isfinite(sq_dev))):
            largest = float(np.nanmax(np.abs(np.asarray(values, dtype=np.float64)[:, j])))
            raise DataError(
                f"numeric feature {names[j]!r}: values up to {largest:.3g} are too large to scale "
                f"(their squares exceed float64); blank such placeholders out (a missing value is "
                f"allowed), or give the column a name containing one of {', '.join(LOG_HINTS)} "
                f"to have it scaled after sign(x)·log1p(|x|)"
            )
        return cls(names, count, total, sq_dev)

    @property
    def mean(self) -> np.ndarray:
        return self.total / np.maximum(self.count, 1.0)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Both parts' statistics as one (Chan et al.'s pairwise update of the squared deviations)."""
        if self.names != other.names:
            raise ValueError(f"cannot merge statistics of {self.names} and {other.names}")
        n = self.count + other.count
        delta = other.mean - self.mean
        between = np.where(n > 0, delta * delta * self.count * other.count / np.maximum(n, 1.0), 0.0)
        return FeatureStats(self.names, n, self.total + other.total, self.sq_dev + other.sq_dev + between)

    def unobserved(self) -> tuple[str, ...]:
        """Features without a single (finite) value."""
        return tuple(n for n, c in zip(self.names, self.count, strict=True) if c == 0)

    def reordered(self, names: tuple[str, ...]) -> FeatureStats:
        """The same statistics with the features in the order ``names`` (the same set)."""
        if sorted(names) != sorted(self.names):
            raise ValueError(f"cannot reorder statistics of {self.names} as {names}")
        at = [self.names.index(n) for n in names]
        return FeatureStats(tuple(names), self.count[at], self.total[at], self.sq_dev[at])

    @classmethod
    def merge_all(cls, parts: Iterable[FeatureStats]) -> FeatureStats:
        items = list(parts)
        out = items[0]
        for p in items[1:]:
            out = out.merge(p)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"count": self.count.tolist(), "sum": self.total.tolist(), "sq_dev": self.sq_dev.tolist()}


class Scaler:
    """Standardises transformed features; missing values become 0 (the mean)."""

    def __init__(
        self, names: tuple[str, ...], mean: np.ndarray, std: np.ndarray, kinds: tuple[str, ...] | None = None
    ) -> None:
        self.names = tuple(names)
        #: The transform of each feature (:func:`transform_kind` unless given, e.g. as saved).
        self.kinds = tuple(kinds) if kinds is not None else tuple(transform_kind(n) for n in self.names)
        if len(self.kinds) != len(self.names) or not set(self.kinds) <= {"log", "identity"}:
            raise ValueError(f"transforms {self.kinds} do not fit features {self.names}")
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @classmethod
    def from_stats(cls, stats: FeatureStats) -> Scaler:
        std = np.sqrt(np.maximum(stats.sq_dev / np.maximum(stats.count, 1.0), 0.0))
        return cls(stats.names, stats.mean, np.where(std > 1e-8, std, 1.0))

    @classmethod
    def fit(cls, names: tuple[str, ...], values: np.ndarray) -> Scaler:
        return cls.from_stats(FeatureStats.compute(names, values))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scaled float32 features (NaN kept, so callers can mask targets)."""
        if not self.names:
            return np.zeros((len(values), 0), dtype=np.float32)
        x = _transform(values, self.kinds)
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {
            "names": list(self.names),
            "kinds": list(self.kinds),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Scaler:
        """Inverse of :meth:`to_dict`; the saved transforms are kept (older files: by name).

        Raises:
            ValueError: names that are not text, or means and spreads that are not one finite
                number per feature (spreads > 0): a damaged file would scale every number wrong.
        """
        kinds = data.get("kinds")
        names = data["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"scaler names must be a list of text, got {names!r}")
        stats = {}
        for key in ("mean", "std"):
            values = data[key]
            if (
                not isinstance(values, list)
                or not all(finite_number(v) for v in values)
                or len(values) != len(names)
            ):
                raise ValueError(
                    f"scaler {key} must hold one finite number per feature {names}, got {values!r}"
                )
            stats[key] = np.array(values, dtype=np.float64)
        if (stats["std"] <= 0).any():
            raise ValueError(f"scaler std must be > 0 for every feature, got {data['std']!r}")
        return cls(
            tuple(names),
            stats["mean"],
            stats["std"],
            None if kinds is None else tuple(str(k) for k in kinds),  # type: ignore[attr-defined]
        )
