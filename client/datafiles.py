"""How the ``seqwatch`` CLI reads an event file: column detection, flags, the saved layout.

Without flags the columns are detected from the header (``sequence`` or
``sequence_id``, ``event``, ``order`` or ``timestamp``, ``label``), which reads
the files ``seqwatch convert`` writes. ``fit`` records how it read the training
data in the model directory (:data:`LAYOUT_FILE`); ``score``, ``explain`` and
``report`` use that as their default, so the same flags need not be repeated.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.console import Console
from common.config import finite_number
from common.errors import ConfigError, DataError, ModelFileError

if TYPE_CHECKING:
    from common.events import ColumnMap, EventTable

log = logging.getLogger(__name__)

LAYOUT_FILE = "columns.json"
"""File in a model directory, written by ``seqwatch fit``: how the training data was read."""

COLUMN_FILES = ("columns.json", "columns.toml")
"""Column map files read from beside an event file (as a federation node reads its data-path)."""

SEQUENCE_CANDIDATES = ("sequence", "sequence_id")
"""Header names tried, in order, for the sequence-id column."""
EVENT_CANDIDATES = ("event",)
"""Header names tried for the event column."""
DEFAULT_ENCODING = "utf-8"
"""Text encoding of CSV/TSV files when neither --encoding nor the model names one."""
ORDER_CANDIDATES = ("order", "timestamp")
"""Header names tried for the order column (none found: file order)."""


@dataclass(frozen=True)
class DataLayout:
    """How an event file is read: its column map plus optional sessionization."""

    columns: ColumnMap
    session_gap: float | None = None
    block_size: int | None = None
    #: Text encoding the CSV/TSV file was read in (None: not recorded, read as UTF-8).
    encoding: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``fit`` writes to :data:`LAYOUT_FILE`)."""
        from common.events import DATA_LAYOUT_FORMAT

        return {
            "format": DATA_LAYOUT_FORMAT,
            "format_version": 1,
            "columns": self.columns.to_dict(),
            "session_gap": self.session_gap,
            "block_size": self.block_size,
            "encoding": self.encoding,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> DataLayout:
        """Inverse of :meth:`to_dict`.

        Raises:
            ModelFileError: the data is not a layout written by ``seqwatch fit``.
        """
        from common.events import DATA_LAYOUT_FORMAT, ColumnMap

        if not isinstance(data, dict) or data.get("format") != DATA_LAYOUT_FORMAT:
            raise ModelFileError(
                f"{source}: not a seqwatch data layout file; delete it or re-run 'seqwatch fit'"
            )
        version = data.get("format_version", 1)
        if isinstance(version, bool) or version != 1:
            raise ModelFileError(
                f"{source}: data layout format_version {version!r} is not one this seqwatch reads (1); "
                f"re-run 'seqwatch fit' with this version"
            )
        gap, block, encoding = data.get("session_gap"), data.get("block_size"), data.get("encoding")
        if gap is not None and not (finite_number(gap) and gap > 0):
            raise ModelFileError(
                f"{source}: key 'session_gap' must be a number of seconds > 0, or null for none; "
                f"got {gap!r}: fix it or re-run 'seqwatch fit'"
            )
        if block is not None and not (finite_number(block) and block == int(block) and block > 0):
            raise ModelFileError(
                f"{source}: key 'block_size' must be a whole number of events > 0, or null for none; "
                f"got {block!r}: fix it or re-run 'seqwatch fit'"
            )
        if gap is not None and block is not None:
            raise ModelFileError(
                f"{source}: keys 'session_gap' and 'block_size' are both set; keep one (the other null)"
            )
        if encoding is not None and not isinstance(encoding, str):
            raise ModelFileError(f"{source}: key 'encoding' must be text such as \"utf-8\", got {encoding!r}")
        try:
            columns = ColumnMap.from_dict(data["columns"], source=source)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFileError(f"{source}: damaged data layout ({exc}); re-run 'seqwatch fit'") from exc
        return cls(
            columns,
            None if gap is None else float(gap),
            None if block is None else int(block),
            encoding,
        )


def layout_file(path: str | Path | None) -> DataLayout | None:
    """The data layout a column map file holds when ``seqwatch fit`` wrote it (a model's
    ``columns.json``: the column map and how the data was cut into sessions), else None (a plain
    column map, or no file; :meth:`ColumnMap.from_file` reports a file it cannot read).
    """
    import json

    from common.events import DATA_LAYOUT_FORMAT

    if path is None or Path(path).suffix.lower() != ".json":
        return None
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeError, ValueError):
        return None
    if not (isinstance(data, dict) and data.get("format") == DATA_LAYOUT_FORMAT):
        return None
    return DataLayout.from_dict(data, source=str(path))


