"""Tests for common.datasets.

Tests on the real shared data check the counts in each PROVENANCE.md and skip
when the data folder is absent; the others build tiny files in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import logging
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.datasets import (
    CONVERTERS,
    ENV_VAR,
    convert,
    load_adfa_ld,
    load_hdfs,
    load_openstack,
    shared_data_dir,
)
from common.errors import ConfigError, DataError
from common.events import CANONICAL, EventTable
from common.tableio import read_table


def _data() -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip(f"shared data folder not found (set {ENV_VAR})")
    return root


@pytest.fixture(scope="module")
def adfa() -> dict[str, EventTable]:
    return load_adfa_ld(_data() / "adfa-ld")


def _counts(table: EventTable) -> tuple[int, int]:
    """(normal, anomalous) sequences."""
    labels = table.grouped().labels
    assert labels is not None
    return int((labels == 0).sum()), int((labels == 1).sum())


# --------------------------------------------------------------------------- #
# Real data (skipped when absent)
# --------------------------------------------------------------------------- #


@pytest.mark.realdata
def test_adfa_counts(adfa: dict[str, EventTable]) -> None:
    assert set(adfa) == {"train", "test"}
    assert _counts(adfa["train"]) == (833, 0)
    assert _counts(adfa["test"]) == (4372, 746)
    assert adfa["train"].n_events == 308_077
    assert adfa["test"].n_events == 2_122_085 + 317_388
    g = adfa["test"].grouped()
    assert g.attack_types is not None and g.labels is not None
    types = pd.Series(g.attack_types[g.labels == 1]).value_counts().to_dict()
    assert types == {
        "Hydra_SSH": 176, "Hydra_FTP": 162, "Java_Meterpreter": 124,
        "Web_Shell": 118, "Adduser": 91, "Meterpreter": 75,
    }  # fmt: skip
    assert set(g.attack_types[g.labels == 0]) == {""}
    first = adfa["train"].grouped()
    assert first.ids[0] == "UTD-0001" and list(first.events_of(0)[:3]) == ["6", "6", "63"]


@pytest.mark.realdata
def test_adfa_grouping_is_fast(adfa: dict[str, EventTable]) -> None:
    table = adfa["test"]
    table._grouped = None  # measure a fresh grouping of 2.4 M rows
    start = time.perf_counter()
    g = table.grouped()
    assert time.perf_counter() - start < 3.0
    assert g.offsets[-1] == table.n_events and len(g) == 5118


@pytest.mark.realdata
def test_hdfs_counts() -> None:
    splits = load_hdfs(_data() / "hdfs-deeplog")
    assert _counts(splits["train"]) == (4855, 0)
    assert _counts(splits["test_abnormal"]) == (0, 16838)
    assert splits["train"].n_events == 95_125
    assert splits["test_abnormal"].n_events == 284_818
    ids = splits["train"].grouped().ids
    assert ids[0] == "train-000001" and ids[-1] == "train-004855"
    vocab = set(splits["train"].frame["event"]) | set(splits["test_abnormal"].frame["event"])
    assert vocab == {str(k) for k in range(1, 29)}


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("version", "train", "normal", "abnormal"),
    [("kalaki", 50, 4895, 651), ("loghub", 19, 1852, 198)],
)
def test_openstack_counts(version: str, train: int, normal: int, abnormal: int) -> None:
    splits = load_openstack(_data() / "openstack-aecid", version=version)
    assert _counts(splits["train"]) == (train, 0)
    assert _counts(splits["test"]) == (normal, abnormal)


@pytest.mark.realdata
def test_convert_round_trip(tmp_path: Path) -> None:
    paths = convert("openstack", _data(), tmp_path, fmt="csv")
    assert set(paths) == {"train", "test"}
    original = load_openstack(_data())
    for split, path in paths.items():
        pd.testing.assert_frame_equal(read_table(path, CANONICAL).frame, original[split].frame)


# --------------------------------------------------------------------------- #
# Synthetic files
# --------------------------------------------------------------------------- #


def test_shared_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    assert shared_data_dir() is None


def test_adfa_zip_fallback(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "ADFA-LD.zip", "w") as zf:
        zf.writestr("ADFA-LD/Training_Data_Master/UTD-0001.txt", "6 6 63 ")
        zf.writestr("ADFA-LD/Training_Data_Master/UTD-0002.txt", "3 4\n")
        zf.writestr("ADFA-LD/Validation_Data_Master/UVD-0001.txt", "5")
        zf.writestr("ADFA-LD/Attack_Data_Master/Hydra_FTP_3/UAD-Hydra-FTP-3-99.txt", "1 2 3")
        zf.writestr("ADFA-LD/ADFA-LD+Syscall+List.txt", "#define __NR_io_setup 0")
    splits = load_adfa_ld(tmp_path)
    train, test = splits["train"].grouped(), splits["test"].grouped()
    assert list(train.ids) == ["UTD-0001", "UTD-0002"]
    assert list(train.events) == ["6", "6", "63", "3", "4"]
    assert list(test.ids) == ["UAD-Hydra-FTP-3-99", "UVD-0001"]
    assert test.labels is not None and list(test.labels) == [1, 0]
    assert test.attack_types is not None and list(test.attack_types) == ["Hydra_FTP", ""]


def test_adfa_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"adfa_ld_traces\.tsv\.gz"):
        load_adfa_ld(tmp_path)


def test_adfa_garbled_tsv(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "split": ["train", "attack"],
            "label": ["0", "1"],
            "attack_type": ["", "Adduser"],
            "attack_run": ["", "1"],
            "source_file": [
                "Training_Data_Master/UTD-0001.txt",
                "Attack_Data_Master/Adduser_1/UAD-Adduser-1-1.txt",
            ],
            "syscalls": ["1 2 3", "4 x 6"],
        }
    )
    path = tmp_path / "adfa_ld_traces.tsv.gz"
    frame.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match=r"adfa_ld_traces\.tsv\.gz: line 3: system calls"):
        load_adfa_ld(tmp_path)


def test_hdfs_trailing_space_no_final_newline(tmp_path: Path) -> None:
    (tmp_path / "hdfs_train").write_text("5 5 22 \n11 9 ")
    (tmp_path / "hdfs_test_abnormal").write_text("1 2 ")
    splits = load_hdfs(tmp_path)
    g = splits["train"].grouped()
    assert list(g.ids) == ["train-000001", "train-000002"]
    assert list(g.events) == ["5", "5", "22", "11", "9"]
    assert list(g.offsets) == [0, 3, 5]
    assert list(splits["train"].frame["order"]) == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert splits["test_abnormal"].grouped().labels is not None
    assert list(splits["test_abnormal"].grouped().ids) == ["test_abnormal-000001"]


def test_a_copy_other_than_the_standard_release_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "hdfs_train").write_text("5 5 22\n11 9\n")
    (tmp_path / "hdfs_test_abnormal").write_text("1 2\n")
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        load_hdfs(tmp_path)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert warned[0] == (
        f"{tmp_path}: the train split holds 2 sequence(s) (0 anomalous) where the standard HDFS release "
        f"has 4855 (0 anomalous): a partial or changed copy? Figures on it do not compare with published ones"
    )
    assert "the test_abnormal split holds 1 sequence(s) (1 anomalous)" in warned[1]


@pytest.mark.realdata
def test_the_shared_releases_are_the_standard_ones(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        load_hdfs(_data() / "hdfs-deeplog")
        for version in ("kalaki", "loghub"):
            load_openstack(_data() / "openstack-aecid", version=version)
        load_adfa_ld(_data() / "adfa-ld")
    assert caplog.records == []


def test_hdfs_missing_and_garbled(tmp_path: Path) -> None:
    (tmp_path / "hdfs_train").write_text("5 5 22\n")
    with pytest.raises(DataError, match="hdfs_test_abnormal: file not found"):
        load_hdfs(tmp_path)
    (tmp_path / "hdfs_test_abnormal").write_text("1 2\n3 blk_x\n")
    with pytest.raises(DataError, match=r"hdfs_test_abnormal: line 2: log keys"):
        load_hdfs(tmp_path)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_source_files_are_checked_against_sha256sums(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # HDFS: the list beside the files, in sha256sum's format (binary marker and "./" allowed)
    (tmp_path / "hdfs_train").write_text("5 5 22\n")
    (tmp_path / "hdfs_test_abnormal").write_text("1 2\n")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(
        f"{_sha256(tmp_path / 'hdfs_train')}  ./hdfs_train\n"
        f"{_sha256(tmp_path / 'hdfs_test_abnormal')} *hdfs_test_abnormal\n"
    )
    assert len(load_hdfs(tmp_path)["train"].grouped()) == 1
    (tmp_path / "hdfs_test_abnormal").write_text("1 2\n3\n")  # one session more than the release
    with pytest.raises(
        DataError,
        match=r"hdfs_test_abnormal: SHA-256 [0-9a-f]{16}… differs from [0-9a-f]{16}… in .*SHA256SUMS",
    ):
        load_hdfs(tmp_path)
    sums.write_text(sums.read_text().splitlines()[0] + "\n")  # a file it does not list is read as it is
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        assert len(load_hdfs(tmp_path)["test_abnormal"].grouped()) == 2
    assert f"{tmp_path / 'hdfs_test_abnormal'}: not listed in {sums}; read unchecked" in caplog.text
    caplog.clear()
    # spaces after a name are no part of it: the file is still checked
    sums.write_text(f"{_sha256(tmp_path / 'hdfs_train')}  hdfs_train  \n{'0' * 64}  hdfs_test_abnormal \n")
    with pytest.raises(DataError, match=r"hdfs_test_abnormal: SHA-256 .* differs from 0{16}…"):
        load_hdfs(tmp_path)
    # a byte-order mark, and lines of another format (skipped, said in the log), do not stop the check
    listing = f"\ufeff{_sha256(tmp_path / 'hdfs_train')}  hdfs_train\nSHA256 (x) = 00\n"
    sums.write_text(listing + f"{'0' * 64}  hdfs_test_abnormal\n", encoding="utf-8")
    mismatch = r"hdfs_test_abnormal: SHA-256 .* differs from 0{16}…"
    with caplog.at_level(logging.WARNING, logger="common.datasets"), pytest.raises(DataError, match=mismatch):
        load_hdfs(tmp_path)
    assert "SHA256SUMS: line 2 is not a sha256sum line; skipped" in caplog.text
    # OpenStack: the list one folder above the release's folder, naming ./kalaki/...
    folder = tmp_path / "os" / "kalaki"
    folder.mkdir(parents=True)
    for name, text in (("train", "a,1 2\n"), ("test_normal", "b,1\n"), ("test_abnormal", "c,9\n")):
        (folder / f"openstack_{name}").write_text(text)
    listing = "".join(f"{_sha256(f)}  ./kalaki/{f.name}\n" for f in sorted(folder.iterdir()))
    (tmp_path / "os" / "SHA256SUMS").write_text(listing)
    assert len(load_openstack(tmp_path / "os")["test"].grouped()) == 2
    (folder / "openstack_train").write_text("a,1 3\n")
    with pytest.raises(DataError, match=r"kalaki/openstack_train: SHA-256"):
        load_openstack(tmp_path / "os")


def test_event_ids_are_ascii_integers_and_lines_end_at_line_feeds(tmp_path: Path) -> None:
    """Other scripts' digits, no-break spaces and control characters are refused with their line
    (Arrow splits events on ASCII spaces only: they became parts of one event); a form feed or a
    file separator does not cut a session in two (str.splitlines did), a CRLF line end is fine."""
    (tmp_path / "hdfs_test_abnormal").write_text("1 2\n")
    for bad in ("5\x1f5 22", "5 5\x0c22", "5 5\x1c22", "5\x0b5"):
        (tmp_path / "hdfs_train").write_text(f"11 9\n{bad}\n3\n")
        with pytest.raises(DataError, match=r"hdfs_train: line 2: log keys must be integers"):
            load_hdfs(tmp_path)
    (tmp_path / "hdfs_train").write_bytes(b"5 5 22\r\n11 9\r\n")
    assert list(load_hdfs(tmp_path)["train"].grouped().events) == ["5", "5", "22", "11", "9"]
    frame = pd.DataFrame(
        {
            "split": ["train", "train", "validation", "attack"],
            "label": ["0", "0", "0", "1"],
            "attack_type": ["", "", "", "Adduser"],
            "source_file": [
                "Training_Data_Master/UTD-0001.txt",
                "Training_Data_Master/UTD-0002.txt",
                "Validation_Data_Master/UVD-0001.txt",
                "Attack_Data_Master/Adduser_1/UAD-Adduser-1-1.txt",
            ],
            "syscalls": ["1 2 3", "4 5", "6", "7"],
        }
    )
    for bad in ("\u06636 4", "4\u00a05"):  # an Arabic-Indic three; a no-break space
        frame.loc[1, "syscalls"] = bad
        frame.to_csv(tmp_path / "adfa_ld_traces.tsv.gz", sep="\t", index=False)
        with pytest.raises(DataError, match=r"adfa_ld_traces\.tsv\.gz: line 3: system calls must be"):
            load_adfa_ld(tmp_path)


def test_adfa_zip_problems_name_the_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(members: dict[str, str]) -> None:
        with zipfile.ZipFile(tmp_path / "ADFA-LD.zip", "w") as zf:
            for name, text in members.items():
                zf.writestr(name, text)

    good = {
        "ADFA-LD/Training_Data_Master/UTD-0001.txt": "6 6",
        "ADFA-LD/Validation_Data_Master/UVD-1.txt": "5",
    }
    write({**good, "ADFA-LD/Training_Data_Master/UTD-0002.txt": ""})
    with pytest.raises(DataError, match=r"ADFA-LD\.zip: Training_Data_Master/UTD-0002\.txt: system calls"):
        load_adfa_ld(tmp_path)
    write({**good, "ADFA-LD/Attack_Data_Master/Adduser_1/UTD-0001.txt": "1"})
    with pytest.raises(
        DataError, match=r"ADFA-LD\.zip: Training_Data_Master/UTD-0001\.txt: trace 'UTD-0001' appears twice"
    ):
        load_adfa_ld(tmp_path)
    # an encrypted member (or a compression zipfile cannot read): one error, no traceback
    write(good)

    def encrypted(self: zipfile.ZipFile, name: object, pwd: object = None) -> bytes:
        raise RuntimeError(f"File {name!r} is encrypted, password required for extraction")

    monkeypatch.setattr(zipfile.ZipFile, "read", encrypted)
    with pytest.raises(DataError, match=r"ADFA-LD\.zip: cannot read the zip \(File .* is encrypted"):
        load_adfa_ld(tmp_path)


def test_convert_checks_every_output_first_and_never_writes_into_the_source(tmp_path: Path) -> None:
    src = tmp_path / "data" / "hdfs-deeplog"
    src.mkdir(parents=True)
    (src / "hdfs_train").write_text("5 5 22\n")
    (src / "hdfs_test_abnormal").write_text("1 2\n")
    out = tmp_path / "out"
    (out / "test_abnormal.parquet").mkdir(parents=True)  # the second table cannot be written
    with pytest.raises(ConfigError, match=r"--out .*test_abnormal\.parquet: is a folder; name a file"):
        convert("hdfs", src, out)
    assert not (out / "train.parquet").exists()  # nothing half-written
    # the source folder, given as a file in it or as the folder above it
    for given in (src / "hdfs_train", tmp_path / "data"):
        with pytest.raises(ConfigError, match=rf"--out {re.escape(str(src))} is the source folder"):
            convert("hdfs", given, src)
    assert sorted(p.name for p in src.iterdir()) == ["hdfs_test_abnormal", "hdfs_train"]


def test_openstack_duplicate_ids_and_garbled(tmp_path: Path) -> None:
    folder = tmp_path / "kalaki"
    folder.mkdir()
    (folder / "openstack_train").write_text("a,1 2\nb,3\n")
    (folder / "openstack_test_normal").write_text("c,1 2\n")
    (folder / "openstack_test_abnormal").write_text("c,9 9\nd,4")
    splits = load_openstack(tmp_path)
    test = splits["test"].grouped()
    assert list(test.ids) == ["c", "c.2", "d"]
    assert test.labels is not None and list(test.labels) == [0, 1, 1]
    assert splits["test"].repairs == {"duplicate sequence id renamed": 1}
    # renaming would make a second 'c.2': named, with the files
    (folder / "openstack_test_abnormal").write_text("c,9 9\nc.2,4\n")
    with pytest.raises(DataError, match=r"openstack_test_abnormal: instance id 'c\.2' is in the files"):
        load_openstack(tmp_path)
    (folder / "openstack_test_abnormal").write_text("c,9 9\nno comma here\n")
    with pytest.raises(DataError, match=r"openstack_test_abnormal: line 2"):
        load_openstack(tmp_path)
    with pytest.raises(ConfigError, match="version"):
        load_openstack(tmp_path, version="v3")
    # the release folder itself: read as the release it is, never as the default's
    with pytest.raises(ConfigError, match=r"holds the kalaki release, not loghub; pass --version kalaki"):
        load_openstack(folder, version="loghub")
    with pytest.raises(DataError, match=r"nowhere: no such folder"):
        load_openstack(tmp_path / "nowhere")


def test_convert_rejects_unknown_names(tmp_path: Path) -> None:
    assert set(CONVERTERS) == {"adfa-ld", "hdfs", "openstack"}
    with pytest.raises(ConfigError, match="unknown data set 'bgl'"):
        convert("bgl", tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="format"):
        convert("hdfs", tmp_path, tmp_path, fmt="xlsx")


def _hdfs_source(tmp_path: Path) -> Path:
    """A tiny HDFS source folder: two training sessions, one abnormal test session."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "hdfs_train").write_text("5 5 22 \n11 9 ")
    (src / "hdfs_test_abnormal").write_text("1 2 ")
    return src


