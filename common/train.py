"""Local training: masked next-event loss, truncated BPTT, AdamW, clipping, early stopping.

Framework-free (no Flower): the detector and the ClientApp both call
:func:`train_epochs` / :func:`fit_model`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from common.batching import Batch, iter_batches
from common.config import TrainConfig
from common.encoding import EncodedSequences
from common.errors import TrainingError
from common.model import NextEventModel, State, detach_state
from common.vocab import BOS, END, UNK

log = logging.getLogger(__name__)

#: Upper bound on padded tokens per scoring batch (keeps memory flat on long traces).
MAX_BATCH_TOKENS = 65536


@dataclass
class EpochStats:
    loss: float
    event_nll: float
    numeric_mse: float
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FitResult:
    best_epoch: int
    #: Best loss of the monitored data (see ``monitored``).
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_events_per_second: float = 0.0
    #: What early stopping watched: "validation", or "training" when there was no validation data.
    monitored: str = "validation"


def diverged_message(epoch: int, config: TrainConfig) -> str:
    """What to say when the training loss stops being a number."""
    return (
        f"training diverged: the loss was not finite in epoch {epoch}; lower train.lr "
        f"(now {config.lr:g}) or check the numeric features for extreme values"
    )


def chunk_loss(
    model: NextEventModel,
    batch: Batch,
    sl: slice,
    state: State | None,
    numeric_weight: float,
    weights: torch.Tensor | None = None,
    context_present: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, State]:
    """Losses of one time chunk: (objective, event NLL sum, numeric SE sum, context NLL sum, state).

    The objective is the summed loss, each event weighted by ``weights``
    (B, L) when given: its next-event NLL, ``numeric_weight`` × its numeric
    squared error and, with a context head, the NLL of its context values (an
    END step has none; with ``context_present``, :func:`context_present`, each
    column's softmax covers only the ids this training data holds). The three
    sums are unweighted, for reporting. Its number of events comes from
    :func:`chunk_counts`.
    """
    targets = batch.targets[:, sl]
    logits, num_pred, ctx_logits, state = model(
        batch.tokens_in[:, sl], batch.context_in[:, sl], batch.numeric_in[:, sl], state, targets
    )
    mask = batch.mask[:, sl]
    nll_each = F.cross_entropy(logits[mask], targets[mask], reduction="none")  # (n,)
    se_each = nll_each.new_zeros(nll_each.shape)
    if num_pred is not None:
        tgt = batch.numeric_target[:, sl]
        ok = ~torch.isnan(tgt) & mask.unsqueeze(-1)
        diff = torch.where(ok, num_pred - torch.nan_to_num(tgt), torch.zeros_like(num_pred))
        se_each = 0.5 * (diff * diff).sum(-1)[mask]  # (n,)
    ctx_each = nll_each.new_zeros(nll_each.shape)
    if ctx_logits:
        ctx_target = batch.context_target[:, sl][mask]  # (n, C)
        is_event = (targets[mask] != END).to(ctx_each.dtype)  # (n,)
        for j, lg in enumerate(ctx_logits):
            if context_present is not None:
                lg = lg.masked_fill(~context_present[j], float("-inf"))
            ctx_each = ctx_each + is_event * F.cross_entropy(lg[mask], ctx_target[:, j], reduction="none")
    loss_each = nll_each + numeric_weight * se_each + ctx_each
    objective = loss_each.sum() if weights is None else (loss_each * weights[:, sl][mask]).sum()
    return objective, nll_each.sum(), se_each.sum(), ctx_each.sum(), state


def context_present(data: EncodedSequences, model: NextEventModel) -> list[torch.Tensor]:
    """Per context column, which of its ids (n_j,) bool this training data holds, and id 0 (unseen).

    Local training restricts each context head's softmax to them (as FedRS, Li & Zhan 2021, does
    for label-skewed federations): an institution without branch visits leaves the "branch" logit
    alone instead of pushing it down every round, which would make the federated model call the
    branch visits of the one bank that has them near impossible. Id 0 always takes part: no
    institution sees an unseen value, and each should teach the model that one is unlikely. With
    every id present (any fit on data whose vocabulary it built) the restriction changes nothing.
    """
    device = next(model.parameters()).device
    return [
        torch.from_numpy((np.bincount(data.context[:, j], minlength=n) > 0) | (np.arange(n) == 0)).to(device)
        for j, n in enumerate(model.shape.context_sizes)
    ]


def chunk_counts(mask: torch.Tensor, chunk_len: int) -> list[int]:
    """Real steps in each time chunk of ``mask`` (B, L), counted on the CPU.

    Counted before a batch moves to the accelerator, so the training loop
    never waits for the device to report how many events a chunk held.
    """
    per_step = mask.sum(0)  # (L,)
    return [int(per_step[start : start + chunk_len].sum()) for start in range(0, mask.shape[1], chunk_len)]


def chunk_events(mask: torch.Tensor, counts: list[int], chunk_len: int, end: bool) -> list[int]:
    """Events (END steps not counted) in each time chunk of ``mask`` (B, L), whose real steps per
    chunk are ``counts``: with an END step, each sequence's last real step is its END."""
    if not end:
        return counts
    last = mask.sum(1) - 1  # (B,) a sequence's END step: its last real step (padding follows)
    ends = torch.bincount(torch.div(last, chunk_len, rounding_mode="floor"), minlength=len(counts))
    return [c - int(e) for c, e in zip(counts, ends.tolist(), strict=True)]


