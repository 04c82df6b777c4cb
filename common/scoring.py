"""Batched scoring: per-event surprisal, rank and numeric residuals in one pass.

Each sequence is run through the model once (chunked in time only to bound
memory, state carried), so every event is scored with its full prefix. A
model trained with ``model.end-event`` also scores the end of each sequence
(how surprising it is that the sequence stops there): the END step. A sequence
score is an aggregate of its event scores and its END step (see
:func:`aggregate`); a model with a context head also gives every event the
surprisal of its context values, whose largest in a sequence can raise that
score (:class:`ContextFusion`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.batching import iter_batches
from common.config import ScoreConfig
from common.encoding import EncodedSequences
from common.model import NextEventModel, State
from common.vocab import END, PAD, UNK

#: Padded tokens per scoring batch; bounds memory on long traces.
SCORE_BATCH_TOKENS = 1 << 17
#: Steps a scoring batch of short sequences is filled to (more of them than ``score.batch-size``):
#: 64 sessions of 8 events a batch spent more time calling the model than in it.
SCORE_FILL_TOKENS = 1 << 13
#: Time steps per forward call while scoring.
SCORE_CHUNK = 512
#: Fewest validation sequences from which an END weight is fitted; fewer keep
#: ``score.end-weight``.
MIN_SPREAD_SEQUENCES = 20
#: Length of :func:`spread_moments`: n, sum b, sum b^2, sum e, sum e^2, sum b*e, sum c, sum c^2.
N_SPREAD_MOMENTS = 8
#: Smallest spread (nats) of the context part on validation normals from which a context fusion is
#: fitted: below it the part is constant there, and float noise would set its scale.
MIN_CONTEXT_SPREAD = 1e-3
#: Averaging aggregates: the END step enters them with a weight.
WEIGHTED_END_AGGREGATES = ("mean", "window", "window-min")


@dataclass
class EventScores:
    """Per-event outputs in the CSR layout of the scored :class:`EncodedSequences`.

    surprisal: (N,)   -log p(actual event | prefix), nats
    rank:      (N,)   1 + number of events the model found more likely
    residual:  (N, F) (actual - predicted) numeric value in scaled units (NaN if missing)
    score:     (N,)   surprisal + numeric_weight · ½‖residual‖²
    expected:  (N, k) ids of the k events the model found most likely (k = 0 unless asked)
    expected_p:(N, k) their probabilities

    With an end-of-sequence model, the END step of each sequence (S of them):
    end_surprisal (S,), end_rank (S,), end_expected (S, k), end_expected_p (S, k);
    the END step has no numeric part, so its score is its surprisal.

    With a context head: context_surprisal (N,) -log p(the event's context values |
    event, prefix), summed over the context columns, nats (not part of ``score``:
    see :class:`ContextFusion`); NaN for an event unseen in training, whose
    context the head has never learned to expect; with ``expected_k > 0`` also
    context_expected (N, C), each column's most likely id, and
    context_expected_p (N, C), its probability.
    """

    offsets: np.ndarray
    surprisal: np.ndarray
    rank: np.ndarray
    residual: np.ndarray
    score: np.ndarray
    expected: np.ndarray | None = None
    expected_p: np.ndarray | None = None
    end_surprisal: np.ndarray | None = None
    end_rank: np.ndarray | None = None
    end_expected: np.ndarray | None = None
    end_expected_p: np.ndarray | None = None
    context_surprisal: np.ndarray | None = None
    context_expected: np.ndarray | None = None
    context_expected_p: np.ndarray | None = None

    def of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def has_end(self) -> bool:
        """Whether every sequence has an END step (an end-of-sequence model scored it)."""
        return self.end_surprisal is not None and self.end_rank is not None

    def step_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """(step offsets (S+1,), is_event mask over all steps): each sequence's events, then
        its END step when :attr:`has_end` (without one, the events' own layout)."""
        if not self.has_end:
            return self.offsets, np.ones(int(self.offsets[-1]), dtype=bool)
        step_offsets = self.offsets + np.arange(len(self.offsets))
        is_event = np.ones(int(step_offsets[-1]), dtype=bool)
        is_event[step_offsets[1:] - 1] = False
        return step_offsets, is_event

    def on_steps(self, events: np.ndarray, ends: np.ndarray | None, fill: Any = 0) -> np.ndarray:
        """Per-event values (N, ...) laid out over all steps (:meth:`step_layout`): the END
        steps get ``ends`` (S, ...), or ``fill`` when it is None."""
        if not self.has_end:
            return events
        _, is_event = self.step_layout()
        out = np.full((len(is_event), *events.shape[1:]), fill, dtype=events.dtype)
        out[is_event] = events
        if ends is not None:
            out[~is_event] = ends
        return out

    def steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, score, rank) over all steps: each sequence's events, then its END step."""
        step_offsets, _ = self.step_layout()
        return (
            step_offsets,
            self.on_steps(self.score, self.end_surprisal),
            self.on_steps(self.rank, self.end_rank),
        )


