"""Detection metrics: exact, tie-aware, numpy only.

Conventions used throughout:

* ``labels`` are 0/1 (or booleans); **1 = anomalous**, 0 = normal.
* Higher score = more anomalous.
* A sequence is **flagged** when ``score > threshold`` (strictly greater), so a
  threshold equal to the largest score flags nothing and ``-inf`` flags all.
* Ties are handled exactly: tied scores are always flagged together, ROC/PR
  curves have one point per distinct score, and AUROC gives tied
  (anomalous, normal) pairs half credit.

Scores may be ``±inf`` but not NaN. Invalid input raises :class:`ValueError`
with a message that says what is wrong.

The ``*_histogram*`` functions are the federated counterparts: every party bins
its scores over the same agreed edges with :func:`histogram_counts`, counts are
summed, and the threshold / AUROC are computed from the summed counts without
any party revealing an individual score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "UNNAMED_GROUP",
    "Confusion",
    "allowed_above",
    "average_precision",
    "confidence_needs",
    "confusion_at",
    "detection_by_group",
    "detection_rate_at_far",
    "detection_report",
    "histogram_counts",
    "normal_p_values",
    "pr_curve",
    "roc_auc",
    "roc_auc_from_histograms",
    "roc_curve",
    "threshold_for_contamination",
    "threshold_for_far",
    "threshold_from_histogram",
]

# --------------------------------------------------------------------------- validation


def _as_scores(scores: ArrayLike, name: str = "scores") -> NDArray[np.float64]:
    """1-D float64 copy of ``scores``; rejects NaN and non-numeric input."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if np.isnan(arr).any():
        n_nan = int(np.isnan(arr).sum())
        raise ValueError(f"{name} contains {n_nan} NaN value(s); remove or fix them before computing metrics")
    return arr


