import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import common.scoring as scoring
from common.batching import batch_indices, make_batch
from common.config import ModelConfig, ScoreConfig, TrainConfig
from common.encoding import EncodedSequences
from common.model import NetworkShape, build_model
from common.scoring import (
    EventScores,
    aggregate,
    context_fusion_from_moments,
    context_part,
    end_weight_from_moments,
    score_events,
    spread_moments,
)
from common.train import (
    EpochStats,
    LossTotals,
    chunk_counts,
    chunk_loss,
    context_present,
    evaluate_loss,
    fit_model,
)
from common.vocab import BOS, END, PAD, UNK

CPU = torch.device("cpu")
KINDS = ["lstm", "gru", "rnn", "cnn-lstm"]


def encoded(seqs, *, c=0, f=0, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([len(s) for s in seqs])
    n = int(lengths.sum())
    return EncodedSequences(
        ids=np.array([f"s{i}" for i in range(len(seqs))], dtype=object),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        tokens=np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]),
        context=rng.integers(1, 3, size=(n, c)).astype(np.int64),
        numeric=rng.normal(size=(n, f)).astype(np.float32),
    )


def tiny(kind="lstm", vocab=8, c=0, f=0, end=True, given=True, context_head=False, **model):
    cfg = ModelConfig(
        kind=kind,
        embed_dim=8,
        hidden=16,
        layers=2,
        context_dim=4,
        conv_channels=8,
        dropout=0.0,
        end_event=end,
        numeric_given_event=given,
        context_head=context_head,
        **model,
    )
    return build_model(cfg, NetworkShape(vocab, (3,) * c, f), seed=1)


def test_make_batch_shifts_inputs_and_masks_padding():
    data = encoded([[3, 4, 5], [6, 7]], c=1, f=1)
    b = make_batch(data, np.array([0, 1]))
    assert b.tokens_in.tolist() == [[BOS, 3, 4], [BOS, 6, PAD]]
    assert b.targets.tolist() == [[3, 4, 5], [6, 7, PAD]]
    assert b.mask.tolist() == [[True, True, True], [True, True, False]]
    assert b.context_in[0, 0, 0] == 0 and b.context_in[0, 1, 0] == data.context[0, 0]
    assert torch.isnan(b.numeric_target[1, 2, 0])
    assert b.numeric_in[0, 1, 0] == pytest.approx(float(data.numeric[0, 0]))


def test_make_batch_with_end_adds_one_end_step_per_sequence():
    data = encoded([[3, 4, 5], [6, 7]], c=1, f=1)
    b = make_batch(data, np.array([0, 1]), end=True)
    assert b.tokens_in.tolist() == [[BOS, 3, 4, 5], [BOS, 6, 7, PAD]]
    assert b.targets.tolist() == [[3, 4, 5, END], [6, 7, END, PAD]]
    assert b.mask.sum(1).tolist() == [4, 3]
    # the END step sees the last event's context and numerics; it has no numeric target
    assert b.context_in[1, 2, 0] == data.context[4, 0]
    assert b.numeric_in[0, 3, 0] == pytest.approx(float(data.numeric[2, 0]))
    assert torch.isnan(b.numeric_target[0, 3, 0])


def test_batches_group_by_length_and_respect_token_budget():
    lengths = np.array([5, 100, 6, 98, 7])
    batches = batch_indices(lengths, 2, max_tokens=120)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5))
    for idx in batches:
        assert len(idx) * lengths[idx].max() <= 120 or len(idx) == 1
    short = np.full(100, 10)
    assert [len(b) for b in batch_indices(short, 8, fill_tokens=400)] == [40, 40, 20]
    assert [len(b) for b in batch_indices(np.full(10, 100), 8, fill_tokens=400)] == [8, 2]
    # very short and very long sequences mixed: the estimate from the first 8 would take in
    # 100 more, 4 of them 3,000 long; the batch is cut back to twice the fill budget
    mixed = np.r_[np.full(8, 2), np.full(200, 3000)]
    sizes = [len(b) for b in batch_indices(mixed, 8, fill_tokens=400)]
    assert sizes[0] == 8 and sum(sizes) == len(mixed)  # 8 × 2, the next would pad to 9 × 3000
    assert all(
        len(b) * mixed[b].max() <= 800 or len(b) <= 8 for b in batch_indices(mixed, 8, fill_tokens=400)
    )
    # scoring's pair: short ones filled, long ones cut to the token budget
    both = batch_indices(np.r_[np.full(100, 10), np.full(10, 100)], 8, fill_tokens=400, max_tokens=300)
    assert [len(b) for b in both] == [30, 30, 30, 10, 3, 3, 3, 1]  # 400 // 10 = 40, cut to 300 // 10


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context_head", [False, True], ids=["inputs", "context-head"])
def test_scores_are_causal(kind, context_head):
    """Changing a later event must not change the scores of earlier ones."""
    model = tiny(kind, c=1, f=1, context_head=context_head)
    a = encoded([[3, 4, 5, 6, 7, 3]], c=1, f=1)
    b = encoded([[3, 4, 5, 6, 7, 3]], c=1, f=1)
    b.tokens[4] = 5
    sa = score_events(model, a, ScoreConfig(), CPU)
    sb = score_events(model, b, ScoreConfig(), CPU)
    np.testing.assert_allclose(sa.surprisal[:4], sb.surprisal[:4], rtol=1e-5)
    assert not np.allclose(sa.surprisal[4:], sb.surprisal[4:])
    if context_head:
        assert sa.context_surprisal is not None and sb.context_surprisal is not None
        np.testing.assert_allclose(sa.context_surprisal[:4], sb.context_surprisal[:4], rtol=1e-5)
        assert not np.allclose(sa.context_surprisal[4:], sb.context_surprisal[4:])
    else:
        assert sa.context_surprisal is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context_head", [False, True], ids=["inputs", "context-head"])
