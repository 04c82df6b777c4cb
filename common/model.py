"""The shared next-event network: LSTM (default), GRU, plain RNN or CNN-LSTM.

Each step fuses the event embedding with categorical-context embeddings and the
scaled numeric features of the *previous* event, runs a recurrent encoder, and
predicts the distribution of the next event and, when numeric features exist,
the next numeric values: with ``model.numeric-given-event`` (the default) from
the recurrent state *and* the next event's embedding, so that a payment's amount
is predicted as a payment's. With ``model.context-head`` (off by default) it also
predicts the next event's categorical context values (device, channel, ...)
from the same two inputs and the previous event's context values
(``model.context-previous``), learning from a detached copy of the first two
(``model.context-detached``), so that its loss leaves the event model alone.
Shapes: B = batch, L = time steps (a chunk), V = vocabulary size, C = context
columns, F = numeric features, H = hidden, E = event embedding, Dc = context
embedding, n_j = ids of context column j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from common.config import ModelConfig
from common.vocab import PAD

if TYPE_CHECKING:
    from common.encoding import Encoder

# A recurrent state: (h,) for GRU/RNN, (h, c) for LSTM, plus the causal-conv
# buffer (B, K-1, D) as the last element for CNN-LSTM.
State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class NetworkShape:
    """Sizes the data decides (the config decides the rest)."""

    vocab_size: int
    context_sizes: tuple[int, ...] = ()
    n_numeric: int = 0


def shape_of(encoder: Encoder) -> NetworkShape:
    """The sizes a fitted :class:`common.encoding.Encoder` implies for the network."""
    return NetworkShape(
        vocab_size=len(encoder.vocab),
        context_sizes=encoder.context.sizes(),
        n_numeric=len(encoder.numeric_names),
    )


class CausalConv(nn.Module):
    """1-D convolution over time that sees only the current and past steps."""

    def __init__(self, in_dim: int, channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(in_dim, channels, kernel)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, L, D); buffer: (B, K-1, D) of the steps before this chunk
        if buffer is None:
            buffer = x.new_zeros(x.shape[0], self.kernel - 1, x.shape[2])
        full = torch.cat([buffer, x], dim=1)  # (B, K-1+L, D)
        y = self.conv(full.transpose(1, 2)).transpose(1, 2)  # (B, L, channels)
        return F.relu(y), full[:, full.shape[1] - (self.kernel - 1) :, :]


class NextEventModel(nn.Module):
    """Next-event language model over fused event + context inputs."""

    def __init__(self, config: ModelConfig, shape: NetworkShape) -> None:
        super().__init__()
        self.config = config
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, config.embed_dim, padding_idx=PAD)
        self.context_embeds = nn.ModuleList(
            nn.Embedding(n, config.context_dim, padding_idx=0) for n in shape.context_sizes
        )
        in_dim = config.embed_dim + config.context_dim * len(shape.context_sizes) + shape.n_numeric
        self.conv: CausalConv | None = None
        if config.kind == "cnn-lstm":
            self.conv = CausalConv(in_dim, config.conv_channels, config.conv_kernel)
            in_dim = config.conv_channels
        rnn_cls = {"lstm": nn.LSTM, "cnn-lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.kind]
        self.rnn = rnn_cls(
            in_dim,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.event_head = nn.Linear(config.hidden, shape.vocab_size)
        self.numeric_head: nn.Module | None = None
        if shape.n_numeric and config.numeric_given_event:
            # (B, L, H + E) -> (B, L, F): one hidden layer, so the event can switch the history's
            # effect on (an amount on a payment) or off (no amount on a page view)
            self.numeric_head = nn.Sequential(
                nn.Linear(config.hidden + config.embed_dim, config.hidden),
                nn.ReLU(),
                nn.Linear(config.hidden, shape.n_numeric),
            )
        elif shape.n_numeric:
            self.numeric_head = nn.Linear(config.hidden, shape.n_numeric)  # (B, L, H) -> (B, L, F)
        self.context_trunk: nn.Module | None = None
        self.context_heads = nn.ModuleList()
        if shape.context_sizes and config.context_head:
            # (B, L, H + E [+ C·Dc]) -> (B, L, H), then one (B, L, n_j) logit head per context column
            trunk_in = config.hidden + config.embed_dim
            if config.context_previous:
                trunk_in += config.context_dim * len(shape.context_sizes)
            self.context_trunk = nn.Sequential(nn.Linear(trunk_in, config.hidden), nn.ReLU())
            self.context_heads = nn.ModuleList(nn.Linear(config.hidden, n) for n in shape.context_sizes)

    def forward(
        self,
        tokens: torch.Tensor,
        context: torch.Tensor,
        numeric: torch.Tensor,
        state: State | None = None,
        next_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...], State]:
        """One chunk of steps.

        tokens (B, L) int64, context (B, L, C) int64, numeric (B, L, F) float32:
        the inputs at each step (the previous event); next_tokens (B, L) int64:
        the event that follows each step, which the numeric head reads with
        ``model.numeric-given-event`` and the context head always (without them
        neither predicts). Returns next-event logits (B, L, V), numeric
        predictions (B, L, F) or None, context logits (one (B, L, n_j) per
        context column, or none), and the new state.
        """
        parts = [self.embed(tokens)]  # (B, L, E)
        for j, emb in enumerate(self.context_embeds):
            parts.append(emb(context[:, :, j]))  # (B, L, Dc)
        previous_context = parts[1:]  # the previous event's context values, C × (B, L, Dc)
        if self.shape.n_numeric:
            parts.append(numeric)  # (B, L, F)
        x = self.drop(torch.cat(parts, dim=-1))  # (B, L, D)
        rnn_state: State | None = None
        new_state: list[torch.Tensor] = []
        if state is not None:
            rnn_state = state[:-1] if self.conv is not None else state
        if self.conv is not None:
            x, buffer = self.conv(x, state[-1] if state is not None else None)  # (B, L, Cc)
        hx = None
        if rnn_state is not None:
            hx = (rnn_state[0], rnn_state[1]) if isinstance(self.rnn, nn.LSTM) else rnn_state[0]
        out, h = self.rnn(x, hx)  # out (B, L, H)
        new_state.extend(h if isinstance(h, tuple) else (h,))
        if self.conv is not None:
            new_state.append(buffer)
        out = self.drop(out)
        logits = self.event_head(out)  # (B, L, V)
        numbers_given_event = self.numeric_head is not None and self.config.numeric_given_event
        num_pred: torch.Tensor | None = None
        if self.numeric_head is not None and not numbers_given_event:
            num_pred = self.numeric_head(out)  # (B, L, F)
        given: torch.Tensor | None = None
        if next_tokens is not None and (numbers_given_event or self.context_trunk is not None):
            given = torch.cat([out, self.drop(self.embed(next_tokens))], dim=-1)  # (B, L, H + E)
        if self.numeric_head is not None and numbers_given_event and given is not None:
            num_pred = self.numeric_head(given)  # (B, L, F)
        ctx_logits: tuple[torch.Tensor, ...] = ()
        if self.context_trunk is not None and given is not None:
            ctx_in = [given.detach() if self.config.context_detached else given]  # (B, L, H + E)
            if self.config.context_previous:
                ctx_in.extend(self.drop(p) for p in previous_context)  # C × (B, L, Dc)
            z = self.context_trunk(torch.cat(ctx_in, dim=-1))  # (B, L, H)
            ctx_logits = tuple(head(z) for head in self.context_heads)  # each (B, L, n_j)
        return logits, num_pred, ctx_logits, tuple(new_state)


def detach_state(state: State) -> State:
    """Cut the graph between truncated back-propagation chunks."""
    return tuple(s.detach() for s in state)


def build_model(config: ModelConfig, shape: NetworkShape, seed: int = 0) -> NextEventModel:
    """A freshly initialised model; the seed makes initial weights reproducible."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = NextEventModel(config, shape)
    torch.random.set_rng_state(gen_state)
    return model


def set_threads(threads: int) -> None:
    """Honour ``train.threads`` (0 = leave torch's default) for this process."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = missing_device(name)
    if problem is not None:
        from common.errors import ConfigError

        raise ConfigError(f"train.device = {name!r} but {problem}")
    return torch.device(name)


def missing_device(name: str) -> str | None:
    """Why this host cannot run on ``name`` (``cuda`` or ``cuda:N``), or None when it can."""
    if not name.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return "no CUDA device is available here; use 'auto' or 'cpu'"
    n = torch.cuda.device_count()
    index = torch.device(name).index
    if index is not None and index >= n:
        return (
            f"this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}; use one of those, 'cuda' or 'auto'"
        )
    return None
