"""Where a node's data comes from.

* **Deployment** — node config ``data-path`` (``flower-supernode --node-config
  "data-path='/srv/seqwatch'"``): a directory holding ``train.<ext>`` and
  optionally ``test.<ext>`` (``.parquet``, ``.csv``, ``.csv.gz``, ``.tsv``,
  ``.tsv.gz``), canonical event tables as ``seqwatch convert`` or
  :func:`common.tableio.write_table` write them; or a single file, used as
  training data (no test set). Columns: a ``columns.json`` / ``columns.toml``
  column map beside the files wins; otherwise they are inferred from the header
  (``sequence``, ``order``, ``event``, ``label``; ``gap_seconds`` marks a
  timestamped table; other columns of numbers, as
  :func:`common.tableio.peek_columns` finds them, are numeric features, the
  rest context features).
* **Simulation** — node config ``partition-id`` / ``num-partitions`` (injected
  by the simulation engine) plus run config ``data.*``:

  - ``synthetic`` (default): :func:`simulations.synthetic.load_synthetic` with
    one institution per node and ``data.synthetic-users`` users, ``data.seed``;
    ``data.partitioner = natural`` gives node *k* institution *k*
    (``iid``/``dirichlet`` split the pooled sessions instead);
  - ``adfa-ld``, ``hdfs``, ``openstack`` (kalaki): read from
    :func:`common.datasets.shared_data_dir` (set ``SEQWATCH_SHARED_DATA`` before
    the local SuperLink starts: the app runs from a copy in ``$FLWR_HOME``);
    training sequences are split by ``data.partitioner`` (``iid`` or
    ``dirichlet`` with ``data.alpha``; these data sets have no institution, so
    ``natural`` is refused) and the test set is split IID, so every node has
    labelled test data.

Loaded data is cached per process (:func:`functools.lru_cache`): a simulation
worker serving several partitions reads a data set once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from common.config import DataConfig
from common.errors import ConfigError, DataError
from common.events import (
    ATTACK_TYPE,
    EVENT,
    GAP,
    LABEL,
    ORDER,
    SEQUENCE,
    ColumnMap,
    EventTable,
)

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv", ".tsv.gz")
_RESERVED = {SEQUENCE, ORDER, EVENT, LABEL, ATTACK_TYPE, GAP}


@dataclass(frozen=True, eq=False)
class NodeData:
    """A node's tables: training data (normal behaviour) and optional labelled test data."""

    train: EventTable
    test: EventTable | None
    source: str


def is_simulation(node_config: Mapping[str, Any]) -> bool:
    """Simulation nodes get ``partition-id``; deployment nodes must give ``data-path``."""
    return "data-path" not in node_config and "partition-id" in node_config


def node_data(node_config: Mapping[str, Any], data: DataConfig) -> NodeData:
    """The data of this node (cached per process)."""
    path = node_config.get("data-path")
    if path:
        return deployment_data(str(path))
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ConfigError(
            "no data for this node: start the SuperNode with --node-config \"data-path='DIR'\" "
            "(a folder with train.parquet/csv and optionally test.parquet/csv)"
        )
    return simulation_data(int(node_config["partition-id"]), int(node_config["num-partitions"]), data)


# --------------------------------------------------------------------------- deployment