def test_chunked_scoring_equals_one_pass_and_padding_is_inert(kind, context_head, monkeypatch):
    model = tiny(kind, c=1, f=2, context_head=context_head)
    rng = np.random.default_rng(3)
    seqs = [rng.integers(3, 8, size=n).tolist() for n in (40, 7, 23)]
    data = encoded(seqs, c=1, f=2)
    whole = score_events(model, data, ScoreConfig(batch_size=8), CPU)
    monkeypatch.setattr(scoring, "SCORE_CHUNK", 5)
    chunked = score_events(model, data, ScoreConfig(batch_size=8), CPU)
    np.testing.assert_allclose(whole.surprisal, chunked.surprisal, rtol=1e-4, atol=1e-5)
    alone = score_events(model, data.subset(np.array([1])), ScoreConfig(batch_size=1), CPU)
    np.testing.assert_allclose(whole.surprisal[whole.of(1)], alone.surprisal, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole.end_surprisal, chunked.end_surprisal, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole.end_surprisal[1:2], alone.end_surprisal, rtol=1e-4, atol=1e-5)
    assert (whole.rank >= 1).all() and (whole.end_rank >= 1).all()
    if context_head:
        assert whole.context_surprisal is not None and chunked.context_surprisal is not None
        assert alone.context_surprisal is not None
        np.testing.assert_allclose(whole.context_surprisal, chunked.context_surprisal, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            whole.context_surprisal[whole.of(1)], alone.context_surprisal, rtol=1e-4, atol=1e-5
        )


def test_scoring_progress_counts_every_event_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny("lstm")
    seqs = [[3, 4, 5] * k for k in (1, 2, 5, 9, 4)]
    data = encoded(seqs)
    calls: list[int] = []
    score_events(model, data, ScoreConfig(batch_size=2), CPU, progress=calls.append)
    assert sum(calls) == len(data.tokens) == sum(len(s) for s in seqs)
    assert len(calls) == 1  # short sequences: one batch filled to scoring.SCORE_FILL_TOKENS steps
    monkeypatch.setattr(scoring, "SCORE_FILL_TOKENS", 1)
    calls.clear()
    score_events(model, data, ScoreConfig(batch_size=2), CPU, progress=calls.append)
    assert sum(calls) == len(data.tokens)
    assert len(calls) == 3  # 5 sequences, 2 per batch


