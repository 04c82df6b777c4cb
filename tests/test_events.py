"""Tests for event tables: the model (common.events), reading and writing
(common.tableio) and sessionize (common.sessions)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from common.errors import ConfigError, DataError
from common.events import (
    CANONICAL,
    EVENT,
    GAP,
    MISSING,
    ORDER,
    SEQUENCE,
    ColumnMap,
    EventTable,
    as_text,
    canonical_columns,
    take_rows,
    text_codes,
)
from common.sessions import sessionize
from common.tableio import clean_header, from_frame, read_table, write_table

USER_MAP = ColumnMap(sequence="user", event="action", order="ts", numeric=("bytes",), context=("device",))


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def user_csv(tmp_path: Path) -> Path:
    """Two users, rows out of order, one anomalous row, one attack type."""
    return _write(
        tmp_path / "events.csv",
        "user,ts,action,bytes,device,label,attack_type\n"
        "u2,2024-01-01T00:00:10Z,login,5,pc,0,\n"
        "u1,2024-01-01T00:01:00Z,close,3,phone,1,exfil\n"
        "u1,2024-01-01T00:00:00Z,open,1,phone,0,\n"
        "u2,2024-01-01T00:00:00Z,start,1,pc,normal,\n"
        "u1,2024-01-01T00:00:30Z,read,2,phone,false,\n",
    )


# --------------------------------------------------------------------------- #
# Grouping, ordering, features
# --------------------------------------------------------------------------- #


def test_grouping_sorts_by_sequence_then_time(user_csv: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    assert table.time_ordered and table.has_labels and table.source == str(user_csv)
    assert table.numeric == ("bytes", GAP)
    assert table.context == ("device",)
    assert list(table.frame.columns) == [
        "sequence", "order", "event", "bytes", GAP, "device", "label", "attack_type",
    ]  # fmt: skip
    assert table.frame["order"].dtype == np.float64
    assert table.frame["label"].dtype == np.int8
    g = table.grouped()
    assert g is table.grouped()  # cached
    assert list(g.ids) == ["u1", "u2"]
    assert g.offsets.dtype == np.int64 and list(g.offsets) == [0, 3, 5]
    assert list(g.events) == ["open", "read", "close", "start", "login"]
    assert g.numeric.shape == (5, 2) and g.numeric.dtype == np.float64
    assert g.context.shape == (5, 1) and g.context[0, 0] == "phone"
    assert g.labels is not None and list(g.labels) == [1, 0]
    assert g.attack_types is not None and list(g.attack_types) == ["exfil", ""]
    assert len(table) == 2 and table.n_events == 5 and list(g.lengths) == [3, 2]


def test_text_codes_match_astype_str_row_for_row() -> None:
    values = np.array(["b", 1, "a", "1", np.nan, 2.5, "b"], dtype=object)
    codes, texts = text_codes(values)
    assert codes.dtype == np.int64 and texts.dtype == object
    assert texts[codes].tolist() == values.astype(str).tolist()
    assert as_text(values).tolist() == values.astype(str).tolist()
    empty_codes, empty_texts = text_codes(np.array([], dtype=object))
    assert len(empty_codes) == 0 and len(empty_texts) == 0


def test_grouped_tokens_are_one_object_per_distinct_value() -> None:
    """An Arrow-backed column would otherwise give one new ``str`` per row (about 50 bytes each)."""
    n = 3000
    frame = pd.DataFrame(
        {
            "s": np.repeat([f"s{i}" for i in range(30)], n // 30),
            "e": np.tile(["open", "read", "close"], n // 3),
            "d": np.tile(["pc", "phone"], n // 2),
        }
    )
    table = from_frame(frame, ColumnMap(sequence="s", event="e", context=("d",)))
    # the frame holds each token once, as a category, and a code per row
    assert list(table.frame[EVENT].cat.categories) == ["close", "open", "read"]
    assert list(table.frame["d"].cat.categories) == ["pc", "phone"]
    g = table.grouped()
    assert len({id(e) for e in g.events}) == 3 and all(type(e) is str for e in g.events)
    assert len({id(c) for c in g.context[:, 0]}) == 2
    assert g.events.tolist() == table.frame[EVENT].astype(str).tolist()
    assert g.ids.tolist() == sorted(f"s{i}" for i in range(30)) and list(g.lengths) == [n // 30] * 30


def test_take_gathers_whole_sequences_in_the_order_given(user_csv: Path) -> None:
    g = read_table(user_csv, USER_MAP).grouped()  # u1: open, read, close; u2: start, login
    t = g.take(np.array([1, 0]))
    assert list(t.ids) == ["u2", "u1"] and list(t.offsets) == [0, 2, 5]
    assert list(t.events) == ["start", "login", "open", "read", "close"]
    np.testing.assert_array_equal(t.numeric, np.concatenate([g.numeric[3:], g.numeric[:3]]))
    assert t.context[:, 0].tolist() == ["pc", "pc", "phone", "phone", "phone"]
    assert t.labels is not None and list(t.labels) == [0, 1]
    assert t.attack_types is not None and list(t.attack_types) == ["", "exfil"]
    assert (t.numeric_names, t.context_names) == (g.numeric_names, g.context_names)
    offsets, rows = take_rows(g.offsets, np.array([1, 0, 1]))  # a sequence may be taken twice
    assert offsets.tolist() == [0, 2, 5, 7] and rows.tolist() == [3, 4, 0, 1, 2, 3, 4]
    none = g.take(np.array([], dtype=np.int64))
    assert len(none) == 0 and none.n_events == 0 and list(none.offsets) == [0]
    assert none.numeric.shape == (0, 2) and none.context.shape == (0, 1)


def test_timestamps_become_epoch_seconds_and_gap_feature(user_csv: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    u1 = table.frame[table.frame["sequence"] == "u1"]
    assert u1["order"].iloc[0] == pd.Timestamp("2024-01-01T00:00:00Z").timestamp()
    assert list(table.frame[GAP]) == [0.0, 30.0, 30.0, 0.0, 10.0]


def test_file_order_and_numeric_positions(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "sequence_id,event,pos\nb,x,0\na,y,2\na,z,1\nb,w,1\n")
    by_file = read_table(path)  # order=None: file order within each sequence
    assert list(by_file.grouped().events) == ["y", "z", "x", "w"]
    assert not by_file.time_ordered and not by_file.has_labels and by_file.numeric == ()
    by_pos = read_table(path, ColumnMap(order="pos"))  # auto: numbers are positions
    assert list(by_pos.grouped().events) == ["z", "y", "x", "w"]
    assert GAP not in by_pos.frame.columns


def test_from_frame_accepts_typed_columns() -> None:
    df = pd.DataFrame(
        {
            "sid": [7, 7, 8],
            "ev": [3, 1, 2],
            "t": pd.to_datetime(["2024-01-01 00:00:05", "2024-01-01 00:00:00", "2024-01-01 00:00:00"]),
            "ok": [True, False, True],
        }
    )
    table = from_frame(df, ColumnMap(sequence="sid", event="ev", order="t", label="ok"))
    assert list(table.grouped().ids) == ["7", "8"]
    assert list(table.grouped().events) == ["1", "3", "2"]
    assert list(table.frame[GAP]) == [0.0, 5.0, 0.0]
    assert list(table.frame["label"]) == [0, 1, 1]


def test_mixed_timestamp_formats_and_epoch_seconds(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.csv",
        "sequence_id,event,ts\ns,a,2024-01-01 00:00:00\ns,b,2024-01-01T00:00:07+00:00\ns,c,2024-01-02\n",
    )
    table = read_table(path, ColumnMap(order="ts"))
    assert list(table.frame[GAP]) == [0.0, 7.0, 86400.0 - 7.0]
    # two of the three carry no zone while one does: read as UTC, and reported
    assert table.repairs == {"timestamps in 'ts' without a time zone, read as UTC": 2}
    epoch = _write(tmp_path / "p.csv", "sequence_id,event,t\ns,a,100.5\ns,b,100\n")
    timed = read_table(epoch, ColumnMap(order="t", time=True))
    assert timed.time_ordered and list(timed.frame[GAP]) == [0.0, 0.5]


@pytest.mark.parametrize(
    ("values", "assumed_utc"),
    [
        (["2024-01-01 10:00:00", "2024-01-01 10:00:05.250"], 0),  # none zoned: UTC by convention
        (["2024-01-01T10:00:00Z", "2024-01-01T12:00:05+02:00", "2024-01-01T05:00:06-0500"], 0),
        (["2024-01-01T10:00:00 UTC", "2024-01-01T12:00:05+02:00", "2024-01-01 10:00:06"], 1),
    ],
)
def test_a_mix_of_zoned_and_zone_less_timestamps_is_reported(
    tmp_path: Path, values: list[str], assumed_utc: int
) -> None:
    rows = "".join(f"s,e{i},{v}\n" for i, v in enumerate(values))
    table = read_table(_write(tmp_path / "e.csv", "sequence_id,event,ts\n" + rows), ColumnMap(order="ts"))
    key = "timestamps in 'ts' without a time zone, read as UTC"
    assert table.repairs.get(key, 0) == assumed_utc
    assert list(table.frame[EVENT]) == [f"e{i}" for i in range(len(values))]  # offsets honoured: in order


def test_repairs_are_counted_not_dropped(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.csv",
        "sequence_id,event,bytes,device\ns,a,1,pc\ns,b,,\n\ns,c,NaN,\n",
    )
    table = read_table(path, ColumnMap(numeric=("bytes",), context=("device",)))
    assert table.n_events == 3
    assert list(table.frame["device"]) == ["pc", MISSING, MISSING]
    assert np.isnan(table.frame["bytes"].iloc[1]) and np.isnan(table.frame["bytes"].iloc[2])
    assert table.repairs == {
        "missing numeric 'bytes'": 2,
        "missing context 'device'": 2,
        "blank lines skipped": 1,
    }
    # an infinity is no number a model can scale: kept as missing, counted on its own
    path = _write(tmp_path / "inf.csv", "sequence_id,event,bytes\ns,a,inf\ns,b,-1e999\ns,c,\ns,d,4\n")
    table = read_table(path, ColumnMap(numeric=("bytes",)))
    assert np.isnan(table.frame["bytes"].iloc[:3]).all() and table.frame["bytes"].iloc[3] == 4
    assert table.repairs == {"infinite numeric 'bytes' (kept as missing)": 2, "missing numeric 'bytes'": 1}
    path = _write(tmp_path / "inf_order.csv", "sequence_id,event,pos\ns,a,1\ns,b,inf\n")
    with pytest.raises(DataError, match=r"line 3, column 'pos': infinite order value"):
        read_table(path, ColumnMap(order="pos", time=False))


def test_text_that_looks_like_numbers_stays_text(tmp_path: Path) -> None:
    """Ids "01" and "1", events "1.10" and "1.1", devices "007" and "7" are different values."""
    path = _write(
        tmp_path / "ids.csv",
        "sequence_id,event,device\n01,1.10,007\n1,1.1,7\n007,2,007\n7,2.0,x\nTrue,a,b\ntrue,a,b\n",
    )
    table = read_table(path, ColumnMap(context=("device",)))
    g = table.grouped()
    assert sorted(g.ids) == ["007", "01", "1", "7", "True", "true"]
    first = {str(i): k for k, i in enumerate(g.ids)}
    events = {i: str(g.events[g.offsets[k]]) for i, k in first.items()}
    devices = {i: str(g.context[g.offsets[k], 0]) for i, k in first.items()}
    assert (events["01"], events["1"], events["7"]) == ("1.10", "1.1", "2.0")
    assert (devices["01"], devices["1"]) == ("007", "7")


def test_surrounding_spaces_are_stripped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-written ``id, event`` file: header names and text values lose surrounding spaces,
    counted per column (and the values that became one); names that would then collide keep
    their own."""
    path = _write(
        tmp_path / "sp.csv",
        "sequence_id, event, device ,amount\n s,login , pc,1\ns, pay,pc, 2\nt,login,  ,3\n",
    )
    table = read_table(path, ColumnMap(numeric=("amount",), context=("device",)))
    g = table.grouped()
    assert sorted(map(str, g.ids)) == ["s", "t"]
    assert [str(e) for e in g.events] == ["login", "pay", "login"]
    assert list(table.frame["device"].cat.categories) == [MISSING, "pc"]
    assert list(table.frame["amount"]) == [1.0, 2.0, 3.0]
    assert table.repairs == {
        "surrounding spaces stripped from 'sequence_id'": 1,
        "surrounding spaces stripped from 'event'": 2,
        "surrounding spaces stripped from 'device'": 1,
        "missing context 'device'": 1,
    }
    merged_ids = [r.getMessage() for r in caplog.records if "read as one sequence" in r.getMessage()]
    assert len(merged_ids) == 1 and "1 sequence id(s) in 'sequence_id'" in merged_ids[0]
    assert "stripped (' s' and 's'); their events" in merged_ids[0]  # the ids themselves
    pq = tmp_path / "sp.parquet"
    pd.DataFrame({"sequence_id": ["a ", "a"], " event": ["x", " x"]}).to_parquet(pq)
    back = read_table(pq, ColumnMap())
    assert [str(e) for e in back.grouped().events] == ["x", "x"] and len(back.grouped()) == 1
    both = _write(tmp_path / "both.csv", "sequence_id,event,event \na,x,y\n")
    assert [str(e) for e in read_table(both, ColumnMap()).grouped().events] == ["x"]
    assert clean_header(["a", " a", " b", "  "]) == {"a": "a", " a": " a", " b": "b", "  ": "  "}


