"""Event tables: the data model every detector in seqwatch reads.

An *event table* is a long table with one row per event. Rows that share a
sequence id form one behaviour sequence (a process trace, an HDFS block, a VM
life cycle, a user session). Each row has an event token (a string), a
position or timestamp that orders it inside its sequence, optional numeric and
categorical ("context") features, and optionally a 0/1 anomaly label.

:func:`read_table` / :func:`from_frame` turn user files or frames into an
:class:`EventTable` in *canonical form*:

* the frame is sorted by ``(sequence, order)`` (ties keep file order);
* ``sequence`` (str), ``order`` (float64: a position, or epoch seconds when the
  order column is a timestamp), ``event`` (str);
* one float64 column per numeric feature and one str column per context
  feature, named as in the source;
* ``label`` (int8, 0/1) when the source is labelled, ``attack_type`` (str)
  when the source has such a column;
* for timestamped tables the numeric feature ``gap_seconds`` (seconds since
  the previous event of the same sequence, 0 for the first) is added.

Bad input raises :class:`~common.errors.DataError` with one line that names
the file, the line (or row), the column and what to do. Values that can be
repaired (a missing context value, a missing numeric value) are repaired and
counted in :attr:`EventTable.repairs`; nothing is dropped silently.

:meth:`EventTable.grouped` gives a CSR-style :class:`Sequences` view (offsets
into flat arrays) that encoders use without a Python loop per event.
"""

from __future__ import annotations

import gzip
import json
import logging
import tomllib
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
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
    "ColumnMap",
    "EventTable",
    "Sequences",
    "canonical_columns",
    "from_frame",
    "read_table",
    "sessionize",
    "write_table",
]

logger = logging.getLogger(__name__)

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
_LABEL_WORDS = {
    "0": 0,
    "1": 1,
    "0.0": 0,
    "1.0": 1,
    "false": 0,
    "true": 1,
    "normal": 0,
    "anomaly": 1,
}
_NUMERIC_NA_WORDS = frozenset({"na", "nan", "n/a", "null", "none", "-nan"})
_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
_MAX_SHOWN = 60
_STR = pd.Series(["x"]).dtype
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
    """

    sequence: str = "sequence_id"
    event: str = "event"
    order: str | None = None
    time: bool | None = None
    numeric: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    label: str | None = None

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

        Raises:
            ConfigError: the file is missing or unparseable, or a key is
                unknown or has the wrong type (the message names the key).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"column map file not found: {path}")
        text = path.read_text(encoding="utf-8")
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
        if isinstance(data, dict) and set(data) == {"columns"} and isinstance(data["columns"], dict):
            data = data["columns"]
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
            elif key == "time":
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
        }


CANONICAL = ColumnMap(sequence=SEQUENCE, event=EVENT, order=ORDER, time=False)
"""Column map for files written by :func:`write_table` from a table without
features or timestamps (e.g. the converted benchmark data sets). For other
tables use :func:`canonical_columns`."""


def canonical_columns(table: EventTable) -> ColumnMap:
    """Column map that reads back a file written by :func:`write_table`.

    For a timestamped table ``time`` is true (the order column holds epoch
    seconds) and ``gap_seconds`` is left out of ``numeric`` because
    :func:`read_table` recomputes it.
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


# --------------------------------------------------------------------------- #
# Event table
# --------------------------------------------------------------------------- #