def test_filled_scoring_batches_score_as_batches_of_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing short sequences into large batches changes the speed, not one score."""
    model = tiny("lstm")
    rng = np.random.default_rng(0)
    data = encoded([rng.integers(3, 8, size=int(n)).tolist() for n in rng.integers(1, 30, size=300)])
    filled = score_events(model, data, ScoreConfig(batch_size=4), CPU, expected_k=3)
    monkeypatch.setattr(scoring, "SCORE_FILL_TOKENS", 1)
    plain = score_events(model, data, ScoreConfig(batch_size=4), CPU, expected_k=3)
    np.testing.assert_allclose(filled.surprisal, plain.surprisal, rtol=1e-5, atol=1e-6)
    assert filled.end_surprisal is not None and plain.end_surprisal is not None
    np.testing.assert_allclose(filled.end_surprisal, plain.end_surprisal, rtol=1e-5, atol=1e-6)
    assert filled.expected is not None and plain.expected is not None
    assert (filled.expected == plain.expected).mean() > 0.99


def test_padding_is_never_a_next_event():
    """A model that puts most of its mass on PAD: scoring renormalises over the other ids."""
    model = tiny("lstm", vocab=8)
    with torch.no_grad():
        model.event_head.bias[PAD] += 50.0  # an absurdly likely PAD
    data = encoded([[3, 4, 5, 6], [7, 3]])
    ev = score_events(model, data, ScoreConfig(), CPU, expected_k=20)
    assert ev.expected is not None and ev.expected.shape[1] == 7  # all 8 ids but PAD
    assert not (ev.expected == PAD).any() and not (ev.end_expected == PAD).any()
    np.testing.assert_allclose(ev.expected_p.sum(1), 1.0, rtol=1e-5)  # a distribution over the rest
    assert (ev.surprisal < 10).all() and (ev.rank <= 7).all()
    logits = torch.randn(2, 3, 8)
    logp = scoring.next_event_logp(logits)
    assert torch.isneginf(logp[..., PAD]).all()
    ref = torch.log_softmax(logits[..., 1:], dim=-1)
    torch.testing.assert_close(logp[..., 1:], ref)
    # nor END, for a model without an END step: it never learned to predict one
    without_end = scoring.next_event_logp(logits, end_event=False)
    assert torch.isneginf(without_end[..., [PAD, END]]).all()
    keep = [UNK, *range(3, 8)]
    torch.testing.assert_close(without_end[..., keep], torch.log_softmax(logits[..., keep], dim=-1))
    model = tiny("lstm", vocab=8, end=False)
    with torch.no_grad():
        model.event_head.bias[END] += 50.0  # an undertrained model's guess
    ev = score_events(model, data, ScoreConfig(), CPU, expected_k=20)
    assert ev.expected is not None and ev.expected.shape[1] == 6  # all 8 ids but PAD and END
    assert not np.isin(ev.expected, [PAD, END]).any() and (ev.surprisal < 10).all()


def test_end_step_leaves_event_scores_unchanged():
    """The END step is one more causal step: the events before it score as without it."""
    with_end = tiny("lstm", end=True)
    with torch.no_grad():  # as a model trained without END: next to no mass on it
        with_end.event_head.bias[END] -= 50.0
    without = tiny("lstm", end=False)
    without.load_state_dict(with_end.state_dict())
    data = encoded([[3, 4, 5, 6], [7, 3]])
    a = score_events(with_end, data, ScoreConfig(), CPU)
    b = score_events(without, data, ScoreConfig(), CPU)
    np.testing.assert_allclose(a.surprisal, b.surprisal, rtol=1e-5)
    assert b.end_surprisal is None and a.end_surprisal.shape == (2,)
    sc = ScoreConfig(aggregate="mean", end_weight=0.25)
    expected = [
        a.score[:4].mean() + 0.25 * a.end_surprisal[0],
        a.score[4:].mean() + 0.25 * a.end_surprisal[1],
    ]
    np.testing.assert_allclose(aggregate(a, sc), expected, rtol=1e-5)
    np.testing.assert_allclose(aggregate(b, sc), [a.score[:4].mean(), a.score[4:].mean()], rtol=1e-5)


def test_aggregates():
    ev = EventScores(
        offsets=np.array([0, 4, 6]),
        surprisal=np.array([1, 1, 5, 1, 2, 2], dtype=np.float32),
        rank=np.array([1, 1, 12, 1, 1, 10]),
        residual=np.zeros((6, 0), dtype=np.float32),
        score=np.array([1, 1, 5, 1, 2, 2], dtype=np.float32),
    )
    assert aggregate(ev, ScoreConfig(aggregate="mean")).tolist() == [2.0, 2.0]
    assert aggregate(ev, ScoreConfig(aggregate="max")).tolist() == [5.0, 2.0]
    assert aggregate(ev, ScoreConfig(aggregate="window", window=2)).tolist() == [3.0, 2.0]
    # a sequence shorter than the window falls back to its mean
    assert aggregate(ev, ScoreConfig(aggregate="window", window=3)).tolist() == [pytest.approx(7 / 3), 2.0]
    assert aggregate(ev, ScoreConfig(aggregate="window-min", window=2)).tolist() == [1.0, 2.0]
    assert aggregate(ev, ScoreConfig(aggregate="window-min", window=3)).tolist() == [
        pytest.approx(7 / 3),
        2.0,
    ]
    assert aggregate(ev, ScoreConfig(aggregate="topk-miss", top_k=9)).tolist() == [0.25, 0.5]
    # with END steps: each sequence gets one more step, scored by its end surprisal
    ended = dataclasses.replace(
        ev, end_surprisal=np.array([9.0, 0.0], dtype=np.float32), end_rank=np.array([20, 1])
    )
    offsets, step_score, step_rank = ended.steps()
    assert offsets.tolist() == [0, 5, 8]
    assert step_score.tolist() == [1, 1, 5, 1, 9, 2, 2, 0]
    assert step_rank.tolist() == [1, 1, 12, 1, 20, 1, 10, 1]
    # averages add end_weight × END surprisal; max and topk-miss count END as a step
    assert aggregate(ended, ScoreConfig(aggregate="mean", end_weight=0.5)).tolist() == [6.5, 2.0]
    assert aggregate(ended, ScoreConfig(aggregate="window", window=2, end_weight=0.0)).tolist() == [3.0, 2.0]
    assert aggregate(ended, ScoreConfig(aggregate="max")).tolist() == [9.0, 2.0]
    assert aggregate(ended, ScoreConfig(aggregate="topk-miss", top_k=9)).tolist() == [
        0.4,
        pytest.approx(1 / 3),
    ]


@pytest.mark.parametrize("bad", [np.inf, 3e16])
def test_one_huge_event_score_leaves_other_sequences_windows_alone(bad: float) -> None:
    """Window sums come from each window's own steps, not one running sum over every sequence."""
    rng = np.random.default_rng(0)
    score = rng.gamma(2.0, 1.0, 40).astype(np.float64)
    offsets = np.array([0, 10, 20, 30, 40])
    clean = EventScores(offsets, score, np.ones(40), np.zeros((40, 0)), score)
    spoiled = dataclasses.replace(clean, score=np.where(np.arange(40) == 2, bad, score))
    for agg in ("window", "window-min"):
        cfg = ScoreConfig(aggregate=agg, window=3)
        got, want = aggregate(spoiled, cfg), aggregate(clean, cfg)
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-12)  # the other sequences, exactly
        brute = [np.mean(score[i : i + 3]) for i in range(3, 8)]  # sequence 0's windows without step 2
        assert got[0] >= bad / 3 if agg == "window" else got[0] == pytest.approx(min(brute))


