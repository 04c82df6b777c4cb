"""A real Flower simulation: ``flwr run . --stream`` on OpenStack (kalaki), 3 nodes x 2 rounds.

Runs the app as users do (managed local SuperLink, Ray backend, FAB built from
this folder), then the same federation in-process, which must train the same
weights. ``FLWR_HOME`` is a temporary folder and the managed SuperLink gets
free ports of its own, so nothing touches ``~/.flwr`` or another SuperLink on
this machine; the SuperLink this test started is stopped afterwards. Takes
about 40 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.datasets import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.realdata]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with(args: list[str]) -> list[int]:
    """Processes whose command line contains all of ``args`` (as whole arguments)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in argv]
        if all(a in text for a in args):
            found.append(int(entry.name))
    return found


def _stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.3)
    for pid in pids:
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def flower_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    data = shared_data_dir()
    if data is None or not (data / "openstack-aecid" / "kalaki").is_dir():
        pytest.skip("shared data (openstack-aecid/kalaki) not available")
    port, control = _free_port(), _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control),
        "SEQWATCH_SHARED_DATA": str(data),
    }
    try:
        yield env
    finally:
        # the managed SuperLink keeps running after 'flwr run'; stop the one this test started
        # (found by its unique ports) and the SuperExec it spawned
        _stop(
            _pids_with(["--control-api-address", f"127.0.0.1:{control}"])
            + _pids_with(["--runtime-api-address", f"127.0.0.1:{port}"])
        )


def test_flwr_run_simulation_on_openstack(tmp_path: Path, flower_env: dict[str, str]) -> None:
    runs = tmp_path / "runs"
    run_config = {
        "data.dataset": "openstack",
        "data.partitioner": "iid",
        "federation.num-server-rounds": 2,
        "federation.local-epochs": 1,
        "federation.min-nodes": 3,
        "federation.histogram-bins": 50,
        "federation.run-dir": str(runs),
        "federation.run-name": "it",
        "model.hidden": 16,
        "model.embed-dim": 8,
        "model.layers": 1,
    }
    overrides = " ".join(f"{k}={v!r}" for k, v in run_config.items())  # 'text' is a TOML string
    cmd = [
        str(Path(sys.executable).parent / "flwr"),
        "run",
        str(REPO),
        "--stream",
        "--federation-config",
        "num-supernodes=3 client-resources-num-cpus=1",
        "--run-config",
        overrides,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=flower_env, capture_output=True, text=True, timeout=420, check=False
    )
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run = runs / "it"
    assert (run / "final.json").is_file(), out[-4000:]
    assert sorted(p.name for p in (run / "checkpoints").glob("round-*.safetensors")) == [
        "round-0001.safetensors",
        "round-0002.safetensors",
    ]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["train-nodes"] == 3 and r["eval-nodes"] == 3 for r in rows)
    final = json.loads((run / "final.json").read_text())
    assert final["report"]["nodes"] == 3 and final["report"]["test_sequences"] == 5546
    assert sorted(p.name for p in (run / "clients").iterdir()) == [
        "partition-0",
        "partition-1",
        "partition-2",
    ]
    assert "round 2/2: train-loss" in out and "final detection quality" in out

    from common.datasets import load_openstack
    from common.detector import SequenceDetector

    det = SequenceDetector.load(run / "model")
    assert det.global_threshold_ == pytest.approx(final["calibration"]["global_threshold"])
    data = shared_data_dir()
    assert data is not None
    test = load_openstack(data, "kalaki")["test"]
    subset = test.subset(test.grouped().ids[:50])
    assert len(det.decision_function(subset)) == 50
    print(f"flwr run took {took:.1f} s")

    # Ray gave the nodes random ids and took their replies as they came: the in-process engine
    # (fixed ids, fixed order) trains the very same weights and sets the very same threshold
    from simulations.inprocess import run_in_process

    _, again = run_in_process({**run_config, "federation.run-name": "again"}, 3, record=False)
    for name in ("round-0001.safetensors", "round-0002.safetensors"):
        assert (runs / "again" / "checkpoints" / name).read_bytes() == (
            run / "checkpoints" / name
        ).read_bytes(), name
    assert again["calibration"] == final["calibration"]
