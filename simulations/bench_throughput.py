"""Benchmark: scoring throughput of seqwatch's one-pass scorer against a DeepLog-style scorer.

Both run the *same* trained model in the same process on the ADFA-LD test
traces (4,372 normal + 746 attack). seqwatch runs every trace through the
model once and scores every event from its full prefix. The DeepLog-style
scorer runs the model once per sliding window of ``--window`` events
(windows batched ``--window-batch`` at a time) and scores the event after
each window, as DeepLog does. Reports events/s for both, the speed-up,
training events/s, and peak memory (max RSS).

    python -m simulations.bench_throughput --epochs 2 --out docs/bench_throughput.json

This is a benchmark, not a test: it takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from common.config import DetectorConfig, with_overrides
from common.datasets import load_adfa_ld, shared_data_dir, shared_data_missing
from common.detector import SequenceDetector
from common.encoding import EncodedSequences
from common.errors import DataError
from common.model import NextEventModel
from common.scoring import next_event_logp, score_events
from common.vocab import BOS
from simulations.cli import Parser, output_file, positive_int, run_main

log = logging.getLogger("bench_throughput")


def sliding_windows(data: EncodedSequences, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All (previous ``window`` events, next event) pairs inside each sequence."""
    xs, ys = [], []
    for i in range(len(data)):
        seq = data.tokens[data.offsets[i] : data.offsets[i + 1]]
        if len(seq) <= window:
            continue
        xs.append(np.lib.stride_tricks.sliding_window_view(seq[:-1], window))
        ys.append(seq[window:])
    return np.concatenate(xs), np.concatenate(ys)


@torch.no_grad()
def deeplog_scores(model: NextEventModel, data: EncodedSequences, window: int, batch: int) -> np.ndarray:
    """Surprisal of every event after the first ``window`` of its sequence, one model run per window."""
    model.eval()
    xs, ys = sliding_windows(data, window)
    out = np.empty(len(ys), dtype=np.float32)
    c = len(model.shape.context_sizes)
    f = model.shape.n_numeric
    for start in range(0, len(ys), batch):
        x = torch.from_numpy(xs[start : start + batch])
        tokens = torch.cat([torch.full((len(x), 1), BOS, dtype=torch.long), x], dim=1)
        ctx = torch.zeros((*tokens.shape, c), dtype=torch.long)
        num = torch.zeros((*tokens.shape, f))
        logits, _, _, _ = model(tokens, ctx, num)
        logp = next_event_logp(logits[:, -1], end_event=model.config.end_event)
        y = torch.from_numpy(ys[start : start + batch])
        out[start : start + len(y)] = -logp.gather(1, y.unsqueeze(1)).squeeze(1).numpy()
    return out


PROG = "python -m simulations.bench_throughput"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="ADFA-LD folder (default: shared data)")
    parser.add_argument(
        "--epochs", type=positive_int, default=2, help="training epochs before timing (default 2)"
    )
    parser.add_argument(
        "--window", type=positive_int, default=10, help="the DeepLog-style scorer's window (default 10)"
    )
    parser.add_argument(
        "--window-batch", type=positive_int, default=1024, help="windows per forward pass (default 1024)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", type=output_file, default=None, help="write the figures as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: one error line and exit 2 for a user mistake (:func:`simulations.cli.run_main`)."""
    return run_main(PROG, _measure, argv)


def _measure(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    src = args.data or shared_data_dir()
    if src is None:
        raise DataError(f"ADFA-LD not found: {shared_data_missing()}, or pass --data")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = os.getloadavg()
    splits = load_adfa_ld(src)
    cfg = with_overrides(DetectorConfig(), train={"epochs": args.epochs, "patience": args.epochs})
    detector = SequenceDetector(cfg)
    t0 = time.perf_counter()
    detector.fit(splits["train"])
    fit_s = time.perf_counter() - t0
    train_eps = detector.fit_result_.train_events_per_second if detector.fit_result_ else 0.0

    data = detector.encode(splits["test"])
    n_events = len(data.tokens)
    model, device = detector.model_, detector.device
    score_events(model, data.subset(np.arange(50)), cfg.score, device)  # warm-up
    t0 = time.perf_counter()
    ours = score_events(model, data, cfg.score, device)
    ours_s = time.perf_counter() - t0

    deeplog_events = int(sum(max(0, n - args.window) for n in data.lengths))
    deeplog_scores(model, data.subset(np.arange(50)), args.window, args.window_batch)  # warm-up
    t0 = time.perf_counter()
    theirs = deeplog_scores(model, data, args.window, args.window_batch)
    theirs_s = time.perf_counter() - t0
    assert len(theirs) == deeplog_events and len(ours.surprisal) == n_events

    result = {
        "command": shlex.join([PROG, *argv]),
        "started": started,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "epochs": args.epochs,
        "dataset": "ADFA-LD test (4372 normal + 746 attack traces)",
        "model": f"{cfg.model.kind} {cfg.model.layers}x{cfg.model.hidden}, embed {cfg.model.embed_dim}",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "events": n_events,
        "seqwatch_seconds": round(ours_s, 2),
        "seqwatch_events_per_s": round(n_events / ours_s),
        "deeplog_window": args.window,
        "deeplog_window_batch": args.window_batch,
        "deeplog_events_scored": deeplog_events,
        "deeplog_seconds": round(theirs_s, 2),
        "deeplog_events_per_s": round(deeplog_events / theirs_s),
        "speedup": round((n_events / ours_s) / (deeplog_events / theirs_s), 2),
        "train_events_per_s": round(train_eps),
        "fit_seconds": round(fit_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
