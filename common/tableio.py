"""Reading, validating and writing event tables: where user data enters seqwatch.

:func:`read_table` (CSV, TSV, optionally gzipped, or Parquet) and
:func:`from_frame` (an in-memory pandas frame) turn a source, whose columns a
:class:`~common.events.ColumnMap` names, into a canonical
:class:`~common.events.EventTable`; :func:`write_table` writes one back.

Bad input raises :class:`~common.errors.DataError` with one line that names
the file, the line (or row), the column and what to do. Values that can be
repaired (a missing context value, a missing numeric value, a blank line, a
timestamp without a time zone among others that have one, read as UTC, spaces
around an id, event or context value) are repaired and counted in
:attr:`EventTable.repairs`; nothing is dropped silently. A file's column names
are read without surrounding spaces (:func:`clean_header`).
"""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import logging
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.tseries.api import guess_datetime_format

from common.errors import ConfigError, DataError, SeqwatchError
from common.events import (
    ATTACK_TYPE,
    EVENT,
    GAP,
    LABEL,
    MISSING,
    ORDER,
    SEQUENCE,
    TEXT_DTYPE,
    ColumnMap,
    EventTable,
    canonical_sort,
    column_order,
    gaps_within,
    text_codes,
)

__all__ = ["clean_header", "from_frame", "peek_columns", "read_table", "write_table"]

logger = logging.getLogger(__name__)

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
_NUMERIC_NA_WORDS = frozenset({"na", "nan", "n/a", "#n/a", "null", "none", "-nan"})
_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
_MAX_SHOWN = 60


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
    """Values as text, a ``str`` Series (a categorical one keeps its codes and gets ``str``
    categories); missing values stay NA.

    Whole-number floats (an integer column with gaps, as Parquet gives it)
    print without ``.0``, each on its own: ``1.0`` is ``"1"`` whatever else the
    column holds, so one value reads the same in every file.
    """
    if pd.api.types.is_string_dtype(s.dtype) and s.dtype != object:
        return s
    if isinstance(s.dtype, pd.CategoricalDtype):
        # CSV cells parsed as categories, or a Parquet dictionary: the categories
        # become text, the rows keep their codes (missing ones stay missing).
        names = _as_text(pd.Series(s.cat.categories))
        if names.is_unique:
            categories = pd.Index(names, dtype=TEXT_DTYPE)
            codes = s.cat.codes.to_numpy()
            return pd.Series(
                pd.Categorical.from_codes(codes, categories=categories, validate=False), index=s.index
            )
        s = s.astype(object)
    na = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s.dtype):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            whole = ~na & np.isfinite(vals) & (vals == np.round(vals)) & (np.abs(vals) < 2.0**53)
        out = s.astype(str).to_numpy(dtype=object)
        out[whole] = vals[whole].astype(np.int64).astype(str).astype(object)
        out[na] = None
        return pd.Series(out, index=s.index, dtype=TEXT_DTYPE)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return s.astype(TEXT_DTYPE)
    out = s.astype(str).to_numpy(dtype=object)
    out[na] = np.nan
    return pd.Series(out, index=s.index, dtype=TEXT_DTYPE)