class EventTable:
    """A canonical event table (see the module docstring for the layout).

    Build one with :func:`read_table`, :func:`from_frame` or the data-set
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
    ) -> None:
        missing = [c for c in (SEQUENCE, ORDER, EVENT, *numeric, *context) if c not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: canonical frame lacks column(s) {missing}; build tables with from_frame()"
            )
        self.frame: pd.DataFrame = frame
        self.numeric: tuple[str, ...] = tuple(numeric)
        self.context: tuple[str, ...] = tuple(context)
        self.source: str = source
        self.repairs: dict[str, int] = dict(repairs or {})
        self.time_ordered: bool = time_ordered
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
        frame = _canonical_sort(pd.concat(frames, ignore_index=True))
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
        }
        kwargs.update(changes)
        return EventTable(frame, **kwargs)


def _group(table: EventTable) -> Sequences:
    frame = table.frame
    n = len(frame)
    seq = frame[SEQUENCE].to_numpy(dtype=object)
    if n:
        change = np.flatnonzero(seq[1:] != seq[:-1]) + 1
        starts = np.concatenate([[0], change]).astype(np.int64)
    else:
        starts = np.zeros(0, dtype=np.int64)
    offsets = np.append(starts, np.int64(n)).astype(np.int64)
    ids = seq[starts].astype(str)
    events = frame[EVENT].to_numpy(dtype=object)
    numeric = (
        frame[list(table.numeric)].to_numpy(dtype=np.float64)
        if table.numeric
        else np.zeros((n, 0), dtype=np.float64)
    )
    context = (
        frame[list(table.context)].to_numpy(dtype=object) if table.context else np.empty((n, 0), dtype=object)
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
        attack_types = frame[ATTACK_TYPE].to_numpy(dtype=object)[pick]
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


def _canonical_sort(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by (sequence, order); returns ``frame`` itself if sorted."""
    if len(frame) < 2:
        return frame.reset_index(drop=True)
    codes, _ = pd.factorize(frame[SEQUENCE], sort=True)
    order = frame[ORDER].to_numpy(dtype=np.float64)
    same = codes[1:] == codes[:-1]
    if (codes[1:] >= codes[:-1]).all() and (~same | (order[1:] >= order[:-1])).all():
        return frame.reset_index(drop=True)
    idx = np.lexsort((order, codes))
    return frame.take(idx).reset_index(drop=True)


def _sequence_starts(seq: np.ndarray) -> np.ndarray:
    """Boolean mask: row starts a new sequence (input sorted by sequence)."""
    start = np.ones(len(seq), dtype=bool)
    if len(seq) > 1:
        start[1:] = seq[1:] != seq[:-1]
    return start


def _gap_seconds(seq: np.ndarray, order: np.ndarray) -> np.ndarray:
    gap = np.zeros(len(order), dtype=np.float64)
    if len(order) > 1:
        gap[1:] = order[1:] - order[:-1]
    gap[_sequence_starts(seq)] = 0.0
    return gap


# --------------------------------------------------------------------------- #
# Building a table from a frame
# --------------------------------------------------------------------------- #


class _Where:
    """Turns a row position into ``line N`` / ``row N`` for messages."""

    def __init__(self, source: str, numbers: np.ndarray, word: str) -> None:
        self.source = source
        self.numbers = numbers
        self.word = word

    def at(self, pos: int) -> str:
        return f"{self.word} {self.numbers[pos]}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + "...'"


def _as_text(s: pd.Series) -> pd.Series:
    """Values as a ``str`` Series; missing values stay NA.

    Whole-number floats (an integer column with gaps, as Parquet gives it)
    print without ``.0``.
    """
    if pd.api.types.is_string_dtype(s.dtype) and s.dtype != object:
        return s
    na = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s.dtype):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        present = vals[~na]
        if present.size and np.all(np.isfinite(present)) and np.all(present == np.round(present)):
            out = np.full(len(s), None, dtype=object)
            out[~na] = present.astype(np.int64).astype(str).astype(object)
            return pd.Series(out, index=s.index, dtype=_STR)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return s.astype(_STR)
    out = s.astype(str).to_numpy(dtype=object)
    out[na] = np.nan
    return pd.Series(out, index=s.index, dtype=_STR)


