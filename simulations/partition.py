"""Split an :class:`~common.events.EventTable` across simulated clients.

All partitioners work on whole sequences (a sequence is never split), are
deterministic for a given seed, and return ``n`` disjoint tables whose union
is the input (same features, labels and timing; rows keep their canonical
order). Each part's ``source`` is ``"<input source> (part k/n)"``.

* :func:`iid`: a seeded shuffle cut into ``n`` near-equal parts.
* :func:`dirichlet`: event-mix skew. Each sequence gets a *type* (by default
  its most frequent event, see :func:`dominant_events`); for every type a
  Dirichlet(``alpha``) draw gives the clients' shares of its sequences. Small
  ``alpha`` gives each client a few dominant types; large ``alpha`` tends to
  IID.
* :func:`natural`: by entity (institution, user ...). One entity per client
  when there are exactly ``n`` entities, else whole entities are spread over
  the clients, balancing their sequence counts.
* :func:`partition`: dispatcher used by the simulation config
  (``data.partitioner``).

:func:`event_mix_skew` measures how far the parts' event mixes are from the
pooled one (0 for identical mixes).

Entity keys: an :class:`EventTable` keeps only its canonical columns
(``sequence``, ``order``, ``event``, numeric and context features, ``label``,
``attack_type``), so raw columns like ``institution`` or ``user_id`` are not
in it. :func:`natural` therefore takes the key either as a column that *is*
in the table (a context feature such as ``country``), or as ``key=``: a
mapping or pandas Series from sequence id to entity, or a function of the
sequence id (e.g. :func:`simulations.synthetic.institution_of`).
:func:`sequence_keys` builds such a mapping from a raw frame.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Literal, TypeAlias

import numpy as np
import pandas as pd

from common.errors import ConfigError, DataError
from common.events import EVENT, SEQUENCE, EventTable

__all__ = [
    "METHODS",
    "KeySpec",
    "dirichlet",
    "dominant_events",
    "event_mix_skew",
    "iid",
    "natural",
    "partition",
    "sequence_keys",
]

METHODS: tuple[str, ...] = ("iid", "dirichlet", "natural")
"""Names accepted by :func:`partition`."""

KeySpec: TypeAlias = Mapping[str, Hashable] | pd.Series | Callable[[str], Hashable]
"""Entity of each sequence: a mapping / Series from sequence id to entity, or
a function of the sequence id."""

_MAX_REDRAWS = 100


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _check_n(table: EventTable, n: int, min_size: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"partition: number of clients must be a positive integer, got {n!r}")
    total = len(table)
    if total < n * min_size:
        raise ConfigError(
            f"partition: {table.source} has {total} sequence(s), too few for {int(n)} client(s) with at "
            f"least {min_size} each; use fewer clients or more data"
        )
    return int(n)


def _split(table: EventTable, client: np.ndarray, n: int) -> list[EventTable]:
    """Tables of the sequences assigned to each client (``client[i]`` for sequence ``i``)."""
    grouped = table.grouped()
    row_client = np.repeat(client, grouped.lengths)
    parts = []
    for k in range(n):
        frame = table.frame.loc[row_client == k].reset_index(drop=True)
        parts.append(
            EventTable(
                frame,
                numeric=table.numeric,
                context=table.context,
                source=f"{table.source} (part {k + 1}/{n})",
                repairs=table.repairs,
                time_ordered=table.time_ordered,
            )
        )
    return parts


def _sorted_unique(values: Sequence[Hashable]) -> list[Hashable]:
    uniq = list(dict.fromkeys(values))
    try:
        return sorted(uniq)  # type: ignore[type-var]
    except TypeError:
        return sorted(uniq, key=lambda v: (type(v).__name__, str(v)))


def dominant_events(table: EventTable) -> np.ndarray:
    """Each sequence's most frequent event (one entry per sequence, table order).

    Ties go to the event that occurs in fewer sequences overall (the more
    telling one, so ubiquitous tokens such as ``login`` rarely win), then to
    the alphabetically first.
    """
    frame = table.frame
    counts = frame.groupby([SEQUENCE, EVENT], sort=False, observed=True).size().rename("n").reset_index()
    doc_freq = counts.groupby(EVENT, observed=True)[SEQUENCE].size().rename("df")
    counts = counts.join(doc_freq, on=EVENT)
    counts = counts.sort_values(
        [SEQUENCE, "n", "df", EVENT], ascending=[True, False, True, True], kind="mergesort"
    )
    best = counts.drop_duplicates(SEQUENCE).set_index(SEQUENCE)[EVENT]
    ids = table.grouped().ids
    return best.reindex(ids).to_numpy(dtype=object)


def sequence_keys(
    frame: pd.DataFrame, column: str, sequence_column: str = "sequence_id"
) -> dict[str, Hashable]:
    """Map each sequence id of a raw frame to its value in ``column`` (first row wins).

    Use it to keep a key that the :class:`EventTable` drops, e.g.
    ``natural(table, 3, key=sequence_keys(raw, "institution"))``.

    Raises:
        DataError: a column is missing.
    """
    for name in (column, sequence_column):
        if name not in frame.columns:
            raise DataError(f"sequence_keys: column {name!r} not in the frame ({list(frame.columns)})")
    first = frame.drop_duplicates(sequence_column)
    return dict(zip(first[sequence_column].astype(str), first[column].tolist(), strict=True))


def _keys_of(table: EventTable, key_column: str | None, key: KeySpec | None) -> list[Hashable]:
    ids = table.grouped().ids
    if key is None:
        if key_column is None:
            raise ConfigError("natural partition: give key_column or key")
        if key_column not in table.frame.columns:
            raise ConfigError(
                f"natural partition: {table.source} has no column {key_column!r} (an EventTable keeps "
                f"only {list(table.frame.columns)}); pass key= as a mapping or function from sequence "
                f"id to {key_column}, e.g. simulations.synthetic.SYNTHETIC_KEYS[{key_column!r}]"
            )
        starts = table.grouped().offsets[:-1]
        return table.frame[key_column].to_numpy(dtype=object)[starts].tolist()
    if isinstance(key, pd.Series):
        key = key.to_dict()
    if isinstance(key, Mapping):
        missing = [str(i) for i in ids if i not in key]
        if missing:
            raise DataError(
                f"natural partition: {len(missing)} sequence id(s) of {table.source} have no key, "
                f"e.g. {missing[:3]}; the key mapping must cover every sequence"
            )
        return [key[i] for i in ids]
    if callable(key):
        return [key(str(i)) for i in ids]
    raise ConfigError(
        f"natural partition: key must be a mapping, Series or function, got {type(key).__name__}"
    )


# --------------------------------------------------------------------------- #
# Partitioners
# --------------------------------------------------------------------------- #


def iid(table: EventTable, n: int, seed: int = 0) -> list[EventTable]:
    """Shuffle the sequences (seeded) and cut them into ``n`` near-equal parts.

    Raises:
        ConfigError: ``n`` is not a positive integer or exceeds the number of sequences.
    """
    n = _check_n(table, n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    client = np.empty(len(table), dtype=np.int64)
    for k, chunk in enumerate(np.array_split(order, n)):
        client[chunk] = k
    return _split(table, client, n)


def _draw(rng: np.random.Generator, groups: list[np.ndarray], n: int, alpha: float) -> np.ndarray:
    """One Dirichlet allocation: ``client`` per sequence."""
    total = sum(g.size for g in groups)
    client = np.empty(total, dtype=np.int64)
    for members in groups:
        shuffled = rng.permutation(members)
        shares = rng.dirichlet(np.full(n, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * shuffled.size).astype(np.int64)
        for k, chunk in enumerate(np.split(shuffled, cuts)):
            client[chunk] = k
    return client


def _top_up(rng: np.random.Generator, client: np.ndarray, n: int, min_size: int) -> np.ndarray:
    """Move random sequences from the largest clients to those under ``min_size``."""
    client = client.copy()
    sizes = np.bincount(client, minlength=n)
    for k in np.flatnonzero(sizes < min_size):
        while sizes[k] < min_size:
            donor = int(np.argmax(sizes))
            moved = int(rng.choice(np.flatnonzero(client == donor)))
            client[moved] = k
            sizes[donor] -= 1
            sizes[k] += 1
    return client


def dirichlet(
    table: EventTable,
    n: int,
    alpha: float = 0.5,
    seed: int = 0,
    *,
    min_size: int = 2,
    max_redraws: int = _MAX_REDRAWS,
    types: Sequence[Hashable] | np.ndarray | None = None,
) -> list[EventTable]:
    """Event-mix skew: per sequence type, Dirichlet(``alpha``) shares over clients.

    A sequence's type is its most frequent event (:func:`dominant_events`)
    unless ``types`` gives one per sequence (table order; e.g. the labels for
    label skew). Types are taken in sorted order; for each, its sequences are
    shuffled and cut at the cumulative Dirichlet shares.

    Minimum size: if a client ends up with fewer than ``min_size`` sequences
    the whole allocation is drawn again (up to ``max_redraws`` times, each from
    the same seeded generator); if every draw fails, random sequences are moved
    from the largest clients to the small ones until each has ``min_size``.

    Raises:
        ConfigError: bad ``n``, ``alpha`` <= 0, ``min_size`` < 0, fewer than
            ``n * min_size`` sequences, or ``types`` of the wrong length.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ConfigError(f"dirichlet partition: min_size must be an integer >= 0, got {min_size!r}")
    n = _check_n(table, n, max(min_size, 1))
    if not alpha > 0:
        raise ConfigError(f"dirichlet partition: alpha must be > 0, got {alpha!r}")
    if types is None:
        kinds = dominant_events(table)
    else:
        kinds = np.asarray(list(types), dtype=object)
        if kinds.shape != (len(table),):
            raise ConfigError(
                f"dirichlet partition: types has {kinds.size} entries but {table.source} has "
                f"{len(table)} sequences"
            )
    codes, _ = pd.factorize(pd.Series(kinds).astype(str), sort=True)
    groups = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    rng = np.random.default_rng(seed)
    client = _draw(rng, groups, n, float(alpha))
    for _ in range(max_redraws):
        if np.bincount(client, minlength=n).min() >= min_size:
            break
        client = _draw(rng, groups, n, float(alpha))
    else:
        client = _top_up(rng, client, n, min_size)
    return _split(table, client, n)


