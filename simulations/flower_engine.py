"""Run the app with ``flwr run . --stream`` (managed local SuperLink, Ray simulation) and clean up after.

Used by :mod:`simulations.experiment` (``--engine flower``) and
:mod:`simulations.bench_federation`. Each call gets its own ``FLWR_HOME`` and
free ports for the managed local SuperLink, so it neither touches ``~/.flwr``
nor reuses a SuperLink started by someone else (which would keep *its*
environment: Flower reads environment variables only when the SuperLink
starts). Every process of the run inherits a unique marker variable
(:data:`MARKER`); afterwards the processes carrying this run's marker (the
detached SuperLink, its SuperExec, Ray) are stopped by process id.

:class:`TreeSampler` samples the memory of the whole process tree (``flwr
run``, SuperLink, ``flwr-simulation``, Ray's GCS, raylet and workers) from
``/proc``: the sum of ``VmRSS`` (``/proc/PID/status``; shared pages count once
per process, so it over-counts) and the sum of ``Pss`` (``/proc/PID/smaps_rollup``;
shared pages split between the processes that map them).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
#: Environment variable that marks every process of one launched run.
MARKER = "SEQWATCH_FLOWER_RUN"

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- run config files


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"run config values must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        import json

        return json.dumps(value)  # a TOML basic string for everything a run config holds
    raise ValueError(f"run config values are bool, int, float or str, got {type(value).__name__}")


def write_run_config(path: Path, flat: Mapping[str, Any]) -> Path:
    """Write flat dotted keys as a TOML file ``flwr run --run-config FILE`` accepts (quoted keys)."""
    lines = [f'"{k}" = {_toml_value(v)}' for k, v in flat.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- /proc


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _parent(pid: int) -> int | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # comm may contain spaces and parentheses: the fields after the last ')' are fixed
    rest = raw[raw.rfind(b")") + 2 :].split()
    return int(rest[1]) if len(rest) > 1 else None


def _has_marker(pid: int, marker: bytes) -> bool:
    raw = _read(f"/proc/{pid}/environ")
    return raw is not None and marker in raw.split(b"\0")


def _kib(raw: bytes | None, key: bytes) -> int:
    if raw is None:
        return 0
    for line in raw.splitlines():
        if line.startswith(key):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 else 0
    return 0


def tree_pids(root: int | None, marker: str | None) -> set[int]:
    """``root`` and its descendants, plus every process whose environment holds ``marker``."""
    pids = _pids()
    children: dict[int, list[int]] = {}
    for pid in pids:
        ppid = _parent(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    marked: list[int] = []
    if marker:
        token = marker.encode()
        marked = [p for p in pids if p != os.getpid() and _has_marker(p, token)]
    found: set[int] = set()
    todo = ([root] if root else []) + marked
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    found.discard(os.getpid())
    return found


def memory_of(pids: set[int]) -> tuple[int, int, int]:
    """(sum of VmRSS, sum of Pss, processes read), in KiB."""
    rss = pss = n = 0
    for pid in pids:
        status = _read(f"/proc/{pid}/status")
        if status is None:
            continue
        n += 1
        rss += _kib(status, b"VmRSS:")
        pss += _kib(_read(f"/proc/{pid}/smaps_rollup"), b"Pss:")
    return rss, pss, n


@dataclass
class TreeSampler:
    """Samples the memory of a process tree every ``interval`` seconds in a thread."""

    root: int | None = None
    marker: str | None = None
    interval: float = 0.5
    peak_rss_kib: int = 0
    peak_pss_kib: int = 0
    peak_processes: int = 0
    samples: int = 0
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> TreeSampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        rss, pss, n = memory_of(tree_pids(self.root, self.marker))
        self.samples += 1
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_pss_kib = max(self.peak_pss_kib, pss)
        self.peak_processes = max(self.peak_processes, n)
        self.timeline.append((round(time.monotonic() - self._t0, 2), rss, pss, n))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> dict[str, Any]:
        return {
            "peak_rss_mib": round(self.peak_rss_kib / 1024, 1),
            "peak_pss_mib": round(self.peak_pss_kib / 1024, 1),
            "peak_processes": self.peak_processes,
            "samples": self.samples,
            "interval_s": self.interval,
        }


def stop_pids(pids: set[int] | list[int], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, for exactly these process ids."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.3)
    for pid in pids:
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- flwr run


@dataclass
class FlowerResult:
    returncode: int
    seconds: float
    output: str
    memory: dict[str, Any]
    command: list[str]
    flwr_home: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def flower_env(flwr_home: Path, marker: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``flwr run``: quiet Flower, own FLWR_HOME and ports, this venv first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **QUIET_ENV,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(flwr_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        MARKER: marker,
    }
    env.update(extra or {})
    return env


def run_flower(
    run_config: Mapping[str, Any],
    *,
    num_supernodes: int,
    work_dir: Path,
    cpus_per_client: float = 1.0,
    timeout: float = 1800.0,
    app_dir: Path = REPO,
    sample_memory: bool = False,
    sample_interval: float = 0.5,
    extra_env: Mapping[str, str] | None = None,
) -> FlowerResult:
    """``flwr run APP --stream`` with ``run_config`` (written to a TOML file) on ``num_supernodes`` nodes.

    The run's own SuperLink and everything it started are stopped afterwards,
    also on failure or timeout. ``work_dir`` receives ``flwr-home/`` and the
    run config file.
    """
    work_dir = Path(work_dir).resolve()
    flwr_home = work_dir / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    conf_file = write_run_config(work_dir / "run_config.toml", run_config)
    marker = f"{MARKER}={uuid.uuid4().hex}"
    env = flower_env(flwr_home, marker.split("=", 1)[1], extra_env)
    cmd = [
        str(Path(sys.executable).parent / "flwr"),
        "run",
        str(app_dir),
        "--stream",
        "--federation-config",
        f"num-supernodes={int(num_supernodes)} client-resources-num-cpus={cpus_per_client:g}",
        "--run-config",
        str(conf_file),
    ]
    log.info(
        "flwr run: %d supernodes, %g CPU each, run config %s", num_supernodes, cpus_per_client, conf_file
    )
    sampler = TreeSampler(marker=marker, interval=sample_interval) if sample_memory else None
    t0 = time.monotonic()
    out_path = work_dir / "flwr-run.log"
    try:
        with open(out_path, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                cmd, cwd=work_dir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
            )
            if sampler is not None:
                sampler.root = proc.pid
                sampler.start()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("flwr run did not finish in %.0f s; stopping it", timeout)
                stop_pids([proc.pid], grace=5)
                rc = 124
    finally:
        seconds = time.monotonic() - t0
        if sampler is not None:
            sampler.stop()
        leftovers = tree_pids(None, marker)
        if leftovers:
            log.info("stopping %d process(es) of this run (SuperLink, SuperExec, Ray)", len(leftovers))
            stop_pids(leftovers)
    output = out_path.read_text(encoding="utf-8", errors="replace")
    return FlowerResult(
        returncode=rc,
        seconds=round(seconds, 2),
        output=output,
        memory=sampler.summary() if sampler is not None else {},
        command=cmd,
        flwr_home=str(flwr_home),
    )