def _text(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(values as text (:func:`_as_text`) with a fresh RangeIndex, mask of NA / blank values)."""
    text = _as_text(s).reset_index(drop=True)
    if isinstance(text.dtype, pd.CategoricalDtype):  # look at each category once
        codes = text.cat.codes.to_numpy()
        blank_name = np.asarray(text.cat.categories.str.strip() == "", dtype=bool)
        return text, np.append(blank_name, True)[codes]  # code -1 (missing) picks the last entry
    blank = text.str.strip().eq("")
    mask = text.isna().to_numpy(dtype=bool) | blank.fillna(False).to_numpy(dtype=bool)
    return text, mask


def _filled(values: pd.Series, mask: np.ndarray, fill: str) -> pd.Series:
    """``values`` with the rows in ``mask`` set to ``fill`` (a categorical gains it as a category)."""
    if isinstance(values.dtype, pd.CategoricalDtype) and fill not in values.cat.categories:
        values = values.cat.add_categories([fill])
    return values.where(~mask, fill)


def _stripped(values: pd.Series) -> tuple[pd.Series, int, int]:
    """``values`` without surrounding whitespace (``" login"`` is ``"login"``), how many rows
    changed, and how many distinct values merged into another (``" a"`` and ``"a"``).

    A categorical column strips each category once; categories that become
    equal merge.
    """
    if not isinstance(values.dtype, pd.CategoricalDtype):
        stripped = values.str.strip()
        n = int((stripped != values).fillna(False).sum())
        if not n:
            return values, 0, 0
        return stripped, n, int(values.nunique() - stripped.nunique())
    categories = values.cat.categories
    names = np.asarray(categories.str.strip(), dtype=object)
    changed = names != np.asarray(categories, dtype=object)
    if not changed.any():
        return values, 0, 0
    codes = values.cat.codes.to_numpy()
    n = int(np.append(changed, False)[codes].sum())  # code -1 (missing) picks the last entry
    merged, uniques = pd.factorize(names)
    new_codes = np.where(codes >= 0, merged[codes], -1)
    out = pd.Categorical.from_codes(new_codes, categories=pd.Index(uniques, dtype=TEXT_DTYPE), validate=False)
    stripped = pd.Series(out, index=values.index)
    used_before = len(np.unique(codes[codes >= 0]))
    used_after = len(np.unique(new_codes[new_codes >= 0]))
    return stripped.cat.remove_unused_categories(), n, used_before - used_after


def _strip_counted(
    values: pd.Series, column: str, repairs: dict[str, int], source: str, *, ids: bool = False
) -> pd.Series:
    """:func:`_stripped`, the rows it changed counted in ``repairs`` under ``column``; with ``ids``,
    values that became one (two sequences read as one) are a warning."""
    before = values
    values, n, merged = _stripped(values)
    if n:
        repairs[f"surrounding spaces stripped from {column!r}"] = n
    if merged:
        logger.info("%s: %d distinct value(s) of %r became one by stripping", source, merged, column)
        if ids:
            logger.warning(
                "%s: %d sequence id(s) in %r equal another id once their surrounding spaces are "
                "stripped (%s); their events are read as one sequence",
                source,
                merged,
                column,
                _merged_example(before),
            )
    return values


def _merged_example(values: pd.Series) -> str:
    """Two distinct values of ``values`` that are one without surrounding spaces, as
    ``"'a ' and 'a'"`` (the first such group in order of appearance)."""
    distinct = pd.Series(pd.unique(values.dropna().astype(object)), dtype=object).astype(str)
    key = distinct.str.strip()
    clash = distinct[key.duplicated(keep=False)]
    first = clash[key[clash.index] == key[clash.index[0]]]
    return " and ".join(repr(v) for v in first.iloc[:2])


def clean_header(names: list[str], keep: Iterable[str] = ()) -> dict[str, str]:
    """Each column name of a file and the name seqwatch reads it by: without surrounding
    whitespace (a hand-written ``id, event, amount`` header), unless two names would then be
    one, a name would be empty, or ``keep`` (a column map's names) holds the name as it is:
    those keep their own."""
    kept = set(keep)
    stripped = [n.strip() for n in names]
    counts: dict[str, int] = {}
    for n in stripped:
        counts[n] = counts.get(n, 0) + 1
    return {
        n: s if s and counts[s] == 1 and n not in kept else n for n, s in zip(names, stripped, strict=True)
    }


def _mapped(columns: ColumnMap) -> set[str]:
    """Every column name ``columns`` refers to."""
    named = {
        columns.sequence,
        columns.event,
        columns.order,
        columns.label,
        *columns.numeric,
        *columns.context,
    }
    return {n for n in named if n is not None}


def _numeric(
    s: pd.Series, column: str, where: _Where, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a column as float64. Returns (values, missing mask, infinite mask).

    Infinite values ("inf", 1e999) become NaN and are in both masks: no
    score or scaler can use them. Raises DataError at the first text value.
    """
    vals, mask = _parse_numbers(s, column, where, what)
    infinite = np.isinf(vals)
    if infinite.any():
        vals = np.where(infinite, np.nan, vals)
        mask = mask | infinite
    return vals, mask, infinite


def _parse_numbers(s: pd.Series, column: str, where: _Where, what: str) -> tuple[np.ndarray, np.ndarray]:
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
        # what pandas' parser gives up on but Python reads (pandas 2 turns "1e999" into NaN, not inf)
        again = np.array([_python_float(obj.iloc[i]) for i in bad_idx], dtype=np.float64)
        readable = ~np.isnan(again)
        if readable.any():
            parsed = parsed.copy()
            parsed[bad_idx[readable]] = again[readable]
            bad_idx = bad_idx[~readable]
        if bad_idx.size:
            pos = int(bad_idx[0])
            raise DataError(
                f"{where.source}: {where.at(pos)}, column {column!r}: expected a number ({what}), got text "
                f"{_show(obj.iloc[pos])}; fix the value or leave the cell empty"
                + (f" ({bad_idx.size} such rows)" if bad_idx.size > 1 else "")
            )
    return parsed, mask


def _python_float(value: object) -> float:
    """``float(value)``, NaN when it is no number."""
    try:
        return float(str(value).strip())
    except ValueError:
        return float("nan")


#: A time of day followed by a zone: ``Z``, ``UTC``/``GMT`` or an offset such as ``+02:00``.
_ZONED = r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d\d(?::?\d\d)?)\s*$"


def _timestamps(
    s: pd.Series, column: str, where: _Where, day_first: bool | None = None
) -> tuple[np.ndarray, int, bool | None]:
    """Parse a column as date-times (UTC); returns (epoch seconds, zone-less values read as UTC,
    the day/month order its numeric dates were read in: None when it holds none).

    Values without a time zone are read as UTC. The second figure counts
    them when other values of the column do carry a zone (a mix, e.g. logs
    from several sources), so the reader can report it; it is 0 otherwise.
    Numeric dates (``04/03/2024``) are read in one order for the whole column
    (:func:`_day_first`).
    """
    assumed_utc = 0
    decided: bool | None = None
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        dt = pd.to_datetime(s, utc=True)
        mask = dt.isna().to_numpy()
    else:
        text, mask = _text(s)
        # Text stays text (Arrow strings on pandas 3: no Python object per row);
        # other values (numbers read as times) are parsed as pandas reads them.
        values = text if pd.api.types.is_string_dtype(s.dtype) else s.reset_index(drop=True).astype(object)
        values = values.where(~mask, None)
        present = np.flatnonzero(~mask)
        first = str(values.iloc[present[0]]) if present.size else ""
        with warnings.catch_warnings():  # "13/03/2024 read day first": the order is decided below
            warnings.simplefilter("ignore", UserWarning)
            fmt = guess_datetime_format(first) if present.size else None
        # no format pandas can name: look for a year in the text
        has_year = ("%Y" in fmt or "%y" in fmt) if fmt is not None else bool(re.search(r"\d{4}", first))
        if present.size and not has_year:
            no_date = "" if fmt and "%d" in fmt else " (or no date)"
            raise _year_error(where, int(present[0]), column, values.iloc[int(present[0])], no_date)
        dayfirst, decided = _day_first(values, mask, column, where, day_first)
        if dayfirst and re.match(_NUMERIC_DATE, first):  # ISO 8601 keeps its own order
            fmt = guess_datetime_format(first, dayfirst=True)
        with warnings.catch_warnings():
            # pandas warns when it cannot infer one format; the retry below
            # parses element by element anyway.
            warnings.simplefilter("ignore", UserWarning)
            if fmt is None:  # no one format: value by value, numeric dates in the column's order
                dt = _each(values, bool(dayfirst))
            else:
                dt = pd.to_datetime(values, utc=True, errors="coerce", format=fmt)
            failed = dt.isna().to_numpy() & ~mask
            # Values that all parse in one format either all carry a zone or none does;
            # otherwise look at each value's zone.
            if fmt is None or failed.any():
                zoned = values[~mask].astype(str).str.contains(_ZONED, regex=True)
                if zoned.any() and not zoned.all():
                    assumed_utc = int((~zoned).sum())
            if failed.any():
                dt = dt.copy()
                dt[failed] = _each(values[failed], bool(dayfirst))
                failed = dt.isna().to_numpy() & ~mask
        # a value without a year, after one with a year, parses as year 1: as refused as a first one
        yearless = np.flatnonzero((dt.dt.year < _FIRST_YEAR).fillna(False).to_numpy(dtype=bool) & ~mask)
        if yearless.size:
            raise _year_error(where, int(yearless[0]), column, values.iloc[int(yearless[0])])
        if failed.any():
            pos = int(np.flatnonzero(failed)[0])
            raise DataError(
                f"{where.source}: {where.at(pos)}, column {column!r}: cannot parse timestamp "
                f"{_show(values.iloc[pos])}; use ISO 8601 (e.g. 2024-01-31T12:00:00Z), or, if the column "
                f'is a position, read it as one (seqwatch: --no-time; a column map: "time": false)'
            )
    if mask.any():
        pos = int(np.flatnonzero(mask)[0])
        raise DataError(
            f"{where.source}: {where.at(pos)}, column {column!r}: missing timestamp; "
            f"fill it in or drop the row"
        )
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return (dt - epoch).dt.total_seconds().to_numpy(dtype=np.float64), assumed_utc, decided


def _year_error(where: _Where, pos: int, column: str, value: object, no_date: str = "") -> DataError:
    return DataError(
        f"{where.source}: {where.at(pos)}, column {column!r}: timestamp {_show(value)} has no full "
        f"year{no_date}, so events around a new year (or midnight) would be put in the wrong order; "
        f"write full dates, e.g. ISO 8601 2024-01-31T12:00:00Z"
    )


#: Parsed years before this come from text without a year (the parser fills in year 1).
_FIRST_YEAR = 1000


def _each(values: pd.Series, dayfirst: bool) -> pd.Series:
    """Date-times parsed value by value (UTC; NaT where a value does not parse): numeric dates
    (``04/03/2024``) day first when ``dayfirst``, the others (ISO 8601 among them) as they are."""
    numeric = _numeric_dates(values.astype(str))
    dt = pd.to_datetime(values.where(~numeric, None), utc=True, errors="coerce", format="mixed")
    if numeric.any():
        dt = dt.copy()
        dt[numeric] = pd.to_datetime(
            values[numeric], utc=True, errors="coerce", format="mixed", dayfirst=dayfirst
        )
    return dt


#: Beyond this, float64 cannot tell neighbouring integers apart.
_EXACT_FLOAT_INTEGERS = 2**53


def _exact_positions(raw: pd.Series, parsed: np.ndarray) -> np.ndarray:
    """Integer positions larger than 2^53 (nanosecond epochs, say) in an order that float64 keeps.

    ``parsed`` (float64) would round neighbours onto one value and leave their order to the
    file; the integers are read exactly and shifted to start at 0 (or, spanning more than
    2^53 themselves, replaced by their rank), which keeps every comparison.
    """
    if parsed.size == 0 or np.abs(parsed).max() < _EXACT_FLOAT_INTEGERS:
        return parsed
    exact = pd.to_numeric(raw.reset_index(drop=True), errors="coerce")
    if not pd.api.types.is_integer_dtype(exact.dtype):
        return parsed  # not all whole numbers that fit int64: as parsed
    values = exact.to_numpy(dtype=np.int64)
    span = int(values.max()) - int(values.min())
    if span < _EXACT_FLOAT_INTEGERS:
        return (values - values.min()).astype(np.float64)
    return np.unique(values, return_inverse=True)[1].astype(np.float64)


#: A numeric date leading a value (``04/03/2024``, ``4.3.24 10:00``), day and month as groups;
#: :data:`_A_NUMERIC_DATE` finds one (no groups).
_NUMERIC_DATE = r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}(?:\D|$)"
_A_NUMERIC_DATE = _NUMERIC_DATE.replace("(\\d{1,2})", "\\d{1,2}")
#: What every value :data:`_A_NUMERIC_DATE` finds starts with: one or two digits and a
#: separator after no digit. pandas hands a pattern with ``\s`` to Python's ``re``, row by
#: row (RE2's ``\s`` differs); this one Arrow's RE2 runs on ASCII text, in a tenth of the time.
_MAYBE_NUMERIC_DATE = r"^\D*\d{1,2}[/.-]"