def natural(
    table: EventTable,
    n: int,
    key_column: str | None = "institution",
    seed: int = 0,
    *,
    key: KeySpec | None = None,
) -> list[EventTable]:
    """Partition by entity: sequences of one entity always go to one client.

    The entity of a sequence comes from ``key`` (mapping, Series or function of
    the sequence id) when given, else from ``key_column`` of the table (first
    row of each sequence).

    * exactly ``n`` entities: one per client, in sorted entity order (``seed``
      is not used);
    * more than ``n``: entities are shuffled (seeded), then taken largest
      first and each given to the client with the fewest sequences so far
      (ties: lowest client index) — a balanced round-robin.

    Raises:
        ConfigError: bad ``n``; fewer than ``n`` entities; no key available.
        DataError: ``key`` does not cover every sequence.
    """
    n = _check_n(table, n)
    keys = _keys_of(table, key_column, key)
    entities = _sorted_unique(keys)
    if len(entities) < n:
        raise ConfigError(
            f"natural partition: {table.source} has {len(entities)} distinct {key_column or 'key'} "
            f"value(s), fewer than {n} clients; use fewer clients or another partitioner"
        )
    index = {e: i for i, e in enumerate(entities)}
    entity_of = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    if len(entities) == n:
        return _split(table, entity_of, n)
    sizes = np.bincount(entity_of, minlength=len(entities))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(entities))
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    load = np.zeros(n, dtype=np.int64)
    owner = np.empty(len(entities), dtype=np.int64)
    for e in order:
        k = int(np.argmin(load))
        owner[e] = k
        load[k] += sizes[e]
    return _split(table, owner[entity_of], n)