def _ended(n_seq: int, seed: int) -> EventScores:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, size=n_seq)
    n = int(lengths.sum())
    score = rng.gamma(2.0, size=n).astype(np.float32)
    return EventScores(
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        surprisal=score,
        rank=np.ones(n, dtype=np.int32),
        residual=np.zeros((n, 0), dtype=np.float32),
        score=score,
        end_surprisal=rng.gamma(1.0, 3.0, size=n_seq).astype(np.float32),
        end_rank=np.ones(n_seq, dtype=np.int32),
    )


def test_end_weight_is_the_spread_ratio_on_normal_data_and_parties_merge_exactly():
    sc = ScoreConfig(aggregate="mean")
    a, b = _ended(40, 0), _ended(25, 1)
    base = np.concatenate([aggregate(x, dataclasses.replace(sc, end_weight=0.0)) for x in (a, b)])
    end = np.concatenate([a.end_surprisal, b.end_surprisal]).astype(np.float64)
    merged = spread_moments(a, sc) + spread_moments(b, sc)
    assert merged[0] == 65
    assert end_weight_from_moments(merged, sc) == pytest.approx(base.std() / end.std(), rel=1e-9)
    # the same weight as one party holding all the sequences
    both = EventScores(
        offsets=np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
        surprisal=np.concatenate([a.surprisal, b.surprisal]),
        rank=np.concatenate([a.rank, b.rank]),
        residual=np.zeros((len(a.score) + len(b.score), 0), dtype=np.float32),
        score=np.concatenate([a.score, b.score]),
        end_surprisal=end,
        end_rank=np.ones(65, dtype=np.int32),
    )
    np.testing.assert_allclose(spread_moments(both, sc), merged, rtol=1e-9)
    # with that weight both parts vary equally on these normal sequences
    w = end_weight_from_moments(merged, sc)
    assert (w * end).std() == pytest.approx(base.std(), rel=1e-9)


def test_end_weight_falls_back_to_the_configured_one():
    ev = _ended(40, 0)
    fixed = ScoreConfig(aggregate="mean", end_weight=0.7, fit_end_weight=False)
    assert end_weight_from_moments(spread_moments(ev, fixed), fixed) == 0.7
    few = ScoreConfig(aggregate="mean", end_weight=0.7)
    too_few = _ended(scoring.MIN_SPREAD_SEQUENCES - 1, 0)
    assert end_weight_from_moments(spread_moments(too_few, few), few) == 0.7
    maximum = ScoreConfig(aggregate="max", end_weight=0.7)  # END is one more step there: no weight
    assert end_weight_from_moments(spread_moments(ev, maximum), maximum) == 0.7
    flat = dataclasses.replace(ev, end_surprisal=np.full(40, 2.0, dtype=np.float32))
    assert end_weight_from_moments(spread_moments(flat, few), few) == 0.7
    no_end = dataclasses.replace(ev, end_surprisal=None, end_rank=None)
    assert end_weight_from_moments(spread_moments(no_end, few), few) == 0.7


def _with_context(events: EventScores, seed: int) -> EventScores:
    rng = np.random.default_rng(seed)
    return dataclasses.replace(
        events, context_surprisal=rng.gamma(1.5, 2.0, size=len(events.score)).astype(np.float32)
    )


def test_context_fusion_matches_the_scores_spread_and_parties_merge_exactly() -> None:
    sc = ScoreConfig(aggregate="mean")
    a, b = _with_context(_ended(40, 0), 2), _with_context(_ended(25, 1), 3)
    merged = spread_moments(a, sc) + spread_moments(b, sc)
    w = end_weight_from_moments(merged, sc)
    fusion = context_fusion_from_moments(merged, w)
    assert fusion is not None and fusion.scale > 0
    weighted = dataclasses.replace(sc, end_weight=w)
    score = np.concatenate([aggregate(x, weighted) for x in (a, b)])
    largest = np.concatenate([context_part(x) for x in (a, b)])
    # the context part (each sequence's largest context surprisal) mapped onto the score's mean and spread
    assert a.context_surprisal is not None and largest[0] == a.context_surprisal[a.of(0)].max()
    mapped = fusion.shift + fusion.scale * largest
    assert mapped.mean() == pytest.approx(score.mean(), rel=1e-9)
    assert mapped.std() == pytest.approx(score.std(), rel=1e-9)
    # the sequence score is the larger of the two
    fused = aggregate(a, weighted, fusion)
    np.testing.assert_allclose(fused, np.maximum(aggregate(a, weighted), mapped[:40]), rtol=1e-12)
    assert (fused > aggregate(a, weighted)).any() and (fused == aggregate(a, weighted)).any()
    # an aggregate without an END weight: the whole score is the part matched
    top = ScoreConfig(aggregate="max")
    f_max = context_fusion_from_moments(spread_moments(a, top), 0.7)
    assert f_max is not None
    assert (f_max.scale * context_part(a)).std() == pytest.approx(aggregate(a, top).std(), rel=1e-9)
    # no context part: no context head, too few sequences, or a constant context part
    assert context_fusion_from_moments(spread_moments(_ended(40, 0), sc), w) is None
    few = _with_context(_ended(scoring.MIN_SPREAD_SEQUENCES - 1, 0), 1)
    assert context_fusion_from_moments(spread_moments(few, sc), w) is None
    flat = dataclasses.replace(a, context_surprisal=np.ones_like(a.score))
    assert context_fusion_from_moments(spread_moments(flat, sc), w) is None
    assert np.array_equal(aggregate(_ended(40, 0), sc, fusion), aggregate(_ended(40, 0), sc))


