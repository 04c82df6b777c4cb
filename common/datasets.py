"""Loaders for the shared benchmark data sets, as :class:`EventTable` splits.

Each loader returns a dict ``split name -> EventTable`` with the data set's
standard split. Event tokens are strings (the integers of the source files),
``order`` is the position inside the sequence, every row carries its
sequence's label, and ADFA-LD keeps ``attack_type``.

* :func:`load_adfa_ld`: ADFA-LD system-call traces
  (``train`` = 833 normal; ``test`` = 4,372 validation-normal + 746 attack).
* :func:`load_hdfs`: DeepLog's HDFS log-key sessions
  (``train`` = 4,855 normal; ``test_abnormal`` = 16,838). The normal test file
  is not available (see the data set's PROVENANCE.md).
* :func:`load_openstack`: Landauer et al.'s OpenStack sequences
  (``train``; ``test`` = test_normal + test_abnormal).

:func:`convert` writes the splits to files with :func:`~common.tableio.write_table`;
read them back with ``read_table(path, CANONICAL)``.

The data live outside the repository; :func:`shared_data_dir` finds them.
Where a ``SHA256SUMS`` file sits beside a source file or one folder above it
(as in the shared data), every file a loader reads is checked against it first;
a split whose sequences differ in number from the standard release's
(:data:`STANDARD_SIZES`) is warned about.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import ConfigError, DataError
from common.events import (
    ATTACK_TYPE,
    EVENT,
    LABEL,
    ORDER,
    SEQUENCE,
    EventTable,
)
from common.tableio import write_table

__all__ = [
    "CONVERTERS",
    "convert",
    "load_adfa_ld",
    "load_hdfs",
    "load_openstack",
    "shared_data_dir",
]

logger = logging.getLogger(__name__)

ENV_VAR = "SEQWATCH_SHARED_DATA"
"""Environment variable naming the shared data folder."""

ADFA_TSV = "adfa_ld_traces.tsv.gz"
ADFA_ZIP = "ADFA-LD.zip"
_ADFA_SPLITS = {
    "train": "Training_Data_Master",
    "validation": "Validation_Data_Master",
    "attack": "Attack_Data_Master",
}
#: Integers in ASCII digits separated by spaces or tabs: what Arrow's ASCII split reads as the
#: events (``\d`` and ``\s`` would let other scripts' digits and spaces, or control characters such
#: as the unit separator, through as parts of one event).
_INT_TOKENS = re.compile(r"[ \t]*[0-9]+(?:[ \t]+[0-9]+)*[ \t]*")

#: Sequences (all, anomalous) in each split of the standard releases, as their PROVENANCE.md
#: counts them: a copy that differs (cut short, a line lost, another release) is warned about.
STANDARD_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "ADFA-LD": {"train": (833, 0), "test": (4372 + 746, 746)},
    "HDFS": {"train": (4855, 0), "test_abnormal": (16838, 16838)},
    "OpenStack kalaki": {"train": (50, 0), "test": (4895 + 651, 651)},
    "OpenStack loghub": {"train": (19, 0), "test": (1852 + 198, 198)},
}


def _check_standard_sizes(name: str, splits: Mapping[str, EventTable], source: str | Path) -> None:
    """Warn, once per split, where ``splits`` do not hold the standard release's sequences
    (:data:`STANDARD_SIZES`): the files may be sound and still partial, and where no
    ``SHA256SUMS`` lists them nothing else would say so."""
    for split, (n, n_anomalous) in STANDARD_SIZES[name].items():
        g = splits[split].grouped()
        got, anomalous = len(g.ids), 0 if g.labels is None else int(g.labels.sum())
        if (got, anomalous) != (n, n_anomalous):
            logger.warning(
                "%s: the %s split holds %d sequence(s) (%d anomalous) where the standard %s release has "
                "%d (%d anomalous): a partial or changed copy? Figures on it do not compare with "
                "published ones",
                source,
                split,
                got,
                anomalous,
                name,
                n,
                n_anomalous,
            )


def _shared_data_candidate() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is absent.

    Uses ``$SEQWATCH_SHARED_DATA`` when set, else ``<repo>/../shared/data``.
    """
    candidate = _shared_data_candidate()
    return candidate if candidate.is_dir() else None


