"""Quality floors on real data (skipped when ``../shared/data`` is absent).

Small, seeded versions of the protocols of ``simulations.bench_quality``:
fewer epochs (and for HDFS a smaller model), so that they run in CI in
about a minute together. The floors sit well under what the full benchmarks measure
(docs/results.md) and well over what a broken pipeline gives (chance is
0.5 AUROC; recall at 1 % false alarms of a constant score is 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.config import DetectorConfig, ScoreConfig, with_overrides
from common.datasets import ENV_VAR, load_adfa_ld, load_hdfs, load_openstack, shared_data_dir
from common.detector import SequenceDetector, content_groups, holdout_split
from common.metrics import detection_report, roc_auc, threshold_for_far

pytestmark = pytest.mark.realdata

SMALL_MODEL = {"embed_dim": 32, "hidden": 64}


def _data() -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip(f"shared data folder not found (set {ENV_VAR})")
    return root


def test_hdfs_recall_floor_with_grouped_fold() -> None:
    """Fit on 4/5 of the normal sessions (folds grouped by content); threshold
    at <= 1 % false alarms on the held-out fifth; recall on the abnormal ones."""
    splits = load_hdfs(_data())
    train, abnormal = splits["train"], splits["test_abnormal"]
    groups = content_groups(train)
    fold = np.random.default_rng(0).permutation(int(groups.max()) + 1)[groups] % 5
    ids = train.grouped().ids
    cfg = with_overrides(
        DetectorConfig(), model=SMALL_MODEL, score={"aggregate": "max"}, train={"epochs": 6, "threads": 2}
    )
    det = SequenceDetector(cfg).fit(train.subset(ids[fold != 0]))
    held = det.decision_function(train.subset(ids[fold == 0]))
    threshold = threshold_for_far(held, 0.01)
    rng = np.random.default_rng(0)
    sample = abnormal.subset(rng.choice(abnormal.grouped().ids, 4000, replace=False))
    recall = float((det.decision_function(sample) > threshold).mean())
    assert (held > threshold).mean() <= 0.01
    assert recall >= 0.95, f"HDFS recall {recall:.3f} at <= 1 % false alarms"


def test_adfa_auroc_floor() -> None:
    """Standard split: fit on the training traces, score a seeded sample of the
    validation-normal traces and every attack trace."""
    splits = load_adfa_ld(_data())
    cfg = with_overrides(DetectorConfig(), train={"epochs": 8, "threads": 2})
    train, validation = holdout_split(splits["train"], 0.1, 0)
    det = SequenceDetector(cfg).fit(train, validation)
    test = splits["test"]
    g = test.grouped()
    assert g.labels is not None
    rng = np.random.default_rng(0)
    normals = rng.choice(g.ids[g.labels == 0], 1000, replace=False)
    sample = test.subset(np.concatenate([normals, g.ids[g.labels == 1]]))
    scored = det.score_table(sample)
    labels = scored.encoded.labels
    assert labels is not None
    auroc = roc_auc(labels, scored.scores)
    # the END step adds to the mean: without it the same model scores lower
    # (measured: 0.873 with END, 0.829 without)
    without_end = roc_auc(labels, det.score_table(sample, ScoreConfig(end_weight=0.0)).scores)
    assert auroc >= 0.85, f"ADFA-LD AUROC {auroc:.3f} (without END {without_end:.3f})"
    assert auroc > without_end + 0.02


def test_openstack_kalaki_floor() -> None:
    """Landauer et al.'s split, default detector: the failures that bring unseen events are found
    at the threshold calibrated on the few held-out training instances."""
    splits = load_openstack(_data(), "kalaki")
    cfg = with_overrides(DetectorConfig(), train={"threads": 2})
    train, validation = holdout_split(splits["train"], cfg.train.validation_fraction, 0)
    det = SequenceDetector(cfg).fit(train, validation)
    scored = det.score_table(splits["test"])
    assert scored.encoded.labels is not None
    report = detection_report(scored.encoded.labels, scored.scores, det.threshold_)
    # measured (docs/results.md): AUROC 1.000, F1 0.983, false-alarm rate 0.004
    assert report["auroc"] >= 0.98 and report["f1"] >= 0.9 and report["false_alarm_rate"] <= 0.03, report