def _numeric_dates(text: pd.Series) -> np.ndarray:
    """Which of ``text`` (strings) start with a numeric date (:data:`_A_NUMERIC_DATE`): the
    few that pass the fast :data:`_MAYBE_NUMERIC_DATE` are checked with the exact pattern."""
    found = text.str.contains(_MAYBE_NUMERIC_DATE, regex=True).to_numpy(dtype=bool, copy=True)
    if found.any():
        maybe = np.flatnonzero(found)
        found[maybe] = text.iloc[maybe].str.contains(_A_NUMERIC_DATE, regex=True).to_numpy(dtype=bool)
    return found


def _day_first(
    values: pd.Series, mask: np.ndarray, column: str, where: _Where, given: bool | None
) -> tuple[bool | None, bool | None]:
    """How the column's numeric dates (``04/03/2024``) are read, once for the whole column:
    (day first?, the order to record: None when the column holds no numeric date).

    ``given`` (the map's ``day_first``, which ``seqwatch fit`` saves) decides; a date that does
    not read so is an error. Else the values do: ``13/01/2024`` reads only day first,
    ``01/13/2024`` only month first, and a column of both is an error naming one of each. Where
    every date reads either way they are read month first, as pandas reads them, with a warning
    when the two readings differ (as ``04/03`` does, unlike ``04/04``). Dates in other forms
    (ISO 8601) are left to the parser.
    """
    present = np.flatnonzero(~mask)
    text = values.iloc[present].astype(str)
    candidate = _numeric_dates(text)
    if not candidate.any():
        return given, given
    rows = present[candidate]
    parts = text[candidate].str.extract(_NUMERIC_DATE)
    a = parts[0].to_numpy().astype(np.int64)
    b = parts[1].to_numpy().astype(np.int64)
    reads_dm = (a >= 1) & (a <= 31) & (b >= 1) & (b <= 12)
    reads_md = (a >= 1) & (a <= 12) & (b >= 1) & (b <= 31)
    names = {True: "day first (%d/%m/%Y)", False: "month first (%m/%d/%Y)"}
    if given is not None:
        wrong = ~(reads_dm if given else reads_md)
        if wrong.any():
            pos = int(rows[np.flatnonzero(wrong)[0]])
            raise DataError(
                f"{where.source}: {where.at(pos)}, column {column!r}: date {_show(values.iloc[pos])} does "
                f"not read {names[given]}, the order the column map gives (day_first = "
                f"{str(given).lower()}; seqwatch fit saves the order it read the training data in); fix "
                f"the value, or give the order (seqwatch: --{'no-' if given else ''}day-first)"
            )
        return given, given
    if reads_dm.all() and not reads_md.all():
        logger.info("%s: dates in %r read day first (every value parses so)", where.source, column)
        return True, True
    if reads_md.all() and not reads_dm.all():
        return False, False
    if not reads_md.all():  # neither order reads every value
        only_md, only_dm = reads_md & ~reads_dm, reads_dm & ~reads_md
        if only_md.any() and only_dm.any():
            x, y = int(rows[np.flatnonzero(only_md)[0]]), int(rows[np.flatnonzero(only_dm)[0]])
            raise DataError(
                f"{where.source}: column {column!r}: dates in two day/month orders ({where.at(x)}: "
                f"{_show(values.iloc[x])} reads only {names[False]}, {where.at(y)}: "
                f"{_show(values.iloc[y])} only {names[True]}); write ISO 8601 dates (2024-01-31T12:00:00Z)"
            )
        return False, False  # a date that reads neither way: the parser names it
    differ = np.flatnonzero(a != b)
    if differ.size:
        pos = int(rows[differ[0]])
        logger.warning(
            "%s: dates in %r read month first (%s); every one reads either way, so if they are day "
            'first, say so (seqwatch: --day-first; a column map: "day_first": true)',
            where.source,
            column,
            f"{_show(values.iloc[pos])} = {int(b[differ[0]])} {calendar.month_name[int(a[differ[0]])]}",
        )
    return False, False


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
    unmapped = mapped.isna().to_numpy()
    if unmapped.any():  # numbers written otherwise: "1.00", "0e0"
        numbers = pd.to_numeric(words[unmapped], errors="coerce")
        mapped[unmapped] = numbers.where(numbers.isin([0.0, 1.0]))
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


