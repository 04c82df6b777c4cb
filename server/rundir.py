"""The run directory of a federated run: set-up, checkpoints, metrics, resume state, final report.

Layout of ``<federation.run-dir>/<federation.run-name>/``::

    setup.json                      shared encoder + set-up summary (no secrets)
    checkpoints/round-0003.safetensors          global weights after round 3
    checkpoints/round-0003.strategy.safetensors server optimiser state (FedAdam only)
    metrics.jsonl, metrics.csv      one row per completed round
    state.json                      last completed round (the commit point for resume)
    final.json                      global detection quality after calibration
    model/                          final global model (``seqwatch score --model``)
    clients/partition-<id>/         simulation only: each institution's local report

Every file that resume reads is written atomically (temporary file, then
``os.replace``). ``state.json`` is written last, so a crash leaves either the
old or the new round committed; metrics rows of uncommitted rounds are dropped
when a run resumes. Weights are safetensors (no pickle). Framework-free:
arrays are plain ``numpy`` dicts.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from common.protocol import FUSION_SCALE, FUSION_SHIFT

STATE_FORMAT = "seqwatch-run-state"
STATE_VERSION = 1

#: Columns of metrics.csv (metrics.jsonl rows hold the same keys, and may hold more: the failed
#: nodes' ids, compute seconds). A column a round did not fill is empty, e.g. the context fusion
#: without a context head.
METRIC_COLUMNS = (
    "round",
    "train-loss",
    "train-events",
    "train-nodes",
    "train-failures",
    "val-loss",
    "val-events",
    "eval-nodes",
    "eval-failures",
    "nodes-sampled",
    "nodes-replied",
    "nodes-failed",
    "auroc",
    "precision",
    "recall",
    "f1",
    "false-alarm-rate",
    "tp",
    "fp",
    "tn",
    "fn",
    "end-weight",
    FUSION_SHIFT,
    FUSION_SCALE,
    "seconds",
    "time",
)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _fsync_write(tmp, data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=_json_default) + "\n").encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write a safetensors file of numpy arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class ResumeState:
    """What ``state.json`` says: the last completed round and where its weights are."""

    last_round: int
    checkpoint: Path
    strategy_state: Path | None
    strategy: str


class RunDir:
    """Files of one run (``root`` = ``<run-dir>/<run-name>``, made absolute)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # -- paths ------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def setup_path(self) -> Path:
        return self.root / "setup.json"

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def final_path(self) -> Path:
        return self.root / "final.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def checkpoint_path(self, server_round: int) -> Path:
        return self.checkpoints / f"round-{server_round:04d}.safetensors"

    def strategy_state_path(self, server_round: int) -> Path:
        return self.checkpoints / f"round-{server_round:04d}.strategy.safetensors"

    # -- set-up -----------------------------------------------------------------------
    def save_setup(self, data: Mapping[str, Any]) -> None:
        atomic_write_json(self.setup_path, dict(data))

    def load_setup(self) -> dict[str, Any]:
        return dict(json.loads(self.setup_path.read_text(encoding="utf-8")))

    # -- fresh start / resume -----------------------------------------------------------
    def read_state(self) -> ResumeState | None:
        """The committed state, or None when this run has not completed a round."""
        if not self.state_path.is_file():
            return None
        data = json.loads(self.state_path.read_text(encoding="utf-8"))
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path}: not a seqwatch run state file")
        strat = data.get("strategy_state")
        return ResumeState(
            last_round=int(data["last_round"]),
            checkpoint=self.root / str(data["checkpoint"]),
            strategy_state=self.root / str(strat) if strat else None,
            strategy=str(data.get("strategy", "")),
        )

    def reset(self) -> None:
        """Start over: drop the state, metrics and final results of an earlier, uncommitted attempt."""
        self.root.mkdir(parents=True, exist_ok=True)
        for p in (self.state_path, self.metrics_jsonl, self.metrics_csv, self.final_path):
            p.unlink(missing_ok=True)
        if self.checkpoints.is_dir():
            for p in self.checkpoints.glob("round-*.safetensors"):
                p.unlink()

    # -- checkpoints --------------------------------------------------------------------
    def load_checkpoint(self, path: Path) -> dict[str, np.ndarray]:
        return dict(load_file(str(path)))

    def commit_round(
        self,
        server_round: int,
        arrays: Mapping[str, np.ndarray],
        row: Mapping[str, Any],
        *,
        strategy: str,
        strategy_state: Mapping[str, np.ndarray] | None = None,
    ) -> Path:
        """Checkpoint, metrics row, then (the commit) ``state.json``. Returns the checkpoint path."""
        ckpt = self.checkpoint_path(server_round)
        save_arrays(ckpt, arrays)
        strat_path = None
        if strategy_state:
            strat_path = self.strategy_state_path(server_round)
            save_arrays(strat_path, strategy_state)
        self.append_metrics(row)
        atomic_write_json(
            self.state_path,
            {
                "format": STATE_FORMAT,
                "format_version": STATE_VERSION,
                "last_round": int(server_round),
                "checkpoint": str(ckpt.relative_to(self.root)),
                "strategy_state": str(strat_path.relative_to(self.root)) if strat_path else None,
                "strategy": strategy,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        return ckpt

    # -- metrics ------------------------------------------------------------------------
    def append_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one row to metrics.jsonl and metrics.csv (header written with the first row)."""
        self.root.mkdir(parents=True, exist_ok=True)
        new = not self.metrics_csv.is_file() or self.metrics_csv.stat().st_size == 0
        with open(self.metrics_jsonl, "a", encoding="utf-8") as fh:
            fh.write(_jsonl([row]))
        with open(self.metrics_csv, "a", encoding="utf-8", newline="") as fh:
            fh.write(_csv([row], header=new))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_jsonl.is_file():
            return []
        rows = []
        for line in self.metrics_jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line from a crash
        return rows

    def truncate_metrics(self, last_round: int) -> None:
        """Keep only rows of rounds ``<= last_round`` (rows of an uncommitted round are dropped)."""
        rows = [r for r in self.read_metrics() if int(r.get("round", 0)) <= last_round]
        # each file replaced whole: an interruption leaves the old rows or the new ones, never fewer
        atomic_write_bytes(self.metrics_jsonl, _jsonl(rows).encode("utf-8"))
        atomic_write_bytes(self.metrics_csv, _csv(rows, header=True).encode("utf-8"))

    # -- final ----------------------------------------------------------------------------
    def save_final(self, data: Mapping[str, Any]) -> None:
        atomic_write_json(self.final_path, dict(data))


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """``rows`` as metrics.jsonl lines."""
    return "".join(json.dumps({k: _plain(v) for k, v in r.items()}) + "\n" for r in rows)


def _csv(rows: Iterable[Mapping[str, Any]], *, header: bool) -> str:
    """``rows`` as metrics.csv lines (:data:`METRIC_COLUMNS`), with the header line when asked."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    if header:
        writer.writeheader()
    for r in rows:
        clean = {k: _plain(v) for k, v in r.items()}
        writer.writerow({k: "" if clean.get(k) is None else clean.get(k) for k in METRIC_COLUMNS})
    return out.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