def test_convert_synthetic_parquet(tmp_path: Path) -> None:
    src = _hdfs_source(tmp_path)
    paths = convert("hdfs", src, tmp_path / "out")
    assert paths == {
        "train": tmp_path / "out/train.parquet",
        "test_abnormal": tmp_path / "out/test_abnormal.parquet",
    }
    back = read_table(paths["train"], CANONICAL)
    assert back.has_labels and np.array_equal(back.grouped().offsets, [0, 3, 5])


def test_adfa_tsv_without_a_split_or_with_trailing_tabs(tmp_path: Path) -> None:
    rows = "split\tlabel\tattack_type\tattack_run\tsource_file\tsyscalls\n"
    only_test = rows + "validation\t0\t\t\tValidation_Data_Master/UVD-0001.txt\t1 2 3\n"
    path = tmp_path / "adfa_ld_traces.tsv.gz"
    path.write_bytes(gzip.compress(only_test.encode()))
    with pytest.raises(DataError, match=r"no train traces \(the train split\); the file is incomplete"):
        load_adfa_ld(tmp_path)
    # a tab after every row is one empty field too many: it must not shift the columns
    train = "train\t0\t\t\tTraining_Data_Master/UTD-0001.txt\t4 5\t\n"
    path.write_bytes(gzip.compress((rows + train + only_test.splitlines()[1] + "\t\n").encode()))
    tables = load_adfa_ld(tmp_path)
    assert list(tables["train"].grouped().ids) == ["UTD-0001"]
    path.write_bytes(gzip.compress((rows + train + "validation\t0\t\t\tV/UTD-0001.txt\t1\n").encode()))
    with pytest.raises(DataError, match=r"line 3: trace 'UTD-0001' appears twice"):
        load_adfa_ld(tmp_path)


def test_convert_refuses_its_source_and_warns_of_other_tables(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _hdfs_source(tmp_path)
    with pytest.raises(ConfigError, match="is the source folder"):
        convert("hdfs", src, src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "test.parquet").write_bytes(b"an earlier conversion's table")
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        convert("hdfs", src, out, fmt="csv")
    assert "also holds test.parquet, not written by this conversion" in caplog.text
    caplog.clear()
    (out / "test.parquet").unlink()
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        convert("hdfs", src, out, fmt="csv")  # its own earlier files are replaced, not warned about
    assert "also holds" not in caplog.text
