"""Batched scoring: per-event surprisal, rank and numeric residuals in one pass.

Each sequence is run through the model once (chunked in time only to bound
memory, state carried), so every event is scored with its full prefix. A
sequence score is an aggregate of its event scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.batching import iter_batches
from common.config import ScoreConfig
from common.encoding import EncodedSequences
from common.model import NextEventModel, State

#: Padded tokens per scoring batch; bounds memory on long traces.
SCORE_BATCH_TOKENS = 1 << 17
#: Time steps per forward call while scoring.
SCORE_CHUNK = 512


@dataclass
class EventScores:
    """Per-event outputs in the CSR layout of the scored :class:`EncodedSequences`.

    surprisal: (N,)   -log p(actual event | prefix), nats
    rank:      (N,)   1 + number of events the model found more likely
    residual:  (N, F) (predicted - actual) numeric value in scaled units (NaN if missing)
    score:     (N,)   surprisal + numeric_weight · ½‖residual‖²
    expected:  (N, k) ids of the k events the model found most likely (k = 0 unless asked)
    expected_p:(N, k) their probabilities
    """

    offsets: np.ndarray
    surprisal: np.ndarray
    rank: np.ndarray
    residual: np.ndarray
    score: np.ndarray
    expected: np.ndarray | None = None
    expected_p: np.ndarray | None = None

    def of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


@torch.no_grad()
def score_events(
    model: NextEventModel,
    data: EncodedSequences,
    config: ScoreConfig,
    device: torch.device,
    *,
    expected_k: int = 0,
) -> EventScores:
    """Score every event of every sequence (model put in eval mode).

    With ``expected_k > 0`` the top-k expected events (ids and probabilities)
    at every step are kept too, for explanations, in the same pass.
    """
    model.eval()
    n = len(data.tokens)
    f = data.numeric.shape[1]
    k = min(expected_k, model.shape.vocab_size)
    surprisal = np.zeros(n, dtype=np.float32)
    rank = np.zeros(n, dtype=np.int32)
    residual = np.full((n, f), np.nan, dtype=np.float32)
    expected = np.zeros((n, k), dtype=np.int32)
    expected_p = np.zeros((n, k), dtype=np.float32)
    for batch in iter_batches(data, config.batch_size, max_tokens=SCORE_BATCH_TOKENS):
        batch = batch.to(device)
        state: State | None = None
        starts = data.offsets[batch.index]
        mask_all = batch.mask.cpu().numpy()
        for start in range(0, batch.max_len, SCORE_CHUNK):
            sl = slice(start, start + SCORE_CHUNK)
            logits, num_pred, state = model(
                batch.tokens_in[:, sl], batch.context_in[:, sl], batch.numeric_in[:, sl], state
            )
            logp = torch.log_softmax(logits.float(), dim=-1)  # (B, l, V)
            tgt = batch.targets[:, sl]
            lp_t = logp.gather(-1, tgt.unsqueeze(-1))  # (B, l, 1)
            rk = (logp > lp_t).sum(-1) + 1  # (B, l)
            m = mask_all[:, sl]
            b_idx, t_idx = np.nonzero(m)
            dst = starts[b_idx] + start + t_idx
            surprisal[dst] = (-lp_t.squeeze(-1)).cpu().numpy()[m]
            rank[dst] = rk.cpu().numpy()[m]
            if k:
                top = logp.topk(k, dim=-1)
                expected[dst] = top.indices.cpu().numpy()[m]
                expected_p[dst] = top.values.exp().cpu().numpy()[m]
            if num_pred is not None:
                res = (num_pred - batch.numeric_target[:, sl]).cpu().numpy()
                residual[dst] = res[m]
    sq = np.nansum(residual * residual, axis=1) if f else np.zeros(n, dtype=np.float32)
    score = surprisal + config.numeric_weight * 0.5 * sq
    return EventScores(
        data.offsets.copy(),
        surprisal,
        rank,
        residual,
        score.astype(np.float32),
        expected if k else None,
        expected_p if k else None,
    )


def aggregate(events: EventScores, config: ScoreConfig) -> np.ndarray:
    """Sequence scores (S,) from event scores; higher = more anomalous.

    mean:      mean event score
    max:       max event score
    window:    max over sliding windows of ``window`` events of the mean score
               (sequences shorter than the window: their mean)
    window-min: min over those windows: high only when the whole sequence is
               surprising (a sustained anomaly; robust to benign bursts)
    topk-miss: fraction of events outside the model's top-``top_k`` (DeepLog)
    """
    offsets = events.offsets
    lengths = np.diff(offsets)
    s = len(lengths)
    out = np.zeros(s, dtype=np.float64)
    nonempty = lengths > 0
    starts = offsets[:-1][nonempty]
    if config.aggregate == "topk-miss":
        miss = (events.rank > config.top_k).astype(np.float64)
        out[nonempty] = np.add.reduceat(miss, starts) / lengths[nonempty]
        return out
    values = events.score.astype(np.float64)
    if config.aggregate == "max":
        out[nonempty] = np.maximum.reduceat(values, starts)
        return out
    means = np.zeros(s)
    means[nonempty] = np.add.reduceat(values, starts) / lengths[nonempty]
    if config.aggregate == "mean":
        return means
    w = config.window
    cs = np.concatenate([[0.0], np.cumsum(values)])
    pos = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)  # position in its sequence
    full = pos >= w - 1
    lowest = config.aggregate == "window-min"
    win = np.full(len(values), np.inf if lowest else -np.inf)
    ends = np.nonzero(full)[0]
    win[ends] = (cs[ends + 1] - cs[ends + 1 - w]) / w
    reduce = np.minimum if lowest else np.maximum
    out[nonempty] = reduce.reduceat(win, starts)
    short = lengths < w
    out[short] = means[short]
    return out