def _category_columns(columns: ColumnMap) -> set[str]:
    """Source columns read as categories: the sequence id, event, context and attack-type text.

    An id or a token is then held once however many rows carry it (a CSV parser
    or a Parquet dictionary gives codes directly, with no string per row).
    Columns that also play another role are read as plain text.
    """
    other = {columns.order, columns.label, LABEL, *columns.numeric}
    return {columns.sequence, columns.event, *columns.context, ATTACK_TYPE} - other


def _used_columns(names: list[str], columns: ColumnMap, source: str) -> list[str]:
    """The columns of a file's ``names`` that :func:`_build` reads, in file order.

    Raises:
        DataError: a mapped column is not among ``names`` (the message lists them all).
    """
    label_col = _check_columns(pd.DataFrame(columns=names), columns, source)
    used = {columns.sequence, columns.event, *columns.numeric, *columns.context, ATTACK_TYPE}
    used |= {c for c in (columns.order, label_col) if c is not None}
    return [n for n in names if n in used]


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
    seq_text = _strip_counted(seq_text, columns.sequence, repairs, source, ids=True)
    ev_text = _strip_counted(ev_text, columns.event, repairs, source)
    out: dict[str, Any] = {
        SEQUENCE: seq_text,
    }

    time_ordered = False
    day_first: bool | None = None
    if columns.order is None:
        out[ORDER] = seq_text.groupby(seq_text, sort=False, observed=True).cumcount().to_numpy(np.float64)
    else:
        order_s = df[columns.order]
        looks_time = _looks_like_time(order_s)
        is_time = looks_time if columns.time is None else columns.time
        infinite = None
        if is_time and not looks_time:
            order, mask, infinite = _numeric(order_s, columns.order, where, "epoch seconds")
            _check_epoch_seconds(order, order_s, columns.order, where, source)
        elif is_time:
            order, assumed_utc, day_first = _timestamps(order_s, columns.order, where, columns.day_first)
            mask = np.zeros(len(order), dtype=bool)
            if assumed_utc:
                repairs[f"timestamps in {columns.order!r} without a time zone, read as UTC"] = assumed_utc
                logger.info(
                    "%s: %d timestamp(s) in %r carry no time zone while others do; read as UTC",
                    source,
                    assumed_utc,
                    columns.order,
                )
        else:
            if columns.time is False and looks_time:
                first = order_s.dropna().iloc[0]
                raise DataError(
                    f"{source}: column {columns.order!r} holds timestamps ({_show(first)}), but time = "
                    f"false reads it as positions (--no-time, or a model fitted on positions in this "
                    f"column): give positions as numbers there, or read the column as time (a model "
                    f"fitted on positions must then be refitted)"
                )
            order, mask, infinite = _numeric(order_s, columns.order, where, "position")
            if not mask.any():
                order = _exact_positions(order_s, order)
            if columns.time is None:
                _hint_epoch_positions(order, columns.order, source)
        if infinite is not None and infinite.any():
            pos = int(np.flatnonzero(infinite)[0])
            raise DataError(
                f"{source}: {where.at(pos)}, column {columns.order!r}: infinite order value; "
                f"give a finite number"
            )
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
    if time_ordered and GAP in df.columns:
        logger.warning(
            "%s: the file's own column %r is not read: with timestamps, %r is the gap seqwatch computes "
            "from them (rename the column to use it as a feature)",
            source,
            GAP,
            GAP,
        )
    for name in numeric:
        vals, mask, infinite = _numeric(df[name], name, where, "numeric feature")
        n_infinite = int(infinite.sum())
        if n_infinite:
            repairs[f"infinite numeric {name!r} (kept as missing)"] = n_infinite
            logger.info("%s: %d infinite value(s) in numeric column %r kept as NaN", source, n_infinite, name)
        n_missing = int(mask.sum()) - n_infinite
        if n_missing:
            repairs[f"missing numeric {name!r}"] = n_missing
            logger.info("%s: %d missing value(s) in numeric column %r kept as NaN", source, n_missing, name)
        out[name] = vals
    for name in columns.context:
        values, mask = _text(df[name])
        n_missing = int(mask.sum())
        if n_missing:
            values = _filled(values, mask, MISSING)
            repairs[f"missing context {name!r}"] = n_missing
            logger.info(
                "%s: %d missing value(s) in context column %r set to %r", source, n_missing, name, MISSING
            )
        out[name] = _strip_counted(values, name, repairs, source)
    if label_col is not None:
        out[LABEL] = _labels(df[label_col], label_col, where)
    if ATTACK_TYPE in df.columns:
        values, mask = _text(df[ATTACK_TYPE])
        out[ATTACK_TYPE] = _strip_counted(_filled(values, mask, ""), ATTACK_TYPE, repairs, source)

    frame = canonical_sort(pd.DataFrame(out))
    if time_ordered:
        frame[GAP] = gaps_within(text_codes(frame[SEQUENCE])[0], frame[ORDER].to_numpy(np.float64))
        numeric.append(GAP)
    frame = frame[column_order(frame, numeric, columns.context)]
    return EventTable(
        frame,
        numeric=numeric,
        context=columns.context,
        source=source,
        repairs=repairs,
        time_ordered=time_ordered,
        day_first=day_first,
    )


