"""Event tables: the data model every detector in seqwatch reads.

An *event table* is a long table with one row per event. Rows that share a
sequence id form one behaviour sequence (a process trace, an HDFS block, a VM
life cycle, a user session). Each row has an event token (a string), a
position or timestamp that orders it inside its sequence, optional numeric and
categorical ("context") features, and optionally a 0/1 anomaly label.

An :class:`EventTable` is always in *canonical form*:

* the frame is sorted by ``(sequence, order)`` (ties keep file order);
* ``sequence`` (categorical), ``order`` (float64: a position, or epoch seconds
  when the order column is a timestamp), ``event`` (categorical);
* one float64 column per numeric feature and one categorical column per
  context feature, named as in the source;
* ``label`` (int8, 0/1) when the source is labelled, ``attack_type``
  (categorical) when the source has such a column;
* categorical columns hold text categories, sorted, each one in use
  (:func:`text_categories`): a sequence id or a token is stored once however
  many events carry it, and each row holds a small integer code;
* for timestamped tables the numeric feature ``gap_seconds`` (seconds since
  the previous event of the same sequence, 0 for the first) is added.

Tables are built, validated and written by :mod:`common.tableio`
(:func:`~common.tableio.read_table`, :func:`~common.tableio.from_frame`,
:func:`~common.tableio.write_table`); :mod:`common.sessions` cuts long
per-entity streams into sessions. :class:`ColumnMap` says which source
columns play which role.

:meth:`EventTable.grouped` gives a CSR-style :class:`Sequences` view (offsets
into flat arrays) that encoders use without a Python loop per event.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.errors import ConfigError, DataError

__all__ = [
    "ATTACK_TYPE",
    "CANONICAL",
    "EVENT",
    "GAP",
    "LABEL",
    "MISSING",
    "ORDER",
    "SEQUENCE",
    "TEXT_DTYPE",
    "ColumnMap",
    "EventTable",
    "Sequences",
    "as_text",
    "canonical_columns",
    "canonical_sort",
    "column_order",
    "gaps_within",
    "sequence_starts",
    "take_rows",
    "text_categories",
    "text_codes",
]

SEQUENCE = "sequence"
"""Canonical name of the sequence-id column."""
ORDER = "order"
"""Canonical name of the order column (position or epoch seconds)."""
EVENT = "event"
"""Canonical name of the event-token column."""
LABEL = "label"
"""Canonical name of the 0/1 label column."""
ATTACK_TYPE = "attack_type"
"""Canonical name of the optional attack-type column."""
GAP = "gap_seconds"
"""Numeric feature added to timestamped tables."""
MISSING = "<missing>"
"""Value that replaces a missing context value."""

_RESERVED = frozenset({SEQUENCE, ORDER, EVENT, LABEL, ATTACK_TYPE})
DATA_LAYOUT_FORMAT = "seqwatch-data-layout"
"""``format`` of the ``columns.json`` that ``seqwatch fit`` saves with a model (column map + sessions)."""
TEXT_DTYPE = pd.Series(["x"]).dtype
"""pandas' default dtype for text: ``str`` (Arrow-backed) on pandas 3, object on pandas 2."""