def test_a_column_map_may_name_a_column_with_its_spaces(tmp_path: Path) -> None:
    """Maps written before header names were stripped (' amount') still read the file, and a
    federation node's inferred map agrees with read_table's names."""
    from client.data import deployment_data, infer_columns

    path = _write(tmp_path / "train.csv", "sequence, event, amount, device\ns,a,1,pc\ns,b,2,pc\n")
    padded = read_table(path, ColumnMap("sequence", " event", numeric=(" amount",), context=(" device",)))
    assert list(padded.numeric) == [" amount"] and [str(e) for e in padded.grouped().events] == ["a", "b"]
    inferred = infer_columns(path)
    assert inferred.numeric == ("amount",) and inferred.context == ("device",)
    node = deployment_data(str(path))
    assert list(node.train.numeric) == ["amount"] and list(node.train.context) == ["device"]


def test_a_node_infers_parquet_columns_from_the_schema_as_read_table_reads_them(tmp_path: Path) -> None:
    """Types from the schema (no rows loaded), and a column pandas stored as the index counts."""
    from client.data import infer_columns

    frame = pd.DataFrame(
        {
            "sequence": ["s", "s"],
            "event": pd.Categorical(["a", "b"]),
            "amount": [1.5, 2.0],
            "count": pd.array([1, None], dtype="Int64"),
            "device": pd.Categorical(["pc", "pc"]),
            "label": [0, 0],
        }
    )
    path = tmp_path / "train.parquet"
    frame.set_index("sequence").to_parquet(path)
    inferred = infer_columns(path)
    assert inferred.sequence == "sequence" and inferred.label == "label"
    assert inferred.numeric == ("amount", "count") and inferred.context == ("device",)
    assert list(read_table(path, inferred).grouped().ids) == ["s"]
    # pandas' unnamed stored index (a filtered frame) is no feature
    frame.iloc[[0, 1, 1]].to_parquet(tmp_path / "filtered.parquet")  # index [0, 1, 1]: __index_level_0__
    assert infer_columns(tmp_path / "filtered.parquet").numeric == ("amount", "count")
    # CSV/TSV: numeric where read_table reads numbers ("NA" included), text otherwise; a TSV value
    # may start with a quote
    tsv = _write(
        tmp_path / "train.tsv",
        'sequence\tevent\tamount\tflag\turl\ns\ta\t1.5\tTrue\t"GET /x\ns\tb\tNA\tFalse\t/y\n',
    )
    inferred = infer_columns(tsv)
    assert inferred.numeric == ("amount",) and inferred.context == ("flag", "url")
    assert read_table(tsv, inferred).repairs == {"missing numeric 'amount'": 1}
    # a file it cannot read: the canonical map, and read_table names the problem
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read Parquet"):
        read_table(broken, infer_columns(broken))


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("event", [["open", "read"], ["close"]]),  # a list of events in one cell
        ("amount", [{"value": 1.0}, {"value": 2.0}]),  # a struct
        ("device", [{"k": "v"}, {"k": "w"}]),  # a map-like struct in a context column
    ],
)
def test_nested_parquet_columns_are_refused_by_name(
    tmp_path: Path, column: str, values: list[object]
) -> None:
    """One value per cell: a nested Parquet column is an error that names it, not its repr as text."""
    frame = pd.DataFrame(
        {"sequence_id": ["s", "s"], "event": ["open", "read"], "amount": [1.0, 2.0], "device": ["a", "b"]}
    )
    frame[column] = pd.Series(values, dtype=object)
    path = tmp_path / "nested.parquet"
    frame.to_parquet(path)
    columns = ColumnMap(numeric=("amount",), context=("device",))
    with pytest.raises(DataError, match=rf"nested\.parquet: column '{column}' holds nested values \("):
        read_table(path, columns)
    if column != "event":  # a nested column the map does not use is never read
        assert read_table(path, ColumnMap()).n_events == 2