_LATEST_EPOCH_SECONDS = 1e11
"""Epoch seconds above this (the year 5138) are taken for milliseconds or finer and refused."""
_EARLIEST_PLAUSIBLE = 1e8
"""Epoch seconds all below this (March 1973) are warned about: dates like 20251231 or day counts."""
_YEAR_2100 = 4_102_444_800.0
_FINER_UNITS = ((1e17, "nanoseconds", 10**9), (1e14, "microseconds", 10**6), (1e11, "milliseconds", 1000))


def _check_epoch_seconds(
    seconds: np.ndarray, raw: pd.Series, column: str, where: _Where, source: str
) -> None:
    """Refuse numbers that cannot be epoch seconds (milliseconds, most often); warn when all of them
    fall before 1973, as dates written as numbers (``20251231``) or day counts do."""
    finite = np.isfinite(seconds)
    large = finite & (np.abs(seconds) > _LATEST_EPOCH_SECONDS)
    if large.any():
        pos = int(np.flatnonzero(large)[0])
        value = float(seconds[pos])
        unit, per_second = next((u, n) for limit, u, n in _FINER_UNITS if abs(value) > limit)
        raise DataError(
            f"{source}: {where.at(pos)}, column {column!r}: {_show(raw.iloc[pos])} is too large for epoch "
            f"seconds (more than 3,000 years from 1970); these look like epoch {unit}: divide the "
            f"column by {per_second:,} or write ISO 8601 times (2026-01-05T08:00:00Z); a model fitted "
            f"on them as seconds must be refitted"
        )
    if finite.any() and np.nanmax(np.abs(seconds[finite])) < _EARLIEST_PLAUSIBLE:
        pos = int(np.flatnonzero(finite)[0])
        logger.warning(
            "%s: column %r is read as epoch seconds, and every value falls before 1973 (%s at %s is %s); "
            "if these are dates written as numbers (20251231) or day counts, write ISO 8601 times instead",
            source,
            column,
            _show(raw.iloc[pos]),
            where.at(pos),
            pd.Timestamp(float(seconds[pos]), unit="s", tz="UTC").isoformat(),
        )


def _hint_epoch_positions(order: np.ndarray, column: str, source: str) -> None:
    """Say so when numbers read as positions look like epoch seconds or milliseconds (1973–2100):
    as positions only their order counts, and the time between events is lost."""
    finite = order[np.isfinite(order)]
    if finite.size < 2 or np.unique(finite).size < 2:
        return
    low, high = float(finite.min()), float(finite.max())
    if _EARLIEST_PLAUSIBLE <= low <= high <= _YEAR_2100:
        unit, fix = "seconds", "pass --time (time = true in a column map)"
    elif _EARLIEST_PLAUSIBLE * 1000 <= low <= high <= _YEAR_2100 * 1000:
        unit, fix = "milliseconds", "divide them by 1,000 and pass --time, or write ISO 8601 times"
    else:
        return
    logger.warning(
        "%s: the order column %r holds numbers, read as positions (only their order counts); they "
        "look like epoch %s: to have the time between events as a feature (%s), %s",
        source,
        column,
        unit,
        GAP,
        fix,
    )


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


def _delimited(kind: str) -> tuple[str, str | None]:
    """(separator, compression) of a CSV/TSV file by its suffix (:func:`_kind`)."""
    return ("\t" if kind.startswith(".tsv") else ","), ("gzip" if kind.endswith(".gz") else None)


def _quoting(sep: str) -> Literal[0, 3]:
    """The csv quoting of a file: TSV has none (a value starting with a quote, ``"GET /x``, is
    text, not the start of a field spanning lines); CSV quotes as RFC 4180 does."""
    return csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL


