"""Padded, length-bucketed batches for next-event training and scoring.

Step ``t`` of a sequence sees the previous event (BOS at ``t = 0``) and is
asked for event ``t``. With ``end=True`` a sequence of ``n`` events has one
more step, ``t = n``, that sees its last event and is asked for END (the end
of the sequence). Padding positions are masked out of every loss and every
score.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from common.encoding import EncodedSequences
from common.vocab import BOS, END, PAD


@dataclass
class Batch:
    """A padded batch.

    index:          (B,)      positions of these sequences in the source data
    tokens_in:      (B, L)    BOS, x0 .. x_{n-2} [, x_{n-1} with end], PAD...
    targets:        (B, L)    x0 .. x_{n-1} [, END with end], PAD...
    context_in:     (B, L, C) context of the input event (0 at BOS and padding)
    numeric_in:     (B, L, F) scaled numerics of the input event (0 at BOS, padding, missing)
    numeric_target: (B, L, F) numerics of the target event (NaN where missing or padding)
    mask:           (B, L)    True at real steps (events, and the END step with end)
    context_target: (B, L, C) context of the target event (0 at END and padding)
    """

    index: np.ndarray
    tokens_in: torch.Tensor
    targets: torch.Tensor
    context_in: torch.Tensor
    numeric_in: torch.Tensor
    numeric_target: torch.Tensor
    mask: torch.Tensor
    context_target: torch.Tensor

    @property
    def max_len(self) -> int:
        return int(self.targets.shape[1])

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return Batch(
            self.index,
            move(self.tokens_in),
            move(self.targets),
            move(self.context_in),
            move(self.numeric_in),
            move(self.numeric_target),
            move(self.mask),
            move(self.context_target),
        )


def make_batch(data: EncodedSequences, index: np.ndarray, *, end: bool = False) -> Batch:
    """Pad the sequences at ``index`` into one :class:`Batch` (vectorised).

    ``end=True`` appends the END step to every sequence.
    """
    starts = data.offsets[index]
    lengths = data.offsets[index + 1] - starts
    steps = lengths + 1 if end else lengths
    b, length = len(index), int(steps.max()) if len(index) else 0
    c, f = data.context.shape[1], data.numeric.shape[1]
    row = np.repeat(np.arange(b), lengths)
    pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(starts, lengths) + pos

    targets = np.full((b, length), PAD, dtype=np.int64)
    targets[row, pos] = data.tokens[src]
    if end:
        targets[np.arange(b), lengths] = END
    mask = targets != PAD
    tokens_in = np.full((b, length), PAD, dtype=np.int64)
    tokens_in[:, 0] = BOS
    shifted = pos + 1 < steps[row]
    tokens_in[row[shifted], pos[shifted] + 1] = data.tokens[src[shifted]]

    context_in = np.zeros((b, length, c), dtype=np.int64)
    numeric_in = np.zeros((b, length, f), dtype=np.float32)
    numeric_target = np.full((b, length, f), np.nan, dtype=np.float32)
    context_target = np.zeros((b, length, c), dtype=np.int64)
    if c:
        context_in[row[shifted], pos[shifted] + 1] = data.context[src[shifted]]
        context_target[row, pos] = data.context[src]
    if f:
        numeric_target[row, pos] = data.numeric[src]
        numeric_in[row[shifted], pos[shifted] + 1] = np.nan_to_num(data.numeric[src[shifted]])
    return Batch(
        index=np.asarray(index),
        tokens_in=torch.from_numpy(tokens_in),
        targets=torch.from_numpy(targets),
        context_in=torch.from_numpy(context_in),
        numeric_in=torch.from_numpy(numeric_in),
        numeric_target=torch.from_numpy(numeric_target),
        mask=torch.from_numpy(mask),
        context_target=torch.from_numpy(context_target),
    )


def _cut_back(lengths: np.ndarray, order: np.ndarray, i: int, low: int, size: int, budget: int) -> int:
    """The largest batch size in [low, size] from position ``i`` of ``order`` (sorted by length)
    whose padded size (count × its longest) stays within ``budget``; ``low`` at least."""
    n = len(order)

    def padded(g: int) -> int:
        return g * max(int(lengths[order[min(i + g, n) - 1]]), 1)

    if size <= low or padded(size) <= budget:
        return size
    lo, hi = low, size - 1  # padded() grows with g: bisect for the last size within budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if padded(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    rng: np.random.Generator | None = None,
    max_tokens: int | None = None,
    fill_tokens: int | None = None,
) -> list[np.ndarray]:
    """Group sequences of similar length (less padding), shuffled when ``rng`` is given.

    With ``fill_tokens``, a batch of short sequences holds more of them, up to
    ``fill_tokens // longest``, so that short-session data (log sessions of
    ~20 events) is not trained or scored a few hundred events at a time. That size is
    estimated from the first ``batch_size`` of them; where the sequences it
    adds are much longer (a mix of very short and very long ones), the batch
    is cut back so that it never pads to more than twice ``fill_tokens``.
    With ``max_tokens``, a batch of long sequences holds fewer of them so that
    ``len(batch) * longest <= max_tokens`` (at least one sequence), after any filling.
    """
    n = len(lengths)
    if n == 0:
        return []
    noise = rng.random(n) if rng is not None else np.zeros(n)
    order = np.lexsort((noise, lengths))
    batches: list[np.ndarray] = []
    i = 0
    while i < n:
        size = batch_size
        if fill_tokens is not None:
            longest = max(int(lengths[order[min(i + size, n) - 1]]), 1)
            size = max(size, fill_tokens // longest)
            size = _cut_back(lengths, order, i, batch_size, size, 2 * fill_tokens)
        if max_tokens is not None:
            longest = max(int(lengths[order[min(i + size, n) - 1]]), 1)
            size = max(1, min(size, max_tokens // longest))
        batches.append(order[i : i + size])
        i += size
    if rng is not None:
        rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def iter_batches(
    data: EncodedSequences,
    batch_size: int,
    *,
    rng: np.random.Generator | None = None,
    max_tokens: int | None = None,
    fill_tokens: int | None = None,
    end: bool = False,
) -> Iterator[Batch]:
    steps = data.lengths + 1 if end else data.lengths
    for idx in batch_indices(steps, batch_size, rng=rng, max_tokens=max_tokens, fill_tokens=fill_tokens):
        yield make_batch(data, idx, end=end)