def _as_labels(labels: ArrayLike) -> NDArray[np.bool_]:
    """1-D boolean array (True = anomalous) from 0/1 or bool labels."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"labels must be 0/1 or booleans (1 = anomalous), got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        found = np.unique(arr[bad])[:5].tolist()
        raise ValueError(f"labels must be 0/1 (1 = anomalous); found other values such as {found}")
    return arr == 1


def _as_pair(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    y = _as_labels(labels)
    s = _as_scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} labels vs {s.shape[0]} scores")
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    return y, s


def _require_both_classes(y: NDArray[np.bool_], what: str) -> tuple[int, int]:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        only = "normal (0)" if n_pos == 0 else "anomalous (1)"
        raise ValueError(
            f"{what} needs both normal (0) and anomalous (1) labels, but all {y.size} labels are {only}"
        )
    return n_pos, n_neg


def _check_rate(value: float, name: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from exc
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return rate


def _max_allowed(n: int, rate: float) -> int:
    """Largest integer ``k`` with ``k / n <= rate`` (evaluated as float division)."""
    k = math.floor(rate * n)
    while k + 1 <= n and (k + 1) / n <= rate:
        k += 1
    while k > 0 and k / n > rate:
        k -= 1
    return k


def _binomial_cdf(n: int, p: float, upto: int) -> tuple[int, NDArray[np.float64]]:
    """``(lo, P(Binomial(n, p) <= i) for i = lo .. upto)``, in log space so that large ``n`` does not
    underflow; ``lo`` lies 40 standard deviations below the mean (the CDF there is below 1e-300,
    taken as 0), so the work and memory grow with the spread, not with ``n``."""
    lo = max(0, min(upto, math.floor(n * p - 40.0 * math.sqrt(n * p * (1.0 - p)) - 40.0)))
    i = np.arange(lo, upto + 1, dtype=np.float64)
    log_first = (
        math.lgamma(n + 1)
        - math.lgamma(lo + 1)
        - math.lgamma(n - lo + 1)
        + lo * math.log(p)
        + (n - lo) * math.log1p(-p)
    )
    steps = np.log(n - i[:-1]) - np.log(i[:-1] + 1.0) + math.log(p) - math.log1p(-p)
    log_pmf = log_first + np.concatenate([[0.0], np.cumsum(steps)])
    return lo, np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def allowed_above(n: int, rate: float, confidence: float = 0.0) -> int:
    """How many of ``n`` calibration scores the threshold may leave above it.

    ``confidence = 0``: the most with ``k / n <= rate`` (the threshold's rate
    on the calibration scores is at most ``rate``; on new normal data it is
    ``(k + 1) / (n + 1)`` on average, and scattered around that).

    ``confidence = c > 0``: the most ``k`` (never more than the above) such
    that, with probability at least ``c``, the rate on *new* normal scores is
    at most ``rate``. For new scores exchangeable with the calibration ones,
    the rate above the ``(k+1)``-th largest of ``n`` follows Beta(k + 1, n - k)
    for any continuous score distribution (ties only lower it), so
    ``P(rate' <= rate) = P(Binomial(n, rate) >= k + 1)``.
    When even ``k = 0`` (the largest score) falls short, that is
    ``1 - (1 - rate)^n < c``, the result is 0 and :func:`unresolved_rate`
    says how many scores ``c`` needs.
    """
    if n <= 0:
        return 0
    rate = _check_rate(rate, "rate")
    c = _check_rate(confidence, "confidence")
    plain = _max_allowed(n, rate)
    if c == 0.0 or plain == 0:
        return plain
    lo, cdf = _binomial_cdf(n, rate, plain)  # P(Bin <= k) for k = lo .. plain (0 below lo)
    # P(Bin >= k + 1) = 1 - P(Bin <= k) >= c  <=>  P(Bin <= k) <= 1 - c; the CDF rises with k
    return max(lo + int(np.searchsorted(cdf, 1.0 - c, side="right")) - 1, 0)


def confidence_needs(rate: float, confidence: float) -> int:
    """Fewest calibration scores for which the largest one has a rate at most ``rate`` with
    probability ``confidence`` on new normal data: ``1 - (1 - rate)^n >= confidence``."""
    rate, c = _check_rate(rate, "rate"), _check_rate(confidence, "confidence")
    if rate == 0.0 or c == 0.0:
        return 1
    return max(1, math.ceil(math.log1p(-c) / math.log1p(-rate)))


# --------------------------------------------------------------------------- ranking


def _average_ranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of ``x`` with ties given the average of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _cumulative_counts(
    y: NDArray[np.bool_], s: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Distinct scores (descending) with true/false positives when flagging ``score >= value``."""
    order = np.argsort(s, kind="mergesort")[::-1]
    ss = s[order]
    ys = y[order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])  # last index of each tie group
    tps = np.cumsum(ys, dtype=np.int64)[ends]
    fps = (ends + 1).astype(np.int64) - tps
    return ss[ends], tps, fps


# --------------------------------------------------------------------------- ranking metrics


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney U / (n_anomalous · n_normal)).

    Exact and tie-aware: tied (anomalous, normal) pairs count one half.
    Raises :class:`ValueError` when only one class is present.
    """
    y, s = _as_pair(labels, scores)
    n_pos, n_neg = _require_both_classes(y, "roc_auc")
    ranks = _average_ranks(s)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve with one point per distinct score, from (0, 0) to (1, 1).

    Returns ``(fpr, tpr, thresholds)``; thresholds are decreasing and point
    ``i`` is exactly ``confusion_at(labels, scores, thresholds[i])`` (flag
    ``score > thresholds[i]``). ``thresholds[0]`` is the largest score (nothing
    flagged) and ``thresholds[-1]`` is ``-inf`` (everything flagged).
    """
    y, s = _as_pair(labels, scores)
    n_pos, n_neg = _require_both_classes(y, "roc_curve")
    values, tps, fps = _cumulative_counts(y, s)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[values, -np.inf]
    return fpr, tpr, thresholds