def _open_text(path: Path, encoding: str, errors: str = "strict") -> IO[str]:
    """A (gzipped) text file for the csv module; a UTF-8 byte-order mark is not part of the text."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding=codec, errors=errors, newline="")
    return open(path, encoding=codec, errors=errors, newline="")


def open_bytes(path: Path) -> io.BufferedIOBase:
    """``path`` for reading bytes, unpacked when its name ends in ``.gz``."""
    return gzip.GzipFile(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _encoding_hint(path: Path) -> str:
    """What to do about a file that does not decode, from its first bytes."""
    try:
        with open_bytes(path) as fh:
            head = fh.read(4)
    except (OSError, EOFError, zlib.error):
        head = b""
    if head.startswith(b"\x1f\x8b"):
        return f"it is gzip-compressed: name it {path.name}.gz (seqwatch unpacks .csv.gz and .tsv.gz files)"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it starts with a UTF-16 byte-order mark: pass --encoding utf-16"
    if len(head) >= 4 and (head[1::2] == b"\x00\x00" or head[0::2] == b"\x00\x00"):
        order = "le" if head[1::2] == b"\x00\x00" else "be"
        return f"it looks like UTF-16 without a byte-order mark: pass --encoding utf-16-{order}"
    return (
        "pass the file's encoding with --encoding (e.g. --encoding cp1252 for a Windows export, "
        "latin-1 for ISO-8859-1)"
    )


def _first_bad_line(path: Path, encoding: str) -> tuple[int, int] | None:
    """(line number, offending byte) of the first line not in ``encoding``."""
    with open_bytes(path) as fh:
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
    1-based row numbers. Blank lines are skipped and counted in ``repairs``, and so are
    empty fields past the header's (``s,a,`` under ``id,event``). Only
    the columns ``columns`` names (and ``label`` / ``attack_type`` where present)
    are loaded; the others are never parsed. Sequence-id, event, context and
    attack-type columns are read straight into categories (each distinct text once).

    Raises:
        DataError: file not found, unsupported type, empty, wrong encoding,
            missing column, a CSV/TSV row with a value past the header's fields,
            bad value (timestamp, number, label), missing sequence id or event.
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
        table = _read_parquet(path, columns)
    else:
        table = _read_delimited(path, columns, kind, encoding)
    # Arrow keeps the memory it freed (the text as read, before it became categories) for
    # later Arrow allocations; give it back for the training and scoring that follow.
    pa.default_memory_pool().release_unused()
    return table


_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def peek_columns(path: str | Path, encoding: str = "utf-8", *, sample: int = 500) -> dict[str, bool] | None:
    """An event file's column names as :func:`read_table` reads them, each with whether
    :func:`read_table` would read it as numbers: for Parquet, from its type (integers, floats,
    decimals, booleans); for CSV/TSV, from the first ``sample`` rows (0: the header alone, all
    False). A row index pandas stored without a name (``__index_level_0__``) is left out. None
    when the file cannot be read (:func:`read_table` then says why).
    """
    path = Path(path)
    try:
        kind = _kind(path)
        if not path.is_file():
            return None
        if kind == ".parquet":
            import pyarrow.parquet as pq

            def numeric(t: pa.DataType) -> bool:
                t = t.value_type if pa.types.is_dictionary(t) else t
                kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean)
                return any(is_kind(t) for is_kind in kinds)

            found = {str(f.name): numeric(f.type) for f in pq.read_schema(path)}
        else:
            sep, compression = _delimited(kind)
            names = _csv_header(path, sep, encoding, compression)
            rows = _read_csv(path, sep, encoding, compression, names, str, nrows=sample) if sample else None
            found = {name: rows is not None and _reads_as_numbers(rows[name]) for name in names}
    except (SeqwatchError, pa.ArrowException, OSError, ValueError, LookupError):
        return None
    kept = {raw: numeric for raw, numeric in found.items() if not _PANDAS_INDEX.fullmatch(raw)}
    return {clean: kept[raw] for raw, clean in clean_header(list(kept)).items()}


def _reads_as_numbers(values: pd.Series) -> bool:
    """Whether :func:`read_table` reads these text values as a numeric feature."""
    try:
        _parse_numbers(values, str(values.name), _Where("", np.arange(len(values)), "row"), "")
    except DataError:
        return False
    return True


def _read_delimited(path: Path, columns: ColumnMap, kind: str, encoding: str) -> EventTable:
    """A CSV or TSV file (``kind``: its suffix, from :func:`_kind`) as an event table."""
    source = str(path)
    try:
        "".encode(encoding)
    except LookupError as exc:
        raise ConfigError(f"unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from exc
    sep, compression = _delimited(kind)
    # Only the columns the map uses, so a wide export is not parsed whole. A row with no value in
    # any of them is a blank line only if its other fields are empty too: where there are such
    # rows, the file is read again whole to tell (the rule below counts blank lines, while a row
    # that lacks only its sequence id and event is an error).
    names = _csv_header(path, sep, encoding, compression)
    header = clean_header(names, _mapped(columns))
    used = _used_columns(list(header.values()), columns, source)
    usecols = [name for name, clean in header.items() if clean in used]
    df = _read_csv(path, sep, encoding, compression, usecols, str)
    if len(used) < len(names) and df.isna().all(axis=1).any():
        df = _read_csv(path, sep, encoding, compression, names, str)
    # pandas drops the fields of a row past the header's without a word (with ``usecols``); a
    # value there means a shifted row (an unquoted separator inside a value) and is refused.
    n_padded = _check_field_counts(path, sep, encoding, compression, len(names))
    df = df.rename(columns=header)
    # Read as text, then made categories: the parser's own "category" type turns categories that
    # all look like numbers into numbers, so ids "01" and "1" (or events "1.10" and "1.1") would merge.
    for name in _category_columns(columns) & set(df.columns):
        df[name] = df[name].astype("category")
    lines = np.arange(2, len(df) + 2, dtype=np.int64)
    missing = df.isna()
    blank = missing.all(axis=1).to_numpy(dtype=bool, copy=True)  # sequence and event: always read
    if df.shape[1] > 1:  # a line of spaces alone reads as a first field of spaces: as blank
        alone = np.flatnonzero(~blank & missing.iloc[:, 1:].all(axis=1).to_numpy(dtype=bool))
        if alone.size:
            blank[alone[df.iloc[alone, 0].astype(str).str.strip().eq("").to_numpy(dtype=bool)]] = True
    n_blank = int(blank.sum())
    if n_blank:
        df = df.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
        logger.info("%s: skipped %d blank line(s)", source, n_blank)
    if len(df) == 0:
        raise DataError(f"{source}: no data rows; the file has a header but no events")
    table = _build(df, columns, source, _Where(source, lines, "line"))
    if n_blank:
        table.repairs["blank lines skipped"] = n_blank
    if n_padded:
        table.repairs["rows with empty fields past the header (ignored)"] = n_padded
    return table


# Arrow calls Python (some microseconds) for each row whose field count differs from the header's.
# After this many such rows the check changes course: rows ending in empty fields (an export
# habit, "1,a,2," under "id,event,amount") are read again as columns of their own and checked in
# bulk; rows short of fields go to the csv module, faster for a file full of them.
_IRREGULAR_ROWS = 1024


class _FieldCounts:
    """Arrow's invalid-row handler for :func:`_arrow_field_counts`: counts rows whose fields past
    the header's ``width`` are all empty; stops at a row with a value there, or after
    :data:`_IRREGULAR_ROWS` rows of another width than the ``columns`` read."""

    def __init__(self, width: int, sep: str) -> None:
        self.width = width
        self.sep = sep
        self.short = 0
        self.extras: dict[int, int] = {}  # rows ending in so many empty fields

    @property
    def padded(self) -> int:
        """Rows whose fields past the header's were all empty."""
        return sum(self.extras.values())

    def __call__(self, row: Any) -> str:
        try:
            if self.padded + self.short >= _IRREGULAR_ROWS:
                return "error"
            extra = int(row.actual_columns) - self.width
            if extra <= 0:  # fewer fields than the header: pandas reads them as missing values
                self.short += 1
                return "skip"
            if not _empty_past(str(row.text), self.sep, self.width, extra):
                return "error"
            self.extras[extra] = self.extras.get(extra, 0) + 1
            return "skip"
        except (UnicodeError, ValueError, csv.Error):  # Arrow would only print it: the csv module decides
            return "error"


def _empty_past(text: str, sep: str, width: int, extra: int) -> bool:
    """Whether the fields of the row ``text`` past the first ``width`` are all blank."""
    if text.endswith(sep * extra):
        return True
    fields = next(csv.reader([text], delimiter=sep, quoting=_quoting(sep)), [])
    return all(not field.strip() for field in fields[width:])


