"""Tests for simulations.partition: IID, Dirichlet and natural client splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.errors import ConfigError, DataError
from common.events import EventTable
from simulations.partition import (
    dirichlet,
    dominant_events,
    event_mix_skew,
    iid,
    natural,
    partition,
    sequence_keys,
)
from simulations.synthetic import SYNTHETIC_KEYS, SyntheticSpec, generate, institution_of, load_synthetic

SPEC = SyntheticSpec(users=90, seed=3)


@pytest.fixture(scope="module")
def tables() -> dict[str, EventTable]:
    return load_synthetic(SPEC)


@pytest.fixture(scope="module")
def train(tables: dict[str, EventTable]) -> EventTable:
    return tables["train"]


def _labels(table: EventTable) -> np.ndarray:
    labels = table.grouped().labels
    assert labels is not None, "a labelled table"
    return labels


def _check(parts: list[EventTable], table: EventTable, n: int, *, full: bool = True) -> None:
    """Disjoint, complete, whole sequences, same features (and, if ``full``, canonical rows)."""
    assert len(parts) == n
    ids = [set(p.sequence_ids) for p in parts]
    assert all(ids), "every part is non-empty"
    assert sum(len(s) for s in ids) == len(table)
    assert set().union(*ids) == set(table.sequence_ids)
    assert sum(p.n_events for p in parts) == table.n_events
    for p in parts:
        assert p.numeric == table.numeric and p.context == table.context
        assert p.time_ordered == table.time_ordered and p.has_labels == table.has_labels
        if full:
            pd.testing.assert_frame_equal(p.frame, table.subset(p.sequence_ids).frame)
    assert list(parts[0].frame.columns) == list(table.frame.columns)


def _same(a: list[EventTable], b: list[EventTable]) -> bool:
    return [list(p.sequence_ids) for p in a] == [list(p.sequence_ids) for p in b]


def test_iid(train: EventTable) -> None:
    parts = iid(train, 4, seed=1)
    _check(parts, train, 4)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert _same(parts, iid(train, 4, seed=1))
    assert not _same(parts, iid(train, 4, seed=2))
    assert "(part 1/4)" in parts[0].source
    with pytest.raises(ConfigError, match="positive integer"):
        iid(train, 0)
    with pytest.raises(ConfigError, match="too few"):
        iid(train, len(train) + 1)


def test_iid_keeps_labels_and_attack_types(tables: dict[str, EventTable]) -> None:
    test = tables["test"]
    parts = iid(test, 3, seed=0)
    _check(parts, test, 3)
    labels = np.concatenate([_labels(p) for p in parts])
    assert labels.sum() == _labels(test).sum()
    assert all(p.has_attack_types for p in parts)


def test_dominant_events(train: EventTable) -> None:
    kinds = dominant_events(train)
    assert kinds.shape == (len(train),)
    g = train.grouped()
    for i in range(0, len(train), 37):
        events = pd.Series(g.events_of(i))
        assert events.value_counts()[kinds[i]] == events.value_counts().max()
    assert "login" not in set(kinds)


def test_dirichlet_is_deterministic_complete_and_skewed(train: EventTable) -> None:
    n = 5
    skewed = dirichlet(train, n, alpha=0.05, seed=4)
    _check(skewed, train, n)
    assert _same(skewed, dirichlet(train, n, alpha=0.05, seed=4))
    assert not _same(skewed, dirichlet(train, n, alpha=0.05, seed=5))
    flat = dirichlet(train, n, alpha=1000.0, seed=4)
    _check(flat, train, n)
    iid_skews = [event_mix_skew(iid(train, n, seed=s)) for s in range(3)]
    dir_skews = [event_mix_skew(dirichlet(train, n, alpha=0.05, seed=s)) for s in range(3)]
    assert min(dir_skews) > 2 * max(iid_skews)
    assert event_mix_skew(flat) < min(dir_skews)


def test_dirichlet_min_size(train: EventTable) -> None:
    # max_redraws=0 forces the fallback (moving sequences) at once
    for seed in range(3):
        parts = dirichlet(train, 12, alpha=0.01, seed=seed, min_size=8, max_redraws=0)
        _check(parts, train, 12, full=seed == 0)
        assert min(len(p) for p in parts) >= 8
    assert _same(parts, dirichlet(train, 12, alpha=0.01, seed=2, min_size=8, max_redraws=0))
    tight = len(train) // 4
    parts = dirichlet(train, 4, alpha=0.01, seed=0, min_size=tight)
    assert min(len(p) for p in parts) >= tight
    with pytest.raises(ConfigError, match="too few"):
        dirichlet(train, 4, alpha=0.5, min_size=len(train))
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet(train, 4, alpha=0.0)


def test_dirichlet_custom_types(tables: dict[str, EventTable]) -> None:
    test = tables["test"]
    labels = test.grouped().labels
    parts = dirichlet(test, 3, alpha=0.1, seed=0, types=labels)
    _check(parts, test, 3)
    with pytest.raises(ConfigError, match="types has"):
        dirichlet(test, 3, types=[0, 1])


def test_natural_by_institution(train: EventTable) -> None:
    parts = natural(train, 3, key=institution_of)
    _check(parts, train, 3)
    for k, p in enumerate(parts):
        assert {institution_of(s) for s in p.sequence_ids} == {k}
    assert _same(parts, natural(train, 3, seed=99, key=institution_of))
    # more entities than clients: whole entities, balanced
    two = natural(train, 2, key=institution_of, seed=0)
    _check(two, train, 2)
    insts = [{institution_of(s) for s in p.sequence_ids} for p in two]
    assert insts[0].isdisjoint(insts[1])
    with pytest.raises(ConfigError, match="fewer than 4 clients"):
        natural(train, 4, key=institution_of)


def test_natural_by_user_and_by_mapping(train: EventTable) -> None:
    user_of = SYNTHETIC_KEYS["user_id"]
    parts = natural(train, 6, "user_id", seed=2, key=user_of)
    _check(parts, train, 6)
    users = [{user_of(s) for s in p.sequence_ids} for p in parts]
    assert sum(len(u) for u in users) == len(set().union(*users)), "users never split"
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 8
    assert _same(parts, natural(train, 6, "user_id", seed=2, key=user_of))
    raw = generate(SPEC)["train"]
    mapping = sequence_keys(raw, "institution")
    by_map = natural(train, 3, key=mapping)
    assert _same(by_map, natural(train, 3, key=pd.Series(mapping)))
    assert _same(by_map, natural(train, 3, key=institution_of))
    with pytest.raises(DataError, match="no key"):
        natural(train, 3, key=dict(list(mapping.items())[:5]))


def test_natural_by_table_column_and_missing_column(train: EventTable) -> None:
    parts = natural(train, 2, "device")
    _check(parts, train, 2)
    with pytest.raises(ConfigError, match="pass key="):
        natural(train, 3, "institution")


def test_partition_dispatcher(train: EventTable) -> None:
    assert _same(partition(train, 3, "iid", seed=1), iid(train, 3, seed=1))
    assert _same(partition(train, 3, "dirichlet", alpha=0.3, seed=1), dirichlet(train, 3, alpha=0.3, seed=1))
    assert _same(partition(train, 3, "natural", key=institution_of), natural(train, 3, key=institution_of))
    assert _same(partition(train, 2, "natural", key="device"), natural(train, 2, "device"))
    with pytest.raises(ConfigError, match="needs key"):
        partition(train, 3, "natural")
    with pytest.raises(ConfigError, match="unknown"):
        partition(train, 3, "shards")  # type: ignore[arg-type]  # an unknown method, on purpose
