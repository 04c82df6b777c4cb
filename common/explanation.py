"""Per-event explanations of a sequence score, shared by scoring, CLI and report.

An :class:`EventExplanation` says how surprised the next-event model was by
one event (surprisal in nats, the rank of the actual event among the model's
guesses, what it expected instead) and how far its numeric features were from
normal. A :class:`SequenceExplanation` bundles them with the sequence score and
the flagging decision. Both are plain frozen dataclasses with ``to_dict`` /
``from_dict`` for JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.vocab import END, SPECIALS

__all__ = ["EventExplanation", "SequenceExplanation"]

_MAX_EVENT_WIDTH = 40
END_TOKEN = SPECIALS[END]
"""How the END step appears as an event (``<end>``)."""
_HIGHLIGHT_MARK = ">>"


@dataclass(frozen=True)
class EventExplanation:
    """Why one event in a sequence scored as it did.

    Attributes:
        position: 0-based index of the event in its sequence.
        event: the actual event token.
        surprisal: ``-log p(event | history)`` in nats.
        rank: rank of the actual event among the model's predictions (1 = top guess).
        expected: the model's top-k tokens with their probabilities, most likely first.
        unseen: True when the token was never seen in training (``UNSEEN`` in text, the
            ``unseen`` column of ``score --events-out``).
        numeric_residuals: residuals of the numeric features, actual − expected in
            standard deviations (positive: above what the model expected; NaN where the
            value is missing, which adds nothing to the score; may be empty).
        score: the event's total anomaly score (surprisal plus any numeric part).
        unseen_context: the event's context values never seen in training, by column
            (``{"device": "iPhone 15"}``; a value missing here but present in every
            training row shows as ``<missing>``). The model read them as "unseen".
        order: the event's order value, to join it back to the data (ISO 8601 UTC for
            timestamped data, else the position column's value); None for the END step.
        context_surprisal: ``-log p(its context values | event, history)`` in nats, from a
            model with a context head (the largest in a sequence is its context part);
            None without one, and for the END step.
        expected_context: with a context head, the value the model found most likely in
            each context column where the actual one differs, with its probability
            (``{"device": ("ios", 0.82)}``; ``<unseen>`` for a value it reads as never
            seen; empty for a federation's hashed categories, which it cannot name).
    """

    position: int
    event: str
    surprisal: float
    rank: int
    expected: tuple[tuple[str, float], ...]
    unseen: bool
    numeric_residuals: dict[str, float] = field(hash=False)
    score: float
    unseen_context: dict[str, str] = field(default_factory=dict, hash=False)
    order: str | None = None
    context_surprisal: float | None = None
    expected_context: dict[str, tuple[str, float]] = field(default_factory=dict, hash=False)

    def expected_text(self, k: int | None = None) -> str:
        """``"a (0.61), b (0.20)"`` for the first ``k`` expected tokens (all when ``None``)."""
        items = self.expected if k is None else self.expected[:k]
        return ", ".join(f"{tok} ({p:.2f})" for tok, p in items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``expected`` becomes a list of ``[token, probability]`` pairs."""
        return {
            "position": int(self.position),
            "event": str(self.event),
            "surprisal": float(self.surprisal),
            "rank": int(self.rank),
            "expected": [[str(tok), float(p)] for tok, p in self.expected],
            "unseen": bool(self.unseen),
            # a missing value as null: JSON has no NaN
            "numeric_residuals": {
                str(k): float(v) if math.isfinite(v) else None for k, v in self.numeric_residuals.items()
            },
            "score": float(self.score),
            "unseen_context": {str(k): str(v) for k, v in self.unseen_context.items()},
            "order": self.order,
            "context_surprisal": None if self.context_surprisal is None else float(self.context_surprisal),
            "expected_context": {str(k): [str(v), float(p)] for k, (v, p) in self.expected_context.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventExplanation:
        """Inverse of :meth:`to_dict`."""
        return cls(
            position=int(data["position"]),
            event=str(data["event"]),
            surprisal=float(data["surprisal"]),
            rank=int(data["rank"]),
            expected=tuple((str(tok), float(p)) for tok, p in data.get("expected", ())),
            # "unknown": its name in earlier versions' explain --json; such files still load
            unseen=bool(data.get("unseen", data.get("unknown", False))),
            numeric_residuals={
                str(k): math.nan if v is None else float(v)
                for k, v in (data.get("numeric_residuals") or {}).items()
            },
            score=float(data["score"]),
            unseen_context={str(k): str(v) for k, v in (data.get("unseen_context") or {}).items()},
            order=None if data.get("order") is None else str(data["order"]),
            context_surprisal=None
            if data.get("context_surprisal") is None
            else float(data["context_surprisal"]),
            expected_context={
                str(k): (str(v), float(p)) for k, (v, p) in (data.get("expected_context") or {}).items()
            },
        )


def _sort_key(ev: EventExplanation) -> tuple[float, float, int]:
    """Most anomalous first: by score, then surprisal (both descending), then position."""
    score = ev.score if not math.isnan(ev.score) else -math.inf
    surprisal = ev.surprisal if not math.isnan(ev.surprisal) else -math.inf
    return (-score, -surprisal, ev.position)


def residual_text(name: str, residual: float) -> str:
    """``amount 5.2σ above expected``: the residual is actual − expected, in standard deviations."""
    if not math.isfinite(residual):
        return f"{_printable(name, 24)} missing"
    side = "above" if residual > 0 else "below"
    return f"{_printable(name, 24)} {abs(residual):.1f}σ {side} expected"


def p_value_text(p: float) -> str:
    """A p-value with two significant digits: ``0.31``, ``0.0042``, ``2.3e-05``."""
    return f"{p:.2g}"


def printable_name(text: str, width: int = 24) -> str:
    """A name from the data (a column, an attack type) as one terminal-safe line of at most ``width``."""
    return _printable(text, width)


def unseen_context_text(values: Mapping[str, str]) -> str:
    """``device 'iPhone 15', channel 'fax'``: context values never seen in training."""
    return ", ".join(f"{_printable(k, 24)} {_printable(repr(v), 32)}" for k, v in values.items())


def expected_context_text(values: Mapping[str, tuple[str, float]]) -> str:
    """``device 'ios' (0.82)``: the context values the model expected instead."""
    return ", ".join(
        f"{_printable(k, 24)} {_printable(repr(v), 32)} ({p:.2f})" for k, (v, p) in values.items()
    )


def _printable(text: str, width: int = _MAX_EVENT_WIDTH) -> str:
    """One-line, terminal-safe rendering of a token, shortened to ``width`` characters."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    return out if len(out) <= width else out[: width - 1] + "…"


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if math.isfinite(x) else str(x)


@dataclass(frozen=True)
class SequenceExplanation:
    """A sequence's score, flagging decision and per-event explanations.

    Attributes:
        sequence_id: the sequence's identifier.
        score: the sequence's anomaly score (higher = more anomalous).
        threshold: the threshold it was compared with (``None`` if none was set).
        flagged: whether ``score > threshold``.
        events: per-event explanations in sequence order.
        label: the known label (1 = anomalous) when available.
        score_parts: how ``score`` comes from the event scores, with the numbers
            (e.g. ``mean event score 1.830 + END weight 0.24 × END surprisal 1.790 (0.430)``).
        score_terms: those numbers: ``steps`` (the aggregate of the event scores) and, when
            the END step enters apart, ``end_weight`` and ``end_surprisal``
            (``score = steps + end_weight × end_surprisal``).
        p_value: the share of normal validation sequences scoring at least as high, counting
            this one (conformal p-value; small = unusual); None without validation scores.
        context_position: the position of the event whose context values were the least
            expected, where the context part set the score and the model expected another
            value there (:meth:`common.detector.ScoredTable.context_culprits`, the rule of the
            score table too); None otherwise. :attr:`context_event` names it when flagged.
    """

    sequence_id: str
    score: float
    threshold: float | None
    flagged: bool
    events: tuple[EventExplanation, ...]
    label: int | None = None
    score_parts: str | None = None
    score_terms: dict[str, float] | None = field(default=None, hash=False)
    p_value: float | None = None
    context_position: int | None = None

    def top_events(self, n: int = 5) -> tuple[EventExplanation, ...]:
        """The ``n`` most anomalous events (by event score, then surprisal), most anomalous first."""
        if n <= 0:
            return ()
        return tuple(sorted(self.events, key=_sort_key)[:n])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (events as a list of :meth:`EventExplanation.to_dict`)."""
        return {
            "sequence_id": str(self.sequence_id),
            "score": float(self.score),
            "threshold": None if self.threshold is None else float(self.threshold),
            "flagged": bool(self.flagged),
            "label": None if self.label is None else int(self.label),
            "score_parts": self.score_parts,
            "score_terms": None
            if self.score_terms is None
            else {k: float(v) for k, v in self.score_terms.items()},
            "p_value": None if self.p_value is None else float(self.p_value),
            "context_position": self.context_position,
            "events": [ev.to_dict() for ev in self.events],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text: the sequence's fields indented, one event per line
        (a sequence of a million events stays a file of a million lines)."""
        data = self.to_dict()
        events = data.pop("events")
        head = json.dumps(data, indent=2)
        body = "".join(f"\n    {json.dumps(ev)}," for ev in events).rstrip(",")
        return f'{head[:-2]},\n  "events": [{body}\n  ]\n}}'

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceExplanation:
        """Inverse of :meth:`to_dict`."""
        threshold = data.get("threshold")
        label = data.get("label")
        return cls(
            sequence_id=str(data["sequence_id"]),
            score=float(data["score"]),
            threshold=None if threshold is None else float(threshold),
            flagged=bool(data["flagged"]),
            events=tuple(EventExplanation.from_dict(ev) for ev in data.get("events", ())),
            label=None if label is None else int(label),
            score_parts=data.get("score_parts"),
            score_terms=None
            if data.get("score_terms") is None
            else {str(k): float(v) for k, v in data["score_terms"].items()},
            p_value=None if data.get("p_value") is None else float(data["p_value"]),
            context_position=None if data.get("context_position") is None else int(data["context_position"]),
        )

    def to_text(self, max_events: int = 40, *, highlight: int = 3, expected_k: int = 3) -> str:
        """Readable terminal rendering, one line per event.

        Each line shows the position, the actual event, its surprisal (nats),
        its rank, ``UNSEEN`` for tokens unseen in training, what the model
        expected instead (``expected: a (0.61), b (0.20)``), context values
        unseen in training (``unseen context: device 'iPhone 15'``), the
        surprisal of its context values (``context 5.31 nats``, from a model
        with a context head) and any numeric residuals. The ``highlight`` most
        anomalous events are marked ``>>``, and so is :attr:`context_event` when
        the context set the score (always shown).
        When there are more than ``max_events`` events, only the most
        anomalous ``max_events`` are shown (still in sequence order) and the
        gaps are summarised.
        """
        status = "FLAGGED" if self.flagged else "not flagged"
        header = [f"sequence {_printable(self.sequence_id, 80)}", f"score {_fmt(self.score)}"]
        if self.threshold is not None:
            header.append(f"threshold {_fmt(self.threshold)}")
        header.append(status)
        if self.p_value is not None:
            header.append(f"p {p_value_text(self.p_value)}")
        if self.label is not None:
            header.append(f"label {self.label}")
        lines = ["  ".join(header)]
        if self.score_parts:
            lines.append(f"  score = {self.score_parts}")
        if not self.events:
            lines.append("  (no events)")
            return "\n".join(lines)

        marked = {id(ev) for ev in self.top_events(highlight)}
        culprit = self.context_event  # a score set by the context: its event is marked and shown
        if culprit is not None and highlight > 0:
            marked.add(id(culprit))
        if max_events > 0 and len(self.events) > max_events:
            # the END step enters the score on its own (see score_parts): it is always shown
            events = self.events[: self.n_events]
            keep = {id(ev) for ev in sorted(events, key=_sort_key)[:max_events]}
            if self.has_end_step:
                keep.add(id(self.events[-1]))
            extra = culprit is not None and id(culprit) not in keep
            if culprit is not None:
                keep.add(id(culprit))
            shown_at = [i for i, ev in enumerate(self.events) if id(ev) in keep]
            end = ", the event whose context set the score" if extra else ""
            end += ", and the END step" if self.has_end_step else ""
            k = min(max_events, self.n_events)
            lines.append(f"  showing the {k} most anomalous of {self.n_events} events{end}")
        else:
            shown_at = list(range(len(self.events)))
        shown = [self.events[i] for i in shown_at]

        width = max(len(_printable(ev.event)) for ev in shown)
        pos_width = max(len(str(ev.position)) for ev in shown)
        gap_line = f"   {'':>{pos_width}}  … {{}} omitted"
        prev = -1
        for i, ev in zip(shown_at, shown, strict=True):
            if i > prev + 1:
                lines.append(gap_line.format(self.steps_text(prev + 1, i)))
            prev = i
            mark = _HIGHLIGHT_MARK if id(ev) in marked else " " * len(_HIGHLIGHT_MARK)
            parts = [
                f"{mark} {ev.position:>{pos_width}}  {_printable(ev.event):<{width}}",
                f"{_fmt(ev.surprisal, 2):>7} nats",
                f"rank {ev.rank:>4}",
                "UNSEEN" if ev.unseen else "      ",
            ]
            if ev.expected:
                parts.append(
                    "expected: "
                    + ", ".join(f"{_printable(t, 24)} ({p:.2f})" for t, p in ev.expected[:expected_k])
                )
            if ev.unseen_context:
                parts.append("unseen context: " + unseen_context_text(ev.unseen_context))
            if ev.context_surprisal is not None:
                parts.append(f"context {_fmt(ev.context_surprisal, 2)} nats")
            if ev.expected_context:
                parts.append("expected context: " + expected_context_text(ev.expected_context))
            if ev.numeric_residuals:
                parts.append(
                    "numbers: " + ", ".join(residual_text(k, v) for k, v in ev.numeric_residuals.items())
                )
            if not math.isclose(ev.score, ev.surprisal, rel_tol=1e-9, abs_tol=1e-9):
                parts.append(f"score {_fmt(ev.score, 2)}")
            lines.append("  ".join(parts).rstrip())
        if prev < len(self.events) - 1:
            lines.append(gap_line.format(self.steps_text(prev + 1, len(self.events))))
        return "\n".join(lines)

    @property
    def n_events(self) -> int:
        """How many events the sequence holds (the END step is no event), as ``score`` counts them."""
        return len(self.events) - self.has_end_step

    @property
    def context_event(self) -> EventExplanation | None:
        """The event at :attr:`context_position` (whose context values set the score) when the
        sequence is flagged; else None."""
        if not self.flagged or self.context_position is None:
            return None
        return self.events[self.context_position]

    @property
    def has_end_step(self) -> bool:
        """Whether the last entry is the END step (the model's end-of-sequence prediction)."""
        return bool(self.events) and self.events[-1].event == END_TOKEN

    def steps_text(self, start: int, stop: int) -> str:
        """``"3 event(s)"`` / ``"2 event(s) and the END step"`` for ``events[start:stop]``."""
        end = self.has_end_step and stop == len(self.events)
        n = stop - start - end
        if n == 0:
            return "the END step"
        return f"{n} event(s)" + (" and the END step" if end else "")
