"""Benchmark: Flower's per-round overhead and the memory of a simulation at 10, 50 and 100 clients.

    python -m simulations.bench_federation --out docs/bench_federation.json \\
        [--memory-clients 10,50,100] [--overhead-clients 10] [--overhead-rounds 3]

Everything runs as users run it: ``flwr run . --stream`` with a managed local
SuperLink and the Ray simulation (:mod:`simulations.flower_engine`: own
``FLWR_HOME`` and ports per run, everything stopped afterwards), on the
synthetic data set (``natural`` partition: one institution per client,
``--users-per-client`` users each, so every client holds about the same data
at every scale) with a tiny model (1-layer LSTM, hidden 8).

**Per-round overhead** (``--overhead-clients``, ``--overhead-rounds``): the
ServerApp's round wall time (``seconds`` in ``metrics.jsonl``: from
``configure_train`` to the end of ``aggregate_evaluate``, so the train and the
evaluate exchange) minus the clients' compute time (``train-compute-seconds`` +
``eval-compute-seconds``: the sums of the ``compute-seconds`` every ClientApp
handler reports, its wall time from receiving the message to building the
reply) and minus the END weight's query (``eval-config-seconds``: before the
evaluation, each node scores its validation sequences under the new global
weights and sends their spread; reported on its own as ``end_weight_query_s``).
Run with ``client-resources-num-cpus = 2`` on 2 cores, i.e. one ClientApp at
a time, so the clients' compute adds up and the difference is what Flower adds
per round: scheduling, serialisation, SuperLink round trips, Ray actors.
For reference the same is measured with the in-process grid
(:mod:`simulations.inprocess`: deep copies instead of serialisation, no Ray).
The set-up phase before round 1 already starts the Ray actors and loads the
data; round 1 still carries first-call costs, so the mean is also given over
the later rounds.

**Peak memory** (``--memory-clients``, 1 round, ``client-resources-num-cpus = 1``:
two ClientApps at a time): ``/proc`` is sampled every ``--interval`` seconds
for the whole process tree of the run (``flwr run``, the SuperLink, SuperExec,
``flwr-simulation`` with the ServerApp, Ray's GCS, raylet, dashboard agents and
workers; found as descendants and by an environment marker every process of
the run inherits). Reported: peak of the summed ``VmRSS`` (what was asked for;
it counts shared pages once per process, so it over-states) and peak of the
summed ``Pss`` (shared pages split between processes; the better total).

The machine may be shared: the load average before and after each run is
recorded beside its timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.cli import Parser, output_file, positive_int, run_main

log = logging.getLogger("simulations.bench_federation")
PROG = "python -m simulations.bench_federation"

TINY: dict[str, Any] = {
    "model.kind": "lstm",
    "model.hidden": 8,
    "model.embed-dim": 8,
    "model.context-dim": 2,
    "model.layers": 1,
    "train.batch-size": 32,
    "federation.histogram-bins": 20,
    "federation.local-epochs": 1,
    "federation.strategy": "fedavg",
    "data.dataset": "synthetic",
    "data.partitioner": "natural",
    "data.seed": 0,
    "train.seed": 0,
}


def run_config(clients: int, rounds: int, users_per_client: int, run_dir: Path, name: str) -> dict[str, Any]:
    return {
        **TINY,
        "data.synthetic-users": users_per_client * clients,
        "federation.min-nodes": clients,
        "federation.num-server-rounds": rounds,
        "federation.run-dir": str(run_dir),
        "federation.run-name": name,
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def round_rows(rows: Sequence[Mapping[str, Any]], slots: int) -> list[dict[str, Any]]:
    """Per round: wall, compute, the END weight's query, overhead (wall - compute / slots - that
    query), per train or evaluate message."""
    out = []
    for r in rows:
        wall = float(r.get("seconds", 0.0))
        train = float(r.get("train-compute-seconds", 0.0))
        ev = float(r.get("eval-compute-seconds", 0.0))
        query = float(r.get("eval-config-seconds", 0.0))
        messages = int(r.get("train-nodes", 0)) + int(r.get("eval-nodes", 0))
        overhead = wall - (train + ev) / slots - query
        out.append(
            {
                "round": int(r["round"]),
                "wall_s": round(wall, 3),
                "train_compute_s": round(train, 3),
                "eval_compute_s": round(ev, 3),
                "train_compute_max_s": round(float(r.get("train-compute-max", 0.0)), 3),
                "eval_compute_max_s": round(float(r.get("eval-compute-max", 0.0)), 3),
                "end_weight_query_s": round(query, 3),
                "overhead_s": round(overhead, 3),
                "messages": messages,
                "overhead_per_message_ms": round(1000 * overhead / messages, 1) if messages else None,
            }
        )
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    later = rows[1:] if len(rows) > 1 else rows
    return {
        "mean_overhead_s": _mean([r["overhead_s"] for r in rows]),
        "mean_overhead_s_after_round_1": _mean([r["overhead_s"] for r in later]),
        "mean_overhead_per_message_ms_after_round_1": _mean(
            [r["overhead_per_message_ms"] for r in later if r["overhead_per_message_ms"] is not None]
        ),
        "mean_wall_s_after_round_1": _mean([r["wall_s"] for r in later]),
        "mean_end_weight_query_s_after_round_1": _mean([r["end_weight_query_s"] for r in later]),
    }


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    from server.rundir import RunDir

    return RunDir(run_dir).read_metrics()


def flower_case(
    work: Path, clients: int, rounds: int, cpus: float, users: int, timeout: float, interval: float
) -> dict[str, Any]:
    """One ``flwr run``; returns timings, round rows and the peak memory of its process tree."""
    from simulations.flower_engine import run_flower

    name = f"c{clients}-r{rounds}-cpu{cpus:g}"
    case_dir = work / name
    rc = run_config(clients, rounds, users, case_dir / "runs", "bench")
    before = loadavg()
    res = run_flower(
        rc,
        num_supernodes=clients,
        work_dir=case_dir,
        cpus_per_client=cpus,
        timeout=timeout,
        sample_memory=True,
        sample_interval=interval,
    )
    after = loadavg()
    if not res.ok:
        raise RuntimeError(f"flwr run ({name}) failed with exit {res.returncode}:\n{res.output[-4000:]}")
    slots = max(1, int(os.cpu_count() or 1) // max(1, int(cpus)))
    slots = min(slots, clients)
    rows = round_rows(read_metrics(case_dir / "runs" / "bench"), slots)
    final = json.loads((case_dir / "runs" / "bench" / "final.json").read_text())
    return {
        "engine": "flower",
        "clients": clients,
        "rounds": rounds,
        "client_resources_num_cpus": cpus,
        "concurrent_clientapps": slots,
        "flwr_run_seconds": res.seconds,
        "federation_seconds": final.get("seconds"),
        "memory": res.memory,
        "round_rows": rows,
        **summarise(rows),
        "loadavg_before": before,
        "loadavg_after": after,
    }


def inprocess_case(work: Path, clients: int, rounds: int, users: int) -> dict[str, Any]:
    """The same federation over the in-process grid (no Ray, no serialisation)."""
    import resource

    import torch

    from simulations.inprocess import run_in_process

    torch.set_num_threads(1)
    rc = run_config(clients, rounds, users, work / "inprocess", "bench")
    before = loadavg()
    t0 = time.monotonic()
    run_in_process(rc, clients, record=False)
    seconds = time.monotonic() - t0
    rows = round_rows(read_metrics(work / "inprocess" / "bench"), 1)
    return {
        "engine": "inprocess",
        "clients": clients,
        "rounds": rounds,
        "concurrent_clientapps": 1,
        "federation_seconds": round(seconds, 2),
        "memory": {
            "peak_rss_mib_of_this_process": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            )
        },
        "round_rows": rows,
        **summarise(rows),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def headline(result: Mapping[str, Any]) -> dict[str, Any]:
    """The figures asked for, in one place (the details stay in the sections)."""
    o = result["overhead"]
    out: dict[str, Any] = {
        "overhead_clients": o["clients"],
        "overhead_per_round_s": o["mean_overhead_s_after_round_1"],
        "overhead_round_1_s": o["round_rows"][0]["overhead_s"] if o["round_rows"] else None,
        "overhead_per_message_ms": o["mean_overhead_per_message_ms_after_round_1"],
        "round_wall_s": o["mean_wall_s_after_round_1"],
        "end_weight_query_s": o["mean_end_weight_query_s_after_round_1"],
    }
    if "overhead_inprocess" in result:
        out["inprocess_overhead_per_round_s"] = result["overhead_inprocess"]["mean_overhead_s_after_round_1"]
    out["peak_memory"] = [
        {
            "clients": m["clients"],
            "peak_rss_mib": m["memory"]["peak_rss_mib"],
            "peak_pss_mib": m["memory"]["peak_pss_mib"],
            "processes": m["memory"]["peak_processes"],
            "flwr_run_seconds": m["flwr_run_seconds"],
        }
        for m in result.get("memory", [])
    ]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument(
        "--out",
        type=output_file,
        default=Path("docs/bench_federation.json"),
        help="JSON output (default: docs/bench_federation.json, relative to the current folder)",
    )
    p.add_argument(
        "--memory-clients",
        type=_client_counts,
        default=[10, 50, 100],
        help="comma-separated client counts (1 round each; default 10,50,100)",
    )
    p.add_argument("--overhead-clients", type=positive_int, default=10, help="clients of the overhead runs")
    p.add_argument("--overhead-rounds", type=positive_int, default=3, help="rounds of the overhead runs")
    p.add_argument("--users-per-client", type=positive_int, default=8, help="synthetic users per client")
    p.add_argument("--interval", type=float, default=0.5, help="memory sampling interval (s)")
    p.add_argument("--timeout", type=float, default=1500.0, help="seconds per flwr run")
    p.add_argument("--work-dir", help="scratch folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--skip-inprocess", action="store_true")
    return p


def _client_counts(text: str) -> list[int]:
    """argparse type of ``--memory-clients``: ``"10,50"`` -> ``[10, 50]`` (each > 0; empty: none)."""
    return [positive_int(x.strip()) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: a user mistake is one error line and exit 2 (:func:`simulations.cli.run_main`)."""
    return run_main(PROG, _bench, argv, log_format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _bench(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("flwr").propagate = False
    memory_clients: list[int] = args.memory_clients
    work = (
        Path(args.work_dir).resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-federation-"))
    )
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "format": "seqwatch-bench-federation",
        "format_version": 1,
        "command": shlex.join([Path(sys.executable).name, "-m", "simulations.bench_federation", *argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "data": "synthetic, natural partition (one institution per client), "
            f"{args.users_per_client} users per client",
            "run_config": {k: v for k, v in TINY.items()},
            "overhead_definition": (
                "round wall time (ServerApp, configure_train to end of aggregate_evaluate) minus the "
                "clients' compute (sum of the ClientApp handlers' compute-seconds, train + evaluate) "
                "divided by the ClientApps running at a time (1 in the overhead runs)"
            ),
            "memory_definition": (
                "peak over samples of the summed VmRSS (and Pss) of every process of the run: flwr run, "
                "SuperLink, SuperExec, flwr-simulation, Ray GCS/raylet/agents/workers"
            ),
        },
    }
    try:
        log.info(
            "overhead: %d clients x %d rounds, one ClientApp at a time",
            args.overhead_clients,
            args.overhead_rounds,
        )
        result["overhead"] = flower_case(
            work,
            args.overhead_clients,
            args.overhead_rounds,
            2.0,
            args.users_per_client,
            args.timeout,
            args.interval,
        )
        if not args.skip_inprocess:
            result["overhead_inprocess"] = inprocess_case(
                work, args.overhead_clients, args.overhead_rounds, args.users_per_client
            )
        result["memory"] = []
        for n in memory_clients:
            log.info("memory: %d clients, 1 round", n)
            result["memory"].append(
                flower_case(work, n, 1, 1.0, args.users_per_client, args.timeout, args.interval)
            )
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["summary"] = headline(result)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    o = result["overhead"]
    print(
        f"overhead at {o['clients']} clients (flwr run, serial ClientApps): "
        f"{o['mean_overhead_s_after_round_1']} s per round after round 1 "
        f"({o['mean_overhead_per_message_ms_after_round_1']} ms per message); "
        f"round 1: {o['round_rows'][0]['overhead_s']} s; "
        f"the END weight's query: {o['mean_end_weight_query_s_after_round_1']} s per round"
    )
    if "overhead_inprocess" in result:
        i = result["overhead_inprocess"]
        print(f"in-process reference: {i['mean_overhead_s_after_round_1']} s per round after round 1")
    for m in result["memory"]:
        print(
            f"{m['clients']:>4} clients: peak RSS {m['memory']['peak_rss_mib']} MiB, peak PSS "
            f"{m['memory']['peak_pss_mib']} MiB, {m['memory']['peak_processes']} processes, "
            f"flwr run {m['flwr_run_seconds']} s"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
