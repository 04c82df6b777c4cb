"""Metrics against hand-computed cases and brute-force definitions (ties included)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from common import metrics as m

# --------------------------------------------------------------------------- brute-force references


def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def brute_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over anomalies of the precision when flagging every score >= that anomaly's score."""
    precisions = [np.mean(y[s >= v]) for v in s[y == 1]]
    return float(np.mean(precisions))


def brute_rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    flagged = s > t
    return float(np.mean(flagged[y == 0])), float(np.mean(flagged[y == 1]))


def brute_threshold_for_far(normals: np.ndarray, far: float) -> float:
    for t in np.r_[-np.inf, np.unique(normals)]:
        if np.sum(normals > t) / normals.size <= far:
            return float(t)
    raise AssertionError("unreachable")


def random_case(seed: int, n: int = 120, tie_levels: int | None = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + 1.2 * y
    if tie_levels is not None:  # heavy ties
        s = np.round(s * tie_levels / 3) / tie_levels
    return y, s


SEEDS = range(6)

# --------------------------------------------------------------------------- hand-computed


def test_hand_computed_auc_and_ap() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert m.roc_auc(y, s) == pytest.approx(0.75)
    assert m.average_precision(y, s) == pytest.approx(5 / 6)


def test_hand_computed_with_ties() -> None:
    y = [0, 1, 0, 1]
    s = [1.0, 1.0, 0.0, 2.0]
    # pairs: (1 vs 1) half, (1 vs 0), (2 vs 1), (2 vs 0) -> 3.5 / 4
    assert m.roc_auc(y, s) == pytest.approx(0.875)
    # steps: {2}: P=1, R=.5; {2,1,1}: P=2/3, R=1
    assert m.average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    fpr, tpr, thr = m.roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [2.0, 1.0, 0.0, -np.inf])
    precision, recall, pthr = m.pr_curve(y, s)
    np.testing.assert_allclose(precision, [1, 1, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(pthr, thr)


def test_perfect_and_inverted_and_constant() -> None:
    y = [0, 0, 1, 1]
    assert m.roc_auc(y, [1, 2, 3, 4]) == 1.0
    assert m.roc_auc(y, [4, 3, 2, 1]) == 0.0
    assert m.roc_auc(y, [5, 5, 5, 5]) == 0.5
    assert m.average_precision(y, [5, 5, 5, 5]) == pytest.approx(0.5)
    assert m.roc_auc(np.array([False, True]), [0.0, np.inf]) == 1.0


def test_confusion_hand_computed() -> None:
    y = [0, 0, 0, 1, 1]
    s = [0.1, 0.5, 0.9, 0.5, 0.95]
    c = m.confusion_at(y, s, 0.5)  # flagged: 0.9, 0.95 (0.5 is not > 0.5)
    assert (c.tp, c.fp, c.tn, c.fn) == (1, 1, 2, 1)
    assert c.precision == 0.5 and c.recall == 0.5 and c.f1 == 0.5
    assert c.false_alarm_rate == pytest.approx(1 / 3)
    none = m.confusion_at(y, s, 10.0)
    assert none.precision == 0.0 and none.recall == 0.0 and none.f1 == 0.0
    assert m.Confusion(0, 0, 0, 0).false_alarm_rate == 0.0


def test_threshold_for_far_hand_computed() -> None:
    normals = [1, 2, 2, 3, 4, 5, 5, 5, 6, 7]
    assert m.threshold_for_far(normals, 0.0) == 7
    assert m.threshold_for_far(normals, 0.1) == 6  # one above
    assert m.threshold_for_far(normals, 0.25) == 5  # 0.2 above; 4 would give 0.5
    assert m.threshold_for_far(normals, 0.5) == 4
    assert m.threshold_for_far(normals, 0.7) == 2  # 0.7 above
    assert m.threshold_for_far(normals, 0.99) == 1
    # float edge: 29/100 must count as <= 0.29
    assert m.threshold_for_far(np.arange(100.0), 0.29) == 70.0
    assert m.threshold_for_contamination(normals, 0.1) == 6


def test_normal_p_values_hand_computed() -> None:
    normals = [1.0, 2.0, 2.0, 3.0]
    p = m.normal_p_values([0.5, 2.0, 2.5, 3.0, 9.0, np.nan], normals)
    # (1 + number of normal scores >= s) / (4 + 1): ties count as at least as high
    np.testing.assert_allclose(p[:5], [5 / 5, 4 / 5, 2 / 5, 2 / 5, 1 / 5])
    assert np.isnan(p[5])
    assert np.isnan(m.normal_p_values([1.0, 2.0], [])).all()  # no reference: no p-value


def test_normal_p_values_are_valid_for_new_normal_data() -> None:
    """Exchangeable normal scores: P(p <= a) <= a for every a (up to Monte Carlo error),
    so flagging p <= 0.01 keeps false alarms at 1 %; anomalies from a shifted law get small p."""
    rng = np.random.default_rng(11)
    p = np.concatenate([m.normal_p_values(rng.normal(size=50), rng.normal(size=199)) for _ in range(400)])
    for a in (0.01, 0.05, 0.2, 0.5):
        assert np.mean(p <= a) <= a + 0.01
    assert np.mean(p <= 0.05) >= 0.04  # not conservative to uselessness: near 0.05
    shifted = m.normal_p_values(rng.normal(4.0, size=1_000), rng.normal(size=199))
    assert np.mean(shifted <= 0.01) > 0.8  # above all but one of 199 normals (about 2.6σ)


def test_unresolved_rate_names_the_sequences_a_rate_needs() -> None:
    note = m.unresolved_rate(96, 0.01)
    assert note is not None and "96 validation" in note and "at least 100 needed" in note and "1.0%" in note
    assert m.threshold_for_far(np.arange(96.0), 0.01) == 95.0  # the largest score, as the note says
    assert m.unresolved_rate(100, 0.01) is None  # one score may lie above
    assert m.unresolved_rate(20, 0.05) is None
    assert m.unresolved_rate(0, 0.01) is None and m.unresolved_rate(50, 0.0) is None  # nothing to resolve


def test_detection_rate_hand_computed() -> None:
    y = [0] * 10 + [1] * 4
    s = [*range(10), 9, 8.5, 3, 20]
    # far=0.1 -> threshold 8 (one normal, 9, above): anomalies > 8: 9, 8.5, 20
    assert m.detection_rate_at_far(y, s, 0.1) == 0.75
    # far=0 -> threshold 9: only 20
    assert m.detection_rate_at_far(y, s, 0.0) == 0.25


# --------------------------------------------------------------------------- brute force on random data


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tie_levels", [None, 7, 1])
def test_auc_and_ap_match_brute_force(seed: int, tie_levels: int | None) -> None:
    y, s = random_case(seed, tie_levels=tie_levels)
    assert m.roc_auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert m.average_precision(y, s) == pytest.approx(brute_ap(y, s), abs=1e-12)
    fpr, tpr, _ = m.roc_curve(y, s)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids (np.trapezoid: numpy >= 2)
    assert area == pytest.approx(brute_auc(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_curve_points_are_confusions(seed: int) -> None:
    y, s = random_case(seed)
    fpr, tpr, thr = m.roc_curve(y, s)
    assert np.all(np.diff(thr) < 0) and thr[-1] == -np.inf
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    precision, recall, _ = m.pr_curve(y, s)
    for i, t in enumerate(thr):
        c = m.confusion_at(y, s, t)
        assert (fpr[i], tpr[i]) == pytest.approx(brute_rates(y, s, t))
        assert (c.false_alarm_rate, c.recall) == pytest.approx((fpr[i], tpr[i]))
        assert recall[i] == pytest.approx(c.recall)
        if i > 0:
            assert precision[i] == pytest.approx(c.precision)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("far", [0.0, 0.01, 0.05, 0.1, 0.333, 0.9])
def test_threshold_for_far_brute_force(seed: int, far: float) -> None:
    y, s = random_case(seed)
    normals = s[y == 0]
    t = m.threshold_for_far(normals, far)
    assert t == brute_threshold_for_far(normals, far)
    assert np.mean(normals > t) <= far
    below = normals[normals < t]
    if below.size:  # any lower candidate breaks the bound
        assert np.mean(normals > below.max()) > far
    # detection rate = best TPR among ROC points with FPR <= far
    fpr, tpr, _ = m.roc_curve(y, s)
    assert m.detection_rate_at_far(y, s, far) == pytest.approx(tpr[fpr <= far].max())


# --------------------------------------------------------------------------- histograms


def test_histogram_counts() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    counts = m.histogram_counts([-5, 0, 0.5, 1, 2.5, 3, 99], edges)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [3, 1, 3])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, 500)
    np.testing.assert_array_equal(m.histogram_counts(x, edges), np.histogram(x, bins=edges)[0])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("far", [0.0, 0.01, 0.05, 0.2])
def test_threshold_from_histogram_within_one_bin(seed: int, far: float) -> None:
    y, s = random_case(seed, n=400, tie_levels=None)
    normals = s[y == 0]
    edges = np.linspace(s.min() - 0.01, s.max() + 0.01, 81)
    width = edges[1] - edges[0]
    # two federated clients: summed counts = pooled counts
    half = normals.size // 2
    counts = m.histogram_counts(normals[:half], edges) + m.histogram_counts(normals[half:], edges)
    np.testing.assert_array_equal(counts, m.histogram_counts(normals, edges))
    h = m.threshold_from_histogram(counts, edges, far)
    exact = m.threshold_for_far(normals, far)
    assert exact <= h <= exact + width + 1e-12
    assert np.mean(normals > h) <= far


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_from_histograms(seed: int) -> None:
    y, s = random_case(seed, n=400, tie_levels=None)
    edges = np.linspace(s.min(), s.max(), 201)
    nc = m.histogram_counts(s[y == 0], edges)
    ac = m.histogram_counts(s[y == 1], edges)
    binned = m.roc_auc_from_histograms(nc, ac)
    bins = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, 199)
    assert binned == pytest.approx(m.roc_auc(y, bins), abs=1e-12)  # exact for binned scores
    shared = float(np.sum(nc * ac)) / (nc.sum() * ac.sum())
    assert abs(binned - m.roc_auc(y, s)) <= 0.5 * shared + 1e-12
    assert binned == pytest.approx(m.roc_auc(y, s), abs=0.01)


# --------------------------------------------------------------------------- report and errors


def test_detection_report() -> None:
    y, s = random_case(1)
    rep = m.detection_report(y, s, 0.5)
    assert set(rep) == {
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
    }
    json.dumps(rep, allow_nan=False)
    assert rep["auroc"] == pytest.approx(brute_auc(y, s))
    assert rep["tp"] + rep["fp"] + rep["tn"] + rep["fn"] == rep["n_sequences"] == len(y)
    assert rep["n_anomalous"] == int(y.sum())
    assert all(isinstance(rep[k], int) for k in ("tp", "fp", "tn", "fn", "n_sequences", "n_anomalous"))
    single = m.detection_report([0, 0, 0], [1.0, 2.0, 3.0], 2.5)
    assert single["auroc"] is None and single["auprc"] is None and single["fp"] == 1
    json.dumps(single, allow_nan=False)
    # anomalies only: every ranking has AUPRC 1, which says nothing; recall is the figure
    attacks = m.detection_report([1, 1, 1], [1.0, 2.0, 3.0], 1.5)
    assert attacks["auprc"] is None and attacks["recall"] == pytest.approx(2 / 3)
    assert attacks["precision"] == 1.0 and attacks["false_alarm_rate"] is None
    # nothing flagged: no precision; F1 only where recall is defined
    quiet = m.detection_report([0, 1, 0], [1.0, 2.0, 3.0], 5.0)
    assert quiet["precision"] is None and quiet["recall"] == 0.0 and quiet["f1"] == 0.0
    calm = m.detection_report([0, 0], [1.0, 2.0], 5.0)
    assert calm["precision"] is None and calm["recall"] is None and calm["f1"] is None


def test_detection_by_group_measures_each_kind_against_all_normals() -> None:
    normal = [0.1, 0.2, 0.3, 0.4]
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    scores = [*normal, 0.35, 0.5, 0.05, 0.6, 0.25]
    groups = ["", "", "", "", "hydra", "hydra", "shell", "shell", None]
    rep = m.detection_by_group(labels, scores, groups, threshold=0.3)
    assert list(rep) == ["(unnamed)", "hydra", "shell"]
    hydra = rep["hydra"]
    assert hydra["n"] == 2 and hydra["detected"] == 2 and hydra["recall"] == 1.0
    assert hydra["auroc"] == pytest.approx(brute_auc(np.r_[[0] * 4, [1, 1]], np.r_[normal, [0.35, 0.5]]))
    assert hydra["auroc"] == pytest.approx((3 + 4) / 8)
    shell = rep["shell"]
    assert shell["detected"] == 1 and shell["auroc"] == pytest.approx((0 + 4) / 8)
    # the detection rates use the thresholds detection_report places on the normal scores
    overall = m.detection_report(labels, scores, 0.3)
    n_pos = sum(g["n"] for g in rep.values())
    for key in ("detection_rate_at_1pct_far", "detection_rate_at_5pct_far"):
        assert sum(g[key] * g["n"] for g in rep.values()) / n_pos == pytest.approx(overall[key])
    assert rep["(unnamed)"] == {
        "n": 1,
        "detected": 0,
        "recall": 0.0,
        "auroc": pytest.approx(0.5),
        "detection_rate_at_1pct_far": 0.0,
        "detection_rate_at_5pct_far": 0.0,
    }
    json.dumps(rep, allow_nan=False)
    # missing names in any spelling are one group
    import pandas as pd

    missing = m.detection_by_group([0, 1, 1, 1], [0.0, 1.0, 2.0, 3.0], [None, pd.NA, np.nan, "x"], 0.5)
    assert list(missing) == [m.UNNAMED_GROUP, "x"] and missing[m.UNNAMED_GROUP]["n"] == 2
    # anomalies only: recall is all there is
    alone = m.detection_by_group([1, 1], [1.0, 2.0], ["a", "b"], 1.5)
    assert alone["b"]["recall"] == 1.0 and alone["b"]["auroc"] is None
    with pytest.raises(ValueError, match="groups has shape"):
        m.detection_by_group([0, 1], [1.0, 2.0], ["a"], 1.5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: m.roc_auc([0, 0], [1, 2]), "both normal"),
        (lambda: m.roc_auc([1, 1], [1, 2]), "both normal"),
        (lambda: m.roc_auc([0, 2], [1, 2]), "0/1"),
        (lambda: m.roc_auc([0, 1], [1.0, np.nan]), "NaN"),
        (lambda: m.roc_auc([0, 1, 1], [1, 2]), "differ in length"),
        (lambda: m.average_precision([0, 0], [1, 2]), "anomalous"),
        (lambda: m.threshold_for_far([1, 2], 1.0), r"\[0, 1\)"),
        (lambda: m.threshold_for_far([], 0.1), "empty"),
        (lambda: m.histogram_counts([1], [1.0, 0.0]), "increasing"),
        (lambda: m.threshold_from_histogram([0, 0], [0, 1, 2], 0.1), "zero"),
        (lambda: m.threshold_from_histogram([1, 2], [0, 1], 0.1), "bins"),
        (lambda: m.roc_auc_from_histograms([1, 2], [0, 0]), "both classes"),
    ],
)
def test_errors(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_allowed_above_with_confidence() -> None:
    # confidence 0 is the plain rule; a confidence only ever allows fewer scores above
    for n in (1, 99, 100, 229, 300, 600, 5_000):
        plain = m.allowed_above(n, 0.01)
        assert plain == int(np.floor(n * 0.01 + 1e-12))
        ks = [m.allowed_above(n, 0.01, c) for c in (0.5, 0.8, 0.9, 0.99)]
        assert all(a >= b for a, b in zip([plain, *ks], ks, strict=False))
    # k = 0 (the largest score) holds 1 % with probability 1 - 0.99^n: 0.951 at n = 300, not 0.8 at k = 1
    assert m.allowed_above(300, 0.01, 0.9) == 0 and m.allowed_above(600, 0.01, 0.9) == 2
    assert m.confidence_needs(0.01, 0.9) == 230 and m.confidence_needs(0.05, 0.99) == 90
    assert m.allowed_above(10**7, 0.01, 0.9) == 99_596  # large n: no underflow


@pytest.mark.parametrize(("n", "confidence"), [(300, 0.9), (600, 0.9), (2_000, 0.95)])
def test_confident_threshold_holds_the_rate_on_new_data(n: int, confidence: float) -> None:
    """Uniform scores: a threshold t lets 1 - t of new normal scores above it. Over many
    calibration sets the rate stays <= 1 % at least `confidence` of the time (the plain rule's
    does not)."""
    rng = np.random.default_rng(7)
    held = [1 - m.threshold_for_far(rng.random(n), 0.01, confidence) <= 0.01 for _ in range(2_000)]
    plain = [1 - m.threshold_for_far(rng.random(n), 0.01) <= 0.01 for _ in range(2_000)]
    assert np.mean(held) >= confidence - 0.01  # Monte Carlo error of 2,000 draws: about 0.007
    assert np.mean(plain) < 0.6


def test_confident_histogram_threshold_and_notes() -> None:
    rng = np.random.default_rng(3)
    s = rng.lognormal(size=600)
    edges = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 4_000)])
    counts = m.histogram_counts(s, edges)
    t, h = m.threshold_for_far(s, 0.01, 0.9), m.threshold_from_histogram(counts, edges, 0.01, 0.9)
    assert t <= h and int((s > h).sum()) <= m.allowed_above(600, 0.01, 0.9) == 2
    assert m.threshold_for_far(s, 0.01, 0.9) > m.threshold_for_far(s, 0.01)
    note = m.unresolved_rate(150, 0.01, 0.9)
    assert note is not None and "with confidence 0.9 (at least 230 needed)" in note
    assert m.unresolved_rate(300, 0.01, 0.9) is None
    assert "(at least 230 needed)" in (m.unresolved_rate(50, 0.01, 0.9) or "")  # not the plain 100
    assert "probability 0.899894 only" in (m.unresolved_rate(229, 0.01, 0.9) or "")  # never rounded up to 0.9
    assert m.allowed_above(10**9, 0.5, 0.9) == 499_979_736  # a window around the mean, not n entries