def _check_field_counts(path: Path, sep: str, encoding: str, compression: str | None, width: int) -> int:
    """How many rows of a CSV/TSV file have more fields than its header, all of them empty.

    A streaming pass of Arrow's CSV parser (about 0.07 s for the 58 MB ADFA-LD test file) calls
    Python only for rows whose field count differs from the header's (see :data:`_IRREGULAR_ROWS`).
    When it finds a value past the header's fields, many rows short of fields, or cannot read the
    file itself, the csv module reads the file instead, counting as it goes and naming the line
    it stops at.

    Raises:
        DataError: a row has a value past the header's fields (a value with an unquoted
            separator, or a column the header does not name); names its line.
    """
    try:
        return _arrow_field_counts(path, sep, encoding, compression, width)
    except pa.ArrowException:
        return _python_field_counts(path, sep, encoding, width)


def _arrow_field_counts(path: Path, sep: str, encoding: str, compression: str | None, width: int) -> int:
    """:func:`_check_field_counts` by Arrow; raises ``pa.ArrowInvalid`` where the csv module must decide."""
    import pyarrow.compute as pcompute
    import pyarrow.csv as pcsv

    def scan(columns: int, handler: _FieldCounts) -> int:
        """Read ``columns`` columns; returns how many rows had exactly that many fields when that
        is more than the header's (all checked empty past it). The header is read as a row like
        the others (it has ``width`` fields): skipping it by line would split a quoted name that
        holds a line break."""
        names = [f"c{i}" for i in range(columns)]
        padded = 0
        with pa.input_stream(path, compression=compression) as stream:
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(use_threads=False, column_names=names, encoding=encoding),
                parse_options=pcsv.ParseOptions(
                    delimiter=sep,
                    quote_char=False if sep == "\t" else '"',
                    newlines_in_values=sep != "\t",
                    invalid_row_handler=handler,
                ),
                convert_options=pcsv.ConvertOptions(
                    include_columns=names[width:] or names[:1],
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
            for batch in reader:
                for column in batch.columns[: columns - width]:
                    filled = pcompute.not_equal(pcompute.utf8_trim_whitespace(column), "")
                    if pcompute.any(filled).as_py():
                        raise pa.ArrowInvalid("a value past the header's fields")
                if columns > width:
                    padded += batch.num_rows
        return padded

    first = _FieldCounts(width, sep)
    try:
        scan(width, first)
        return first.padded
    except pa.ArrowInvalid:
        # stopped at a value past the header's fields, at a row Arrow could not read, or after
        # many rows of another width: only rows that mostly end in empty fields are read again
        if first.padded + first.short < _IRREGULAR_ROWS or first.padded < first.short:
            raise
    wider = _FieldCounts(width, sep)
    habit = max(first.extras, key=lambda extra: first.extras[extra])
    return scan(width + habit, wider) + wider.padded


def _python_field_counts(path: Path, sep: str, encoding: str, width: int) -> int:
    """:func:`_check_field_counts` by the csv module (any value length)."""
    padded = 0
    with _any_field_size(), _open_text(path, encoding) as fh:
        reader = csv.reader(fh, delimiter=sep, quoting=_quoting(sep))
        next(reader, None)
        start = reader.line_num + 1  # the line each row starts on
        for fields in reader:
            if len(fields) > width:
                if any(field.strip() for field in fields[width:]):
                    _refuse_long_row(path, sep, width, fields, start)
                padded += 1
            start = reader.line_num + 1
    return padded


@contextmanager
def _any_field_size() -> Iterator[None]:
    """Lift the csv module's limit on a value's length (128 KiB) for a while: pandas has none."""
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(limit)


def _refuse_long_row(path: Path, sep: str, width: int, fields: list[str], line: int) -> NoReturn:
    shown = sep.join(fields)
    shown = shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + "..."
    fix = (
        "a TSV value cannot hold a tab (write CSV or Parquet)"
        if sep == "\t"
        else "quote values that contain ','"
    )
    raise DataError(
        f"{path}: line {line} has {len(fields)} fields but the header names {width} ({shown!r}); "
        f"{fix}, or name the extra column in the header"
    )


def _csv_header(path: Path, sep: str, encoding: str, compression: str | None) -> list[str]:
    """The column names of a CSV/TSV file (as pandas names them).

    Raises:
        DataError: two columns have the same name (pandas would quietly call the second
            ``name.1``, and the map would read the first).
    """
    names = [str(c) for c in _read_csv(path, sep, encoding, compression, None, str, nrows=0).columns]
    with _any_field_size(), _open_text(path, encoding, errors="replace") as fh:
        raw = next(csv.reader(fh, delimiter=sep, quoting=_quoting(sep)), [])
    if any("\x00" in name for name in [*names, *raw]):  # UTF-16 read as UTF-8 decodes, NULs and all
        raise DataError(f"{path}: the header holds NUL characters; {_encoding_hint(path)}")
    seen: set[str] = set()
    for name in raw:
        if name in seen:
            raise DataError(f"{path}: header names column {name!r} twice; rename one of them")
        seen.add(name)
    other = next((c for c in ";|\t," if c != sep and len(raw) == 1 and c in raw[0]), None)
    if other is not None:  # an event table has a sequence id and an event at least
        if other in "\t,":
            right = ".tsv" if other == "\t" else ".csv"
            raise DataError(
                f"{path}: the header is one column, {_show(raw[0])}: the file looks separated by "
                f"{other!r}; name it {right} (or {right}.gz), as seqwatch reads files by their suffix"
            )
        raise DataError(
            f"{path}: the header is one column, {_show(raw[0])}: the file looks separated by {other!r}; "
            f"seqwatch reads .csv files separated by commas and .tsv files by tabs: write it so "
            f"(pandas: pd.read_csv(path, sep={other!r}).to_csv(new_path, sep={sep!r}, index=False), "
            f"with decimal=',' in read_csv if its numbers have decimal commas)"
        )
    return names


def _read_csv(
    path: Path,
    sep: str,
    encoding: str,
    compression: str | None,
    usecols: list[str] | None,
    dtype: Any,
    *,
    nrows: int | None = None,
) -> pd.DataFrame:
    """``pd.read_csv`` as text (``dtype``: ``str`` or categories), every failure turned into a
    :class:`DataError` naming the file."""
    source = str(path)
    try:
        return pd.read_csv(
            path,
            sep=sep,
            quoting=_quoting(sep),
            dtype=dtype,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            encoding=encoding,
            compression=compression,
            usecols=usecols,
            # a first row with more fields than the header must not become the index
            index_col=False,
            nrows=nrows,
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"{source}: file is empty; it needs a header line and at least one event row"
        ) from exc
    except UnicodeDecodeError as exc:
        bad = _first_bad_line(path, encoding)
        at = f"line {bad[0]} (byte 0x{bad[1]:02x})" if bad else f"byte {exc.start}"
        raise DataError(f"{source}: {at} is not valid {encoding}; {_encoding_hint(path)}") from exc
    except UnicodeError as exc:  # e.g. "UTF-16 stream does not start with BOM"
        raise DataError(f"{source}: cannot be read as {encoding} ({exc}); {_encoding_hint(path)}") from exc
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "parse error"
        raise DataError(
            f"{source}: malformed {'TSV' if sep == chr(9) else 'CSV'} ({msg}); fix the quoting or field count"
        ) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{source}: not a valid gzip file ({exc}); re-compress it or pass the plain file"
        ) from exc