def test_the_context_head_learns_an_events_context_and_scores_an_unlikely_one() -> None:
    """Views come from device 1, payments from device 2: a payment from device 1 is surprising."""
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice([3, 4], size=int(rng.integers(8, 16)))) for _ in range(48)]
    data = encoded(seqs, c=1)
    data.context[:, 0] = np.where(data.tokens == 4, 2, 1)
    cfg = TrainConfig(epochs=12, lr=0.02, chunk_len=16, batch_size=8, patience=12, seed=0)
    torch.manual_seed(0)
    model = tiny("lstm", c=1, context_head=True)
    assert model.context_trunk is not None
    fit_model(model, data, data, cfg, CPU)
    usual = score_events(model, data, ScoreConfig(), CPU).context_surprisal
    assert usual is not None and float(usual.mean()) < 0.1
    # asked for what it expected, it names each column's most likely value: the learned device
    full = score_events(model, data, ScoreConfig(), CPU, expected_k=2)
    assert full.context_expected is not None and full.context_expected_p is not None
    np.testing.assert_array_equal(full.context_expected[:, 0], data.context[:, 0])
    assert (full.context_expected_p > 0.9).all()
    assert score_events(model, data, ScoreConfig(), CPU).context_expected is None
    swapped = dataclasses.replace(data, context=3 - data.context)  # every event on the other device
    odd = score_events(model, swapped, ScoreConfig(), CPU).context_surprisal
    assert odd is not None and float(odd.min()) > 2.0
    # the head reads the event: the same history, another next event, other context odds
    tokens, ctx = torch.tensor([[BOS, 3, 4]]), torch.tensor([[[0], [1], [2]]])
    num = torch.zeros(1, 3, 0)
    as_views = model(tokens, ctx, num, None, torch.tensor([[3, 3, 3]]))[2]
    as_payments = model(tokens, ctx, num, None, torch.tensor([[4, 4, 4]]))[2]
    assert len(as_views) == 1 and not torch.allclose(as_views[0], as_payments[0])
    assert model(tokens, ctx, num)[2] == ()  # without the next events: no context predicted
    # an event never seen in training: the head has no idea of its context, which is not judged
    from common.vocab import UNK

    unseen = dataclasses.replace(data, tokens=np.where(np.arange(len(data.tokens)) == 2, UNK, data.tokens))
    with_unk = score_events(model, unseen, ScoreConfig(), CPU).context_surprisal
    assert with_unk is not None and np.isnan(with_unk[2]) and np.isfinite(np.delete(with_unk, 2)).all()
    first = slice(int(unseen.offsets[0]), int(unseen.offsets[1]))
    assert context_part(score_events(model, unseen, ScoreConfig(), CPU))[0] == np.nanmax(with_unk[first])
    # without the head (or without context columns) there is no context part
    plain = tiny("lstm", c=1)
    assert plain.context_trunk is None
    assert score_events(plain, data, ScoreConfig(), CPU).context_surprisal is None
    assert score_events(tiny("lstm"), encoded(seqs), ScoreConfig(), CPU).context_surprisal is None


def test_the_context_head_reads_the_previous_context_and_learns_that_a_session_keeps_it() -> None:
    """Each session stays on one of two devices, drawn at random: after its first event a session's
    device is certain, and a switch mid-session is surprising."""
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice([3, 4], size=int(rng.integers(8, 16)))) for _ in range(64)]
    data = encoded(seqs, c=1)
    lengths = np.diff(data.offsets)
    data.context[:, 0] = np.repeat(rng.integers(1, 3, size=len(seqs)), lengths)
    cfg = TrainConfig(epochs=12, lr=0.02, chunk_len=16, batch_size=8, patience=12, seed=0)
    torch.manual_seed(0)
    model = tiny("lstm", c=1, context_head=True)
    assert model.config.context_previous and model.config.context_detached  # the defaults
    fit_model(model, data, data, cfg, CPU)
    sur = score_events(model, data, ScoreConfig(), CPU).context_surprisal
    assert sur is not None
    first = np.zeros(len(sur), dtype=bool)
    first[data.offsets[:-1]] = True
    assert abs(float(sur[first].mean()) - np.log(2)) < 0.2  # a coin toss at the first event
    assert float(sur[~first].mean()) < 0.1  # then the session's own device
    switched = dataclasses.replace(data, context=data.context.copy())
    at = int(data.offsets[0]) + 4
    switched.context[at:, 0] = 3 - switched.context[at:, 0]  # the first session changes device
    odd = score_events(model, switched, ScoreConfig(), CPU).context_surprisal
    assert odd is not None and float(odd[at]) > 2.0
    # the previous context is an input of the head: without it the trunk is narrower
    plain = tiny("lstm", c=2, context_head=True, context_previous=False)
    read = tiny("lstm", c=2, context_head=True)
    assert plain.context_trunk is not None and read.context_trunk is not None
    assert read.context_trunk[0].in_features == plain.context_trunk[0].in_features + 2 * 4


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "shared"])
def test_a_detached_context_head_leaves_the_event_model_alone(detached: bool) -> None:
    model = tiny("lstm", c=1, f=1, context_head=True, context_detached=detached)
    data = encoded([[3, 4, 5, 3], [4, 5, 6]], c=1, f=1)
    batch = make_batch(data, np.arange(2), end=True)
    model.zero_grad()
    context_nll = chunk_loss(model, batch, slice(0, batch.max_len), None, 1.0)[3]
    context_nll.backward()

    def moved(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())

    assert moved(model.context_trunk) and moved(model.context_heads) and moved(model.context_embeds)
    for read in (model.embed, model.rnn):  # the next event's embedding and the recurrent state
        assert moved(read) is not detached
    assert model.numeric_head is not None
    assert not moved(model.event_head) and not moved(model.numeric_head)