def _find(folder: Path, stem: str) -> Path | None:
    hits = [folder / f"{stem}{s}" for s in SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(hits) > 1:
        raise DataError(f"{folder}: several {stem} files ({', '.join(h.name for h in hits)}); keep one")
    return hits[0] if hits else None


def infer_columns(path: Path) -> ColumnMap:
    """Column map of a canonical event file (see the module docstring)."""
    from client.datafiles import COLUMN_FILES, beside_column_map
    from common.tableio import peek_columns

    beside = beside_column_map(path)
    if beside is not None:
        return ColumnMap.from_file(beside)
    numeric = peek_columns(path)
    if numeric is None:  # unreadable: read_table says why, naming the file
        return ColumnMap(sequence=SEQUENCE, event=EVENT)
    header = list(numeric)
    missing = [c for c in (SEQUENCE, EVENT) if c not in header]
    if missing:
        raise DataError(
            f"{path}: no {' or '.join(repr(m) for m in missing)} column (columns: {header}); write the "
            f"file with 'seqwatch convert' / write_table, or put a {COLUMN_FILES[0]} column map beside it"
        )
    features = [c for c in header if c not in _RESERVED]
    return ColumnMap(
        sequence=SEQUENCE,
        event=EVENT,
        order=ORDER if ORDER in header else None,
        time=(GAP in header) if ORDER in header else None,
        numeric=tuple(c for c in features if numeric[c]),
        context=tuple(c for c in features if not numeric[c]),
        label=LABEL if LABEL in header else None,
    )


@lru_cache(maxsize=4)
def deployment_data(path: str) -> NodeData:
    """:func:`read_deployment_data`, read once per process."""
    return read_deployment_data(path)


def read_deployment_data(path: str) -> NodeData:
    """Read ``data-path`` (folder with train/test tables, or one training file)."""
    from client.datafiles import DEFAULT_ENCODING, beside_column_map, layout_file
    from common.tableio import read_table

    p = Path(path).expanduser()
    test_path: Path | None = None
    if p.is_file():
        train_path = p
    elif p.is_dir():
        found, test_path = _find(p, "train"), _find(p, "test")
        if found is None:
            raise DataError(f"{p}: no train file ({', '.join('train' + s for s in SUFFIXES)})")
        train_path = found
    else:
        raise DataError(f"data-path {p}: no such file or folder")
    columns = infer_columns(train_path)
    layout = layout_file(beside_column_map(train_path))
    # a model's columns.json beside the data: read in the encoding seqwatch fit read it in
    encoding = layout.encoding if layout is not None and layout.encoding else DEFAULT_ENCODING
    train = read_table(train_path, columns, encoding=encoding)
    columns = columns.as_read(train)  # test dates read as the training dates were
    test = read_table(test_path, columns, encoding=encoding) if test_path is not None else None
    if layout is not None and (layout.session_gap is not None or layout.block_size is not None):
        from common.sessions import sessionize

        # a model's columns.json beside the data: its sessions, as seqwatch fit cut them
        gap, block = layout.session_gap, layout.block_size
        train = sessionize(train, gap_seconds=gap, block_size=block)
        test = sessionize(test, gap_seconds=gap, block_size=block) if test is not None else None
    log.info("node data: %s (%d train sequences, %s test)", p, len(train), len(test) if test else "no")
    return NodeData(train=train, test=test, source=str(p))


# --------------------------------------------------------------------------- simulation


def _data_key(data: DataConfig) -> tuple[Any, ...]:
    return (data.dataset, data.partitioner, data.alpha, data.synthetic_users, data.seed)


@lru_cache(maxsize=2)
def _benchmark(dataset: str) -> tuple[EventTable, EventTable | None]:
    """(train, test) of a shared benchmark data set."""
    from common.datasets import load_adfa_ld, load_hdfs, load_openstack, shared_data_dir, shared_data_missing

    root = shared_data_dir()
    if root is None:
        raise DataError(
            f"data.dataset = {dataset!r} needs the shared data folder: {shared_data_missing()} (with "
            f"flwr run: in the environment of the first 'flwr run', which starts the local SuperLink)"
        )
    if dataset == "adfa-ld":
        splits = load_adfa_ld(root)
        return splits["train"], splits["test"]
    if dataset == "hdfs":
        splits = load_hdfs(root)
        return splits["train"], splits["test_abnormal"]
    if dataset == "openstack":
        splits = load_openstack(root, "kalaki")
        return splits["train"], splits["test"]
    raise ConfigError(f"unknown data.dataset {dataset!r}")


@lru_cache(maxsize=1)
def _synthetic(institutions: int, users: int, seed: int) -> tuple[EventTable, EventTable]:
    from simulations.synthetic import SyntheticSpec, load_synthetic

    tables = load_synthetic(
        SyntheticSpec(institutions=institutions, users=max(users, institutions), seed=seed)
    )
    return tables["train"], tables["test"]


@lru_cache(maxsize=1)
def _partitions(key: tuple[Any, ...], n: int) -> tuple[tuple[EventTable, ...], tuple[EventTable, ...] | None]:
    dataset, partitioner, alpha, users, seed = key
    from simulations.partition import partition

    if dataset == "synthetic":
        from simulations.synthetic import SYNTHETIC_KEYS

        train, test = _synthetic(n, users, seed)
        if partitioner == "natural":
            k = SYNTHETIC_KEYS["institution"]
            return (
                tuple(partition(train, n, "natural", key=k, seed=seed)),
                tuple(partition(test, n, "natural", key=k, seed=seed)),
            )
        return (
            tuple(partition(train, n, partitioner, alpha=alpha, seed=seed)),
            tuple(partition(test, n, "iid", seed=seed)),
        )
    if partitioner == "natural":
        raise ConfigError(
            f"data.partitioner = 'natural' needs an institution key, which {dataset} does not have; "
            f"set data.partitioner to 'iid' or 'dirichlet'"
        )
    bench_train, bench_test = _benchmark(dataset)
    parts = tuple(partition(bench_train, n, partitioner, alpha=alpha, seed=seed))
    tests = tuple(partition(bench_test, n, "iid", seed=seed)) if bench_test is not None else None
    return parts, tests


@lru_cache(maxsize=16)
def simulation_data(partition_id: int, num_partitions: int, data: DataConfig) -> NodeData:
    """Partition ``partition_id`` of ``num_partitions`` as the run config's ``data.*`` says."""
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"partition-id {partition_id} is not in [0, {num_partitions})")
    train_parts, test_parts = _partitions(_data_key(data), num_partitions)
    test = test_parts[partition_id] if test_parts is not None else None
    return NodeData(
        train=train_parts[partition_id],
        test=test,
        source=f"{data.dataset}[{data.partitioner}] partition {partition_id}/{num_partitions}",
    )


def describe(node: NodeData) -> dict[str, Any]:
    """Counts only (safe to log or report)."""
    out: dict[str, Any] = {"train_sequences": len(node.train), "train_events": node.train.n_events}
    if node.test is not None:
        out["test_sequences"] = len(node.test)
        g = node.test.grouped()
        if g.labels is not None:
            out["test_anomalous"] = int(g.labels.sum())
    return out