def _read_parquet(path: Path, columns: ColumnMap) -> EventTable:
    import pyarrow.parquet as pq

    source = str(path)
    try:
        # Only the columns the map uses, so a wide export is not loaded whole; a column that
        # pandas stored as the index is read as a column like any other.
        schema = pq.read_schema(path)
        twice = next((n for i, n in enumerate(schema.names) if n in schema.names[:i]), None)
        if twice is not None:  # pyarrow cannot pick either by name
            raise DataError(f"{source}: the file names column {twice!r} twice; rename one of them")
        header = clean_header([str(n) for n in schema.names], _mapped(columns))
        used = _used_columns(list(header.values()), columns, source)
        usecols = [name for name, clean in header.items() if clean in used]
        for name in usecols:
            kind = schema.field(name).type
            if pa.types.is_nested(kind) or (
                pa.types.is_dictionary(kind) and pa.types.is_nested(kind.value_type)
            ):
                raise DataError(
                    f"{source}: column {header[name]!r} holds nested values ({kind}), not one value per "
                    f"row; an event table needs one event, number or category per cell: flatten the "
                    f"column first (e.g. pandas explode or json_normalize) or map another one"
                )
        text = (pa.types.is_string, pa.types.is_large_string)
        categories = _category_columns(columns)
        dictionary = [
            name
            for name in usecols
            if header[name] in categories and any(is_text(schema.field(name).type) for is_text in text)
        ]
        table = _binary_as_text(
            pq.read_table(path, columns=usecols, read_dictionary=dictionary), header, source
        )
        df = table.to_pandas(ignore_metadata=True).rename(columns=header)
    except MemoryError:  # pa.ArrowMemoryError too: the CLI names the settings to lower
        raise
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{source}: cannot read Parquet ({first}); check that the file is a complete Parquet file"
        ) from exc
    if len(df) == 0:
        raise DataError(f"{source}: no data rows; the file has columns but no events")
    where = _Where(source, np.arange(1, len(df) + 1, dtype=np.int64), "row")
    return _build(df.reset_index(drop=True), columns, source, where)


def _binary_as_text(table: pa.Table, header: dict[str, str], source: str) -> pa.Table:
    """``table`` with its binary columns as UTF-8 text, as pandas would decode them, or a
    :class:`DataError` naming the first row whose bytes are not UTF-8."""
    binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)
    for i, field in enumerate(table.schema):
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if not any(is_binary(kind) for is_binary in binary):
            continue
        column = table.column(i)
        try:
            text = column.cast(pa.large_string() if pa.types.is_large_binary(kind) else pa.string())
        except pa.ArrowInvalid:  # the bytes are not UTF-8: find the row to name
            row, value, at = next(
                (r, v, at)
                for r, v in enumerate(column.to_pylist())
                if v is not None and (at := _first_non_utf8(v)) is not None
            )
            bad, name = value[at], header.get(field.name, field.name)
            raise DataError(
                f"{source}: row {row + 1}, column {name!r}: bytes {_show(value)} "
                f"are not UTF-8 text (byte 0x{bad:02x}); store the column as UTF-8 strings (pandas: "
                f"df[col] = df[col].str.decode('latin-1'), or the encoding it was written in)"
            ) from None
        table = table.set_column(i, field.name, text)
    return table


def _first_non_utf8(value: bytes) -> int | None:
    """Where ``value`` stops being UTF-8 (None: it is UTF-8 throughout)."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def write_table(table: EventTable, path: str | Path) -> Path:
    """Write the canonical columns of ``table``.

    Parquet when the suffix is ``.parquet``; tab-separated for ``.tsv`` /
    ``.tsv.gz``; CSV otherwise (gzip if the name ends in ``.gz``). Read it back
    with ``read_table(path, canonical_columns(table))`` (or :data:`CANONICAL`
    for tables without features and timestamps). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = table.frame[column_order(table.frame, table.numeric, table.context)]
    name = path.name.lower()
    if not name.endswith(".parquet") and not table.time_ordered:
        positions = frame[ORDER].to_numpy(np.float64)
        whole = np.isfinite(positions) & (positions == np.round(positions)) & (np.abs(positions) < 2.0**53)
        if whole.all():
            frame = frame.assign(**{ORDER: positions.astype(np.int64)})  # 17, not 17.0, in text
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    elif name.endswith((".tsv", ".tsv.gz")):
        # TSV holds every value as it is, quotes too (read_table reads it so): no value may hold a
        # tab or a line break
        for col in frame.columns:
            values = frame[col]
            if pd.api.types.is_numeric_dtype(values.dtype):
                continue
            if isinstance(values.dtype, pd.CategoricalDtype):  # each distinct value once
                values = pd.Series(values.cat.categories)
            text = values.astype(str)
            bad = text.str.contains("[\t\r\n]", regex=True).to_numpy(dtype=bool)
            if bad.any():
                raise DataError(
                    f"{table.source}: column {col!r} holds {_show(text.iloc[int(np.flatnonzero(bad)[0])])}, "
                    f"with a tab or line break, which a TSV file cannot hold; write CSV or Parquet"
                )
        frame.to_csv(
            path,
            index=False,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            compression="gzip" if name.endswith(".gz") else None,
        )
    else:
        frame.to_csv(path, index=False, compression="gzip" if name.endswith(".gz") else None)
    logger.debug("wrote %d events of %s to %s", len(frame), table.source, path)
    return path