def pr_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision–recall curve with one point per distinct score.

    Returns ``(precision, recall, thresholds)`` ordered by decreasing threshold
    (increasing recall); point ``i`` flags ``score > thresholds[i]``. The first
    point (threshold = largest score, nothing flagged) is ``(precision=1,
    recall=0)`` by convention, as in scikit-learn; the last threshold is
    ``-inf``. Needs at least one anomalous label.
    """
    y, s = _as_pair(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError(
            f"pr_curve needs at least one anomalous (1) label, but all {y.size} labels are normal (0)"
        )
    values, tps, fps = _cumulative_counts(y, s)
    precision = np.r_[1.0, tps / (tps + fps)]
    recall = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[values, -np.inf]
    return precision, recall, thresholds


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the PR curve, step-wise: ``sum_n (R_n - R_{n-1}) · P_n``.

    Same definition as scikit-learn's ``average_precision_score`` (no
    interpolation); tied scores form a single step. Needs at least one
    anomalous label.
    """
    precision, recall, _ = pr_curve(labels, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def detection_rate_at_far(labels: ArrayLike, scores: ArrayLike, far: float) -> float:
    """Recall at the most permissive threshold whose false-alarm rate is ``<= far``.

    The threshold is ``threshold_for_far(normal scores, far)`` — the lowest
    (hence highest-recall) threshold at which the fraction of normal scores
    flagged does not exceed ``far`` — and the result is the fraction of
    anomalous scores strictly above it. Equivalently, the largest TPR among ROC
    points with FPR ``<= far`` (no interpolation).

    This is an **evaluation figure**: it reads the test labels to place the
    threshold, so it is not an operating threshold and must not be used to
    pick one (calibrate on validation normals with :func:`threshold_for_far`).
    """
    y, s = _as_pair(labels, scores)
    _require_both_classes(y, "detection_rate_at_far")
    t = threshold_for_far(s[~y], far)
    return float(np.mean(s[y] > t))


# --------------------------------------------------------------------------- thresholded metrics


@dataclass(frozen=True)
class Confusion:
    """Confusion counts at one threshold (flagged = ``score > threshold``; positive = anomalous)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 0.0 when nothing is flagged."""
        d = self.tp + self.fp
        return self.tp / d if d else 0.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn) (detection rate); 0.0 when there are no anomalies."""
        d = self.tp + self.fn
        return self.tp / d if d else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; 0.0 when both are 0."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0

    @property
    def false_alarm_rate(self) -> float:
        """fp / (fp + tn): fraction of normals flagged; 0.0 when there are no normals."""
        d = self.fp + self.tn
        return self.fp / d if d else 0.0

    def defined(self) -> dict[str, float]:
        """``precision``, ``recall``, ``f1`` and ``false_alarm_rate``, each only where these counts
        define it: no precision when nothing is flagged, no recall without anomalies, no false-alarm
        rate without normals, no F1 when neither precision nor recall is defined."""
        figures = {
            "precision": (self.precision, self.tp + self.fp),
            "recall": (self.recall, self.tp + self.fn),
            "f1": (self.f1, self.tp + self.fp + self.fn),
            "false_alarm_rate": (self.false_alarm_rate, self.fp + self.tn),
        }
        return {name: value for name, (value, base) in figures.items() if base > 0}


def confusion_at(labels: ArrayLike, scores: ArrayLike, threshold: float) -> Confusion:
    """Confusion counts when flagging ``score > threshold``."""
    y, s = _as_pair(labels, scores)
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    flagged = s > t
    tp = int(np.sum(flagged & y))
    fp = int(np.sum(flagged & ~y))
    fn = int(np.sum(~flagged & y))
    tn = int(np.sum(~flagged & ~y))
    return Confusion(tp=tp, fp=fp, tn=tn, fn=fn)


def threshold_for_far(normal_scores: ArrayLike, far: float, confidence: float = 0.0) -> float:
    """Smallest threshold with at most a fraction ``far`` of normal scores strictly above it.

    Exact with ties: the result is always one of ``normal_scores`` (the
    ``(n-k)``-th smallest, ``k = max{k : k/n <= far}``), so
    ``mean(normal_scores > t) <= far`` holds on these scores while any smaller
    threshold would exceed ``far``. ``far = 0`` gives the largest normal score.
    Use it on validation normals to calibrate the operating threshold.
    ``far`` must lie in ``[0, 1)``. With ``confidence > 0``, ``k`` is
    :func:`allowed_above`'s: the rate on new normal data is at most ``far``
    with that probability, not just on these scores.
    """
    s = _as_scores(normal_scores, "normal_scores")
    if s.size == 0:
        raise ValueError("normal_scores is empty; need at least one normal score to calibrate a threshold")
    k = allowed_above(s.size, _check_rate(far, "far"), confidence)
    return float(np.sort(s)[s.size - k - 1])


def unresolved_rate(n_normal: int, rate: float, confidence: float = 0.0) -> str | None:
    """Why ``n_normal`` calibration scores cannot resolve ``rate``, or None when they can.

    Below ``n_normal * rate < 1`` the rule of :func:`threshold_for_far` lets
    no score lie above the threshold, which is then the largest calibration
    score: new normal sequences exceed it about ``1 / (n_normal + 1)`` of the
    time, and that single order statistic varies a lot between data sets. The
    text says so and how many sequences the rate needs. With ``confidence``,
    also when even the largest score cannot hold ``rate`` with that
    probability (:func:`allowed_above`, :func:`confidence_needs`).
    """
    rate = _check_rate(rate, "rate")
    c = _check_rate(confidence, "confidence")
    if n_normal <= 0 or rate <= 0:
        return None
    resolves = math.ceil(1.0 / rate)  # scores for the plain rule to leave one above the threshold
    if c > 0 and n_normal < confidence_needs(rate, c):
        held = 1.0 - (1.0 - rate) ** n_normal
        shown = math.floor(held * 1e6) / 1e6  # truncated: never printed as the confidence it misses
        return (
            f"{n_normal} validation sequences cannot hold a false-alarm rate of {rate:g} with confidence "
            f"{c:.10g} (at least {max(confidence_needs(rate, c), resolves)} needed): the threshold is their "
            f"largest score, whose rate on new normal data is at most {rate:g} with probability "
            f"{shown:g} only"
        )
    if _max_allowed(n_normal, rate) > 0:
        return None
    return (
        f"{n_normal} validation sequences cannot resolve a rate of {rate:g} (at least "
        f"{resolves} needed): the threshold is their largest score, which about "
        f"{1.0 / (n_normal + 1):.1%} of new normal sequences exceed, with high variance"
    )


def normal_p_values(scores: ArrayLike, normal_scores: ArrayLike) -> NDArray[np.float64]:
    """Conformal p-value of each score against normal reference scores.

    ``p = (1 + #{normal >= score}) / (n + 1)``: how rare a score this high is
    among normal sequences, counting the scored sequence itself (so ``p`` is
    never 0 and, for a new normal sequence exchangeable with the reference,
    ``P(p <= a) <= a`` for every ``a``). Small = unusual. The resolution is
    ``1 / (n + 1)``: with 99 reference scores no p-value falls below 0.01. A
    NaN score, or an empty reference, gives NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    ref = _as_scores(normal_scores, "normal_scores") if np.size(normal_scores) else np.empty(0)
    if ref.size == 0:
        return np.full(s.shape, np.nan)
    ref = np.sort(ref)
    at_least = ref.size - np.searchsorted(ref, s, side="left")
    p = (1.0 + at_least) / (ref.size + 1.0)
    return np.where(np.isnan(s), np.nan, p)


def threshold_for_contamination(scores: ArrayLike, contamination: float) -> float:
    """Threshold flagging at most a fraction ``contamination`` of ``scores`` (``score > t``).

    Same rule as :func:`threshold_for_far` applied to unlabelled scores that
    are assumed to contain that fraction of anomalies. ``contamination`` must
    lie in ``[0, 1)``; ties are never split, so fewer may be flagged.
    """
    s = _as_scores(scores)
    if s.size == 0:
        raise ValueError("scores is empty; need at least one score to pick a threshold")
    rate = _check_rate(contamination, "contamination")
    k = _max_allowed(s.size, rate)
    return float(np.sort(s)[s.size - k - 1])


# --------------------------------------------------------------------------- federated (histograms)


def _as_edges(edges: ArrayLike) -> NDArray[np.float64]:
    e = _as_scores(edges, "edges")
    if e.size < 2:
        raise ValueError(f"edges needs at least 2 values (1 bin), got {e.size}")
    if not np.all(np.isfinite(e)):
        raise ValueError("edges must be finite")
    if np.any(np.diff(e) <= 0):
        raise ValueError("edges must be strictly increasing")
    return e


def _as_counts(counts: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    whole = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    )
    if arr.size and not whole:
        raise ValueError(f"{name} must hold whole-number counts")
    out = arr.astype(np.int64)
    if np.any(out < 0):
        raise ValueError(f"{name} must not be negative")
    return out


def histogram_counts(scores: ArrayLike, edges: ArrayLike) -> NDArray[np.int64]:
    """Counts of ``scores`` per bin ``[edges[i], edges[i+1])`` (last bin closed).

    Returns ``len(edges) - 1`` int64 counts. Scores below ``edges[0]`` fall in
    the first bin and scores above ``edges[-1]`` in the last, so the counts
    always sum to ``len(scores)``.
    """
    s = _as_scores(scores)
    e = _as_edges(edges)
    n_bins = e.size - 1
    idx = np.clip(np.searchsorted(e, s, side="right") - 1, 0, n_bins - 1)
    return np.bincount(idx, minlength=n_bins).astype(np.int64)


def threshold_from_histogram(
    counts: ArrayLike, edges: ArrayLike, far: float, confidence: float = 0.0
) -> float:
    """Conservative threshold from (summed) normal-score counts over agreed bins.

    Scanning bins upward, returns the upper edge ``edges[j+1]`` of the first
    bin ``j`` such that the fraction of counts in bins above ``j`` is
    ``<= far``. Every normal score strictly above that edge lies in a bin above
    ``j``, so the false-alarm rate on the pooled normals is ``<= far``; and the
    result is at most one bin width above the exact :func:`threshold_for_far`.
    (The guarantee assumes the edges cover the scores; clipped outliers above
    ``edges[-1]`` would be flagged.) ``far`` must lie in ``[0, 1)``. With
    ``confidence > 0`` the counts above may be at most :func:`allowed_above`'s.
    """
    c = _as_counts(counts, "counts")
    e = _as_edges(edges)
    if c.size != e.size - 1:
        raise ValueError(f"counts has {c.size} bins but edges define {e.size - 1}")
    total = int(c.sum())
    if total == 0:
        raise ValueError("counts are all zero; need at least one normal score")
    allowed = allowed_above(total, _check_rate(far, "far"), confidence)
    above = total - np.cumsum(c)  # count in bins strictly above bin j
    j = int(np.flatnonzero(above <= allowed)[0])  # the last bin always qualifies (above = 0)
    return float(e[j + 1])


def roc_auc_from_histograms(normal_counts: ArrayLike, anomaly_counts: ArrayLike) -> float:
    """AUROC from normal and anomalous counts over the same bins.

    Exact for binned scores: equals :func:`roc_auc` on the bin indices, i.e.
    P(anomalous bin > normal bin) + ½ · P(same bin). It differs from the
    AUROC of the raw scores by at most the fraction of (anomalous, normal)
    pairs sharing a bin.
    """
    n = _as_counts(normal_counts, "normal_counts").astype(np.float64)
    a = _as_counts(anomaly_counts, "anomaly_counts").astype(np.float64)
    if n.size != a.size:
        raise ValueError(f"normal_counts has {n.size} bins but anomaly_counts has {a.size}")
    n_tot, a_tot = float(n.sum()), float(a.sum())
    if n_tot == 0 or a_tot == 0:
        which = "normal_counts" if n_tot == 0 else "anomaly_counts"
        raise ValueError(f"roc_auc_from_histograms needs both classes, but {which} are all zero")
    normals_below = np.cumsum(n) - n
    return float(np.sum(a * (normals_below + 0.5 * n)) / (n_tot * a_tot))


# --------------------------------------------------------------------------- report


def detection_report(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, Any]:
    """All headline metrics in one JSON-serialisable dict.

    Keys: ``auroc``, ``auprc``, ``precision``, ``recall``, ``f1``,
    ``false_alarm_rate``, ``tp``, ``fp``, ``tn``, ``fn``, ``threshold``,
    ``detection_rate_at_1pct_far``, ``detection_rate_at_5pct_far``,
    ``n_sequences``, ``n_anomalous``. Thresholded figures use
    ``score > threshold``. Figures that are undefined or say nothing for the
    labels given are ``None``: AUROC, AUPRC and the detection rates with a
    single class (with anomalies only, every ranking has an AUPRC of 1), recall
    without anomalies, the false-alarm rate without normal sequences,
    precision when nothing is flagged, F1 when neither precision nor recall
    is defined. The detection rates read the labels to place their
    thresholds; they are evaluation figures, not operating points.
    """
    y, s = _as_pair(labels, scores)
    conf = confusion_at(y, s, threshold)
    figures = conf.defined()
    n_pos = int(y.sum())
    both = 0 < n_pos < y.size
    return {
        "auroc": roc_auc(y, s) if both else None,
        "auprc": average_precision(y, s) if both else None,
        **{name: figures.get(name) for name in ("precision", "recall", "f1", "false_alarm_rate")},
        "tp": conf.tp,
        "fp": conf.fp,
        "tn": conf.tn,
        "fn": conf.fn,
        "threshold": float(threshold),
        "detection_rate_at_1pct_far": detection_rate_at_far(y, s, 0.01) if both else None,
        "detection_rate_at_5pct_far": detection_rate_at_far(y, s, 0.05) if both else None,
        "n_sequences": int(y.size),
        "n_anomalous": n_pos,
    }


UNNAMED_GROUP = "(unnamed)"
"""The group of anomalous sequences whose group name is empty or missing."""

_MISSING_NAMES = frozenset({"", "nan", "NaN", "<NA>", "None", "NaT"})


def _group_name(value: object) -> str:
    """A group name as text; empty, None, NaN and pandas' NA are :data:`UNNAMED_GROUP`."""
    text = "" if value is None else str(value)
    return UNNAMED_GROUP if text.strip() in _MISSING_NAMES else text


def detection_by_group(
    labels: ArrayLike, scores: ArrayLike, groups: Sequence[Any] | NDArray[Any], threshold: float
) -> dict[str, dict[str, Any]]:
    """Detection per kind of anomaly (e.g. ADFA-LD's attack types): each group's
    anomalous sequences against *all* the normal ones.

    ``groups`` names each sequence's group (read for anomalous sequences only;
    an empty or missing name is the group :data:`UNNAMED_GROUP`). Keys are the group
    names in sorted order; each value holds ``n``, ``detected`` (scores
    ``> threshold``), ``recall``, ``auroc`` and ``detection_rate_at_1pct_far`` /
    ``_5pct_far``. The last three are None without normal sequences. Because the
    detection rates place their thresholds on the normal scores alone, every
    group is measured at the same two thresholds as :func:`detection_report`.
    """
    y, s = _as_pair(labels, scores)
    g = np.asarray(groups, dtype=object)
    if g.shape != y.shape:
        raise ValueError(f"groups has shape {g.shape} but labels has {y.shape}")
    names = np.array([_group_name(v) for v in g[y]], dtype=object)
    normal = s[~y]
    anomalous = s[y]
    has_normal = normal.size > 0
    t1 = threshold_for_far(normal, 0.01) if has_normal else math.nan
    t5 = threshold_for_far(normal, 0.05) if has_normal else math.nan
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names.tolist())):
        mine = anomalous[names == name]
        detected = int(np.sum(mine > threshold))
        both_y = np.concatenate([np.zeros(normal.size, dtype=bool), np.ones(mine.size, dtype=bool)])
        out[name] = {
            "n": int(mine.size),
            "detected": detected,
            "recall": detected / mine.size,
            "auroc": roc_auc(both_y, np.concatenate([normal, mine])) if has_normal else None,
            "detection_rate_at_1pct_far": float(np.mean(mine > t1)) if has_normal else None,
            "detection_rate_at_5pct_far": float(np.mean(mine > t5)) if has_normal else None,
        }
    return out