# --------------------------------------------------------------------------- #
# Column map
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns play which role.

    Attributes:
        sequence: column holding the sequence id.
        event: column holding the event token.
        order: timestamp or position column; ``None`` keeps file order.
        time: whether ``order`` is a timestamp. ``None`` = auto: a column whose
            values are mostly numbers is a position, anything else is parsed
            as date-times (naive times are taken as UTC). With ``time=True`` a
            numeric column is read as epoch seconds.
        numeric: numeric feature columns (float64; missing values kept as NaN).
        context: categorical feature columns (str; missing -> ``"<missing>"``).
        label: label column; ``None`` uses a column named ``label`` if present.
        day_first: how numeric dates such as ``04/03/2024`` in a timestamp ``order`` are read:
            True day first, False month first, ``None`` = decided from each file's values
            (month first when every date reads either way, with a warning).
    """

    sequence: str = "sequence_id"
    event: str = "event"
    order: str | None = None
    time: bool | None = None
    numeric: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    label: str | None = None
    day_first: bool | None = None

    def __post_init__(self) -> None:
        for name in ("numeric", "context"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ConfigError(f"column map key {name!r} must be a list of column names, got {value!r}")
            items = tuple(value)
            for item in items:
                if not isinstance(item, str) or not item:
                    raise ConfigError(f"column map key {name!r} must hold non-empty strings, got {item!r}")
            if len(set(items)) != len(items):
                raise ConfigError(f"column map key {name!r} lists a column twice: {list(items)}")
            object.__setattr__(self, name, items)
        for name in ("sequence", "event"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"column map key {name!r} must be a column name, got {value!r}")
        for name in ("order", "label"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"column map key {name!r} must be a column name or null, got {value!r}")
        if self.time is not None and not isinstance(self.time, bool):
            raise ConfigError(f"column map key 'time' must be true, false or null, got {self.time!r}")
        if self.time and self.order is None:
            raise ConfigError(
                "column map key 'time' is true but 'order' is not set; name the timestamp column"
            )
        both = set(self.numeric) & set(self.context)
        if both:
            raise ConfigError(f"column(s) {sorted(both)} listed as both numeric and context; pick one")
        roles = {"sequence": self.sequence, "event": self.event, "order": self.order, "label": self.label}
        named = [(role, col) for role, col in roles.items() if col is not None]
        for i, (role, col) in enumerate(named):
            for other, col2 in named[i + 1 :]:
                if col == col2:
                    raise ConfigError(f"column {col!r} is both the {role} and the {other} column; pick one")
            if col in self.numeric or col in self.context:
                # the label as a feature would hand the model the answer; the others are read as such
                raise ConfigError(
                    f"column {col!r} is the {role} column and also listed as a feature; leave it out of "
                    f"the numeric/context columns"
                )
        if GAP in self.context:
            raise ConfigError(
                f"context column {GAP!r} has the name of the time-gap feature seqwatch computes; "
                f"rename it in the file (or list it as numeric)"
            )
        for name in (*self.numeric, *self.context):
            if name in _RESERVED:
                raise ConfigError(
                    f"feature column {name!r} clashes with a reserved name {sorted(_RESERVED)}; "
                    f"rename it in the file"
                )

    @classmethod
    def from_file(cls, path: str | Path) -> ColumnMap:
        """Read a column map from a JSON or TOML file.

        The file holds the keys of this class at top level (or inside one
        ``columns`` table). Lists are accepted for ``numeric`` and ``context``.
        The ``columns.json`` that ``seqwatch fit`` saves in a model directory
        (:data:`DATA_LAYOUT_FORMAT`) is read as the column map it holds.

        Raises:
            ConfigError: the file is missing or unparseable, or a key is
                unknown or has the wrong type (the message names the key).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"column map file not found: {path}")
        try:  # utf-8-sig: a byte-order mark (Windows Notepad writes one) is dropped
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(
                f"{path}: line {line} is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x}); "
                "save the column map as UTF-8"
            ) from exc
        suffix = path.suffix.lower()
        try:
            if suffix == ".json":
                data = json.loads(text)
            elif suffix == ".toml":
                data = tomllib.loads(text)
            else:
                raise ConfigError(f"{path}: column map must be a .json or .toml file")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
        wrapped = isinstance(data, dict) and isinstance(data.get("columns"), dict)
        if wrapped and (set(data) == {"columns"} or data.get("format") == DATA_LAYOUT_FORMAT):
            data = data["columns"]  # one [columns] table, or a model's columns.json
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a table of keys, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> ColumnMap:
        """Build a column map from a plain mapping, checking every key and type."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown column map key {key!r} (known keys: {', '.join(sorted(known))})"
                )
            if key in ("sequence", "event"):
                ok = isinstance(value, str) and bool(value)
                want = "a column name (string)"
            elif key in ("order", "label"):
                ok = value is None or (isinstance(value, str) and bool(value))
                want = "a column name (string) or null"
            elif key in ("time", "day_first"):
                ok = value is None or isinstance(value, bool)
                want = "true, false or null"
            else:
                ok = isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)
                want = "a list of column names"
            if not ok:
                raise ConfigError(f"{source}: column map key {key!r} must be {want}, got {value!r}")
            kwargs[key] = tuple(value) if key in ("numeric", "context") else value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def as_read(self, table: EventTable) -> ColumnMap:
        """This map with what it left open settled as ``table`` was read: the order column as
        timestamps or as positions, and the day/month order of dates, so that other files of the
        same data (a test table, the files a model scores) are read alike."""
        settled: dict[str, Any] = {}
        if self.time is None and self.order is not None:
            settled["time"] = table.time_ordered
        if self.day_first is None and table.day_first is not None:
            settled["day_first"] = table.day_first
        return replace(self, **settled) if settled else self

    def to_dict(self) -> dict[str, Any]:
        """The map as JSON-ready data (lists for the tuple fields)."""
        return {
            "sequence": self.sequence,
            "event": self.event,
            "order": self.order,
            "time": self.time,
            "numeric": list(self.numeric),
            "context": list(self.context),
            "label": self.label,
            "day_first": self.day_first,
        }


CANONICAL = ColumnMap(sequence=SEQUENCE, event=EVENT, order=ORDER, time=False)
"""Column map for files written by :func:`~common.tableio.write_table` from a table without
features or timestamps (e.g. the converted benchmark data sets). For other
tables use :func:`canonical_columns`."""


def canonical_columns(table: EventTable) -> ColumnMap:
    """Column map that reads back a file written by :func:`~common.tableio.write_table`.

    For a timestamped table ``time`` is true (the order column holds epoch
    seconds) and ``gap_seconds`` is left out of ``numeric`` because
    :func:`~common.tableio.read_table` recomputes it.
    """
    numeric = tuple(n for n in table.numeric if not (table.time_ordered and n == GAP))
    return ColumnMap(
        sequence=SEQUENCE,
        event=EVENT,
        order=ORDER,
        time=table.time_ordered,
        numeric=numeric,
        context=table.context,
        label=LABEL if table.has_labels else None,
    )


# --------------------------------------------------------------------------- #
# Grouped (CSR) view
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Sequences:
    """CSR-style view of an :class:`EventTable`: sequence ``i`` is rows
    ``offsets[i]:offsets[i+1]`` of the flat per-event arrays.

    Attributes:
        ids: sequence ids, shape ``(S,)``, in table order.
        offsets: int64 row offsets, shape ``(S+1,)``.
        events: event tokens (str objects), shape ``(N,)``.
        numeric: float64 features, shape ``(N, F)``.
        context: context values (str objects), shape ``(N, C)``.
        labels: int8 per-sequence labels (1 if any row is anomalous), or None.
        attack_types: per-sequence attack type (of the first anomalous row,
            else of the first row), or None.
        numeric_names: names of the ``numeric`` columns.
        context_names: names of the ``context`` columns.
    """

    ids: np.ndarray
    offsets: np.ndarray
    events: np.ndarray
    numeric: np.ndarray
    context: np.ndarray
    labels: np.ndarray | None
    attack_types: np.ndarray | None
    numeric_names: tuple[str, ...] = ()
    context_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_events(self) -> int:
        """Total number of events (rows)."""
        return int(self.events.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """int64 number of events per sequence, shape ``(S,)``."""
        return np.diff(self.offsets)

    def events_of(self, i: int) -> np.ndarray:
        """Event tokens of sequence ``i``."""
        return self.events[self.offsets[i] : self.offsets[i + 1]]

    def take(self, index: np.ndarray) -> Sequences:
        """The sequences at positions ``index``, in that order: a new CSR view whose arrays
        are gathered row by row (tokens stay shared objects, so no text is copied)."""
        index = np.asarray(index, dtype=np.int64)
        offsets, rows = take_rows(self.offsets, index)
        return replace(
            self,
            ids=self.ids[index],
            offsets=offsets,
            events=self.events[rows],
            numeric=self.numeric[rows],
            context=self.context[rows],
            labels=None if self.labels is None else self.labels[index],
            attack_types=None if self.attack_types is None else self.attack_types[index],
        )


def take_rows(offsets: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR ``offsets`` and sequence positions ``index``: the offsets of those sequences
    laid end to end, and the rows to gather for them (int64 both)."""
    index = np.asarray(index, dtype=np.int64)
    lengths = np.diff(offsets)[index]
    new = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new[1:])
    rows = np.repeat(np.asarray(offsets, dtype=np.int64)[index] - new[:-1], lengths)
    return new, rows + np.arange(new[-1], dtype=np.int64)