def _text(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(values as str with a fresh RangeIndex, mask of NA / blank values)."""
    text = _as_text(s).reset_index(drop=True)
    blank = text.str.strip().eq("")
    mask = text.isna().to_numpy(dtype=bool) | blank.fillna(False).to_numpy(dtype=bool)
    return text, mask


def _numeric(s: pd.Series, column: str, where: _Where, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column as float64. Returns (values, missing mask).

    Raises DataError at the first text value.
    """
    if pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype(np.float64)
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return vals, np.isnan(vals)
    mask = _text(s)[1]
    obj = s.reset_index(drop=True).astype(object).where(~mask, None)
    parsed = pd.to_numeric(obj, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(parsed) & ~mask
    if bad.any():
        words = np.fromiter(
            (str(v).strip().lower() in _NUMERIC_NA_WORDS for v in obj.to_numpy()[bad]),
            dtype=bool,
            count=int(bad.sum()),
        )
        bad_idx = np.flatnonzero(bad)
        mask = mask.copy()
        mask[bad_idx[words]] = True
        bad_idx = bad_idx[~words]
        if bad_idx.size:
            pos = int(bad_idx[0])
            raise DataError(
                f"{where.source}: {where.at(pos)}, column {column!r}: expected a number ({what}), got text "
                f"{_show(obj.iloc[pos])}; fix the value or leave the cell empty"
                + (f" ({bad_idx.size} such rows)" if bad_idx.size > 1 else "")
            )
    return parsed, mask


def _timestamps(s: pd.Series, column: str, where: _Where) -> np.ndarray:
    """Parse a column as date-times (UTC) and return epoch seconds."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        dt = pd.to_datetime(s, utc=True)
        mask = dt.isna().to_numpy()
    else:
        mask = _text(s)[1]
        obj = s.reset_index(drop=True).astype(object).where(~mask, None)
        with warnings.catch_warnings():
            # pandas warns when it cannot infer one format; the retry below
            # parses element by element anyway.
            warnings.simplefilter("ignore", UserWarning)
            dt = pd.to_datetime(obj, utc=True, errors="coerce")
            failed = dt.isna().to_numpy() & ~mask
            if failed.any():
                retry = pd.to_datetime(obj[failed], utc=True, errors="coerce", format="mixed")
                dt = dt.copy()
                dt[failed] = retry
                failed = dt.isna().to_numpy() & ~mask
        if failed.any():
            pos = int(np.flatnonzero(failed)[0])
            raise DataError(
                f"{where.source}: {where.at(pos)}, column {column!r}: cannot parse timestamp "
                f"{_show(obj.iloc[pos])}; use ISO 8601 (e.g. 2024-01-31T12:00:00Z), or set time=false "
                f"if the column is a position"
            )
    if mask.any():
        pos = int(np.flatnonzero(mask)[0])
        raise DataError(
            f"{where.source}: {where.at(pos)}, column {column!r}: missing timestamp; "
            f"fill it in or drop the row"
        )
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return (dt - epoch).dt.total_seconds().to_numpy(dtype=np.float64)


def _labels(s: pd.Series, column: str, where: _Where) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
        return s.to_numpy(dtype=np.int8)
    mask = s.isna().to_numpy()
    if mask.any():
        pos = int(np.flatnonzero(mask)[0])
        raise DataError(
            f"{where.source}: {where.at(pos)}, column {column!r}: missing label; "
            f"use 0/1, true/false or normal/anomaly"
        )
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype=np.float64)
        bad = ~np.isin(vals, (0.0, 1.0))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where.source}: {where.at(pos)}, column {column!r}: label {_show(s.iloc[pos])} is not "
                f"0 or 1; "
                f"use 0/1, true/false or normal/anomaly"
            )
        return vals.astype(np.int8)
    words = s.astype(str).str.strip().str.lower()
    mapped = words.map(_LABEL_WORDS)
    bad = mapped.isna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where.source}: {where.at(pos)}, column {column!r}: label {_show(s.iloc[pos])} is not "
            f"understood; "
            f"use 0/1, true/false or normal/anomaly"
        )
    return mapped.to_numpy(dtype=np.int8)


def _check_columns(df: pd.DataFrame, columns: ColumnMap, source: str) -> str | None:
    """Check that every mapped column exists; return the label column to use."""
    have = [str(c) for c in df.columns]
    needed = [columns.sequence, columns.event]
    if columns.order is not None:
        needed.append(columns.order)
    needed += [*columns.numeric, *columns.context]
    if columns.label is not None:
        needed.append(columns.label)
    for name in needed:
        if name not in df.columns:
            shown = ", ".join(repr(c) for c in have[:30]) + (", ..." if len(have) > 30 else "")
            raise DataError(
                f"{source}: missing column {name!r} (columns present: {shown}); "
                f"fix the column map or the file's header"
            )
    if columns.label is not None:
        return columns.label
    return LABEL if LABEL in df.columns else None


def _build(df: pd.DataFrame, columns: ColumnMap, source: str, where: _Where) -> EventTable:
    """Validate and canonicalise ``df`` (rows in file order)."""
    label_col = _check_columns(df, columns, source)
    if len(df) == 0:
        raise DataError(f"{source}: no data rows; the file has a header but no events")
    repairs: dict[str, int] = {}

    seq_text, seq_missing = _text(df[columns.sequence])
    if seq_missing.any():
        pos = int(np.flatnonzero(seq_missing)[0])
        raise DataError(
            f"{source}: {where.at(pos)}, column {columns.sequence!r}: missing sequence id; "
            f"fill it in or drop the row ({int(seq_missing.sum())} such rows)"
        )
    ev_text, ev_missing = _text(df[columns.event])
    if ev_missing.any():
        pos = int(np.flatnonzero(ev_missing)[0])
        raise DataError(
            f"{source}: {where.at(pos)}, column {columns.event!r}: missing event; "
            f"fill it in or drop the row ({int(ev_missing.sum())} such rows)"
        )
    out: dict[str, Any] = {
        SEQUENCE: seq_text,
    }

    time_ordered = False
    if columns.order is None:
        out[ORDER] = seq_text.groupby(seq_text, sort=False).cumcount().to_numpy(np.float64)
    else:
        order_s = df[columns.order]
        looks_time = _looks_like_time(order_s)
        is_time = looks_time if columns.time is None else columns.time
        if is_time and not looks_time:
            order, mask = _numeric(order_s, columns.order, where, "epoch seconds")
        elif is_time:
            order = _timestamps(order_s, columns.order, where)
            mask = np.zeros(len(order), dtype=bool)
        else:
            order, mask = _numeric(order_s, columns.order, where, "position")
        if mask.any():
            pos = int(np.flatnonzero(mask)[0])
            raise DataError(
                f"{source}: {where.at(pos)}, column {columns.order!r}: missing order value; "
                f"fill it in or drop the row"
            )
        time_ordered = bool(is_time)
        out[ORDER] = order
    out[EVENT] = ev_text

    numeric = [n for n in columns.numeric if not (time_ordered and n == GAP)]
    for name in numeric:
        vals, mask = _numeric(df[name], name, where, "numeric feature")
        n_missing = int(mask.sum())
        if n_missing:
            repairs[f"missing numeric {name!r}"] = n_missing
            logger.info("%s: %d missing value(s) in numeric column %r kept as NaN", source, n_missing, name)
        out[name] = vals
    for name in columns.context:
        values, mask = _text(df[name])
        n_missing = int(mask.sum())
        if n_missing:
            values = values.where(~mask, MISSING)
            repairs[f"missing context {name!r}"] = n_missing
            logger.info(
                "%s: %d missing value(s) in context column %r set to %r", source, n_missing, name, MISSING
            )
        out[name] = values
    if label_col is not None:
        out[LABEL] = _labels(df[label_col], label_col, where)
    if ATTACK_TYPE in df.columns:
        values, mask = _text(df[ATTACK_TYPE])
        out[ATTACK_TYPE] = values.where(~mask, "")

    frame = _canonical_sort(pd.DataFrame(out))
    if time_ordered:
        frame[GAP] = _gap_seconds(frame[SEQUENCE].to_numpy(dtype=object), frame[ORDER].to_numpy(np.float64))
        numeric.append(GAP)
    frame = frame[_column_order(frame, numeric, columns.context)]
    return EventTable(
        frame,
        numeric=numeric,
        context=columns.context,
        source=source,
        repairs=repairs,
        time_ordered=time_ordered,
    )


def _column_order(frame: pd.DataFrame, numeric: Sequence[str], context: Sequence[str]) -> list[str]:
    cols = [SEQUENCE, ORDER, EVENT, *numeric, *context]
    cols += [c for c in (LABEL, ATTACK_TYPE) if c in frame.columns]
    return cols


def _looks_like_time(s: pd.Series) -> bool:
    """Auto rule: numbers -> position, date-times / other text -> timestamp."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return True
    if pd.api.types.is_numeric_dtype(s.dtype):
        return False
    present = s.dropna()
    if present.empty:
        return False
    sample = present.iloc[:1000].astype(object)
    numeric_share = pd.to_numeric(sample, errors="coerce").notna().mean()
    return bool(numeric_share < 0.5)


def from_frame(df: pd.DataFrame, columns: ColumnMap | None = None, source: str = "<frame>") -> EventTable:
    """Build a canonical :class:`EventTable` from an in-memory frame.

    Error messages name rows by the frame's index labels.

    Raises:
        DataError: see :func:`read_table`.
    """
    columns = columns or ColumnMap()
    where = _Where(source, np.asarray(df.index, dtype=object), "row")
    return _build(df.reset_index(drop=True), columns, source, where)


# --------------------------------------------------------------------------- #
# Reading and writing files
# --------------------------------------------------------------------------- #


def _kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise DataError(f"{path}: unsupported file type; use one of {', '.join(_SUFFIXES)}")


def _first_bad_line(path: Path, encoding: str) -> tuple[int, int] | None:
    """(line number, offending byte) of the first line not in ``encoding``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                return number, raw[exc.start]
    return None


def read_table(path: str | Path, columns: ColumnMap | None = None, *, encoding: str = "utf-8") -> EventTable:
    """Read an event file (``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``, ``.parquet``).

    Error messages give CSV/TSV rows as the file's line numbers (header = line
    1; a quoted field that spans lines shifts the count) and Parquet rows as
    1-based row numbers. Blank lines are skipped and counted in ``repairs``.

    Raises:
        DataError: file not found, unsupported type, empty, wrong encoding,
            missing column, bad value (timestamp, number, label), missing
            sequence id or event.
        ConfigError: unknown encoding name.
    """
    path = Path(path)
    columns = columns or ColumnMap()
    source = str(path)
    if not path.exists():
        raise DataError(f"{source}: file not found; check the path")
    if path.is_dir():
        raise DataError(f"{source}: is a folder, not a file; pass an event file")
    kind = _kind(path)
    if kind == ".parquet":
        return _read_parquet(path, columns)
    try:
        "".encode(encoding)
    except LookupError as exc:
        raise ConfigError(f"unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from exc
    sep = "\t" if kind.startswith(".tsv") else ","
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            encoding=encoding,
            compression="gzip" if kind.endswith(".gz") else None,
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"{source}: file is empty; it needs a header line and at least one event row"
        ) from exc
    except UnicodeDecodeError as exc:
        bad = _first_bad_line(path, encoding)
        at = f"line {bad[0]} (byte 0x{bad[1]:02x})" if bad else f"byte {exc.start}"
        raise DataError(
            f"{source}: {at} is not valid {encoding}; "
            f"pass the file's encoding with --encoding (e.g. --encoding latin-1)"
        ) from exc
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "parse error"
        raise DataError(
            f"{source}: malformed {'TSV' if sep == chr(9) else 'CSV'} ({msg}); fix the quoting or field count"
        ) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{source}: not a valid gzip file ({exc}); re-compress it or pass the plain file"
        ) from exc
    lines = np.arange(2, len(df) + 2, dtype=np.int64)
    blank = df.isna().all(axis=1).to_numpy() if len(df.columns) else np.zeros(len(df), dtype=bool)
    n_blank = int(blank.sum())
    if n_blank:
        df = df.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
        logger.info("%s: skipped %d blank line(s)", source, n_blank)
    if len(df) == 0 and len(df.columns):
        _check_columns(df, columns, source)
        raise DataError(f"{source}: no data rows; the file has a header but no events")
    table = _build(df, columns, source, _Where(source, lines, "line"))
    if n_blank:
        table.repairs["blank lines skipped"] = n_blank
    return table


def _read_parquet(path: Path, columns: ColumnMap) -> EventTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path)
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{source}: cannot read Parquet ({first}); check that the file is a complete Parquet file"
        ) from exc
    _check_columns(df, columns, source)
    if len(df) == 0:
        raise DataError(f"{source}: no data rows; the file has columns but no events")
    where = _Where(source, np.arange(1, len(df) + 1, dtype=np.int64), "row")
    return _build(df.reset_index(drop=True), columns, source, where)


def write_table(table: EventTable, path: str | Path) -> Path:
    """Write the canonical columns of ``table``.

    Parquet when the suffix is ``.parquet``; tab-separated for ``.tsv`` /
    ``.tsv.gz``; CSV otherwise (gzip if the name ends in ``.gz``). Read it back
    with ``read_table(path, canonical_columns(table))`` (or :data:`CANONICAL`
    for tables without features and timestamps). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = table.frame[_column_order(table.frame, table.numeric, table.context)]
    name = path.name.lower()
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        frame.to_csv(path, index=False, sep=sep, compression="gzip" if name.endswith(".gz") else None)
    logger.debug("wrote %d events of %s to %s", len(frame), table.source, path)
    return path


# --------------------------------------------------------------------------- #
# Sessionisation
# --------------------------------------------------------------------------- #


def sessionize(
    table: EventTable, *, gap_seconds: float | None = None, block_size: int | None = None
) -> EventTable:
    """Cut each sequence (an entity's long stream) into shorter sequences.

    Exactly one of:

    * ``gap_seconds``: start a new sequence after more than ``gap_seconds``
      of inactivity (needs a timestamped table);
    * ``block_size``: consecutive blocks of ``block_size`` events.

    New ids are ``"{entity}#{k}"`` with ``k`` = 0, 1, ... per entity (not
    zero-padded, so the canonical string sort puts ``a#10`` before ``a#2``;
    ``order`` still gives the time order). Row
    labels are kept, so a new sequence's label is the max of its rows.
    ``gap_seconds`` (the feature) is recomputed so each new sequence starts at 0.

    Raises:
        ConfigError: neither or both options, or a non-positive value.
        DataError: ``gap_seconds`` on a table without timestamps.
    """
    if (gap_seconds is None) == (block_size is None):
        raise ConfigError("sessionize: give exactly one of gap_seconds or block_size")
    frame = table.frame
    seq = frame[SEQUENCE].to_numpy(dtype=object)
    starts = _sequence_starts(seq)
    n = len(frame)
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    if gap_seconds is not None:
        if not gap_seconds > 0:
            raise ConfigError(f"sessionize: gap_seconds must be > 0, got {gap_seconds!r}")
        if not table.time_ordered:
            raise DataError(
                f"{table.source}: sessionize by gap needs timestamps; set the order column and time=true, "
                f"or use block_size"
            )
        order = frame[ORDER].to_numpy(np.float64)
        gaps = np.zeros(n, dtype=np.float64)
        if n > 1:
            gaps[1:] = order[1:] - order[:-1]
        new = starts | (gaps > gap_seconds)
        running = np.cumsum(new) - 1
        k = running - running[start_pos] if n else running
    else:
        if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size <= 0:
            raise ConfigError(f"sessionize: block_size must be a positive integer, got {block_size!r}")
        k = (np.arange(n) - start_pos) // int(block_size)
    ids = frame[SEQUENCE].astype(str) + "#" + pd.Series(k, index=frame.index).astype(str)
    out = frame.assign(**{SEQUENCE: ids.astype(str)})
    out = _canonical_sort(out)
    if table.time_ordered:
        out[GAP] = _gap_seconds(out[SEQUENCE].to_numpy(dtype=object), out[ORDER].to_numpy(np.float64))
    return table._like(out)
