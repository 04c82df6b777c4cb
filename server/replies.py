"""Checks on what the nodes send back, where it enters the server.

A reply the server cannot use — a missing record, weights with other keys or
shapes than the global ones, values that are not finite, a count that is not a
non-negative whole number, a histogram with another number of bins — would
otherwise poison the global model or threshold (one node's NaN weights make
every average NaN; one short histogram shifts the global threshold) or stop the
ServerApp after the training is done. Each check returns ``None`` for a usable
reply, else one line that says what is wrong; :func:`usable` drops the unusable
replies with a warning that names the node, and the strategy and the query
rounds treat those nodes as failed for that round.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

log = logging.getLogger(__name__)

#: A check: ``None`` when the reply can be used, else what is wrong with it.
Check = Callable[[Message], "str | None"]


def _metrics(msg: Message) -> MetricRecord | str:
    records = list(msg.content.metric_records.values())
    if len(records) != 1:
        return f"{len(records)} metric records (expected 1)"
    return records[0]


def _number_problem(key: str, value: object, *, allow_nan: bool = False) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"'{key}' is {type(value).__name__}, not a number"
    if not math.isfinite(value) and not (allow_nan and math.isnan(value)):
        return f"'{key}' is {value}"
    return None


def _count_problem(key: str, value: object, *, positive: bool = False) -> str | None:
    bad = _number_problem(key, value)
    if bad:
        return bad
    v = float(value)  # type: ignore[arg-type]
    if v != round(v) or v < (1 if positive else 0):
        return f"'{key}' = {value!r} is not a {'positive' if positive else 'non-negative'} whole number"
    return None


def _counts_problem(key: str, value: object, bins: int | None) -> str | None:
    if not isinstance(value, list):
        return f"'{key}' is {type(value).__name__}, not a list of counts"
    if value and bins is not None and len(value) != bins:
        return f"'{key}' has {len(value)} bins, the round's edges define {bins}"
    for v in value:
        bad = _count_problem(key, v)
        if bad:
            return f"'{key}' holds {v!r}, not a non-negative whole number"
    return None


def metrics_problem(
    msg: Message,
    *,
    counts: Sequence[str] = (),
    positive: Sequence[str] = (),
    numbers: Sequence[str] = (),
    nan_numbers: Sequence[str] = (),
    histograms: Sequence[str] = (),
    bins: int | None = None,
    vectors: Mapping[str, int] | None = None,
    optional: Sequence[str] = (),
) -> str | None:
    """What is wrong with a reply's one metric record, or None.

    ``counts``: non-negative whole numbers; ``positive``: whole numbers ≥ 1;
    ``numbers``: finite numbers; ``nan_numbers``: finite or NaN;
    ``histograms``: lists of counts, empty or ``bins`` long; ``vectors``: lists
    of that many finite numbers. Every key named must be present, except those
    also in ``optional`` (checked when present).
    """
    record = _metrics(msg)
    if isinstance(record, str):
        return record
    named = [*counts, *positive, *numbers, *nan_numbers, *histograms, *(vectors or {})]
    missing = [k for k in named if k not in record and k not in optional]
    if missing:
        return f"no {', '.join(repr(k) for k in missing)} in its metrics"
    lengths = dict(vectors or {})
    checks: list[tuple[Sequence[str], Callable[[str, object], str | None]]] = [
        (counts, _count_problem),
        (positive, lambda k, v: _count_problem(k, v, positive=True)),
        (numbers, _number_problem),
        (nan_numbers, lambda k, v: _number_problem(k, v, allow_nan=True)),
        (histograms, lambda k, v: _counts_problem(k, v, bins)),
        (list(lengths), lambda k, v: _vector_problem(k, v, lengths[k])),
    ]
    for keys, check in checks:
        for key in keys:
            if key in record and (bad := check(key, record[key])):
                return bad
    return None


def _vector_problem(key: str, value: object, length: int) -> str | None:
    if not isinstance(value, list) or len(value) != length:
        return f"'{key}' is not a list of {length} numbers"
    return next((bad for v in value if (bad := _number_problem(key, v))), None)


def arrays_problem(msg: Message, expected: ArrayRecord) -> str | None:
    """What is wrong with a reply's weights against the global ``expected`` ones, or None."""
    records = list(msg.content.array_records.values())
    if len(records) != 1:
        return f"{len(records)} array records (expected 1)"
    got = records[0]
    keys, want = set(got.keys()), set(expected.keys())
    if keys != want:
        missing, extra = sorted(want - keys), sorted(keys - want)
        return f"weights with other keys than the global model's (missing {missing[:3]}, unknown {extra[:3]})"
    for key in expected:
        arr, ref = got[key], expected[key]
        if tuple(arr.shape) != tuple(ref.shape) or arr.dtype != ref.dtype:
            ours = f"{ref.dtype} {tuple(ref.shape)}"
            return f"'{key}' is {arr.dtype} {tuple(arr.shape)}, the global model's {ours}"
        values = arr.numpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            return f"'{key}' holds NaN or infinite values (did local training diverge?)"
    return None


def _same_keys(replies: list[Message], phase: str) -> list[Message]:
    """Replies whose metric keys are the most common set (Flower refuses to aggregate mixed keys)."""
    sets = [frozenset(next(iter(r.content.metric_records.values()), {}).keys()) for r in replies]
    if len(set(sets)) <= 1:
        return replies
    common = max(Counter(sets).items(), key=lambda kv: (kv[1], sorted(kv[0])))[0]
    for r, s in zip(replies, sets, strict=True):
        if s != common:
            log.warning(
                "%s: node %d's reply dropped: its metrics have other keys than the other nodes' (%s)",
                phase,
                r.metadata.src_node_id,
                ", ".join(sorted(s ^ common)),
            )
    return [r for r, s in zip(replies, sets, strict=True) if s == common]


def usable(
    replies: Iterable[Message], check: Check, phase: str, *, same_metric_keys: bool = False
) -> tuple[list[Message], list[str]]:
    """(error replies and usable replies in their order, reasons for the dropped ones).

    Error replies pass through (the strategy counts them as failures);
    replies that fail ``check`` are dropped with a warning naming the node, and
    with ``same_metric_keys`` (replies a Flower strategy aggregates) so are
    those whose metric keys differ from the most common set.
    """
    kept: list[Message] = []
    dropped: list[str] = []
    for r in replies:
        if r.has_error():
            kept.append(r)
            continue
        problem = check(r)
        if problem is None:
            kept.append(r)
            continue
        reason = f"node {r.metadata.src_node_id}: {problem}"
        log.warning("%s: reply dropped, %s", phase, reason)
        dropped.append(reason)
    content = [r for r in kept if not r.has_error()]
    if not same_metric_keys:
        return kept, dropped
    consistent = set(map(id, _same_keys(content, phase))) if content else set()
    dropped += [
        f"node {r.metadata.src_node_id}: metrics keys differ" for r in content if id(r) not in consistent
    ]
    return [r for r in kept if r.has_error() or id(r) in consistent], dropped