def next_event_choices(vocab_size: int, end_event: bool) -> int:
    """How many ids :func:`next_event_logp` can give a next event: every id but PAD, and but END
    for a model without an END step."""
    return vocab_size - (1 if end_event else 2)


def next_event_logp(logits: torch.Tensor, *, end_event: bool = True) -> torch.Tensor:
    """Log-probabilities of the next event (..., V) from the model's logits, in float32.

    Padding is never a next event: its logit is excluded, so the distribution
    (and every surprisal, rank and expected event drawn from it) covers real
    events, UNK and END only. A trained model gives padding almost nothing
    (about 2e-5 on ADFA-LD), an undertrained one sometimes lists it among its
    guesses. Nor is END, for a model without an END step (``end_event`` False),
    which never learned to predict it.
    """
    never = [PAD] if end_event else [PAD, END]
    logits = logits.float().index_fill(-1, torch.tensor(never, device=logits.device), float("-inf"))
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def score_events(
    model: NextEventModel,
    data: EncodedSequences,
    config: ScoreConfig,
    device: torch.device,
    *,
    expected_k: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EventScores:
    """Score every event of every sequence (model put in eval mode).

    With ``expected_k > 0`` the top-k expected events (ids and probabilities)
    at every step are kept too, for explanations, in the same pass.
    ``progress`` is called after every batch with the number of events it scored.
    """
    model.eval()
    n, s = len(data.tokens), len(data)
    f = data.numeric.shape[1]
    end = model.config.end_event
    k = min(expected_k, next_event_choices(model.shape.vocab_size, end))
    surprisal = np.zeros(n, dtype=np.float32)
    rank = np.zeros(n, dtype=np.int32)
    residual = np.full((n, f), np.nan, dtype=np.float32)
    with_context = model.context_trunk is not None
    context_surprisal = np.zeros(n if with_context else 0, dtype=np.float32)
    c = data.context.shape[1]
    context_expected = np.zeros((n, c) if with_context and k else (0, 0), dtype=np.int32)
    context_expected_p = np.zeros((n, c) if with_context and k else (0, 0), dtype=np.float32)
    expected = np.zeros((n, k), dtype=np.int32)
    expected_p = np.zeros((n, k), dtype=np.float32)
    end_surprisal = np.zeros(s, dtype=np.float32)
    end_rank = np.zeros(s, dtype=np.int32)
    end_expected = np.zeros((s, k), dtype=np.int32)
    end_expected_p = np.zeros((s, k), dtype=np.float32)
    lengths = data.lengths
    batches = iter_batches(
        data, config.batch_size, max_tokens=SCORE_BATCH_TOKENS, fill_tokens=SCORE_FILL_TOKENS, end=end
    )
    for batch in batches:
        batch = batch.to(device)
        state: State | None = None
        starts = data.offsets[batch.index]
        n_events = lengths[batch.index]
        mask_all = batch.mask.cpu().numpy()
        for start in range(0, batch.max_len, SCORE_CHUNK):
            sl = slice(start, start + SCORE_CHUNK)
            tgt = batch.targets[:, sl]
            logits, num_pred, ctx_logits, state = model(
                batch.tokens_in[:, sl], batch.context_in[:, sl], batch.numeric_in[:, sl], state, tgt
            )
            logp = next_event_logp(logits, end_event=end)  # (B, l, V)
            lp_t = logp.gather(-1, tgt.unsqueeze(-1))  # (B, l, 1)
            rk = (logp > lp_t).sum(-1) + 1  # (B, l)
            b_idx, t_idx = np.nonzero(mask_all[:, sl])
            at_end = t_idx + start == n_events[b_idx]  # the END step (only with end)
            ev_b, ev_t, dst = b_idx[~at_end], t_idx[~at_end], starts[b_idx[~at_end]] + start + t_idx[~at_end]
            end_b, end_t, end_dst = b_idx[at_end], t_idx[at_end], batch.index[b_idx[at_end]]
            sur = (-lp_t.squeeze(-1)).cpu().numpy()
            rk_np = rk.cpu().numpy()
            surprisal[dst], rank[dst] = sur[ev_b, ev_t], rk_np[ev_b, ev_t]
            end_surprisal[end_dst], end_rank[end_dst] = sur[end_b, end_t], rk_np[end_b, end_t]
            if k:
                top = logp.topk(k, dim=-1)
                top_i, top_p = top.indices.cpu().numpy(), top.values.exp().cpu().numpy()
                expected[dst], expected_p[dst] = top_i[ev_b, ev_t], top_p[ev_b, ev_t]
                end_expected[end_dst], end_expected_p[end_dst] = top_i[end_b, end_t], top_p[end_b, end_t]
            if num_pred is not None:
                res = batch.numeric_target[:, sl] - num_pred  # (B, l, F)
                if model.config.numeric_given_event:
                    # an event unseen in training has no known numbers to judge: its residual is
                    # left out (NaN), as a missing value is; its surprisal already marks it
                    res = res.masked_fill((tgt == UNK).unsqueeze(-1), float("nan"))
                residual[dst] = res.cpu().numpy()[ev_b, ev_t]
            if ctx_logits:
                ctx_tgt = batch.context_target[:, sl]  # (B, l, C)
                ctx_sur = torch.zeros(ctx_tgt.shape[:2], device=ctx_tgt.device)  # (B, l)
                for j, lg in enumerate(ctx_logits):
                    logp_j = torch.log_softmax(lg.float(), dim=-1)  # (B, l, n_j)
                    ctx_sur -= logp_j.gather(-1, ctx_tgt[:, :, j : j + 1]).squeeze(-1)
                    if k:
                        best = logp_j.max(dim=-1)  # (B, l) each
                        context_expected[dst, j] = best.indices.cpu().numpy()[ev_b, ev_t]
                        context_expected_p[dst, j] = best.values.exp().cpu().numpy()[ev_b, ev_t]
                # an event unseen in training: its context cannot be judged (as its numbers)
                ctx_sur = ctx_sur.masked_fill(tgt == UNK, float("nan"))
                context_surprisal[dst] = ctx_sur.cpu().numpy()[ev_b, ev_t]
        if progress is not None:
            progress(int(n_events.sum()))
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
        end_surprisal if end else None,
        end_rank if end else None,
        end_expected if end and k else None,
        end_expected_p if end and k else None,
        context_surprisal if with_context else None,
        context_expected if with_context and k else None,
        context_expected_p if with_context and k else None,
    )


