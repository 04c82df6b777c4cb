"""Self-contained HTML detection report with PNG figures.

:func:`write_report` writes ``report.html`` and its figures (PNG, next to it)
into an output directory: the score distribution with the threshold(s), ROC
and PR curves when labels are known, the metrics table, the highest-scoring
sequences, and the top anomalies with every event shaded by its event score
(hover an event to see what the model expected instead).

matplotlib is imported inside the plotting code (Agg canvas, no pyplot state),
so importing this module is cheap.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common import metrics as _metrics
from common.errors import DataError
from common.explanation import (
    EventExplanation,
    SequenceExplanation,
    expected_context_text,
    p_value_text,
    residual_text,
    unseen_context_text,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["write_report"]

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
DISTRIBUTION_PNG = "score_distribution.png"
ROC_PNG = "roc_curve.png"
PR_PNG = "pr_curve.png"

#: Most events drawn inline per sequence; the rest are summarised.
MAX_INLINE_EVENTS = 400
#: Rows in the "highest scores" table.
TOP_SEQUENCES = 20
#: Events per sequence in the "top events" table.
TOP_EVENTS = 5

_NORMAL_COLOUR = "#2563eb"
_ANOMALY_COLOUR = "#dc2626"
_UNLABELLED_COLOUR = "#6b7280"


# --------------------------------------------------------------------------- formatting


def _e(value: object) -> str:
    """HTML-escape any value (text and attribute safe)."""
    return html.escape(str(value), quote=True)


def _num(value: object) -> str:
    """Short human rendering of a metric value."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            return str(x)
        if x == 0 or 1e-3 <= abs(x) < 1e4:
            return f"{x:.4f}"
        return f"{x:.4g}"
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


# --------------------------------------------------------------------------- input


def _labels_of(df: pd.DataFrame) -> np.ndarray | None:
    """Float label array (NaN = unknown), or ``None`` without a usable ``label`` column."""
    if "label" not in df.columns:
        return None
    raw = df["label"]
    try:
        lab = raw.astype("float64").to_numpy()
    except (TypeError, ValueError) as exc:
        raise DataError(f"scores column 'label' must hold 0/1 (1 = anomalous) or be empty: {exc}") from exc
    known = lab[~np.isnan(lab)]
    if known.size == 0:
        return None
    bad = ~np.isin(known, (0.0, 1.0))
    if bad.any():
        raise DataError(
            f"scores column 'label' must hold 0/1 (1 = anomalous); found {np.unique(known[bad])[:5].tolist()}"
        )
    return lab


def _check_scores(scores: pd.DataFrame) -> None:
    missing = [c for c in ("sequence_id", "score", "flagged") if c not in scores.columns]
    if missing:
        raise DataError(
            f"scores table lacks column(s) {missing}; expected sequence_id, score, flagged and optional label"
        )


# --------------------------------------------------------------------------- figures


def _new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")
    log.debug("wrote %s", path)


def _plot_distribution(
    path: Path,
    scores: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
    global_threshold: float | None,
) -> bool:
    """Histogram of finite scores split by label, with threshold lines; False if nothing to plot."""
    finite = np.isfinite(scores)
    if not finite.any():
        return False
    s = scores[finite]
    n_bins = int(min(60, max(10, round(math.sqrt(s.size)))))
    lo, hi = float(s.min()), float(s.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, n_bins + 1)

    groups: list[tuple[str, np.ndarray, str]] = []
    if labels is None:
        groups.append(("all sequences", s, _NORMAL_COLOUR))
    else:
        lab = labels[finite]
        for name, mask, colour in (
            ("normal (label 0)", lab == 0, _NORMAL_COLOUR),
            ("anomalous (label 1)", lab == 1, _ANOMALY_COLOUR),
            ("unlabelled", np.isnan(lab), _UNLABELLED_COLOUR),
        ):
            if mask.any():
                groups.append((f"{name}, n={int(mask.sum())}", s[mask], colour))

    counts = np.concatenate([np.histogram(g, bins=edges)[0] for _, g, _ in groups])
    positive = counts[counts > 0]
    log_y = positive.size > 0 and positive.max() >= 50 * positive.min()

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    bins = edges.tolist()
    for name, values, colour in groups:
        ax.hist(values, bins=bins, alpha=0.55, color=colour, label=name, edgecolor="white", linewidth=0.4)
    if math.isfinite(threshold):
        ax.axvline(
            threshold, color="#111827", linestyle="--", linewidth=1.4, label=f"threshold {threshold:.4g}"
        )
    if global_threshold is not None and math.isfinite(global_threshold) and global_threshold != threshold:
        ax.axvline(
            global_threshold,
            color="#d97706",
            linestyle=":",
            linewidth=1.6,
            label=f"global threshold {global_threshold:.4g}",
        )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("sequence score (higher = more anomalous)")
    ax.set_ylabel("sequences" + (" (log scale)" if log_y else ""))
    n_dropped = int((~finite).sum())
    ax.set_title("Score distribution" + (f" ({n_dropped} non-finite not shown)" if n_dropped else ""))
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    _save(fig, path)
    return True