def shared_data_missing() -> str:
    """Why :func:`shared_data_dir` found nothing, naming the folder it looked at and what to do."""
    where = _shared_data_candidate()
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR} = {str(where)!r} is not a folder; point it at the shared data folder"
    return f"no shared data folder at {where}; set ${ENV_VAR} to it"


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _locate(src: str | Path, names: tuple[str, ...], subdirs: tuple[str, ...]) -> Path:
    """Folder that holds at least one of ``names``: ``src`` itself or ``src/<subdir>``."""
    src = Path(src)
    if src.is_file():
        return src.parent
    if not src.exists():
        raise DataError(f"{src}: no such folder; pass the folder that holds the data set")
    for folder in (src, *(src / d for d in subdirs)):
        if any((folder / n).exists() for n in names):
            return folder
    raise DataError(
        f"{src}: none of {', '.join(names)} found here"
        + (f" or in {', '.join(f'{d}/' for d in subdirs)}" if subdirs else "")
        + "; pass the data set's folder"
    )


CHECKSUMS = "SHA256SUMS"
"""The checksum list (``sha256sum`` format) a data set's folder may carry."""

_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def _listed_digest(path: Path, sums: Path) -> str | None:
    """The digest ``sums`` (a ``SHA256SUMS`` file) lists for ``path``, or None."""
    want = path.resolve()
    text = sums.read_text(encoding="utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        match = _SUM_LINE.fullmatch(line.rstrip())  # spaces after a name are no part of it
        if match is None:  # another format or a comment: it lists nothing this loader can check
            if line.strip() and not line.startswith("#"):
                logger.warning("%s: line %d is not a sha256sum line; skipped", sums, number)
            continue
        if (sums.parent / match.group(2)).resolve() == want:
            return match.group(1).lower()
    return None


def _verify(path: Path) -> None:
    """Check ``path`` against its entry in the ``SHA256SUMS`` beside it or one folder up. Where
    such a file exists but lists ``path`` nowhere (or is no file), say so: the file is then read
    unchecked, and a damaged copy would pass."""
    candidates = [folder / CHECKSUMS for folder in (path.parent, path.parent.parent)]
    present = [sums for sums in candidates if sums.exists()]
    for sums in present:
        if not sums.is_file():
            logger.warning("%s: not a file; %s is read unchecked", sums, path.name)
            continue
        want = _listed_digest(path, sums)
        if want is None:
            continue
        with path.open("rb") as fh:
            got = hashlib.file_digest(fh, "sha256").hexdigest()
        if got != want:
            raise DataError(
                f"{path}: SHA-256 {got[:16]}… differs from {want[:16]}… in {sums}: the file is damaged "
                f"or another release; restore it from the source (or delete its line in {CHECKSUMS} "
                f"to read it as it is)"
            )
        return
    lists = [str(sums) for sums in present if sums.is_file()]
    if lists:
        logger.warning("%s: not listed in %s; read unchecked", path, " or ".join(lists))


def _read_lines(path: Path) -> list[str]:
    """Lines of an ASCII text file, without line ends."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the data folder")
    _verify(path)
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: non-ASCII byte; the file is garbled, restore it from the source"
        ) from exc
    # on line feeds alone (a CR before one is a Windows line end): str.splitlines also breaks at a
    # form feed or a file separator, which would cut one session in two and shift every id after it
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _explode(
    ids: np.ndarray,
    tokens: pd.Series,
    labels: np.ndarray,
    source: str,
    extra: Mapping[str, np.ndarray] | None = None,
) -> EventTable:
    """Build a canonical table from one row per sequence.

    ``ids`` must be unique; ``tokens`` holds whitespace-separated event
    tokens (already checked). Rows are sorted by id so the exploded frame is
    canonical without a sort over events. Splitting and repeating run in
    Arrow (no Python loop per event).
    """
    order = np.argsort(ids.astype(str), kind="stable")
    ids = ids[order]
    raw = pa.array(tokens.to_numpy(dtype=object)[order], type=pa.string())
    split = pc.ascii_split_whitespace(pc.ascii_trim_whitespace(raw))
    lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
    n = int(lengths.sum())
    seq_index = pa.array(np.repeat(np.arange(len(ids), dtype=np.int32), lengths))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    def repeated(values: np.ndarray) -> pd.Series:
        dictionary = pa.array(np.asarray(values, dtype=object), type=pa.string())
        decoded = pa.DictionaryArray.from_arrays(seq_index, dictionary).dictionary_decode()
        return decoded.to_pandas()

    data: dict[str, Any] = {
        SEQUENCE: repeated(ids),
        ORDER: (np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.float64),
        EVENT: split.flatten().to_pandas(),
        LABEL: np.repeat(labels[order].astype(np.int8), lengths),
    }
    for name, values in (extra or {}).items():
        data[name] = repeated(np.asarray(values, dtype=object)[order])
    return EventTable(pd.DataFrame(data), source=source)


def _row_name(pos: int, first_line: int, entries: pd.Series | None) -> str:
    """Row ``pos`` of a source as an error names it: its line (``first_line`` for row 0), or its
    member in ``entries`` (a zip's traces)."""
    return f"line {pos + first_line}" if entries is None else str(entries.iloc[pos])


def _check_tokens(
    lines: pd.Series, path: Path, first_line: int, what: str, entries: pd.Series | None = None
) -> None:
    """Every entry must be integers separated by spaces; the first that is not is named by its
    line (``first_line`` for the first), or by ``entries`` (a zip's member names)."""
    ok = lines.str.fullmatch(_INT_TOKENS).fillna(False).to_numpy(dtype=bool)
    if not ok.all():
        pos = int(np.flatnonzero(~ok)[0])
        value = str(lines.iloc[pos])
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise DataError(
            f"{path}: {_row_name(pos, first_line, entries)}: {what} must be integers separated by "
            f"spaces, got {shown!r}; the file is garbled, restore it from the source"
        )


# --------------------------------------------------------------------------- #
# ADFA-LD
# --------------------------------------------------------------------------- #


def load_adfa_ld(src_dir: str | Path) -> dict[str, EventTable]:
    """ADFA-LD traces: ``{"train": 833 normal, "test": 4372 normal + 746 attack}``.

    Reads ``adfa_ld_traces.tsv.gz`` from ``src_dir`` (or ``src_dir/adfa-ld``),
    falling back to ``ADFA-LD.zip``. Sequence ids are the trace file names
    without ``.txt`` (``UTD-0001``, ``UVD-0001``, ``UAD-Adduser-1-1371``);
    ``attack_type`` is empty for normal traces.

    Raises:
        DataError: both files absent, or a file is garbled.
    """
    folder = _adfa_folder(src_dir)
    tsv = folder / ADFA_TSV
    entries = None  # the zip's traces are named by their member, the TSV's by their line
    if tsv.is_file():
        traces, source, first_line = _adfa_from_tsv(tsv), str(tsv), 2
    else:
        zpath = folder / ADFA_ZIP
        logger.info("%s absent; reading %s", tsv, zpath)
        traces, source, first_line = _adfa_from_zip(zpath), str(zpath), 1
        entries = traces["source_file"]
    _check_tokens(traces["syscalls"], Path(source), first_line, "system calls", entries)
    ids = traces["source_file"].str.rsplit("/", n=1).str[-1].str.removesuffix(".txt").to_numpy(dtype=object)
    repeated = pd.Series(ids).duplicated().to_numpy()
    if repeated.any():
        pos = int(np.flatnonzero(repeated)[0])
        raise DataError(
            f"{source}: {_row_name(pos, first_line, entries)}: trace {ids[pos]!r} appears twice (trace "
            f"file names must be unique); the file is garbled, restore it from the source"
        )
    out: dict[str, EventTable] = {}
    for split, parts in (("train", ("train",)), ("test", ("validation", "attack"))):
        mask = traces["split"].isin(parts).to_numpy()
        if not mask.any():
            raise DataError(
                f"{source}: no {' or '.join(parts)} traces (the {split} split); the file is incomplete, "
                f"restore it from the source"
            )
        sub = traces.loc[mask].reset_index(drop=True)
        out[split] = _explode(
            ids[mask],
            sub["syscalls"],
            sub["label"].to_numpy(dtype=np.int8),
            f"{source}:{split}",
            extra={ATTACK_TYPE: sub["attack_type"].to_numpy(dtype=object)},
        )
    _check_standard_sizes("ADFA-LD", out, source)
    logger.info("ADFA-LD: %s", {k: (len(v), v.n_events) for k, v in out.items()})
    return out


def _adfa_folder(src: str | Path) -> Path:
    """The folder :func:`load_adfa_ld` reads from ``src``."""
    return _locate(src, (ADFA_TSV, ADFA_ZIP), ("adfa-ld",))


def _adfa_from_tsv(path: Path) -> pd.DataFrame:
    """The derived TSV: one row per trace (see PROVENANCE.md)."""
    _verify(path)
    try:
        with warnings.catch_warnings():
            # a tab after a row's last field is an empty field past the header: dropped (index_col=False
            # keeps the columns in place), with a pandas warning that says nothing useful here
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(
                path, sep="\t", dtype=str, keep_default_na=False, compression="gzip", index_col=False
            )
    except (
        OSError,
        EOFError,
        zlib.error,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        raise DataError(
            f"{path}: cannot read ({exc}); the file is garbled, restore it from the source"
        ) from exc
    needed = ("split", "label", "attack_type", "source_file", "syscalls")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing} (columns present: {list(df.columns)}); "
            f"restore the file from the source"
        )
    bad_split = ~df["split"].isin(list(_ADFA_SPLITS))
    if bad_split.any():
        pos = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise DataError(
            f"{path}: line {pos + 2}, column 'split': unknown split {df['split'].iloc[pos]!r} "
            f"(expected train, validation or attack); restore the file from the source"
        )
    label = df["label"].map({"0": 0, "1": 1})
    expected = (df["split"] == "attack").astype(int)
    bad_label = (label != expected).to_numpy()
    if bad_label.any():
        pos = int(np.flatnonzero(bad_label)[0])
        raise DataError(
            f"{path}: line {pos + 2}, column 'label': {df['label'].iloc[pos]!r} does not match split "
            f"{df['split'].iloc[pos]!r}; restore the file from the source"
        )
    df["label"] = expected
    return df


def _adfa_from_zip(path: Path) -> pd.DataFrame:
    """The original zip: one ``.txt`` trace per file, label from the folder."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (and no {ADFA_TSV} beside it); check the data folder")
    _verify(path)
    rows: list[tuple[str, int, str, str, str]] = []
    folder_of = {v: k for k, v in _ADFA_SPLITS.items()}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or not info.filename.endswith(".txt"):
                    continue
                top = next((p for p in parts if p in folder_of), None)
                if top is None:
                    continue  # e.g. the syscall list shipped in the archive
                split = folder_of[top]
                attack = ""
                if split == "attack":
                    run_dir = parts[parts.index(top) + 1] if len(parts) > parts.index(top) + 2 else ""
                    attack = run_dir.rsplit("_", 1)[0]
                text = zf.read(info).decode("ascii")
                rel = "/".join(parts[parts.index(top) :])
                rows.append((split, int(split == "attack"), attack, rel, text.strip()))
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read the zip ({exc}); the file is garbled, restore it from the source"
        ) from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted entries, unknown compression
        raise DataError(
            f"{path}: cannot read the zip ({exc}); unpack it with a tool that can, and zip the traces "
            f"again without a password in a standard compression (or restore it from the source)"
        ) from exc
    if not rows:
        raise DataError(
            f"{path}: no trace files under {', '.join(_ADFA_SPLITS.values())}; restore it from the source"
        )
    df = pd.DataFrame(rows, columns=["split", "label", "attack_type", "source_file", "syscalls"])
    return df.sort_values("source_file", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- #
# HDFS (DeepLog)
# --------------------------------------------------------------------------- #

_HDFS_FILES = {"train": ("hdfs_train", 0), "test_abnormal": ("hdfs_test_abnormal", 1)}


def _hdfs_folder(src: str | Path) -> Path:
    """The folder :func:`load_hdfs` reads from ``src``."""
    return _locate(src, tuple(f for f, _ in _HDFS_FILES.values()), ("hdfs-deeplog",))


def load_hdfs(src_dir: str | Path) -> dict[str, EventTable]:
    """DeepLog HDFS sessions: ``{"train": 4855 normal, "test_abnormal": 16838}``.

    Reads ``hdfs_train`` and ``hdfs_test_abnormal`` from ``src_dir`` (or
    ``src_dir/hdfs-deeplog``). Ids are ``train-000001`` / ``test_abnormal-000001``
    (the 1-based line number). Events are the 1-based log keys as strings.

    Raises:
        DataError: a file is missing or garbled.
    """
    folder = _hdfs_folder(src_dir)
    out: dict[str, EventTable] = {}
    for split, (name, label) in _HDFS_FILES.items():
        path = folder / name
        lines = pd.Series(_read_lines(path), dtype=object)
        numbers = np.arange(1, len(lines) + 1)
        blank = lines.str.strip().eq("").to_numpy(dtype=bool)
        n_blank = int(blank.sum())
        if n_blank:
            logger.warning("%s: skipped %d blank line(s)", path, n_blank)
            lines, numbers = lines[~blank].reset_index(drop=True), numbers[~blank]
        if lines.empty:
            raise DataError(f"{path}: no sessions in the file; restore it from the source")
        _check_tokens(lines, path, 1, "log keys")
        ids = np.array([f"{split}-{n:06d}" for n in numbers], dtype=object)
        table = _explode(ids, lines, np.full(len(lines), label, dtype=np.int8), str(path))
        if n_blank:
            table.repairs["blank lines skipped"] = n_blank
        out[split] = table
    _check_standard_sizes("HDFS", out, folder)
    logger.info("HDFS: %s", {k: (len(v), v.n_events) for k, v in out.items()})
    return out


# --------------------------------------------------------------------------- #
# OpenStack (Landauer et al.)
# --------------------------------------------------------------------------- #

_OPENSTACK_VERSIONS = ("kalaki", "loghub")


_OPENSTACK_FILES = ("openstack_train", "openstack_test_normal", "openstack_test_abnormal")


def _openstack_folder(src_dir: str | Path, version: str = "kalaki") -> Path:
    """The folder :func:`load_openstack` reads from ``src_dir`` for ``version``.

    Raises:
        ConfigError: unknown version, or a folder of the other release.
        DataError: no such folder, or none of the files in it.
    """
    if version not in _OPENSTACK_VERSIONS:
        raise ConfigError(
            f"unknown OpenStack version {version!r}; use one of {', '.join(_OPENSTACK_VERSIONS)}"
        )
    folder = _locate(src_dir, _OPENSTACK_FILES, (version, f"openstack-aecid/{version}"))
    if folder.name in _OPENSTACK_VERSIONS and folder.name != version:
        raise ConfigError(
            f"{folder}: holds the {folder.name} release, not {version}; pass --version {folder.name} "
            f"(or the folder above it to convert {version})"
        )
    return folder


def load_openstack(src_dir: str | Path, version: str = "kalaki") -> dict[str, EventTable]:
    """OpenStack VM sequences: ``{"train", "test"}`` (test = test_normal + test_abnormal).

    Reads ``openstack_{train,test_normal,test_abnormal}`` from
    ``src_dir/<version>`` (``src_dir`` may also be the version folder itself or
    the shared data root). Ids are instance uuids; a uuid seen twice in one
    split gets ``.2``, ``.3``, ... appended (counted in ``repairs``).

    Raises:
        ConfigError: unknown version.
        DataError: a file is missing or garbled.
    """
    folder = _openstack_folder(src_dir, version)
    names = _OPENSTACK_FILES
    out: dict[str, EventTable] = {}
    for split, parts in (("train", ((names[0], 0),)), ("test", ((names[1], 0), (names[2], 1)))):
        id_list, token_list, label_list = [], [], []
        for name, label in parts:
            path = folder / name
            lines = pd.Series(_read_lines(path), dtype=object)
            numbers = np.arange(1, len(lines) + 1)
            keep = ~lines.str.strip().eq("").to_numpy(dtype=bool)
            lines, numbers = lines[keep].reset_index(drop=True), numbers[keep]
            if lines.empty:
                raise DataError(f"{path}: no sequences in the file; restore it from the source")
            pieces = lines.str.partition(",")
            no_comma = (pieces[1] != ",").to_numpy()
            no_id = pieces[0].str.strip().eq("").to_numpy(dtype=bool)
            bad = no_comma | no_id
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path}: line {numbers[pos]}: expected '<instance-uuid>,<event ids>', "
                    f"got {str(lines.iloc[pos])[:40]!r}; the file is garbled, restore it from the source"
                )
            tokens = pieces[2]
            ok = tokens.str.fullmatch(_INT_TOKENS).fillna(False).to_numpy(dtype=bool)
            if not ok.all():
                pos = int(np.flatnonzero(~ok)[0])
                raise DataError(
                    f"{path}: line {numbers[pos]}: event ids must be integers separated by spaces, "
                    f"got {str(tokens.iloc[pos])[:40]!r}; the file is garbled, restore it from the source"
                )
            id_list.append(pieces[0].str.strip().to_numpy(dtype=object))
            token_list.append(tokens)
            label_list.append(np.full(len(lines), label, dtype=np.int8))
        ids = np.concatenate(id_list)
        source = "+".join(str(folder / n) for n, _ in parts)
        ids, renamed = _dedupe(ids, source)
        table = _explode(ids, pd.concat(token_list, ignore_index=True), np.concatenate(label_list), source)
        if renamed:
            logger.warning("%s: %d duplicate instance id(s) renamed", source, renamed)
            table.repairs["duplicate sequence id renamed"] = renamed
        out[split] = table
    _check_standard_sizes(f"OpenStack {version}", out, folder)
    logger.info("OpenStack %s: %s", version, {k: (len(v), v.n_events) for k, v in out.items()})
    return out


def _dedupe(ids: np.ndarray, source: str) -> tuple[np.ndarray, int]:
    """Append ``.2``, ``.3``, ... to repeated ids; returns (ids, number renamed).

    Raises:
        DataError: a renamed id is another id of ``source`` already (``x`` twice beside ``x.2``).
    """
    occurrence = pd.Series(ids).groupby(ids, sort=False).cumcount().to_numpy()
    repeated = occurrence > 0
    if not repeated.any():
        return ids, 0
    out = ids.astype(object).copy()
    out[repeated] = [f"{i}.{k + 1}" for i, k in zip(ids[repeated], occurrence[repeated], strict=True)]
    clash = pd.Series(out).duplicated().to_numpy()
    if clash.any():
        taken = str(out[int(np.flatnonzero(clash)[0])])
        raise DataError(
            f"{source}: instance id {taken!r} is in the files, and it is also the name a repeated "
            f"id would be renamed to ({taken.rsplit('.', 1)[0]!r} appears more than once); the files "
            f"are garbled, restore them from the source"
        )
    return out, int(repeated.sum())


# --------------------------------------------------------------------------- #
# Conversion
# --------------------------------------------------------------------------- #

CONVERTERS: dict[str, Callable[..., dict[str, EventTable]]] = {
    "adfa-ld": load_adfa_ld,
    "hdfs": load_hdfs,
    "openstack": load_openstack,
}
"""Data-set name -> loader ``(src, **options) -> {split: EventTable}``."""

_SOURCE_FOLDERS: dict[str, Callable[..., Path]] = {
    "adfa-ld": _adfa_folder,
    "hdfs": _hdfs_folder,
    "openstack": _openstack_folder,
}
"""Data-set name -> the folder its loader reads ``(src, **options) -> Path``."""

_FORMATS = ("parquet", "csv", "csv.gz", "tsv", "tsv.gz")


def convert(
    name: str, src: str | Path, out_dir: str | Path, fmt: str = "parquet", **options: Any
) -> dict[str, Path]:
    """Load data set ``name`` from ``src`` and write one file per split.

    Files are ``out_dir/<split>.<fmt>``; read them with
    ``read_table(path, CANONICAL)``. ``options`` go to the loader (e.g.
    ``version="loghub"`` for OpenStack).

    Raises:
        ConfigError: unknown data set or format.
        DataError: from the loader.
    """
    if name not in CONVERTERS:
        raise ConfigError(f"unknown data set {name!r}; use one of {', '.join(CONVERTERS)}")
    if fmt not in _FORMATS:
        raise ConfigError(f"unknown output format {fmt!r}; use one of {', '.join(_FORMATS)}")
    from common.argtypes import file_to_write

    out = Path(out_dir)
    source = _SOURCE_FOLDERS[name](src, **options)  # src, or the data set's folder inside it
    if out.resolve() in (Path(src).resolve(), source.resolve()):
        raise ConfigError(
            f"--out {out} is the source folder ({source}): write the tables to a folder of their own"
        )
    splits = CONVERTERS[name](src, **options)
    # every output checked before the first is written: no table of a half-done conversion is left
    targets = {split: file_to_write(out / f"{split}.{fmt}", "--out") for split in splits}
    written = {split: write_table(table, targets[split]) for split, table in splits.items()}
    logger.info("converted %s to %s", name, {k: str(v) for k, v in written.items()})
    mine = {path.resolve() for path in written.values()}
    suffixes = tuple(f".{f}" for f in _FORMATS)
    others = sorted(
        path.name
        for path in out.iterdir()
        if path.is_file() and path.name.endswith(suffixes) and path.resolve() not in mine
    )
    if others:
        logger.warning(
            "%s also holds %s, not written by this conversion (an earlier one's?): remove them, or "
            "convert into an empty folder, so that no table of another data set or format is read by mistake",
            out,
            ", ".join(others),
        )
    return written
