"""Tests for simulations.synthetic: the seeded multi-institution behaviour generator."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from common.errors import ConfigError, DataError
from common.events import GAP, EventTable
from simulations.synthetic import (
    ATTACK_TYPES,
    CHANNELS,
    COLUMNS,
    DEVICES,
    EVENTS,
    MONEY_EVENTS,
    SYNTHETIC_KEYS,
    SyntheticSpec,
    generate,
    institution_of,
    load_synthetic,
    user_of,
)

SMALL = SyntheticSpec(users=60, seed=7)


@pytest.fixture(scope="module")
def default_frames() -> dict[str, pd.DataFrame]:
    """The default spec (3 institutions, 240 users), generated once."""
    return generate(SyntheticSpec())


@pytest.fixture(scope="module")
def small_frames() -> dict[str, pd.DataFrame]:
    return generate(SMALL)


def _tv(a: pd.Series, b: pd.Series) -> float:
    pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
    both = pd.concat([pa, pb], axis=1).fillna(0.0)
    return 0.5 * float((both.iloc[:, 0] - both.iloc[:, 1]).abs().sum())


def test_defaults_are_fast_and_deterministic(default_frames: dict[str, pd.DataFrame]) -> None:
    start = time.perf_counter()
    again = generate(SyntheticSpec())
    assert time.perf_counter() - start < 2.0
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(default_frames[split], again[split])
    first, other = generate(SyntheticSpec(users=30, seed=0)), generate(SyntheticSpec(users=30, seed=1))
    assert not first["train"]["event"].equals(other["train"]["event"])


def test_columns_and_dtypes(small_frames: dict[str, pd.DataFrame]) -> None:
    assert set(small_frames) == {"train", "test"}
    for frame in small_frames.values():
        assert list(frame.columns) == list(COLUMNS)
        assert pd.api.types.is_datetime64_any_dtype(frame["timestamp"])
        assert frame["institution"].dtype == np.int64
        assert frame["amount"].dtype == np.float64
        assert frame["label"].isin([0, 1]).all()
        for col in ("sequence_id", "user_id", "event", "device", "channel", "country", "attack_type"):
            assert pd.api.types.is_string_dtype(frame[col]), col
        assert not frame.isna().any().any()
        assert set(frame["event"]) <= set(EVENTS)
        assert set(frame["device"]) <= set(DEVICES)
        assert set(frame["channel"]) <= set(CHANNELS)
        money = frame["event"].isin(MONEY_EVENTS)
        assert (frame.loc[~money, "amount"] == 0.0).all()
        assert (frame.loc[money, "amount"] > 0.0).all()
        # sorted by sequence id, then strictly increasing time inside a sequence
        assert frame["sequence_id"].is_monotonic_increasing
        same = frame["sequence_id"].eq(frame["sequence_id"].shift())
        assert (frame["timestamp"].diff()[same] > pd.Timedelta(0)).all()


def test_ids_keys_and_splits(small_frames: dict[str, pd.DataFrame]) -> None:
    train, test = small_frames["train"], small_frames["test"]
    assert set(train["sequence_id"]).isdisjoint(set(test["sequence_id"]))
    both = pd.concat([train, test])
    assert all(re.fullmatch(r"inst\d+-u\d{4}-s\d{2,}", s) for s in both["sequence_id"].unique())
    firsts = both.drop_duplicates("sequence_id")
    assert [institution_of(s) for s in firsts["sequence_id"]] == firsts["institution"].tolist()
    assert [user_of(s) for s in firsts["sequence_id"]] == firsts["user_id"].tolist()
    assert SYNTHETIC_KEYS["institution"] is institution_of
    assert both.groupby("user_id")["institution"].nunique().max() == 1
    assert sorted(both["institution"].unique()) == [0, 1, 2]
    assert both["user_id"].nunique() == SMALL.users
    with pytest.raises(DataError, match="not a synthetic id"):
        user_of("block_17")


def test_train_is_normal_and_test_has_every_attack(default_frames: dict[str, pd.DataFrame]) -> None:
    train, test = default_frames["train"], default_frames["test"]
    assert (train["label"] == 0).all() and (train["attack_type"] == "").all()
    assert ((test["label"] == 1) == (test["attack_type"] != "")).all()
    per_seq = test.drop_duplicates("sequence_id")
    assert set(per_seq["attack_type"]) - {""} == set(ATTACK_TYPES)
    rate = per_seq["label"].mean()
    assert 0.07 < rate < 0.13
    n_train = train["sequence_id"].nunique()
    n_test_normal = int((per_seq["label"] == 0).sum())
    assert 0.2 < n_test_normal / (n_train + n_test_normal) < 0.4


def test_attack_signatures(default_frames: dict[str, pd.DataFrame]) -> None:
    test = default_frames["test"]
    gaps = test.groupby("sequence_id")["timestamp"].diff().dt.total_seconds()
    test = test.assign(gap=gaps)
    by_type = {t: test[test["attack_type"] == t] for t in ATTACK_TYPES}
    normal = test[test["label"] == 0]

    bot = by_type["bot"]
    assert bot["gap"].median() < 3.0 < normal["gap"].median()
    card = by_type["card_testing"]
    assert "payment_declined" in set(card["event"])
    assert card.loc[card["event"].isin(MONEY_EVENTS), "amount"].max() <= 3.0
    ato = by_type["account_takeover"]
    assert {"change_password", "add_payee"} <= set(ato["event"])
    homes = default_frames["train"].groupby("user_id")["country"].agg(lambda s: s.mode()[0])
    assert (ato["country"] != ato["user_id"].map(homes)).all()
    exfil = by_type["data_exfiltration"]
    bulk = exfil["event"].isin(["export_statement", "download_document"]).mean()
    assert bulk > 3 * normal["event"].isin(["export_statement", "download_document"]).mean()
    # attacks mostly reuse ordinary events
    normal_vocab = set(default_frames["train"]["event"])
    attack_events = test.loc[test["label"] == 1, "event"]
    assert attack_events.isin(normal_vocab).mean() > 0.95


def test_institutions_differ_in_event_mix(default_frames: dict[str, pd.DataFrame]) -> None:
    train = default_frames["train"]
    events = {i: g["event"] for i, g in train.groupby("institution")}
    for a in events:
        for b in events:
            if a < b:
                assert _tv(events[a], events[b]) > 0.1, (a, b)


def test_users_differ_within_an_institution(default_frames: dict[str, pd.DataFrame]) -> None:
    train = default_frames["train"]
    inst0 = train[train["institution"] == 0]
    per_user = [g["event"] for _, g in inst0.groupby("user_id")]
    tv = np.mean([_tv(per_user[i], per_user[i + 1]) for i in range(0, 20, 2)])
    assert tv > 0.1


def test_more_institutions_cycle_profiles() -> None:
    frames = generate(SyntheticSpec(institutions=5, users=50, sessions_per_user=(2, 3), seed=2))
    both = pd.concat(frames.values())
    assert sorted(both["institution"].unique()) == [0, 1, 2, 3, 4]
    assert both.groupby("institution")["user_id"].nunique().tolist() == [10] * 5


def test_load_synthetic_tables() -> None:
    tables = load_synthetic(SMALL)
    frames = generate(SMALL)
    for split, table in tables.items():
        assert isinstance(table, EventTable)
        assert table.time_ordered and table.has_labels and table.has_attack_types
        assert table.numeric == ("amount", GAP)
        assert table.context == ("device", "channel", "country")
        assert len(table) == frames[split]["sequence_id"].nunique()
        assert table.n_events == len(frames[split])
        assert table.repairs == {}
    grouped = tables["test"].grouped()
    assert grouped.labels is not None and grouped.attack_types is not None
    assert set(grouped.attack_types[grouped.labels == 1]) == set(ATTACK_TYPES)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"institutions": 0},
        {"users": 2, "institutions": 3},
        {"sessions_per_user": (4, 2)},
        {"sessions_per_user": (0, 2)},
        {"anomaly_rate": 1.0},
        {"test_fraction": 0.0},
    ],
)
def test_bad_spec(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="synthetic"):
        SyntheticSpec(**kwargs)


def test_no_anomalies_and_tiny_spec() -> None:
    frames = generate(SyntheticSpec(users=3, institutions=3, sessions_per_user=(2, 2), anomaly_rate=0.0))
    assert (frames["test"]["label"] == 0).all()
    assert len(frames["train"]) and len(frames["test"])


def test_the_context_benchmark_adds_one_kind_of_context_per_row() -> None:
    """``bench_quality synthetic-context``, at a toy size: the same sessions read four ways."""
    from common.config import DetectorConfig, with_overrides
    from simulations.bench_quality import CONTEXT_VARIANTS, synthetic_context

    base = with_overrides(
        DetectorConfig(), model={"embed_dim": 8, "hidden": 8}, train={"epochs": 1, "threads": 1}
    )
    rows = synthetic_context(base, None, seeds=1, first_seed=0, users=60)["rows"]
    assert [r["sees"] for r in rows] == [name for name, _ in CONTEXT_VARIANTS]
    assert [(r["numeric"], r["context"]) for r in rows] == [
        ([], []),
        ([GAP], []),
        (["amount", GAP], []),
        (["amount", GAP], ["device", "channel", "country"]),
    ]
    assert len({r["test_sequences"] for r in rows}) == 1  # the same sessions every time
    for row in rows:
        assert set(row["by_attack_type"]) == set(ATTACK_TYPES)
        assert 0.0 <= row["auroc"] <= 1.0