def test_local_training_leaves_the_context_ids_it_does_not_hold_alone() -> None:
    """A federation's shared vocabulary holds categories some institutions never see: their
    training must not push those down (a restricted softmax), but it does teach that an
    unseen value (id 0) is unlikely."""
    data = encoded([[3, 4, 5, 3]] * 4, c=1)
    data.context[:, 0] = 1  # this institution holds id 1 only; id 2 is another's
    model = tiny("lstm", c=1, context_head=True)
    present = context_present(data, model)
    assert present[0].tolist() == [True, True, False]
    batch = make_batch(data, np.arange(4), end=True)
    moved = {}
    for name, restricted in (("full", None), ("restricted", present)):
        model.zero_grad()
        loss, *_ = chunk_loss(model, batch, slice(0, batch.max_len), None, 1.0, None, restricted)
        loss.backward()
        grad = model.context_heads[0].bias.grad
        assert grad is not None and bool(grad[0] != 0)
        moved[name] = bool(grad[2] != 0)
    assert moved == {"full": True, "restricted": False}
    # an END step has no context to predict: whatever its context target, the context loss is the same
    odd_end = dataclasses.replace(batch, context_target=batch.context_target.clone())
    odd_end.context_target[~(batch.targets != END) & batch.mask] = 2
    ctx = [chunk_loss(model, b, slice(0, batch.max_len), None, 1.0)[3] for b in (batch, odd_end)]
    assert torch.equal(ctx[0], ctx[1])
    # with every id present (a fit on data whose vocabulary it built) nothing is restricted
    data.context[:2, 0] = 2
    assert all(bool(p.all()) for p in context_present(data, model))


def test_numeric_residual_enters_event_score():
    model = tiny("lstm", f=1)
    data = encoded([[3, 4, 5, 3]], f=1)
    plain = score_events(model, data, ScoreConfig(numeric_weight=0.0), CPU)
    weighted = score_events(model, data, ScoreConfig(numeric_weight=1.0), CPU)
    np.testing.assert_allclose(plain.score, plain.surprisal)
    assert (weighted.score > plain.score).all()


@pytest.mark.parametrize("given", [True, False], ids=["given-event", "before-event"])
def test_numeric_residual_is_actual_minus_expected(given: bool) -> None:
    """Positive residual: the value is above what the model expected (the usual sign)."""
    model = tiny("lstm", f=1, given=given)
    assert model.numeric_head is not None
    last = (
        model.numeric_head[-1] if isinstance(model.numeric_head, torch.nn.Sequential) else model.numeric_head
    )
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.5)  # the model expects 0.5 everywhere
    data = encoded([[3, 4, 5, 3]], f=1)
    scored = score_events(model, data, ScoreConfig(), CPU)
    predicted = ~np.isnan(scored.residual[:, 0])
    assert predicted[1:].all()
    np.testing.assert_allclose(scored.residual[predicted, 0], data.numeric[predicted, 0] - 0.5, rtol=1e-6)


def test_the_numeric_head_reads_the_next_event() -> None:
    """The numbers of an event are predicted knowing the event: a payment's amount as a payment's."""
    model = tiny("lstm", f=1)
    tokens = torch.tensor([[BOS, 3, 4]])
    ctx, num = torch.zeros(1, 3, 0, dtype=torch.int64), torch.zeros(1, 3, 1)
    _, as_views, _, _ = model(tokens, ctx, num, None, torch.tensor([[3, 3, 3]]))
    _, as_payments, _, _ = model(tokens, ctx, num, None, torch.tensor([[4, 4, 4]]))
    assert as_views is not None and as_payments is not None
    assert not torch.allclose(as_views, as_payments)
    assert model(tokens, ctx, num)[1] is None  # without the next events: no numbers predicted
    # trained on views (amount 0) and payments (amount 2) in random order, a head that knows
    # the event predicts each; one that does not can only guess their mean for both
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice([3, 4], size=int(rng.integers(8, 16)))) for _ in range(48)]
    data = encoded(seqs, f=1)
    data.numeric[:, 0] = np.where(data.tokens == 4, 2.0, 0.0)
    cfg = TrainConfig(epochs=12, lr=0.02, chunk_len=16, batch_size=8, patience=12, seed=0)
    mse = {}
    for given in (True, False):
        torch.manual_seed(0)
        model = tiny("lstm", f=1, given=given)
        fit_model(model, data, data, cfg, CPU)
        residual = score_events(model, data, ScoreConfig(), CPU).residual[:, 0]
        mse[given] = float(np.nanmean(residual**2))
    assert mse[True] < 0.05 and mse[False] > 0.5, mse