def test_parquet_binary_and_duplicate_columns(tmp_path: Path) -> None:
    """Binary columns are read as UTF-8 text, or refused naming the row; a column named twice is
    refused by name (pyarrow would say it does not exist)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"sequence_id": [b"s", b"s"], "event": pa.array([b"open", "é".encode()])}), good)
    table = read_table(good)
    assert table.grouped().ids.tolist() == ["s"] and sorted(as_text(table.frame["event"])) == ["open", "é"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"sequence_id": ["s", "s", "s"], "event": [b"open", b"read", b"\xff"]}), bad)
    with pytest.raises(DataError, match=r"bad\.parquet: row 3, column 'event': bytes b'\\xff' are not UTF-8"):
        read_table(bad)
    twice = tmp_path / "twice.parquet"
    arrays = [pa.array(["s", "s"]), pa.array(["a", "b"]), pa.array(["t", "t"])]
    pq.write_table(pa.Table.from_arrays(arrays, names=["sequence_id", "event", "sequence_id"]), twice)
    with pytest.raises(DataError, match=r"twice\.parquet: the file names column 'sequence_id' twice"):
        read_table(twice)


def test_utf16_without_a_byte_order_mark_is_named(tmp_path: Path) -> None:
    """UTF-16 text decodes as UTF-8 (NULs and all): the header tells, and the error says what to pass."""
    path = tmp_path / "u16.csv"
    path.write_bytes("sequence_id,event\ns,a\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"u16\.csv: the header holds NUL characters; .*--encoding utf-16-le"):
        read_table(path)
    assert read_table(path, encoding="utf-16-le").n_events == 1


def test_day_month_order_is_decided_once_per_column(tmp_path: Path) -> None:
    columns = ColumnMap(order="ts")
    # 05/01 alone reads month first; 13/01 only day first: the whole column is day first
    path = _write(
        tmp_path / "dmy.csv", "sequence_id,event,ts\ns,x,05/01/2024\ns,y,13/01/2024\ns,z,06/01/2024\n"
    )
    table = read_table(path, columns)
    assert list(table.frame["event"].astype(str)) == ["x", "z", "y"]
    assert list(table.frame[GAP]) == [0.0, 86400.0, 7 * 86400.0]
    both = _write(tmp_path / "both.csv", "sequence_id,event,ts\ns,x,05/13/2024\ns,y,13/01/2024\n")
    orders = r"two day/month orders.*'05/13/2024' reads only month first.*'13/01/2024' only day first"
    with pytest.raises(DataError, match=orders):
        read_table(both, columns)
    # ISO 8601 first: the numeric dates after it are still read in one order (pandas alone read
    # 04/03 month first and 13/03 day first, and put 'view' after 'logout')
    mixed = _write(
        tmp_path / "mixed.csv",
        "sequence_id,event,ts\ns,login,2024-03-04T10:00:00Z\ns,view,04/03/2024 10:00:10\n"
        "s,logout,13/03/2024 10:00:20\n",
    )
    table = read_table(mixed, columns)
    assert list(table.frame["event"].astype(str)) == ["login", "view", "logout"] and table.day_first is True
    assert list(table.frame[GAP]) == [0.0, 10.0, 9 * 86400.0 + 10.0]
    for stamp in ("Dec 31 23:59:59", "23:59:59"):  # no year: a new year would sort first
        path = _write(tmp_path / "noyear.csv", f"sequence_id,event,ts\ns,x,{stamp}\n")
        with pytest.raises(DataError, match="has no full year"):
            read_table(path, columns)
    # nor after a value with a year (the parser would have filled in year 1)
    rows = "sequence_id,event,ts\ns,x,2024-03-04T10:00:00Z\ns,y,04/03 10:00\n"
    later = _write(tmp_path / "later.csv", rows)
    # (refused as year-less; older pandas cannot parse it at all)
    refused = r"line 3, column 'ts': (timestamp '04/03 10:00' has no full year|cannot parse timestamp)"
    with pytest.raises(DataError, match=refused):
        read_table(later, columns)


def test_a_column_of_dates_that_read_either_way(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = "sequence_id,event,ts\ns,x,01/03/2024\ns,y,02/03/2024\ns,z,02/02/2024\n"
    path = _write(tmp_path / "amb.csv", rows)
    with caplog.at_level(logging.WARNING, logger="common.tableio"):
        table = read_table(path, ColumnMap(order="ts"))
    assert list(table.frame["event"].astype(str)) == ["x", "z", "y"] and table.day_first is False  # saved
    assert "read month first ('01/03/2024' = 3 January)" in caplog.text and "--day-first" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.tableio"):
        table = read_table(path, ColumnMap(order="ts", day_first=True))
    assert list(table.frame["event"].astype(str)) == ["z", "x", "y"] and table.day_first is True
    assert not caplog.text
    with pytest.raises(DataError, match=r"line 3, column 'ts': date '13/01/2024' does not read month first"):
        read_table(
            _write(tmp_path / "d.csv", "sequence_id,event,ts\ns,x,01/01/2024\ns,y,13/01/2024\n"),
            ColumnMap(order="ts", day_first=False),
        )
    assert ColumnMap.from_dict({"order": "ts", "day_first": True}).day_first is True
    with pytest.raises(ConfigError, match="'day_first' must be true, false or null"):
        ColumnMap.from_dict({"day_first": "yes"})


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        # ISO 8601 of other shapes beside day-first dates keeps its own order (not year-day-month)
        (["2024-03-04 10:00", "2024-03-05T10:00:00Z", "13/03/2024 10:00"], ["03-04", "03-05", "03-13"]),
        (["13/03/2024", "2024-03-04"], ["03-13", "03-04"]),
        # no format pandas can name (12-hour times): still one order for the column
        (["13/03/2024 01:00 PM", "04/03/2024 01:00 PM"], ["03-13", "03-04"]),
    ],
)
def test_dates_of_several_shapes_keep_one_day_month_order(
    tmp_path: Path, stamps: list[str], expected: list[str]
) -> None:
    rows = "".join(f"s{i},e,{stamp}\n" for i, stamp in enumerate(stamps))
    table = read_table(_write(tmp_path / "d.csv", "sequence_id,event,ts\n" + rows), ColumnMap(order="ts"))
    read = pd.to_datetime(table.frame.sort_values("sequence")[ORDER], unit="s").dt.strftime("%m-%d")
    assert list(read) == expected and table.day_first is True


def test_subset_and_concat(user_csv: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    u2 = table.subset(["u2"])
    assert list(u2.grouped().ids) == ["u2"] and u2.n_events == 2
    assert u2.numeric == table.numeric
    both = EventTable.concat([u2, table.subset(["u1"])])
    pd.testing.assert_frame_equal(both.frame, table.frame)
    with pytest.raises(DataError, match="'nope'"):
        table.subset(["nope"])
    with pytest.raises(DataError, match="more than one table"):
        EventTable.concat([table, u2])


def _categories(table: EventTable, column: str) -> list[str]:
    values = table.frame[column]
    assert isinstance(values.dtype, pd.CategoricalDtype), f"{column} is {values.dtype}, not categorical"
    return list(values.cat.categories)


def test_text_columns_are_sorted_categories_in_use_on_every_path(user_csv: Path, tmp_path: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    assert _categories(table, EVENT) == ["close", "login", "open", "read", "start"]
    assert _categories(table, "device") == ["pc", "phone"]
    assert _categories(table, "attack_type") == ["", "exfil"]
    assert _categories(table, "sequence") == ["u1", "u2"]
    # a subset keeps only the categories its rows use
    u2 = table.subset(["u2"])
    assert _categories(u2, EVENT) == ["login", "start"] and _categories(u2, "attack_type") == [""]
    assert _categories(u2, "sequence") == ["u2"]
    # Parquet: plain text columns and dictionary-encoded ones (as write_table stores
    # categories) read back to the same frame as the CSV
    plain = tmp_path / "plain.parquet"
    frame = table.frame.copy()
    for col in ("sequence", EVENT, "device", "attack_type"):
        frame[col] = frame[col].astype(str)
    frame.to_parquet(plain, index=False)
    for path in (plain, write_table(table, tmp_path / "dict.parquet")):
        back = read_table(path, canonical_columns(table))
        pd.testing.assert_frame_equal(back.frame, table.frame)


def test_sequences_sort_by_their_text_whatever_the_order_of_the_categories() -> None:
    ids = pd.Categorical(["b", "b", "a"], categories=["b", "a"])  # a dictionary in file order
    frame = pd.DataFrame({"sequence_id": ids, "event": ["x", "y", "z"]})
    table = from_frame(frame)
    assert list(table.grouped().ids) == ["a", "b"] and list(table.grouped().events) == ["z", "x", "y"]
    assert _categories(table, "sequence") == ["a", "b"]


def test_concat_unites_the_categories(user_csv: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    no_attacks = EventTable(
        table.subset(["u2"]).frame.drop(columns="attack_type"),
        numeric=table.numeric,
        context=table.context,
        time_ordered=True,
    )
    both = EventTable.concat([table.subset(["u1"]), no_attacks])
    assert _categories(both, EVENT) == ["close", "login", "open", "read", "start"]
    assert list(both.frame["attack_type"]) == ["", "", "exfil", "", ""]  # u1 open, read, close; u2
    assert both.grouped().events.tolist() == table.grouped().events.tolist()


def test_parquet_categories_keep_missing_values_and_codes_of_numbers(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pd.DataFrame(
        {
            "sequence_id": ["s", "s", "s", "t"],
            "event": [3, 12, 3, 4],  # numbers as event ids
            "device": ["pc", None, " ", "pc"],
        }
    ).to_parquet(path)
    table = read_table(path, ColumnMap(context=("device",)))
    assert _categories(table, EVENT) == ["12", "3", "4"]
    assert list(table.frame["device"]) == ["pc", MISSING, MISSING, "pc"]
    assert table.repairs == {"missing context 'device'": 2}
    assert _categories(table, "device") == [MISSING, "pc"]  # the blank " " is gone with its rows


def test_numeric_dates_are_found_as_the_exact_pattern_finds_them() -> None:
    """The fast pre-filter (Arrow's RE2) misses no date that Python's ``re`` finds."""
    import re

    from common.tableio import _A_NUMERIC_DATE, _numeric_dates

    values = [
        "04/03/2024", " 4.3.24 10:00", "\t04/03/24", "\u00a004/03/2024", "٠٤/٠٣/2024", "04/03/2024\n",
        "1/2/2024", "12-31-99x", "2024-01-31T12:00:00Z", "Mon 04/03/2024", "123/4/2024", "04/03/2",
        "x12-3-2024", "",
    ]  # fmt: skip
    expected = [bool(re.search(_A_NUMERIC_DATE, v)) for v in values]
    assert expected[:8] == [True] * 8 and not any(expected[8:])
    for dtype in ("str", object):
        assert _numeric_dates(pd.Series(values, dtype=dtype)).tolist() == expected
        assert _numeric_dates(pd.Series(values[8:], dtype=dtype)).tolist() == expected[8:]  # ASCII only


# --------------------------------------------------------------------------- #
# Sessionize
# --------------------------------------------------------------------------- #


def test_sessionize_by_gap_carries_labels_and_recomputes_gap(user_csv: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    cut = sessionize(table, gap_seconds=20)
    g = cut.grouped()
    # u1 events at 0, 30, 60 s: every gap > 20 s -> three sessions; u2 at 0, 10 s -> one.
    assert list(g.ids) == ["u1#0", "u1#1", "u1#2", "u2#0"]
    assert g.labels is not None and list(g.labels) == [0, 0, 1, 0]
    assert g.attack_types is not None and g.attack_types[2] == "exfil"
    assert list(cut.frame[GAP]) == [0.0, 0.0, 0.0, 0.0, 10.0]
    assert len(sessionize(table, gap_seconds=45)) == 2


def test_sessionize_by_block(tmp_path: Path) -> None:
    rows = "".join(f"s,e{i},{i},{int(i == 3)}\n" for i in range(5))
    table = read_table(
        _write(tmp_path / "e.csv", "sequence_id,event,pos,label\n" + rows), ColumnMap(order="pos")
    )
    cut = sessionize(table, block_size=2)
    g = cut.grouped()
    assert list(g.ids) == ["s#0", "s#1", "s#2"]
    assert list(g.lengths) == [2, 2, 1]
    assert g.labels is not None and list(g.labels) == [0, 1, 0]


@pytest.mark.parametrize("cut", [{"gap_seconds": 5.0}, {"block_size": 3}])
def test_sessionize_names_each_session_by_entity_and_count(tmp_path: Path, cut: dict[str, Any]) -> None:
    """Ids ``entity#k``, k counting an entity's sessions in time order, sorted as text ("u#10"
    before "u#2"); rows keep their time order and their gaps restart at each session."""
    rng = np.random.default_rng(3)
    entities = ["u", "01", "1", "é x"]
    rows = []
    for e in entities:
        t = np.cumsum(rng.choice([1.0, 2.0, 9.0], size=40))
        rows += [f"{e},ev{int(v) % 3},2024-01-01T00:{int(v) // 60:02d}:{int(v) % 60:02d}Z\n" for v in t]
    order = rng.permutation(len(rows))
    path = _write(tmp_path / "s.csv", "sequence_id,event,ts\n" + "".join(rows[i] for i in order))
    table = read_table(path, ColumnMap(order="ts"))
    assert table.time_ordered
    out = sessionize(table, **cut)
    g = out.grouped()
    assert list(g.ids) == sorted(g.ids) and len(set(g.ids)) == len(g.ids)
    frame = out.frame
    for e in entities:
        mine = [i for i in g.ids if i.rsplit("#", 1)[0] == e]
        assert sorted(int(i.rsplit("#", 1)[1]) for i in mine) == list(range(len(mine)))
        firsts = [frame.loc[frame[SEQUENCE] == f"{e}#{k}", ORDER].min() for k in range(len(mine))]
        assert firsts == sorted(firsts)
    assert "u#10" in g.ids and list(g.ids).index("u#10") < list(g.ids).index("u#2")
    for i in range(len(g)):
        seq = frame.iloc[g.offsets[i] : g.offsets[i + 1]]
        assert seq[ORDER].is_monotonic_increasing
        assert seq[GAP].iloc[0] == 0.0
        assert np.allclose(seq[GAP].iloc[1:], np.diff(seq[ORDER].to_numpy()))
        if "gap_seconds" in cut:
            assert (seq[GAP] <= cut["gap_seconds"]).all()
        else:
            assert len(seq) <= cut["block_size"]


def test_sessionize_block_larger_than_any_stream(user_csv: Path) -> None:
    """A block size beyond the number of events (even beyond int64) keeps each entity whole."""
    table = read_table(user_csv, USER_MAP)
    for size in (len(table.frame), 10**20):
        assert list(sessionize(table, block_size=size).grouped().ids) == ["u1#0", "u2#0"]


def test_sessionize_arguments(user_csv: Path, tmp_path: Path) -> None:
    table = read_table(user_csv, USER_MAP)
    with pytest.raises(ConfigError, match="exactly one"):
        sessionize(table)
    with pytest.raises(ConfigError, match="block_size"):
        sessionize(table, block_size=0)
    untimed = read_table(_write(tmp_path / "p.csv", "sequence_id,event\ns,a\n"))
    with pytest.raises(DataError, match="needs timestamps"):
        sessionize(untimed, gap_seconds=5)


# --------------------------------------------------------------------------- #
# Column-map files
# --------------------------------------------------------------------------- #


def test_column_map_from_json_and_toml(tmp_path: Path) -> None:
    spec = {"sequence": "user", "event": "action", "order": "ts", "numeric": ["bytes"], "context": ["device"]}
    js = tmp_path / "map.json"
    js.write_text(json.dumps(spec))
    assert ColumnMap.from_file(js) == USER_MAP
    toml = tmp_path / "map.toml"
    toml.write_text('[columns]\nsequence = "user"\nevent = "action"\norder = "ts"\ntime = true\n')
    assert ColumnMap.from_file(toml) == ColumnMap(sequence="user", event="action", order="ts", time=True)


def test_column_map_unknown_and_mistyped_keys(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"sequence": "u", "evnet": "a"}))
    with pytest.raises(ConfigError, match="unknown column map key 'evnet'"):
        ColumnMap.from_file(path)
    path.write_text(json.dumps({"numeric": "bytes"}))
    with pytest.raises(ConfigError, match="'numeric' must be a list"):
        ColumnMap.from_file(path)
    path.write_text(json.dumps({"time": "yes"}))
    with pytest.raises(ConfigError, match="'time'"):
        ColumnMap.from_file(path)
    # one column in two roles: the label as a feature would hand the model the answer
    with pytest.raises(ConfigError, match="'is_attack' is the label column and also listed as a feature"):
        ColumnMap(label="is_attack", numeric=("is_attack",))
    with pytest.raises(ConfigError, match="'sid' is both the sequence and the event column"):
        ColumnMap(sequence="sid", event="sid")


# --------------------------------------------------------------------------- #
# Round trip
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.csv.gz", "out.tsv"])
def test_write_read_round_trip(user_csv: Path, tmp_path: Path, name: str) -> None:
    table = read_table(user_csv, USER_MAP)
    path = write_table(table, tmp_path / "sub" / name)
    back = read_table(path, canonical_columns(table))
    pd.testing.assert_frame_equal(back.frame, table.frame)
    assert back.numeric == table.numeric and back.context == table.context and back.time_ordered


def test_canonical_map_round_trip(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path / "e.csv", 'sequence_id,event,label\ns,NA,0\ns,"a,b",1\nt,x,0\n'))
    for name in ("c.csv", "c.parquet"):
        back = read_table(write_table(table, tmp_path / name), CANONICAL)
        pd.testing.assert_frame_equal(back.frame, table.frame)
    assert list(table.grouped().events) == ["NA", "a,b", "x"]


# --------------------------------------------------------------------------- #
# Errors: one test per class, each message names file / line / column
# --------------------------------------------------------------------------- #


def test_error_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_table(path)


def test_error_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"events\.json: unsupported file type"):
        read_table(_write(tmp_path / "events.json", "{}"))


def test_error_empty_file_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_table(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match=r"header\.csv: no data rows"):
        read_table(_write(tmp_path / "header.csv", "sequence_id,event\n"))
    df = pd.DataFrame({"sequence_id": pd.Series([], dtype=str), "event": pd.Series([], dtype=str)})
    df.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"empty\.parquet: no data rows"):
        read_table(tmp_path / "empty.parquet")


def test_error_missing_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "sequence_id,action\ns,a\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    msg = str(err.value)
    assert "e.csv" in msg and "missing column 'event'" in msg and "'sequence_id', 'action'" in msg
    assert "\n" not in msg


def test_error_unparseable_timestamp(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "sequence_id,event,ts\ns,a,2024-01-01T00:00:00\ns,b,yesterday\n")
    with pytest.raises(DataError) as err:
        read_table(path, ColumnMap(order="ts"))
    msg = str(err.value)
    assert msg.startswith(str(path)) and "line 3" in msg and "column 'ts'" in msg and "'yesterday'" in msg


def test_error_text_in_numeric_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "sequence_id,event,bytes\ns,a,1\ns,b,2\ns,c,lots\n")
    with pytest.raises(DataError) as err:
        read_table(path, ColumnMap(numeric=("bytes",)))
    msg = str(err.value)
    assert "e.csv" in msg and "line 4" in msg and "column 'bytes'" in msg and "'lots'" in msg


def test_error_wrong_encoding_says_pass_encoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv.gz", "", "utf-8")
    path.write_bytes(gzip.compress("sequence_id,event\ns,a\ns,caf\u00e9\n".encode("latin-1")))
    with pytest.raises(DataError) as err:
        read_table(path)
    msg = str(err.value)
    assert "e.csv.gz" in msg and "line 3" in msg and "--encoding" in msg and "latin-1" in msg
    table = read_table(path, encoding="latin-1")
    assert list(table.grouped().events) == ["a", "caf\u00e9"]


def test_error_unknown_encoding_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="klingon"):
        read_table(_write(tmp_path / "e.csv", "sequence_id,event\ns,a\n"), encoding="klingon")


def test_error_missing_sequence_id(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "sequence_id,event\ns,a\n,b\n")
    with pytest.raises(DataError, match=r"e\.csv: line 3, column 'sequence_id': missing sequence id"):
        read_table(path)


def test_error_missing_event(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.tsv", "sequence_id\tevent\ns\ta\ns\t \n")
    with pytest.raises(DataError, match=r"e\.tsv: line 3, column 'event': missing event"):
        read_table(path)


def test_error_bad_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "sequence_id,event,label\ns,a,anomaly\ns,b,maybe\n")
    with pytest.raises(DataError, match=r"e\.csv: line 3, column 'label': label 'maybe'"):
        read_table(path)


def test_error_a_value_past_the_header_names_its_line(tmp_path: Path) -> None:
    # an unquoted comma inside a value shifts the row; pandas would drop the last field unseen
    header = "sequence_id,event,device,channel\n"
    rows = 's,login,pc,web\ns,"pay, card",pc,web\ns,login,iPhone, 12,web\n'
    for name in ("e.csv", "e.csv.gz"):
        path = _write(tmp_path / name, header + rows)
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress((header + rows).encode()))
        with pytest.raises(DataError, match=r"e\.csv(\.gz)?: line 4 has 5 fields but the header names 4 "):
            read_table(path, ColumnMap(context=("device",)))
    cases = {
        # the first row too (pandas would have taken its first field as the index), in a TSV
        "f.tsv": ("sequence_id\tevent\ns\ta\tx\ns\tb\n", "line 2 has 3 fields .* cannot hold a tab"),
        # quoted values spanning lines: the line is the file's, where the row starts
        "m.csv": ('sequence_id,event\ns,"a\nb"\n\ns,c,d\ns,e,"x\ny"\n', "line 5 has 3 fields"),
        "s.csv": ('sequence_id,event\ns,a\ns,b,"x\ny\nz"\n', "line 3 has 3 fields"),
        # a header name holding a line break is one row, not two
        "q.csv": ('sequence_id,event,"note\n"\ns,a,1\ns,b,2,3\ns,"c",4\n', "line 4 has 4 fields"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(DataError, match=message):
            read_table(_write(tmp_path / name, text))
    # compression from the name whatever its case (Arrow's own guess would read the gzip bytes)
    shouting = tmp_path / "WIDE.CSV.GZ"
    shouting.write_bytes(gzip.compress((header + rows).encode("latin-1")))
    with pytest.raises(DataError, match=r"WIDE\.CSV\.GZ: line 4 has 5 fields"):
        read_table(shouting, ColumnMap(context=("device",)), encoding="latin-1")


def test_the_field_count_check_reads_with_the_csv_module_what_arrow_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    from common import tableio

    def refuse(*_: object) -> int:
        raise pa.ArrowInvalid("straddling object straddles two block boundaries")

    monkeypatch.setattr(tableio, "_arrow_field_counts", refuse)
    padded = _write(tmp_path / "p.csv", 'sequence_id,event\ns,a,\ns,"b,c", \ns,d\n')
    assert read_table(padded).repairs == {"rows with empty fields past the header (ignored)": 2}
    long = "x" * 200_000  # over the csv module's default field limit
    bad = _write(tmp_path / "b.csv", f'sequence_id,event,note\ns,a,{long}\ns,"a\nb",c\n\ns,c,d,e\n')
    with pytest.raises(DataError, match=r"b\.csv: line 6 has 4 fields but the header names 3"):
        read_table(bad)


@pytest.mark.parametrize("rows", [2, 1030, 3000])
def test_empty_fields_past_the_header_are_counted_and_ignored(
    tmp_path: Path, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "1,a," under "id,event": an export habit; past 1,024 such rows Arrow reads them as columns
    from common import tableio

    def no_slow_path(*_: object) -> int:
        raise AssertionError("rows with empty fields went to the csv module")

    body = "".join(f"s{i % 7},e{i % 3},\n" if i % 5 else f"s{i % 7},e{i % 3}, ,\n" for i in range(rows))
    path = _write(tmp_path / "e.csv", "sequence_id,event\n" + body + "t,x\n")
    with monkeypatch.context() as patched:
        patched.setattr(tableio, "_python_field_counts", no_slow_path)
        table = read_table(path)
    assert len(table.frame) == rows + 1
    assert table.repairs == {"rows with empty fields past the header (ignored)": rows}
    late = _write(tmp_path / "late.csv", "sequence_id,event\n" + body + "t,x,oops\n")
    with pytest.raises(DataError, match=rf"line {rows + 2} has 3 fields .*'t,x,oops'"):
        read_table(late)
    # rows short of fields (read as missing values) among them: counted alike
    short = "".join(f"s{i},e\n" if i % 3 else f"s{i},e,x\n" for i in range(rows))
    mixed = _write(tmp_path / "mixed.csv", "sequence_id,event,extra\n" + short + body.replace(",\n", ",,\n"))
    assert read_table(mixed).repairs == {"rows with empty fields past the header (ignored)": rows}


def test_a_header_name_of_any_length(tmp_path: Path) -> None:
    from common.tableio import peek_columns

    path = _write(tmp_path / "e.csv", '"' + "x" * 200_000 + '",sequence_id,event\n1,s,a\n')
    assert list(peek_columns(path) or ()) == ["x" * 200_000, "sequence_id", "event"]
    assert list(read_table(path).grouped().events) == ["a"]


def test_error_parquet_rows_are_numbered(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pd.DataFrame({"sequence_id": ["s", "s"], "event": ["a", None]}).to_parquet(path)
    with pytest.raises(DataError, match=r"e\.parquet: row 2, column 'event': missing event"):
        read_table(path)


def test_running_out_of_memory_reading_parquet_is_not_called_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    pd.DataFrame({"sequence_id": ["s"], "event": ["a"]}).to_parquet(path)

    def exhausted(*_: object, **__: object) -> None:
        raise pa.ArrowMemoryError("malloc of size 1099511627776 failed")

    monkeypatch.setattr(pq, "read_table", exhausted)
    with pytest.raises(MemoryError, match="malloc of size"):  # the CLI's out-of-memory line
        read_table(path)


def test_parquet_reads_only_the_mapped_columns(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    frame = pd.DataFrame(
        {
            "user": ["u1", "u1", "u2"],
            "action": ["open", "read", "open"],
            "notes": [[1, 2], [], [3]],  # a list column: never turned into pandas objects
            "label": [0, 0, 1],
        }
    )
    frame.set_index("user").to_parquet(path)  # 'user' is stored as the pandas index
    table = read_table(path, ColumnMap(sequence="user", event="action"))
    assert list(table.frame.columns) == ["sequence", "order", "event", "label"]
    g = table.grouped()
    assert list(g.ids) == ["u1", "u2"] and g.labels is not None and list(g.labels) == [0, 1]
    with pytest.raises(DataError, match=r"missing column 'device' \(columns present: 'action', 'notes', "):
        read_table(path, ColumnMap(sequence="user", event="action", context=("device",)))


def test_csv_reads_only_the_mapped_columns_and_still_tells_blank_lines(tmp_path: Path) -> None:
    header = "sequence_id,note,event,extra\n"
    path = _write(tmp_path / "wide.csv", header + "s,x,a,1\n\ns,,b,\n,,,\n   \n \t\n")
    table = read_table(path)
    assert list(table.frame.columns) == ["sequence", "order", "event"]
    # a line of spaces (or tabs) alone is blank as well
    assert list(table.grouped().events) == ["a", "b"] and table.repairs == {"blank lines skipped": 4}
    narrow = _write(tmp_path / "narrow.csv", "sequence_id,event\ns,a\n  \ns,b\n")
    assert read_table(narrow).repairs == {"blank lines skipped": 1}
    # a line with an id and nothing else is no blank line
    with pytest.raises(DataError, match=r"line 3, column 'event': missing event"):
        read_table(_write(tmp_path / "idonly.csv", "sequence_id,event\ns,a\ns\n"))
    # empty in every mapped column but not in the others: not a blank line, a row without its id
    path = _write(tmp_path / "half.csv", header + "s,x,a,1\n,y,,2\n")
    with pytest.raises(DataError, match=r"line 3, column 'sequence_id': missing sequence id"):
        read_table(path)
    with pytest.raises(DataError, match=r"missing column 'device' \(columns present: 'sequence_id', 'note'"):
        read_table(path, ColumnMap(context=("device",)))


def test_tsv_values_are_taken_as_they_are_and_headers_name_each_column_once(tmp_path: Path) -> None:
    # a TSV value that starts with a quote is text; it does not swallow the lines after it
    path = _write(tmp_path / "q.tsv", 'sequence_id\tevent\na\t"GET /x\na\tlogin\nb\tlogout"\nb\tok\n')
    table = read_table(path, ColumnMap())
    assert [str(e) for e in table.grouped().events] == ['"GET /x', "login", 'logout"', "ok"]
    back = read_table(write_table(table, tmp_path / "out.tsv"), CANONICAL)
    assert [str(e) for e in back.grouped().events] == ['"GET /x', "login", 'logout"', "ok"]
    tab = from_frame(pd.DataFrame({"sequence_id": ["a"], "event": ["x\ty"]}), ColumnMap())
    with pytest.raises(DataError, match="tab or line break"):
        write_table(tab, tmp_path / "tab.tsv")
    semi = _write(tmp_path / "semi.csv", "sequence_id;event\na;x\n")
    with pytest.raises(
        DataError, match=r"header is one column, 'sequence_id;event': the file looks separated by ';'"
    ):
        read_table(semi)
    dup = _write(tmp_path / "dup.csv", "sequence_id,event,event\na,x,y\n")
    with pytest.raises(DataError, match="header names column 'event' twice"):
        read_table(dup, ColumnMap())
    with pytest.raises(ConfigError, match="'gap_seconds' has the name of the time-gap feature"):
        ColumnMap(order="ts", context=("gap_seconds",))


def test_integer_positions_beyond_float_precision_keep_their_order(tmp_path: Path) -> None:
    """Nanosecond epochs as positions: float64 would make neighbours equal and keep file order."""
    path = _write(
        tmp_path / "ns.csv",
        "sequence_id,event,pos\ns,second,1700000000000000100\ns,first,1700000000000000000\n"
        "s,third,1700000000000000200\n",
    )
    table = read_table(path, ColumnMap(order="pos", time=False))
    assert [str(e) for e in table.grouped().events] == ["first", "second", "third"]
    pq = tmp_path / "ns.parquet"
    pd.read_csv(path).to_parquet(pq)  # int64 in Parquet: the same
    assert [str(e) for e in read_table(pq, ColumnMap(order="pos", time=False)).grouped().events] == [
        "first",
        "second",
        "third",
    ]


def test_epoch_numbers_are_checked_for_their_unit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    timed = ColumnMap(sequence="user", event="action", order="ts", time=True)
    ms = _write(tmp_path / "ms.csv", "user,action,ts\nu,a,1735718400000\nu,b,1735718460000\n")
    with pytest.raises(
        DataError,
        match=r"ms.csv: line 2, column 'ts': '1735718400000' is too large for epoch seconds .*"
        r"epoch milliseconds: divide the column by 1,000",
    ):
        read_table(ms, timed)
    ns = _write(tmp_path / "ns.csv", "user,action,ts\nu,a,1735718400000000000\n")
    with pytest.raises(DataError, match="epoch nanoseconds: divide the column by 1,000,000,000"):
        read_table(ns, timed)
    # numbers that are dates (20251231) read as seconds fall in 1970: read, with a warning
    dates = _write(tmp_path / "dates.csv", "user,action,ts\nu,a,20251231\nu,b,20260101\n")
    with caplog.at_level(logging.WARNING, logger="common.tableio"):
        assert read_table(dates, timed).time_ordered
    assert "every value falls before 1973 ('20251231' at line 2 is 1970-08-23" in caplog.text
    # epoch seconds read as positions (no --time): said, since the gaps between them are lost
    caplog.clear()
    seconds = _write(tmp_path / "s.csv", "user,action,ts\nu,a,1735718400\nu,b,1735718460\n")
    with caplog.at_level(logging.WARNING, logger="common.tableio"):
        table = read_table(seconds, ColumnMap(sequence="user", event="action", order="ts"))
    assert not table.time_ordered and GAP not in table.numeric
    assert "read as positions (only their order counts); they look like epoch seconds" in caplog.text
    # ... and a model remembers it read them as positions, so a timestamped file is not taken for its data
    as_fitted = ColumnMap(sequence="user", event="action", order="ts").as_read(table)
    assert as_fitted.time is False
    iso = _write(tmp_path / "iso.csv", "user,action,ts\nu,a,2025-01-01T00:00:00Z\n")
    with pytest.raises(
        DataError, match=r"column 'ts' holds timestamps \('2025-01-01T00:00:00Z'\), but time = false"
    ):
        read_table(iso, as_fitted)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.tableio"):
        positions = _write(tmp_path / "pos.csv", "user,action,ts\nu,a,1\nu,b,2\n")
        read_table(positions, ColumnMap(sequence="user", event="action", order="ts"))
    assert "look like epoch" not in caplog.text  # small positions are just positions


def test_undecodable_files_say_what_they_are(tmp_path: Path) -> None:
    text = "sequence_id,event\na,login\n"
    utf16 = _write(tmp_path / "u16.csv", text, "utf-16")  # with a byte-order mark
    with pytest.raises(DataError, match="UTF-16 byte-order mark: pass --encoding utf-16"):
        read_table(utf16)
    assert read_table(utf16, encoding="utf-16").n_events == 1
    bare = _write(tmp_path / "u16le.csv", text, "utf-16-le")
    with pytest.raises(DataError, match=r"u16le\.csv: cannot be read as utf-16 .*--encoding utf-16-le"):
        read_table(bare, encoding="utf-16")
    packed = tmp_path / "packed.csv"
    packed.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=r"gzip-compressed: name it packed\.csv\.gz"):
        read_table(packed)
    windows = _write(tmp_path / "w.csv", "sequence_id,event\na,caf\u00e9 \u20ac\n", "cp1252")
    with pytest.raises(DataError, match=r"line 2 \(byte 0xe9\) is not valid utf-8; .*--encoding cp1252"):
        read_table(windows)
    assert [str(e) for e in read_table(windows, encoding="cp1252").grouped().events] == ["caf\u00e9 \u20ac"]
    tabbed = _write(tmp_path / "tabbed.csv", "sequence_id\tevent\na\tx\n")
    with pytest.raises(DataError, match=r"looks separated by '\\t'; name it \.tsv"):
        read_table(tabbed)


def test_column_map_files_in_other_encodings(tmp_path: Path) -> None:
    bom = tmp_path / "map.toml"
    bom.write_bytes(b'\xef\xbb\xbfsequence = "user"\nevent = "action"\n')  # as Windows Notepad saves it
    assert ColumnMap.from_file(bom).sequence == "user"
    latin = tmp_path / "map.json"
    latin.write_bytes('{\n "sequence": "cl\u00e9",\n "event": "e"\n}\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"map.json: line 2 is not valid UTF-8 \(byte 0xe9\); save"):
        ColumnMap.from_file(latin)


def test_float_categories_read_the_same_in_every_file(tmp_path: Path) -> None:
    columns = ColumnMap(context=("tier",))
    whole = pd.DataFrame({"sequence_id": ["a", "a"], "event": ["x", "y"], "tier": [1.0, 2.0]})
    mixed = whole.assign(tier=[1.0, 2.5])
    whole.to_parquet(tmp_path / "whole.parquet")
    mixed.to_parquet(tmp_path / "mixed.parquet")
    assert list(read_table(tmp_path / "whole.parquet", columns).frame["tier"]) == ["1", "2"]
    assert list(read_table(tmp_path / "mixed.parquet", columns).frame["tier"]) == ["1", "2.5"]


def test_excel_na_is_a_missing_number(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "sequence_id,event,amount\na,x,#N/A\na,y,2.5\n")
    table = read_table(path, ColumnMap(numeric=("amount",)))
    assert np.isnan(table.frame["amount"].iloc[0]) and table.frame["amount"].iloc[1] == 2.5


def test_labels_written_as_other_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.csv", "sequence_id,event,label\na,x,1.00\na,y,1\nb,z,0.0\n")
    assert read_table(path, ColumnMap()).frame["label"].tolist() == [1, 1, 0]
    bad = _write(tmp_path / "b.csv", "sequence_id,event,label\na,x,2.0\n")
    with pytest.raises(DataError, match=r"line 2, column 'label': label '2.0' is not understood"):
        read_table(bad, ColumnMap())