def partition(
    table: EventTable,
    n: int,
    method: Literal["iid", "dirichlet", "natural"],
    *,
    alpha: float = 0.5,
    seed: int = 0,
    key: str | KeySpec | None = None,
    min_size: int = 2,
) -> list[EventTable]:
    """Split ``table`` into ``n`` client tables with ``method``.

    Args:
        table: the sequences to split.
        n: number of clients.
        method: ``"iid"``, ``"dirichlet"`` or ``"natural"``.
        alpha: Dirichlet concentration (``dirichlet`` only).
        seed: random seed.
        key: ``natural`` only (required there): a column name of the table, or
            a mapping / Series / function from sequence id to entity.
        min_size: minimum sequences per client (``dirichlet`` only).

    Raises:
        ConfigError: unknown method, missing key for ``natural``, or an error
            of the chosen partitioner.
    """
    if method == "iid":
        return iid(table, n, seed)
    if method == "dirichlet":
        return dirichlet(table, n, alpha, seed, min_size=min_size)
    if method == "natural":
        if key is None:
            raise ConfigError(
                "natural partition needs key=: a column of the table or a mapping/function from sequence "
                "id to entity (for synthetic data: simulations.synthetic.SYNTHETIC_KEYS['institution'])"
            )
        if isinstance(key, str):
            return natural(table, n, key, seed)
        return natural(table, n, None, seed, key=key)
    raise ConfigError(f"partition method {method!r} is unknown; choose one of {', '.join(METHODS)}")


def event_mix_skew(parts: Sequence[EventTable]) -> float:
    """Mean total-variation distance between each part's event distribution
    and the pooled distribution (0 = every part has the same mix; at most 1).
    """
    if not parts:
        raise ConfigError("event_mix_skew: no parts given")
    counts = pd.concat([p.frame[EVENT].value_counts() for p in parts], axis=1, keys=range(len(parts))).fillna(
        0.0
    )
    mat = counts.to_numpy(dtype=np.float64).T
    pooled = mat.sum(axis=0) / mat.sum()
    sizes = mat.sum(axis=1, keepdims=True)
    shares = np.divide(mat, sizes, out=np.zeros_like(mat), where=sizes > 0)
    dists = 0.5 * np.abs(shares - pooled).sum(axis=1)
    return float(dists[sizes[:, 0] > 0].mean())
