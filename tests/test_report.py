"""HTML report and explanation rendering."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from common.errors import DataError
from common.explanation import EventExplanation, SequenceExplanation
from common.metrics import detection_report

EVIL = "<script>alert('x')</script>"


def _event(
    pos: int,
    event: str,
    surprisal: float,
    *,
    unseen: bool = False,
    rank: int | None = None,
    expected: tuple[tuple[str, float], ...] = (("a", 0.61), ("b", 0.2)),
    residuals: dict[str, float] | None = None,
    score: float | None = None,
) -> EventExplanation:
    return EventExplanation(
        position=pos,
        event=event,
        surprisal=surprisal,
        rank=int(1 + int(surprisal) if rank is None else rank),
        expected=tuple(expected),
        unseen=unseen,
        numeric_residuals=dict(residuals or {}),
        score=float(surprisal if score is None else score),
    )


def _explanation(seq_id: str = EVIL, n: int = 8) -> SequenceExplanation:
    events = [_event(i, f"ev{i % 3}", 0.2 + 0.1 * i) for i in range(n)]
    events[3] = _event(3, "<b>login</b>", 9.5, unseen=True, rank=120)
    events[5] = dataclasses.replace(
        _event(5, "pay", 4.0, residuals={"amount": 5.2}, score=6.5), unseen_context={"device": "fridge"}
    )
    return SequenceExplanation(
        sequence_id=seq_id,
        score=12.3,
        threshold=5.0,
        flagged=True,
        events=tuple(events),
        label=1,
        p_value=0.0042,
    )


def _scores(n: int = 60, labelled: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    label = (rng.random(n) < 0.2).astype(int)
    label[:2] = [0, 1]
    score = rng.gamma(2.0, 1.0, n) + 3 * label
    df = pd.DataFrame({"sequence_id": [f"s{i}" for i in range(n)], "score": score, "flagged": score > 5.0})
    df.loc[0, "sequence_id"] = EVIL
    df.loc[0, "score"] = 50.0
    if labelled:
        df["label"] = label
    return df


# --------------------------------------------------------------------------- explanation


def test_explanation_text_and_dict() -> None:
    expl = _explanation()
    assert [ev.position for ev in expl.top_events(2)] == [3, 5]
    text = expl.to_text()
    assert "UNSEEN" in text and "expected: a (0.61), b (0.20)" in text
    assert "threshold 5.000  FLAGGED  p 0.0042  label 1" in text.splitlines()[0]
    assert "FLAGGED" in text and "amount 5.2σ above expected" in text  # residual = actual - expected
    assert "unseen context: device 'fridge'" in text
    marked = [line for line in text.splitlines() if line.startswith(">>")]
    assert len(marked) == 3 and "<b>login</b>" in marked[0]
    short = expl.to_text(max_events=3)
    assert "omitted" in short and "showing the 3 most anomalous of 8 events" in short
    restored = SequenceExplanation.from_dict(json.loads(json.dumps(expl.to_dict())))
    assert restored == expl
    text = expl.to_json()  # one event per line
    assert json.loads(text) == expl.to_dict() and len(text.splitlines()) == 13 + len(expl.events)
    empty = dataclasses.replace(expl, events=())
    assert json.loads(empty.to_json())["events"] == []
    assert hash(expl.events[0]) == hash(restored.events[0])
    # "unseen", as the events file names it; files that still say "unknown" load
    old = expl.events[3].to_dict()
    assert old["unseen"] is True
    old["unknown"] = old.pop("unseen")
    assert EventExplanation.from_dict(old) == expl.events[3]


def test_explanation_text_counts_every_omitted_step() -> None:
    """Gaps before the first, between and after the last shown event are summarised; END is named."""
    base = _explanation()
    expl = dataclasses.replace(base, events=(*base.events, _event(8, "<end>", 0.1)))
    lines = expl.to_text(max_events=2).splitlines()
    assert "showing the 2 most anomalous of 8 events, and the END step" in lines[1]
    omitted = [line.split("…")[1].strip() for line in lines if "omitted" in line]
    assert omitted == ["3 event(s) omitted", "1 event(s) omitted", "2 event(s) omitted"]
    # the END step enters the score on its own: a shortened listing always ends with it
    assert "<end>" in lines[-1]
    assert "omitted" not in expl.to_text(max_events=8)  # all 8 events, and the END step
    assert "omitted" not in expl.to_text(max_events=0)


# --------------------------------------------------------------------------- report


def test_report_labelled(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    df = _scores()
    metrics = detection_report(df["label"], df["score"], 5.0)
    out = tmp_path / "rep"
    path = write(
        out,
        df,
        metrics=metrics,
        explanations=[_explanation(), _explanation("plain", 6)],
        global_threshold=4.5,
    )
    assert path == out / "report.html"
    doc = path.read_text(encoding="utf-8")
    for png in ("score_distribution.png", "roc_curve.png", "pr_curve.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        embedded = base64.b64encode((out / png).read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{embedded}"' in doc and f'title="{png}"' in doc
    assert "<script>" not in doc and "&lt;script&gt;" in doc
    assert "<b>login</b>" not in doc and "&lt;b&gt;login&lt;/b&gt;" in doc
    assert "detection_rate_at_1pct_far" in doc and "<h2>Metrics</h2>" in doc
    assert "expected instead: a (0.61), b (0.20)" in doc and "UNSEEN" in doc
    assert doc.index(">plain<") > doc.index("&lt;script&gt;alert")  # sorted by score
    # shaded by event score: 'pay' (surprisal 4.0, with its amount 6.5) as 6.5 of the largest, 9.5
    from common.report import _bg

    assert f'style="background:{_bg(6.5, 9.5)[0]};' in doc and _bg(6.5, 9.5) != _bg(4.0, 9.5)
    # drawn one at a time from an iterator, in the order given, against a given scale: the same page
    import re

    listed = [_explanation(), _explanation("plain", 6)]
    one_by_one = write(
        out, df, metrics=metrics, explanations=iter(listed), event_scale=9.5, global_threshold=4.5
    )
    generated = re.compile(r"generated [^<·]*")
    assert generated.sub("", one_by_one.read_text(encoding="utf-8")) == generated.sub("", doc)
    # events counted as score counts them: the END step is none
    ended = dataclasses.replace(
        _explanation("ended", 6), events=(*_explanation().events[:6], _event(6, "<end>", 1.9))
    )
    doc = write(out, df, metrics=metrics, explanations=[ended]).read_text(encoding="utf-8")
    assert "· 6 events</div>" in doc
    # unlabelled data into the same folder: the curves of the labelled report do not stay beside it
    write(out, _scores(20, labelled=False), metrics=None, explanations=[])
    assert (out / "score_distribution.png").exists()
    assert not (out / "roc_curve.png").exists() and not (out / "pr_curve.png").exists()


def _context_set(expl: SequenceExplanation) -> SequenceExplanation:
    """``expl`` from a model with a context head whose context part set the score: event 1's
    device was the least expected, though its event score is among the lowest."""
    events = [dataclasses.replace(ev, context_surprisal=0.1) for ev in expl.events]
    events[1] = dataclasses.replace(
        events[1], context_surprisal=11.0, expected_context={"device": ("phone", 0.93)}
    )
    terms = {"steps": 4.0, "context_surprisal": 11.0, "context_score": expl.score}
    return dataclasses.replace(expl, events=tuple(events), score_terms=terms, context_position=1)


def test_a_score_set_by_the_context_marks_and_lists_its_event(tmp_path: Path) -> None:
    """explain marks the event whose context set the score; the report lists it first, with the
    context values expected instead. Without a context part, neither changes."""
    pytest.importorskip("matplotlib")
    expl = _context_set(_explanation("ctx"))
    assert expl.context_event is expl.events[1]
    assert expl.events[1] not in expl.top_events(3)
    marked = [line for line in expl.to_text().splitlines() if line.startswith(">>")]
    assert len(marked) == 4 and any(line.startswith(">> 1 ") for line in marked)
    assert "the event whose context set the score" in expl.to_text(max_events=2)
    assert _explanation().context_event is None  # no context head, or the events part set the score
    assert SequenceExplanation.from_dict(expl.to_dict()).context_event == expl.events[1]
    assert dataclasses.replace(expl, flagged=False).context_event is None  # only a flagged sequence's
    doc = write(tmp_path / "rep", _scores(), metrics=None, explanations=[expl]).read_text(encoding="utf-8")
    table = doc[doc.index("<th>pos</th>") :]
    assert "<th>context (nats)</th><th>expected context</th>" in table
    first_row = table[table.index("<tr><td") :].split("</tr>")[0]
    assert (
        first_row.startswith('<tr><td class="num">1</td>') and "device &#x27;phone&#x27; (0.93)" in first_row
    )
    plain = write(tmp_path / "rep2", _scores(), metrics=None, explanations=[_explanation()])
    assert "<th>context (nats)</th>" not in plain.read_text(encoding="utf-8")


def test_report_unlabelled_minimal(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    df = _scores(20, labelled=False)
    doc = write(tmp_path, df, metrics=None, explanations=[]).read_text(encoding="utf-8")
    assert (tmp_path / "score_distribution.png").exists()
    assert not (tmp_path / "roc_curve.png").exists() and "roc_curve.png" not in doc
    assert "<h2>Metrics</h2>" not in doc and "&lt;script&gt;" in doc


def test_report_rejects_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="flagged"):
        write(tmp_path, pd.DataFrame({"sequence_id": ["a"], "score": [1.0]}), metrics=None, explanations=[])


def write(out: Path, df: pd.DataFrame, **kw: Any) -> Path:
    from common.report import write_report

    return write_report(out, df, threshold=5.0, title=f"Report {EVIL}", **kw)