# --------------------------------------------------------------------------- #
# Event table
# --------------------------------------------------------------------------- #


class EventTable:
    """A canonical event table (see the module docstring for the layout).

    Build one with :func:`~common.tableio.read_table`, :func:`~common.tableio.from_frame` or the data-set
    loaders; the constructor trusts that ``frame`` is already canonical and
    sorted.

    Attributes:
        frame: the canonical pandas DataFrame.
        numeric: names of the numeric feature columns.
        context: names of the context feature columns.
        source: where the table came from (file path or ``"<frame>"``).
        repairs: counts of repaired values, e.g. ``{"missing context 'device'": 3}``.
        time_ordered: whether ``order`` holds epoch seconds (then ``gap_seconds``
            is one of the numeric features).
        day_first: how :func:`~common.tableio.read_table` read numeric dates such as
            ``04/03/2024`` (True day first, False month first, the default where every date
            reads either way); None when it read none (or the table came from elsewhere).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        numeric: Sequence[str] = (),
        context: Sequence[str] = (),
        source: str = "<frame>",
        repairs: Mapping[str, int] | None = None,
        time_ordered: bool = False,
        day_first: bool | None = None,
    ) -> None:
        missing = [c for c in (SEQUENCE, ORDER, EVENT, *numeric, *context) if c not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: canonical frame lacks column(s) {missing}; build tables with from_frame()"
            )
        self.frame: pd.DataFrame = _with_text_categories(frame, (SEQUENCE, EVENT, *context, ATTACK_TYPE))
        self.numeric: tuple[str, ...] = tuple(numeric)
        self.context: tuple[str, ...] = tuple(context)
        self.source: str = source
        self.repairs: dict[str, int] = dict(repairs or {})
        self.time_ordered: bool = time_ordered
        self.day_first: bool | None = day_first
        self._grouped: Sequences | None = None

    @property
    def has_labels(self) -> bool:
        """Whether the table has a ``label`` column."""
        return LABEL in self.frame.columns

    @property
    def has_attack_types(self) -> bool:
        """Whether the table has an ``attack_type`` column."""
        return ATTACK_TYPE in self.frame.columns

    @property
    def n_events(self) -> int:
        """Number of events (rows)."""
        return len(self.frame)

    def __len__(self) -> int:
        """Number of sequences."""
        return len(self.grouped())

    def __repr__(self) -> str:
        return (
            f"EventTable(source={self.source!r}, sequences={len(self)}, events={self.n_events}, "
            f"numeric={self.numeric}, context={self.context}, labels={self.has_labels})"
        )

    def grouped(self) -> Sequences:
        """The CSR view of this table (computed once, then cached)."""
        if self._grouped is None:
            self._grouped = _group(self)
        return self._grouped

    @property
    def sequence_ids(self) -> np.ndarray:
        """Sequence ids in table order."""
        return self.grouped().ids

    def subset(self, sequence_ids: Iterable[str]) -> EventTable:
        """Table with only the given sequences (kept in canonical order).

        Raises:
            DataError: an id is not in the table.
        """
        wanted = pd.Index(pd.unique(np.asarray(list(sequence_ids), dtype=object)))
        known = pd.Index(self.grouped().ids)
        unknown = wanted.difference(known)
        if len(unknown):
            shown = ", ".join(repr(str(u)) for u in unknown[:5])
            raise DataError(f"{self.source}: {len(unknown)} sequence id(s) not in the table, e.g. {shown}")
        mask = self.frame[SEQUENCE].isin(wanted).to_numpy()
        frame = self.frame.loc[mask].reset_index(drop=True)
        return self._like(frame)

    @staticmethod
    def concat(tables: Sequence[EventTable]) -> EventTable:
        """Stack tables with the same features; sequence ids must not collide.

        Raises:
            DataError: no tables, different features / labelling / timing, or
                a sequence id present in two tables.
        """
        tables = list(tables)
        if not tables:
            raise DataError("concat: no tables given")
        first = tables[0]
        for t in tables[1:]:
            if t.numeric != first.numeric or t.context != first.context:
                raise DataError(
                    f"concat: {t.source} has features numeric={t.numeric} context={t.context} but "
                    f"{first.source} has numeric={first.numeric} context={first.context}; "
                    f"use the same column map"
                )
            if t.has_labels != first.has_labels:
                raise DataError(f"concat: {t.source} and {first.source} differ in having a label column")
            if t.time_ordered != first.time_ordered:
                raise DataError(f"concat: {t.source} and {first.source} differ in having timestamps")
        ids = np.concatenate([t.grouped().ids for t in tables])
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][:5]
            raise DataError(
                f"concat: sequence id(s) {[str(d) for d in dup]} occur in more than one table; rename them"
            )
        any_attack = any(t.has_attack_types for t in tables)
        frames = []
        for t in tables:
            f = t.frame
            if any_attack and not t.has_attack_types:
                f = f.assign(**{ATTACK_TYPE: ""})
            frames.append(f)
        # One set of categories for each text column, so that concat keeps codes
        # instead of turning the column into one Python object per row.
        for col in (SEQUENCE, EVENT, *first.context, *([ATTACK_TYPE] if any_attack else [])):
            parts = [text_categories(f[col]) for f in frames]
            union = pd.api.types.union_categoricals(parts, sort_categories=True).categories
            frames = [
                f.assign(**{col: pd.Categorical(p, categories=union)})
                for f, p in zip(frames, parts, strict=True)
            ]
        frame = canonical_sort(pd.concat(frames, ignore_index=True))
        repairs: dict[str, int] = {}
        for t in tables:
            for k, v in t.repairs.items():
                repairs[k] = repairs.get(k, 0) + v
        return EventTable(
            frame,
            numeric=first.numeric,
            context=first.context,
            source="+".join(t.source for t in tables),
            repairs=repairs,
            time_ordered=first.time_ordered,
        )

    def _like(self, frame: pd.DataFrame, **changes: Any) -> EventTable:
        kwargs: dict[str, Any] = {
            "numeric": self.numeric,
            "context": self.context,
            "source": self.source,
            "repairs": self.repairs,
            "time_ordered": self.time_ordered,
            "day_first": self.day_first,
        }
        kwargs.update(changes)
        return EventTable(frame, **kwargs)


def text_codes(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Factorize ``values`` as text: ``(codes, texts)`` with ``texts[codes]`` equal to
    ``values.astype(str)`` row for row (missing values, which event tables never
    hold, all read as ``"nan"``).

    Each distinct value becomes one ``str`` and each row an int64 code. Converting
    row by row instead (an Arrow-backed column to objects, or ``astype(str)``)
    makes a new ``str`` or a fixed-width text copy per row: 50 bytes or more for
    each of millions of events, where a few hundred distinct tokens are all there is.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    texts = np.empty(len(uniques), dtype=object)
    texts[:] = [str(u) for u in uniques]
    return codes.astype(np.int64, copy=False), texts


def text_categories(values: pd.Series) -> pd.Series:
    """``values`` as a categorical of text: categories are ``str``, sorted and each in use.

    The canonical form of an event table's sequence-id, event, context and
    attack-type columns. Returns ``values`` itself when it is already in that form.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = values.cat.categories
        codes = values.cat.codes.to_numpy()
        canonical = cats.dtype == TEXT_DTYPE and cats.is_monotonic_increasing and cats.is_unique
        if canonical and (codes >= 0).all():
            used = np.bincount(codes, minlength=len(cats)) > 0
            if used.all():
                return values
            # a subset's leftovers: drop the unused categories, keep the order (no text sorted again)
            new_code = np.cumsum(used) - 1
            categorical = pd.Categorical.from_codes(new_code[codes], categories=cats[used], validate=False)
            return pd.Series(categorical, index=values.index, name=values.name)
    codes, texts = text_codes(values)
    return coded_text_categories(texts, codes, index=values.index, name=values.name)