def _plot_roc(path: Path, y: np.ndarray, s: np.ndarray, threshold: float) -> None:
    fpr, tpr, _ = _metrics.roc_curve(y, s)
    auroc = _metrics.roc_auc(y, s)
    op = _metrics.confusion_at(y, s, threshold)
    fig = _new_figure(5.2, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(fpr, tpr, color=_ANOMALY_COLOUR, linewidth=1.8, label=f"AUROC = {auroc:.4f}")
    ax.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1, label="chance")
    ax.plot(
        [op.false_alarm_rate],
        [op.recall],
        "o",
        color="#111827",
        label=f"threshold: FAR {op.false_alarm_rate:.3f}, recall {op.recall:.3f}",
    )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-alarm rate (normals flagged)")
    ax.set_ylabel("detection rate (anomalies flagged)")
    ax.set_title("ROC curve")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.grid(alpha=0.25)
    _save(fig, path)


def _plot_pr(path: Path, y: np.ndarray, s: np.ndarray, threshold: float) -> None:
    precision, recall, _ = _metrics.pr_curve(y, s)
    auprc = _metrics.average_precision(y, s)
    op = _metrics.confusion_at(y, s, threshold)
    prevalence = float(np.mean(y))
    fig = _new_figure(5.2, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    # Drop the conventional (recall 0, precision 1) start and draw the step-wise area that AUPRC sums.
    ax.plot(
        np.r_[0.0, recall[1:]],
        np.r_[precision[1], precision[1:]],
        color=_ANOMALY_COLOUR,
        linewidth=1.8,
        drawstyle="steps-pre",
        label=f"AUPRC = {auprc:.4f}",
    )
    ax.axhline(prevalence, color="#9ca3af", linestyle="--", linewidth=1, label=f"prevalence {prevalence:.3f}")
    if op.tp + op.fp > 0:
        ax.plot(
            [op.recall],
            [op.precision],
            "o",
            color="#111827",
            label=f"threshold: precision {op.precision:.3f}, recall {op.recall:.3f}",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("recall (detection rate)")
    ax.set_ylabel("precision")
    ax.set_title("Precision–recall curve")
    ax.legend(fontsize=8, loc="lower left", frameon=False)
    ax.grid(alpha=0.25)
    _save(fig, path)


# --------------------------------------------------------------------------- HTML pieces

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #111827;
       margin: 0; background: #f9fafb; line-height: 1.45; }
main { max-width: 1150px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 10px; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
h3 { font-size: 1.0em; margin: 0 0 6px; }
.meta { color: #6b7280; font-size: 0.9em; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
        padding: 10px 14px; min-width: 130px; }
.card .k { color: #6b7280; font-size: 0.8em; text-transform: uppercase; letter-spacing: 0.03em; }
.card .v { font-size: 1.25em; font-weight: 600; }
table { border-collapse: collapse; background: #fff; font-size: 0.9em; margin: 6px 0; }
th, td { border: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; }
.figs img { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; max-width: 100%; }
.seq { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 16px; margin: 14px 0; }
.badge { display: inline-block; font-size: 0.75em; font-weight: 600; padding: 1px 7px; border-radius: 9px;
         margin-left: 6px; vertical-align: middle; }
.badge.flag { background: #fee2e2; color: #991b1b; }
.badge.ok { background: #e5e7eb; color: #374151; }
.badge.lab1 { background: #fde68a; color: #78350f; }
.badge.lab0 { background: #dbeafe; color: #1e3a8a; }
.events { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em;
          line-height: 2.1; margin: 8px 0; word-break: break-all; }
.ev { padding: 2px 5px; border-radius: 4px; margin-right: 3px; border: 1px solid #e5e7eb; cursor: help; }
.ev.unseen { border: 1.5px dashed #7c3aed; }
.ev sup { color: #7c3aed; font-weight: 700; font-size: 0.7em; margin-left: 2px; }
.ev.top { outline: 2px solid #111827; }
.legend { color: #6b7280; font-size: 0.8em; }
.muted { color: #6b7280; }
"""


def _bg(score: float, scale: float) -> tuple[str, str]:
    """Background and text colour for an event of this event score."""
    if math.isnan(score):
        return "transparent", "#111827"
    a = 0.88 * min(max(score, 0.0) / scale, 1.0)
    return f"rgba(220, 38, 38, {a:.3f})", ("#ffffff" if a > 0.55 else "#111827")


def _event_title(ev: EventExplanation) -> str:
    lines = [
        f"#{ev.position}  {ev.event}",
        f"surprisal {_num(ev.surprisal)} nats · rank {ev.rank}"
        + (" · UNSEEN in training" if ev.unseen else ""),
    ]
    if ev.expected:
        lines.append("expected instead: " + ev.expected_text())
    if ev.unseen_context:
        lines.append("unseen context: " + unseen_context_text(ev.unseen_context))
    if ev.context_surprisal is not None:
        lines.append(f"context surprisal {_num(ev.context_surprisal)} nats")
    if ev.expected_context:
        lines.append("expected context: " + expected_context_text(ev.expected_context))
    if ev.numeric_residuals:
        lines.append("numbers: " + ", ".join(residual_text(k, v) for k, v in ev.numeric_residuals.items()))
    if not math.isclose(ev.score, ev.surprisal, rel_tol=1e-9, abs_tol=1e-9):
        lines.append(f"event score {_num(ev.score)}")
    return "\n".join(lines)


def _events_html(expl: SequenceExplanation, scale: float, top: tuple[EventExplanation, ...]) -> str:
    top_ids = {id(ev) for ev in top}
    shown = expl.events[:MAX_INLINE_EVENTS]
    parts = []
    for ev in shown:
        bg, fg = _bg(ev.score, scale)
        classes = "ev" + (" unseen" if ev.unseen else "") + (" top" if id(ev) in top_ids else "")
        sup = "<sup>UNSEEN</sup>" if ev.unseen else ""
        parts.append(
            f'<span class="{classes}" style="background:{bg};color:{fg}" title="{_e(_event_title(ev))}">'
            f"{_e(ev.event)}{sup}</span>"
        )
    if len(expl.events) > len(shown):
        hidden_top = [ev for ev in top if ev.position >= shown[-1].position + 1]
        note = f" (includes {len(hidden_top)} of the top events, listed below)" if hidden_top else ""
        more = expl.steps_text(len(shown), len(expl.events))
        parts.append(f'<span class="muted">… {_e(more)} not drawn{_e(note)}</span>')
    return " ".join(parts)


def _unseen_cell(ev: EventExplanation) -> str:
    """``UNSEEN`` for an unseen event, and its context values unseen in training."""
    parts = ["UNSEEN"] if ev.unseen else []
    if ev.unseen_context:
        parts.append(unseen_context_text(ev.unseen_context))
    return "; ".join(parts)


def _top_events_table(top: tuple[EventExplanation, ...]) -> str:
    """The top events, one row each; with a context head, their context surprisal and the
    context values the model expected instead."""
    with_context = any(ev.context_surprisal is not None for ev in top)
    rows = []
    for ev in top:
        residuals = ", ".join(residual_text(k, v) for k, v in ev.numeric_residuals.items())
        nats = "—" if ev.context_surprisal is None else _e(_num(ev.context_surprisal))
        context = (
            f'<td class="num">{nats}</td><td>{_e(expected_context_text(ev.expected_context)) or "—"}</td>'
            if with_context
            else ""
        )
        rows.append(
            "<tr>"
            f'<td class="num">{ev.position}</td>'
            f"<td>{_e(ev.event)}</td>"
            f'<td class="num">{_e(_num(ev.surprisal))}</td>'
            f'<td class="num">{ev.rank}</td>'
            f"<td>{_e(_unseen_cell(ev))}</td>"
            f"<td>{_e(ev.expected_text()) or '—'}</td>"
            f"<td>{_e(residuals) or '—'}</td>"
            f"{context}"
            f'<td class="num">{_e(_num(ev.score))}</td>'
            "</tr>"
        )
    if not rows:
        return '<p class="muted">No events.</p>'
    head = (
        "<tr><th>pos</th><th>event</th><th>surprisal (nats)</th><th>rank</th><th>unseen</th>"
        "<th>expected instead</th><th>numbers</th>"
        + ("<th>context (nats)</th><th>expected context</th>" if with_context else "")
        + "<th>event score</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _sequence_html(expl: SequenceExplanation, scale: float) -> str:
    badge = (
        '<span class="badge flag">FLAGGED</span>'
        if expl.flagged
        else '<span class="badge ok">not flagged</span>'
    )
    if expl.label is not None:
        badge += f'<span class="badge lab{1 if expl.label else 0}">label {int(expl.label)}</span>'
    top = expl.top_events(TOP_EVENTS)
    culprit = expl.context_event  # the context set the score: its least expected event comes first
    if culprit is not None and all(ev is not culprit for ev in top):
        top = (culprit, *top)
    thr = "" if expl.threshold is None else f" · threshold {_e(_num(expl.threshold))}"
    if expl.p_value is not None:
        thr += f" · p-value {_e(p_value_text(expl.p_value))}"
    return (
        '<div class="seq">'
        f"<h3>{_e(expl.sequence_id)}{badge}</h3>"
        f'<div class="meta">score {_e(_num(expl.score))}{thr} · {expl.n_events} events</div>'
        + (f'<div class="meta">score = {_e(expl.score_parts)}</div>' if expl.score_parts else "")
        + f'<div class="events">{_events_html(expl, scale, top)}</div>'
        f"{_top_events_table(top)}"
        "</div>"
    )


def _metrics_html(metrics: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><th>{_e(k)}</th><td class="num">{_e(_num(v))}</td></tr>'
        for k, v in metrics.items()
        if not isinstance(v, Mapping)
    )
    html = f"<table>{rows}</table>"
    groups = metrics.get("by_attack_type")
    if isinstance(groups, Mapping) and groups:
        head = "".join(f"<th>{_e(title)}</th>" for title, _ in _GROUP_COLUMNS)
        body = "".join(
            f"<tr><th>{_e(name)}</th>"
            + "".join(f'<td class="num">{_e(_num(g.get(key)))}</td>' for _, key in _GROUP_COLUMNS)
            + "</tr>"
            for name, g in groups.items()
        )
        html += f"<h3>By attack type</h3><table><tr><th>attack type</th>{head}</tr>{body}</table>"
    return html


_GROUP_COLUMNS = (
    ("sequences", "n"),
    ("flagged", "detected"),
    ("recall", "recall"),
    ("AUROC", "auroc"),
    ("detection @1% FAR", "detection_rate_at_1pct_far"),
    ("detection @5% FAR", "detection_rate_at_5pct_far"),
)


def _top_sequences_html(df: pd.DataFrame, labels: np.ndarray | None) -> str:
    order = np.argsort(-df["score"].to_numpy(dtype=np.float64), kind="mergesort")[:TOP_SEQUENCES]
    with_p = "p_value" in df.columns
    rows = []
    for i in order:
        row = df.iloc[int(i)]
        label = ""
        if labels is not None:
            label = "—" if np.isnan(labels[i]) else str(int(labels[i]))
        rows.append(
            "<tr>"
            f"<td>{_e(row['sequence_id'])}</td>"
            f'<td class="num">{_e(_num(float(row["score"])))}</td>'
            + (f'<td class="num">{_e(_p_text(float(row["p_value"])))}</td>' if with_p else "")
            + f"<td>{'yes' if bool(row['flagged']) else 'no'}</td>"
            + (f"<td>{_e(label)}</td>" if labels is not None else "")
            + "</tr>"
        )
    head = (
        "<tr><th>sequence</th><th>score</th>"
        + (f'<th title="{_P_TITLE}">p-value</th>' if with_p else "")
        + "<th>flagged</th>"
        + ("<th>label</th>" if labels is not None else "")
    )
    return f"<table>{head}</tr>{''.join(rows)}</table>"


_P_TITLE = "share of the normal validation sequences scoring at least as high, counting this one"


def _p_text(p: float) -> str:
    return "—" if math.isnan(p) else p_value_text(p)


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div></div>'


# --------------------------------------------------------------------------- entry point


def _data_uri(png: Path) -> str:
    """A PNG file as a ``data:`` URI, so that the HTML needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def write_report(
    out_dir: str | Path,
    scores: pd.DataFrame,
    *,
    threshold: float,
    metrics: dict[str, Any] | None,
    explanations: Iterable[SequenceExplanation],
    title: str,
    global_threshold: float | None = None,
    threshold_note: str | None = None,
    event_scale: float | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and its PNG figures; return the HTML path.

    Args:
        out_dir: output directory (created if missing).
        scores: one row per sequence with columns ``sequence_id``, ``score``,
            ``flagged`` (bool) and optionally ``label`` (0/1, may be missing per row).
        threshold: the operating threshold (flagged = ``score > threshold``).
        metrics: a metrics dict (e.g. :func:`common.metrics.detection_report`) shown
            as a table, or ``None``.
        explanations: explanations of the sequences to show in detail (typically the
            top anomalies); shown by decreasing score. With ``event_scale``, they are drawn
            in the order given and one at a time (an iterator keeps one in memory).
        title: report title.
        global_threshold: the federation-wide threshold, drawn as a second line when
            it differs from ``threshold``.
        threshold_note: how ``threshold`` was set, in words (shown beside it).
        event_scale: the event score drawn darkest (the largest finite event score of the
            explanations, at least 1); worked out from ``explanations`` when None.

    Figures: ``score_distribution.png`` always (when any score is finite),
    ``roc_curve.png`` and ``pr_curve.png`` when labels of both classes are
    present. They are written beside the HTML and embedded in it too, so
    ``report.html`` can be sent on its own; figures of an earlier report in
    ``out_dir`` that this one does not draw are removed. All user-supplied text
    is HTML-escaped.

    Raises:
        DataError: a required column is missing or labels are not 0/1.
    """
    _check_scores(scores)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = scores.reset_index(drop=True)
    s = df["score"].to_numpy(dtype=np.float64)
    labels = _labels_of(df)
    thr = float(threshold)
    gthr = None if global_threshold is None else float(global_threshold)

    for name in (DISTRIBUTION_PNG, ROC_PNG, PR_PNG):  # a figure of earlier data must not stay beside
        (out / name).unlink(missing_ok=True)
    figures: list[tuple[str, str]] = []
    if _plot_distribution(out / DISTRIBUTION_PNG, s, labels, thr, gthr):
        figures.append((DISTRIBUTION_PNG, "Score distribution"))
    if labels is not None:
        known = ~np.isnan(labels) & ~np.isnan(s)
        y = labels[known].astype(np.int64)
        if 0 < int(y.sum()) < y.size:
            _plot_roc(out / ROC_PNG, y, s[known], thr)
            _plot_pr(out / PR_PNG, y, s[known], thr)
            figures += [(ROC_PNG, "ROC curve"), (PR_PNG, "Precision–recall curve")]
        else:
            log.info("labels hold a single class; ROC and PR curves skipped")

    n = len(df)
    n_flagged = int(df["flagged"].astype(bool).sum())
    cards = [
        _card("sequences", str(n)),
        _card("flagged", f"{n_flagged} ({100.0 * n_flagged / n:.1f}%)" if n else "0"),
        _card("threshold", _num(thr)),
    ]
    if gthr is not None:
        cards.append(_card("global threshold", _num(gthr)))
    if labels is not None:
        cards.append(_card("labelled anomalies", str(int(np.nansum(labels)))))

    if event_scale is None:
        explanations = sorted(explanations, key=lambda x: -x.score if not math.isnan(x.score) else math.inf)
        event_scores = [ev.score for x in explanations for ev in x.events if math.isfinite(ev.score)]
        event_scale = max(max(event_scores, default=1.0), 1.0)
    scale = event_scale
    drawn, n_explained_flagged = [], 0
    for x in explanations:
        drawn.append(_sequence_html(x, scale))
        n_explained_flagged += bool(x.flagged)

    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body: list[str] = [
        f"<h1>{_e(title)}</h1>",
        f'<div class="meta">generated {_e(generated)} · flagged = score &gt; threshold'
        + (f" ({_e(threshold_note)})" if threshold_note else "")
        + "</div>",
        f'<div class="cards">{"".join(cards)}</div>',
    ]
    if metrics:
        body += ["<h2>Metrics</h2>", _metrics_html(metrics)]
    if figures:
        imgs = "".join(
            f'<img src="{_data_uri(out / name)}" alt="{_e(alt)}" title="{_e(name)}">' for name, alt in figures
        )
        body += ["<h2>Figures</h2>", f'<div class="figs">{imgs}</div>']
    if n:
        body += [f"<h2>Highest scores (top {min(n, TOP_SEQUENCES)})</h2>", _top_sequences_html(df, labels)]
    body.append(
        f"<h2>The {len(drawn)} highest-scoring sequences, explained ({n_explained_flagged} flagged)</h2>"
    )
    if drawn:
        body.append(
            '<p class="legend">Each event is shaded by its event score, the surprisal plus any '
            f"numeric feature's term (white = 0, dark red ≥ {scale:.1f}); "
            "dashed purple border = token unseen in training (the tooltip also names context values "
            "unseen in training); black outline = the sequence's top "
            f"{TOP_EVENTS} events. Hover an event for what the model expected instead.</p>"
        )
        body += drawn
    else:
        body.append('<p class="muted">No explanations were provided.</p>')

    doc = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
    path = out / REPORT_FILE
    path.write_text(doc, encoding="utf-8")
    log.info("wrote report %s (%d figure(s))", path, len(figures))
    return path