@dataclass(frozen=True)
class ContextFusion:
    """How the context part enters a sequence score: ``max(events part, shift + scale × context part)``.

    The events part is the score without context (:func:`aggregate` of the
    event steps and the END step); the context part is the sequence's largest
    context surprisal (:func:`context_part`), so one new device abroad stands
    out however long the session is. ``scale`` and ``shift`` put the context
    part on the events part's scale by matching the two parts' mean and spread
    on the validation normals (:func:`context_fusion_from_moments`): the score
    is the events part unless the context is the more unusual of the two, in
    standard deviations of normal data (the ranking of the larger of the two
    validation z-scores). A sequence is flagged when either part is unusual; a
    sum would let ordinary context variation drown what the events show, and
    the reverse.
    """

    shift: float
    scale: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.shift) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                "a context fusion needs a finite shift and a positive scale, "
                f"got {self.shift!r} and {self.scale!r}"
            )

    def on_score_scale(self, events: EventScores) -> np.ndarray:
        """(S,) the context part of each sequence on the events part's scale; -inf for a
        sequence without events (no context to judge)."""
        mapped = self.shift + self.scale * context_part(events)
        mapped[np.diff(events.offsets) == 0] = -np.inf
        return mapped

    def to_dict(self) -> dict[str, float]:
        return {"shift": float(self.shift), "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, data: Any) -> ContextFusion | None:
        """Inverse of :meth:`to_dict`; None stays None (no context part)."""
        if data is None:
            return None
        return cls(shift=float(data["shift"]), scale=float(data["scale"]))


def context_part(events: EventScores) -> np.ndarray:
    """(S,) each sequence's largest context surprisal (events unseen in training left out); 0 for
    a sequence without any judged event, or without a context head."""
    lengths = np.diff(events.offsets)
    out = np.zeros(len(lengths), dtype=np.float64)
    if events.context_surprisal is None:
        return out
    nonempty = lengths > 0
    values = events.context_surprisal.astype(np.float64)
    out[nonempty] = np.fmax.reduceat(values, events.offsets[:-1][nonempty])  # fmax: NaN left out
    return np.nan_to_num(out, nan=0.0)


def aggregate(events: EventScores, config: ScoreConfig, fusion: ContextFusion | None = None) -> np.ndarray:
    """Sequence scores (S,) from event scores; higher = more anomalous.

    mean:      mean event score
    max:       max event score
    window:    max over sliding windows of ``window`` events of the mean score
               (sequences shorter than the window: their mean)
    window-min: min over those windows: high only when the whole sequence is
               surprising (a sustained anomaly; robust to benign bursts)
    topk-miss: fraction of events outside the model's top-``top_k`` (DeepLog)

    With an end-of-sequence model the END step enters too. ``max`` and
    ``topk-miss`` count it as one more step. The averaging aggregates are
    per-event rates, and the END step happens once per sequence whatever its
    length, so they add ``end_weight`` × its surprisal instead of averaging it in
    (a detector fits that weight on its validation normals:
    :func:`end_weight_from_moments`).

    With ``fusion`` (a detector's fitted :class:`ContextFusion`) and context
    surprisals, the score is the larger of that and the mapped context part.
    """
    base = _events_part(events, config)
    if fusion is None or events.context_surprisal is None:
        return base
    return np.maximum(base, fusion.on_score_scale(events))


def _events_part(events: EventScores, config: ScoreConfig) -> np.ndarray:
    if events.end_surprisal is None:
        return _aggregate_steps(events.offsets, events.score, events.rank, config)
    if config.aggregate not in WEIGHTED_END_AGGREGATES:  # max, topk-miss
        return _aggregate_steps(*events.steps(), config)
    base = _aggregate_steps(events.offsets, events.score, events.rank, config)
    return base + config.end_weight * events.end_surprisal.astype(np.float64)


def spread_moments(events: EventScores, config: ScoreConfig) -> np.ndarray:
    """Mergeable moments of normal sequences' score parts, for the END weight and the context fusion.

    ``[n, sum b, sum b^2, sum e, sum e^2, sum b·e, sum c, sum c^2]`` over
    sequences: ``e`` is the END surprisal where it enters with a weight (an
    averaging aggregate with an END step; else 0), ``b`` the rest of the score
    without context (so that it is ``b + w·e`` for the END weight ``w``), and
    ``c`` the context part (:func:`context_part`; 0 without a context head).
    Moments of several parties add up exactly (the federation sums them across nodes).
    """
    if events.end_surprisal is not None and config.aggregate in WEIGHTED_END_AGGREGATES:
        b = _aggregate_steps(events.offsets, events.score, events.rank, config)
        e = events.end_surprisal.astype(np.float64)
    else:
        b = _events_part(events, config)
        e = np.zeros(len(b))
    c = context_part(events)
    return np.array(
        [len(b), b.sum(), (b * b).sum(), e.sum(), (e * e).sum(), (b * e).sum(), c.sum(), (c * c).sum()],
        dtype=np.float64,
    )


def end_weight_is_fitted(config: ScoreConfig) -> bool:
    """Whether ``config`` fits its END weight (``score.fit-end-weight`` and an averaging aggregate)."""
    return config.fit_end_weight and config.aggregate in WEIGHTED_END_AGGREGATES


def end_weight_from_moments(moments: np.ndarray | list[float], config: ScoreConfig) -> float:
    """The END weight for ``config``: fitted from :func:`spread_moments` of validation normals.

    Fitted (``score.fit-end-weight``, an averaging aggregate, at least
    :data:`MIN_SPREAD_SEQUENCES` sequences, END surprisal not constant):
    sd(b) / sd(e), so that both parts of the score vary equally on normal
    data (the same ranking as adding their z-scores). Otherwise
    ``score.end-weight``.
    """
    n, sb, sbb, se, see = (float(x) for x in moments[:5])
    if not end_weight_is_fitted(config) or n < MIN_SPREAD_SEQUENCES:
        return config.end_weight
    var_b = max(sbb / n - (sb / n) ** 2, 0.0)
    var_e = max(see / n - (se / n) ** 2, 0.0)
    if var_e <= 1e-12:
        return config.end_weight
    return float(np.sqrt(var_b / var_e))


def context_fusion_from_moments(moments: np.ndarray | list[float], end_weight: float) -> ContextFusion | None:
    """The :class:`ContextFusion` of :func:`spread_moments` of validation normals, for the score
    with END weight ``end_weight``: the context part's mean and spread matched to those of the
    score without context. None (no context part) without a context head, with fewer than
    :data:`MIN_SPREAD_SEQUENCES` sequences, or when either part is constant there.
    """
    n, sb, sbb, se, see, sbe, sc, scc = (float(x) for x in moments)
    if n < MIN_SPREAD_SEQUENCES:
        return None
    w = float(end_weight)
    mb, me, mc = sb / n, se / n, sc / n
    var_score = (sbb / n - mb * mb) + w * w * (see / n - me * me) + 2 * w * (sbe / n - mb * me)
    var_c = scc / n - mc * mc
    if var_c < MIN_CONTEXT_SPREAD**2 or var_score <= 1e-12:
        return None
    scale = float(np.sqrt(var_score / var_c))
    return ContextFusion(shift=float(mb + w * me - scale * mc), scale=scale)


#: Step scores up to this size go through one running sum over all sequences; a
#: sequence with a larger (or non-finite) one has its windows summed on their own,
#: so that its value cannot cost the others' window sums their precision.
_RUNNING_SUM_LIMIT = 1e4


def _window_sums(values: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, w: int) -> np.ndarray:
    """At each step that ends a full window of ``w`` steps of its sequence, the window's sum
    (other steps: undefined). Each window holds only its own steps' values."""
    seq_of = np.repeat(np.arange(len(lengths)), lengths)
    large = ~(np.abs(values) <= _RUNNING_SUM_LIMIT)  # NaN and infinities too
    apart = np.unique(seq_of[large])
    safe = np.where(np.isin(seq_of, apart), 0.0, values) if apart.size else values
    cs = np.concatenate([[0.0], np.cumsum(safe)])
    ends = np.arange(len(values))
    sums = cs[ends + 1] - cs[np.maximum(ends + 1 - w, 0)]
    for i in apart:
        if lengths[i] >= w:
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            sums[lo + w - 1 : hi] = np.lib.stride_tricks.sliding_window_view(values[lo:hi], w).sum(axis=1)
    return sums


def _aggregate_steps(
    offsets: np.ndarray, step_score: np.ndarray, step_rank: np.ndarray, config: ScoreConfig
) -> np.ndarray:
    lengths = np.diff(offsets)
    s = len(lengths)
    out = np.zeros(s, dtype=np.float64)
    nonempty = lengths > 0
    starts = offsets[:-1][nonempty]
    if config.aggregate == "topk-miss":
        miss = (step_rank > config.top_k).astype(np.float64)
        out[nonempty] = np.add.reduceat(miss, starts) / lengths[nonempty]
        return out
    values = step_score.astype(np.float64)
    if config.aggregate == "max":
        out[nonempty] = np.maximum.reduceat(values, starts)
        return out
    means = np.zeros(s)
    means[nonempty] = np.add.reduceat(values, starts) / lengths[nonempty]
    if config.aggregate == "mean":
        return means
    w = config.window
    pos = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)  # position in its sequence
    lowest = config.aggregate == "window-min"
    win = np.full(len(values), np.inf if lowest else -np.inf)
    ends = np.nonzero(pos >= w - 1)[0]
    win[ends] = _window_sums(values, offsets, lengths, w)[ends] / w
    reduce = np.minimum if lowest else np.maximum
    out[nonempty] = reduce.reduceat(win, starts)
    short = lengths < w
    out[short] = means[short]
    return out