def coded_text_categories(
    texts: np.ndarray, codes: np.ndarray, *, index: Any = None, name: Any = None
) -> pd.Series:
    """The :func:`text_categories` series whose row ``i`` reads ``texts[codes[i]]`` (``texts``:
    ``str``, one per code), built from the texts alone: each is sorted once, not once per row."""
    names, inverse = np.unique(texts.astype(str), return_inverse=True)
    categorical = pd.Categorical.from_codes(
        inverse.reshape(-1)[codes], categories=pd.Index(names, dtype=TEXT_DTYPE), validate=False
    )
    return pd.Series(categorical, index=index, name=name)


def _with_text_categories(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` (those it has) as :func:`text_categories`; no copy when they are."""
    changed = {}
    for col in columns:
        if col in frame.columns:
            values = frame[col]
            canonical = text_categories(values)
            if canonical is not values:
                changed[col] = canonical
    return frame.assign(**changed) if changed else frame


def as_text(values: pd.Series | np.ndarray) -> np.ndarray:
    """``values`` as an object array of ``str`` in which equal values are one object (8 bytes a row)."""
    codes, texts = text_codes(values)
    return texts[codes]


def _group(table: EventTable) -> Sequences:
    frame = table.frame
    n = len(frame)
    seq_codes, seq_names = text_codes(frame[SEQUENCE])
    starts = np.flatnonzero(sequence_starts(seq_codes)).astype(np.int64)
    offsets = np.append(starts, np.int64(n)).astype(np.int64)
    ids = seq_names[seq_codes[starts]].astype(str)
    events = as_text(frame[EVENT])
    numeric = (
        frame[list(table.numeric)].to_numpy(dtype=np.float64)
        if table.numeric
        else np.zeros((n, 0), dtype=np.float64)
    )
    context = (
        np.stack([as_text(frame[c]) for c in table.context], axis=1)
        if table.context
        else np.empty((n, 0), dtype=object)
    )
    labels: np.ndarray | None = None
    attack_types: np.ndarray | None = None
    if table.has_labels:
        row_labels = frame[LABEL].to_numpy(dtype=np.int8)
        labels = (
            np.maximum.reduceat(row_labels, starts).astype(np.int8)
            if len(starts)
            else np.zeros(0, dtype=np.int8)
        )
    if table.has_attack_types:
        pick = starts.copy()
        if table.has_labels and len(starts):
            anomalous = np.flatnonzero(frame[LABEL].to_numpy() == 1)
            seq_of = np.searchsorted(offsets, anomalous, side="right") - 1
            first_seq, first_idx = np.unique(seq_of, return_index=True)
            pick[first_seq] = anomalous[first_idx]
        attack_types = frame[ATTACK_TYPE].take(pick).to_numpy(dtype=object)
    return Sequences(
        ids=ids,
        offsets=offsets,
        events=events,
        numeric=numeric,
        context=context,
        labels=labels,
        attack_types=attack_types,
        numeric_names=table.numeric,
        context_names=table.context,
    )


def canonical_sort(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by (sequence, order); returns ``frame`` itself if sorted (a categorical
    sequence column comes back as :func:`text_categories`)."""
    if len(frame) < 2:
        return frame.reset_index(drop=True)
    seq = frame[SEQUENCE]
    if isinstance(seq.dtype, pd.CategoricalDtype):  # by text, not by the categories' order
        canonical = text_categories(seq)
        if canonical is not seq:  # keep it: the table built from this frame need not redo it
            frame = frame.assign(**{SEQUENCE: canonical})
        codes = canonical.cat.codes.to_numpy()
    else:
        codes, _ = pd.factorize(seq, sort=True)
    order = frame[ORDER].to_numpy(dtype=np.float64)
    same = codes[1:] == codes[:-1]
    if (codes[1:] >= codes[:-1]).all() and (~same | (order[1:] >= order[:-1])).all():
        return frame.reset_index(drop=True)
    idx = np.lexsort((order, codes))
    return frame.take(idx).reset_index(drop=True)


def sequence_starts(seq: np.ndarray) -> np.ndarray:
    """Boolean mask: row starts a new sequence (``seq``: sorted sequence ids, or their
    :func:`text_codes`)."""
    start = np.ones(len(seq), dtype=bool)
    if len(seq) > 1:
        start[1:] = seq[1:] != seq[:-1]
    return start


def gaps_within(seq: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Seconds since the previous event of the same sequence (0 at each start); input sorted,
    ``seq`` as for :func:`sequence_starts`."""
    gap = np.zeros(len(order), dtype=np.float64)
    if len(order) > 1:
        gap[1:] = order[1:] - order[:-1]
    gap[sequence_starts(seq)] = 0.0
    return gap


def column_order(frame: pd.DataFrame, numeric: Sequence[str], context: Sequence[str]) -> list[str]:
    """Canonical column order: sequence, order, event, numeric, context, then label / attack type."""
    cols = [SEQUENCE, ORDER, EVENT, *numeric, *context]
    cols += [c for c in (LABEL, ATTACK_TYPE) if c in frame.columns]
    return cols