class LossTotals:
    """Running sums of (loss, event NLL, numeric SE) kept on the device.

    Adding a chunk's sums costs no synchronisation; :meth:`stats` reads them
    back once. The sums are float64, added in the same order as Python
    floats would be, so the figures (and early stopping on them) are the
    same as reading every chunk back.
    """

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.events = 0

    def add(self, loss: torch.Tensor, nll: torch.Tensor, se: torch.Tensor, events: int) -> None:
        self.sums += torch.stack([loss.detach(), nll.detach(), se.detach()]).double()
        self.events += events

    def stats(self, seconds: float) -> EpochStats:
        loss, nll, se = self.sums.tolist()
        d = max(self.events, 1)
        return EpochStats(loss / d, nll / d, se / d, self.events, seconds)


def with_unknown_inputs(batch: Batch, rate: float, rng: np.random.Generator) -> Batch:
    """Replace a fraction ``rate`` of the real input events by UNK (targets unchanged).

    Teaches the model to keep predicting sensibly after an event it has never
    seen, so one unseen event does not derail the scores of those after it.
    """
    tokens = batch.tokens_in.clone()
    drop = torch.from_numpy(rng.random(tokens.shape) < rate) & (tokens > BOS)
    tokens[drop] = UNK
    return dataclasses.replace(batch, tokens_in=tokens)


def sequence_weights(batch: Batch) -> torch.Tensor:
    """Per-event weights (B, L) that give every sequence the same total weight.

    Scaled so that a batch's weights sum to its number of events, like the
    plain per-event loss; short sequences (and so sequence starts) count as
    much as long ones, matching a per-sequence anomaly score.
    """
    lengths = batch.mask.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
    w = batch.mask.float() / lengths
    return w * (batch.mask.sum() / w.sum())