@pytest.mark.parametrize("given", [True, False], ids=["given-event", "before-event"])
def test_an_unseen_events_numbers_are_not_judged_by_the_event_aware_head(given: bool) -> None:
    from common.vocab import UNK

    model = tiny("lstm", f=1, given=given)
    data = encoded([[3, UNK, 5, 3]], f=1)
    residual = score_events(model, data, ScoreConfig(), CPU).residual[:, 0]
    # the head has never learned what an unseen event's numbers look like: left out, as missing
    assert np.isnan(residual[1]) == given
    assert np.isfinite(residual[[0, 2, 3]]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_training_learns_a_cycle_and_flags_a_break(kind):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = [[3 + (i + s) % 4 for i in range(int(rng.integers(12, 30)))] for s in range(40)]
    train, val = encoded(normal[:32]), encoded(normal[32:])
    model = tiny(kind)
    cfg = TrainConfig(epochs=15, lr=0.02, chunk_len=8, batch_size=8, patience=15, seed=0)
    before = evaluate_loss(model, val, cfg, CPU).event_nll
    res = fit_model(model, train, val, cfg, CPU)
    after = evaluate_loss(model, val, cfg, CPU).event_nll
    assert after < 0.3 * before
    assert res.best_epoch >= 1 and len(res.history) >= res.best_epoch
    broken = encoded([[3, 4, 5, 6, 3, 4, 6, 5, 3, 4, 5, 6]])
    fine = encoded([[3, 4, 5, 6, 3, 4, 5, 6, 3, 4, 5, 6]])
    sc = ScoreConfig(aggregate="mean")
    s_broken = aggregate(score_events(model, broken, sc, CPU), sc)[0]
    s_fine = aggregate(score_events(model, fine, sc, CPU), sc)[0]
    assert s_broken > s_fine + 0.5


def test_diverged_training_is_an_error_or_keeps_the_last_good_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    from common import train as train_module
    from common.errors import TrainingError

    normal = [[3 + (i + s) % 4 for i in range(16)] for s in range(16)]
    data = encoded(normal)
    cfg = TrainConfig(epochs=4, lr=0.01, chunk_len=8, batch_size=8, patience=4, seed=0)
    with pytest.raises(TrainingError, match=r"diverged.*epoch 1.*train.lr"):
        fit_model(tiny(), data, None, dataclasses.replace(cfg, lr=1e30), CPU)
    real = train_module.train_epochs
    calls = {"n": 0}

    def nan_in_epoch_3(*args: object, **kwargs: object) -> list[EpochStats]:
        (es,) = real(*args, **kwargs)  # type: ignore[arg-type]
        calls["n"] += 1
        return [dataclasses.replace(es, loss=float("nan")) if calls["n"] == 3 else es]

    monkeypatch.setattr(train_module, "train_epochs", nan_in_epoch_3)
    res = fit_model(tiny(), data, None, cfg, CPU)
    assert res.best_epoch == 2 and len(res.history) == 2  # epoch 3 diverged: stopped, epoch 2 kept


def test_padding_never_enters_the_loss():
    model = tiny("lstm")
    cfg = TrainConfig(chunk_len=4)
    short = encoded([[3, 4, 5]])
    padded_batch = encoded([[3, 4, 5], [6] * 30])
    a = evaluate_loss(model, short, cfg, CPU)
    b = evaluate_loss(model, padded_batch.subset(np.array([0])), cfg, CPU)
    assert a.events == b.events == 3 + 1  # three events and the END step
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_chunk_counts_are_the_real_steps_of_each_chunk():
    batch = make_batch(encoded([[3, 4, 5], [6] * 10]), np.array([0, 1]), end=True)  # 4 and 11 steps
    counts = chunk_counts(batch.mask, 4)
    assert counts == [8, 4, 3]  # steps 0-3: both sequences; 4-7 and 8-10: the long one
    assert sum(counts) == int(batch.mask.sum())


def test_batch_progress_counts_every_event_once_per_epoch_and_changes_nothing():
    rng = np.random.default_rng(1)
    train = encoded(
        [[3 + int(x) % 4 for x in rng.integers(0, 9, size=int(n))] for n in rng.integers(5, 40, 30)]
    )
    cfg = TrainConfig(epochs=3, chunk_len=8, batch_size=4, patience=3, seed=0)
    calls: list[tuple[int, int, int]] = []
    quiet, reported = tiny("lstm"), tiny("lstm")
    fit_model(quiet, train, None, cfg, CPU)
    fit_model(reported, train, None, cfg, CPU, batch_progress=lambda *a: calls.append(a))
    events = int(train.lengths.sum())  # END steps are trained on but are not events
    epochs = [e for e, _, _ in calls]
    assert epochs == sorted(epochs) and set(epochs) == {1, 2, 3}
    for epoch in (1, 2, 3):
        assert {total for e, total, _ in calls if e == epoch} == {events}
        assert sum(n for e, _, n in calls if e == epoch) == events
    for a, b in zip(quiet.state_dict().values(), reported.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # reporting draws no random numbers and moves nothing
    no_end: list[tuple[int, int, int]] = []
    fit_model(tiny("lstm", end=False), train, None, cfg, CPU, batch_progress=lambda *a: no_end.append(a))
    assert sum(n for e, _, n in no_end if e == 1) == events
    # one long sequence is one batch: progress still moves chunk by chunk (100 events + END = 13 chunks)
    long: list[tuple[int, int, int]] = []
    one = encoded([[3 + i % 4 for i in range(100)]])
    fit_model(
        tiny("lstm"),
        one,
        None,
        dataclasses.replace(cfg, epochs=1),
        CPU,
        batch_progress=lambda *a: long.append(a),
    )
    assert [n for _, _, n in long] == [8] * 12 + [4]


def test_loss_totals_match_reading_every_chunk_back():
    """Summed on the device, the totals equal Python floats added chunk by chunk (bit for bit)."""
    rng = np.random.default_rng(0)
    chunks = [torch.from_numpy(rng.gamma(2.0, 50.0, size=3).astype(np.float32)) for _ in range(200)]
    totals, py = LossTotals(CPU), [0.0, 0.0, 0.0]
    for i, (loss, nll, se) in enumerate(chunks):
        totals.add(loss, nll, se, i)
        py = [py[0] + float(loss), py[1] + float(nll), py[2] + float(se)]
    stats = totals.stats(1.0)
    events = sum(range(200))
    assert [stats.loss, stats.event_nll, stats.numeric_mse] == [total / events for total in py]
    assert stats.events == events


@pytest.mark.parametrize("kind", KINDS)
def test_end_model_flags_a_sequence_cut_short(kind):
    """Trained on complete 8-event cycles, the END step of a truncated copy is surprising."""
    torch.manual_seed(0)
    normal = [[3 + (i + s) % 4 for i in range(8)] for s in range(32)]
    model = tiny(kind)
    cfg = TrainConfig(epochs=40, lr=0.03, chunk_len=16, batch_size=8, patience=40, seed=0)
    fit_model(model, encoded(normal), None, cfg, CPU)
    full, cut = encoded([normal[0]]), encoded([normal[0][:5]])
    sc = ScoreConfig(aggregate="max")
    s_full, s_cut = score_events(model, full, sc, CPU), score_events(model, cut, sc, CPU)
    assert s_cut.end_surprisal[0] > s_full.end_surprisal[0] + 2.0
    assert aggregate(s_cut, sc)[0] > aggregate(s_full, sc)[0] + 1.0


@pytest.mark.parametrize("with_end", [True, False])
def test_top_events_of_all_sequences_match_one_sort_per_sequence(with_end):
    """The one sort over all steps ranks each sequence's steps as sorting it alone does: by score,
    then surprisal (both descending, NaN last), then position; the END step is the last position."""
    from common.detector import ScoredTable
    from common.scoring import EventScores

    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 9, size=40)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    n = int(offsets[-1])
    surprisal = rng.integers(0, 4, size=n).astype(np.float32)  # many ties
    score = surprisal + rng.integers(0, 2, size=n).astype(np.float32)
    score[rng.random(n) < 0.1] = np.nan
    end = rng.integers(0, 5, size=len(lengths)).astype(np.float32) if with_end else None
    events = EventScores(
        offsets=offsets,
        surprisal=surprisal,
        rank=np.ones(n, np.int64),
        residual=np.zeros((n, 0), np.float32),
        score=score,
        end_surprisal=end,
        end_rank=None if end is None else np.ones(len(lengths), np.int64),
    )
    scored = ScoredTable(encoded=None, events=events, scores=np.zeros(len(lengths)))  # type: ignore[arg-type]
    for k in (0, 1, 3, 20):
        got = scored.top_events(k)
        for i in range(len(lengths)):
            s, p = list(score[offsets[i] : offsets[i + 1]]), list(surprisal[offsets[i] : offsets[i + 1]])
            if end is not None:
                s, p = [*s, end[i]], [*p, end[i]]
            key = [
                (-(x if x == x else -np.inf), -(y if y == y else -np.inf), t)
                for t, (x, y) in enumerate(zip(s, p, strict=True))
            ]
            assert got[i].tolist() == [t for *_, t in sorted(key)][:k]


def test_devices_are_checked_against_what_this_host_has(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from common.detector import _device_here
    from common.errors import ConfigError
    from common.model import resolve_device

    caplog.set_level(logging.INFO, logger="common.detector")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_device("cuda:0")
    assert _device_here("cuda:1", tmp_path) == "auto" and "runs on the CPU" in caplog.text
    # one GPU: cuda:0 and cuda are fine, cuda:1 is named with what there is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device("cuda") == torch.device(
        "cuda"
    )
    with pytest.raises(
        ConfigError, match=r"'cuda:1' but this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"
    ):
        resolve_device("cuda:1")
    # a model trained on a second GPU scores on the first of a one-GPU host
    caplog.clear()
    assert _device_here("cuda:1", tmp_path) == "cuda" and "runs on cuda:0" in caplog.text
    assert _device_here("cuda:0", tmp_path) == "cuda:0" and _device_here("cpu", tmp_path) == "cpu"