def read_header(path: Path, encoding: str) -> list[str] | None:
    """Column names of an event file as ``read_table`` reads them (:func:`~common.tableio.clean_header`),
    or None when they cannot be read (``read_table`` then says why)."""
    from common.tableio import peek_columns

    columns = peek_columns(path, encoding, sample=0)
    return None if columns is None else list(columns)


def _pick(header: list[str] | None, candidates: Sequence[str | None]) -> str | None:
    """First candidate present in ``header`` (the first candidate at all when the header is unknown)."""
    names = [c for c in candidates if c]
    if header is None:
        return names[0] if names else None
    return next((c for c in names if c in header), None)


def _shown(header: list[str]) -> str:
    return ", ".join(repr(c) for c in header[:20]) + (", ..." if len(header) > 20 else "")


def beside_column_map(path: str | Path) -> Path | None:
    """The column map file beside ``path`` (:data:`COLUMN_FILES`, first found), or None."""
    folder = Path(path).parent
    return next((folder / n for n in COLUMN_FILES if (folder / n).is_file()), None)


def resolve_columns(
    path: str | Path,
    args: argparse.Namespace,
    *,
    saved: ColumnMap | None = None,
    features: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> ColumnMap:
    """The column map for ``path`` from the data-reading flags in ``args``.

    Precedence, per role: a flag (``--event-col`` ...), else the ``--columns``
    file when given (it replaces detection), else the map ``fit`` saved with
    the model (``saved``, when its column is in the file), else a column map
    beside the file (:func:`beside_column_map`, as a federation node reads its
    data; it replaces detection), else detection from the file's header.
    Feature columns default to ``saved``'s, else to ``features`` (the model's
    numeric and context feature names).

    Raises:
        ConfigError: an invalid map or ``--columns`` file.
        DataError: no sequence-id or event column could be found.
    """
    from common.events import GAP, LABEL, ORDER, ColumnMap

    path = Path(path)
    flags: dict[str, Any] = {
        "sequence": args.sequence_col,
        "event": args.event_col,
        "order": args.order_col,
        "time": args.time,
        "numeric": args.numeric_cols,
        "context": args.context_cols,
        "label": args.label_col,
        "day_first": args.day_first,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    columns_file = args.columns if args.columns is not None or saved is not None else beside_column_map(path)
    if columns_file is not None:
        base = ColumnMap.from_file(columns_file)
        return dataclasses.replace(base, **given) if given else base

    header = read_header(path, args.encoding)
    found: dict[str, Any] = {}
    for role, candidates, flag in (
        ("sequence", SEQUENCE_CANDIDATES, "--sequence-col"),
        ("event", EVENT_CANDIDATES, "--event-col"),
    ):
        if role in given:
            continue
        value = _pick(header, [getattr(saved, role) if saved else None, *candidates])
        if value is None:
            header = header or []
            looked = list(dict.fromkeys([*([getattr(saved, role)] if saved else []), *candidates]))
            raise DataError(
                f"{path}: no {role} column found (looked for {', '.join(repr(c) for c in looked)}; "
                f"columns present: {_shown(header)}); name it with {flag}"
            )
        found[role] = value
    if "order" not in given:
        found["order"] = _pick(header, [saved.order if saved else None, *ORDER_CANDIDATES])
    order = given.get("order", found.get("order"))
    if order is None and saved is not None and saved.order is not None:
        # file order would feed the model its events in another order than fit read them
        names = ", ".join(repr(c) for c in dict.fromkeys([saved.order, *ORDER_CANDIDATES]))
        raise DataError(
            f"{path}: no order column found: the model was fitted with order column {saved.order!r} "
            f"(looked for {names}; columns present: {_shown(header or [])}); name it with --order-col"
        )
    # the model's order column, or another one named for it: a model fitted on timestamps reads
    # its gap feature from them, so a renamed order column is read as time too, in fit's date order
    read_like_fit = (
        saved is not None
        and saved.order is not None
        and order is not None
        and (order == saved.order or saved.time is True)
    )
    as_saved = saved if read_like_fit else None
    if "time" not in given:
        if as_saved is not None:
            # a model saved before "time": false was written (null) read its order column as positions
            found["time"] = as_saved.time if as_saved.time is not None else False
        elif order == ORDER and header is not None and GAP in header:
            found["time"] = True  # a timestamped table written by write_table
        else:
            found["time"] = None
    if "day_first" not in given and as_saved is not None:
        found["day_first"] = as_saved.day_first  # fit's reading of the training data's dates
    if "numeric" not in given:
        if saved is not None:
            found["numeric"] = saved.numeric
        elif features is not None:
            found["numeric"] = tuple(n for n in features[0] if n != GAP)
    if "context" not in given:
        if saved is not None:
            found["context"] = saved.context
        elif features is not None:
            found["context"] = features[1]
    if "label" not in given and saved is not None and saved.label not in (None, LABEL):
        found["label"] = _pick(header, [saved.label])
    return ColumnMap(**{**found, **given})


def _session_settings(args: argparse.Namespace, saved: DataLayout | None) -> tuple[float | None, int | None]:
    """(gap seconds, block size): flags replace the saved settings; 0 means off."""
    if args.session_gap and args.block_size:
        raise ConfigError("give only one of --session-gap and --block-size")
    if args.session_gap is not None or args.block_size is not None:
        gap = args.session_gap if args.session_gap else None
        block = args.block_size if args.block_size else None
        return gap, block
    if saved is not None:
        return saved.session_gap, saved.block_size
    return None, None


def read_data(
    path: str | Path,
    args: argparse.Namespace,
    *,
    saved: DataLayout | None = None,
    features: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> tuple[EventTable, DataLayout]:
    """Read (and sessionize) an event file as the data-reading flags say; see :func:`resolve_columns`.

    The text encoding is ``--encoding``, else the one the model's data was read in (``saved``),
    else UTF-8; the returned layout records it."""
    from common.sessions import sessionize
    from common.tableio import read_table

    encoding = args.encoding or (saved.encoding if saved is not None else None) or DEFAULT_ENCODING
    if encoding != args.encoding:
        args = argparse.Namespace(**{**vars(args), "encoding": encoding})
        if encoding != DEFAULT_ENCODING:
            _check_model_encoding(Path(path), encoding)
    columns = resolve_columns(path, args, saved=saved.columns if saved else None, features=features)
    log.info("reading %s with columns %s", path, columns.to_dict())
    table = read_table(path, columns, encoding=args.encoding)
    columns = columns.as_read(table)  # the date order fit read in is saved with the model
    # a model's columns.json given as the column map (or beside the data) brings its sessions too
    listed = args.columns
    if listed is None and saved is None:
        listed = beside_column_map(path)
    gap, block = _session_settings(args, layout_file(listed) or saved)
    if gap is not None or block is not None:
        n_before = len(table)
        table = sessionize(table, gap_seconds=gap, block_size=block)
        how = f"after {gap:g} s of inactivity" if gap is not None else f"into blocks of {block} events"
        log.info("%s: sessionized %d sequence(s) %s: %d sequence(s)", path, n_before, how, len(table))
    return table, DataLayout(columns, gap, block, encoding)


_ENCODING_SAMPLE = 1 << 16


def _check_model_encoding(path: Path, encoding: str) -> None:
    """Say that ``path`` is read in the encoding the model's data was read in, and warn when its
    first bytes are UTF-8 with non-ASCII text (then that encoding would garble them)."""
    from common.tableio import open_bytes

    log.info("%s: read as %s, the encoding of the model's data (--encoding to change)", path, encoding)
    if path.name.lower().endswith(".parquet"):
        return
    try:
        with open_bytes(path) as fh:
            head = fh.read(_ENCODING_SAMPLE)
    except (OSError, EOFError):
        return
    if head.isascii():
        return
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return
    log.warning(
        "%s is read as %s, the encoding the model's data was read in, but its text looks like UTF-8: "
        "pass --encoding utf-8 if it is, or its events will not match the model's",
        path,
        encoding,
    )


def unused_columns(path: str | Path, columns: ColumnMap, encoding: str = "utf-8") -> list[str]:
    """Columns of ``path``'s header that ``columns`` does not read (empty when the header is unreadable).

    A timestamped table's ``gap_seconds`` counts as read: the gap feature is
    derived from the order column. ``attack_type`` (what kind of anomaly a
    labelled row is) is annotation, never a feature, so it is not listed.
    """
    from common.events import ATTACK_TYPE, GAP, LABEL

    header = read_header(Path(path), encoding)
    if header is None:
        return []
    used = {columns.sequence, columns.event, columns.order, *columns.numeric, *columns.context}
    used |= {columns.label or LABEL, ATTACK_TYPE}  # no label column named: 'label' is read if present
    if columns.time:
        used.add(GAP)
    return [c for c in header if c not in used]


def describe(console: Console, what: str, table: EventTable) -> None:
    """One line about a table that was read, plus any repaired values."""
    g = table.grouped()
    labelled = ""
    if g.labels is not None:
        labelled = f", {int(g.labels.sum())} labelled anomalous"
    console.info(f"{what}: {len(g)} sequences, {g.n_events} events{labelled} ({table.source})")
    if table.repairs:
        total = sum(table.repairs.values())
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(table.repairs.items()))
        console.info(f"  repaired {total} value(s): {detail}")