def train_epochs(
    model: NextEventModel,
    data: EncodedSequences,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    device: torch.device,
    rng: np.random.Generator,
    proximal_mu: float = 0.0,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[EpochStats]:
    """Train for ``epochs`` passes; FedProx adds ``mu/2·||w - w_global||²`` when ``proximal_mu > 0``.

    ``on_batch`` is called after every chunk of truncated back-propagation with
    the number of events it trained on (END steps not counted): a count from
    the CPU, no device sync.
    """
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    present = context_present(data, model) if model.context_trunk is not None else None
    stats: list[EpochStats] = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        totals = LossTotals(device)
        fill = config.batch_size * config.chunk_len
        for batch in iter_batches(
            data, config.batch_size, rng=rng, fill_tokens=fill, end=model.config.end_event
        ):
            if config.unk_dropout > 0:
                batch = with_unknown_inputs(batch, config.unk_dropout, rng)
            counts = chunk_counts(batch.mask, config.chunk_len)
            events_in = chunk_events(batch.mask, counts, config.chunk_len, model.config.end_event)
            batch = batch.to(device)
            weights = sequence_weights(batch) if config.loss_weighting == "sequence" else None
            state: State | None = None
            chunks = zip(range(0, batch.max_len, config.chunk_len), counts, events_in, strict=True)
            for start, n, n_events in chunks:
                sl = slice(start, start + config.chunk_len)
                loss, nll, se, ctx, state = chunk_loss(
                    model, batch, sl, state, config.numeric_weight, weights, present
                )
                objective = loss / n
                if anchor is not None:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                    objective = objective + 0.5 * proximal_mu * prox
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
                optimizer.step()
                state = detach_state(state)
                totals.add(nll.detach() + config.numeric_weight * se.detach() + ctx.detach(), nll, se, n)
                if on_batch is not None:  # per chunk: a batch of a few long sequences is a whole epoch
                    on_batch(n_events)
        es = totals.stats(time.perf_counter() - t0)
        stats.append(es)
        if on_epoch is not None:
            on_epoch(epoch, es)
    return stats


@torch.no_grad()
def evaluate_loss(
    model: NextEventModel, data: EncodedSequences, config: TrainConfig, device: torch.device
) -> EpochStats:
    """Mean per-event loss on held-out data (model in eval mode, no dropout)."""
    model.eval()
    t0 = time.perf_counter()
    totals = LossTotals(device)
    chunk = config.chunk_len * 4
    for batch in iter_batches(
        data, config.batch_size, max_tokens=MAX_BATCH_TOKENS, end=model.config.end_event
    ):
        counts = chunk_counts(batch.mask, chunk)
        batch = batch.to(device)
        state: State | None = None
        for start, n in zip(range(0, batch.max_len, chunk), counts, strict=True):
            sl = slice(start, start + chunk)
            loss, nll, se, _, state = chunk_loss(model, batch, sl, state, config.numeric_weight)
            totals.add(loss, nll, se, n)
    return totals.stats(time.perf_counter() - t0)


def make_optimizer(model: NextEventModel, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def fit_model(
    model: NextEventModel,
    train: EncodedSequences,
    validation: EncodedSequences | None,
    config: TrainConfig,
    device: torch.device,
    *,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    batch_progress: Callable[[int, int, int], None] | None = None,
) -> FitResult:
    """Train with early stopping on held-out normal validation loss; keeps the best weights.

    Seeded by ``config.seed``; the caller's torch random state is left as it was.
    ``progress(epoch, row)`` follows each epoch (its losses);
    ``batch_progress(epoch, events_per_epoch, events)`` each chunk of each batch within it.
    """
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=cuda):
        return _fit_model(model, train, validation, config, device, progress, batch_progress)


def _fit_model(
    model: NextEventModel,
    train: EncodedSequences,
    validation: EncodedSequences | None,
    config: TrainConfig,
    device: torch.device,
    progress: Callable[[int, dict[str, float]], None] | None,
    batch_progress: Callable[[int, int, int], None] | None,
) -> FitResult:
    model.to(device)
    optimizer = make_optimizer(model, config)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    best_loss, best_epoch = float("inf"), 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    total_events, total_seconds = 0, 0.0
    bad_epochs = 0
    has_validation = validation is not None and len(validation) > 0
    events_per_epoch = int(train.lengths.sum())
    for epoch in range(1, config.epochs + 1):
        on_batch = None
        if batch_progress is not None:
            on_batch = functools.partial(batch_progress, epoch, events_per_epoch)
        (es,) = train_epochs(
            model, train, config, optimizer, epochs=1, device=device, rng=rng, on_batch=on_batch
        )
        total_events += es.events
        total_seconds += es.seconds
        if not math.isfinite(es.loss):
            if best_epoch == 0:
                raise TrainingError(diverged_message(epoch, config))
            log.warning("%s; keeping the weights of epoch %d", diverged_message(epoch, config), best_epoch)
            break
        row = {"epoch": float(epoch), "train_loss": es.loss, "train_nll": es.event_nll}
        if validation is not None and has_validation:
            vs = evaluate_loss(model, validation, config, device)
            row.update(val_loss=vs.loss, val_nll=vs.event_nll)
            current = vs.loss
        else:
            current = es.loss
        history.append(row)
        if progress is not None:
            progress(epoch, row)
        log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in row.items() if k != "epoch"})
        if current < best_loss - 1e-4:
            best_loss, best_epoch, bad_epochs = current, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs > config.patience:
                log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
                break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        history=history,
        train_events_per_second=total_events / total_seconds if total_seconds else 0.0,
        monitored="validation" if has_validation else "training",
    )
