"""What ``seqwatch score``, ``explain`` and ``report`` print and write: models, score tables, metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.console import Console
from client.datafiles import LAYOUT_FILE, DataLayout, read_data
from common.errors import ConfigError, DataError, ModelFileError

if TYPE_CHECKING:
    import pandas as pd

    from common.detector import ScoredTable, SequenceDetector
    from common.events import EventTable


TOP_EVENT_EXPECTED = 2
"""Expected events named per surprising event in ``seqwatch score``'s ``top_events``."""
_TOKEN_WIDTH = 40


def load_model(model_dir: str | Path, device: str | None) -> tuple[SequenceDetector, DataLayout | None]:
    """Load a detector and the data layout ``fit`` saved with it (None for federated models).

    Raises:
        ModelFileError: the directory is missing or not a seqwatch model.
    """
    p = Path(model_dir)
    if not p.exists():
        raise ModelFileError(f"{p}: model directory not found; train one with 'seqwatch fit --out {p}'")
    if not p.is_dir():
        raise ModelFileError(f"{p}: is a file, not a model directory")
    from common.detector import SequenceDetector

    detector = SequenceDetector.load(p, device=device)
    layout_path = p / LAYOUT_FILE
    layout: DataLayout | None = None
    if layout_path.is_file():
        try:
            data = json.loads(layout_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{layout_path}: unreadable ({exc}); re-run 'seqwatch fit'") from exc
        layout = DataLayout.from_dict(data, source=str(layout_path))
    return detector, layout


def read_for_model(
    path: str | Path, args: argparse.Namespace, detector: SequenceDetector, layout: DataLayout | None
) -> EventTable:
    """Read a file to score with ``detector``; its features must be the model's."""
    enc = detector.encoder_
    table, _ = read_data(path, args, saved=layout, features=(enc.numeric_names, enc.context_names))
    if table.numeric != enc.numeric_names or table.context != enc.context_names:
        raise DataError(
            f"{table.source}: the model was trained with numeric features {list(enc.numeric_names)} and "
            f"context features {list(enc.context_names)}, but the data was read with "
            f"{list(table.numeric)} and {list(table.context)}; pass matching --numeric-cols/--context-cols "
            f"(and --order-col/--time when the model used timestamps)"
        )
    return table


def chosen_threshold(detector: SequenceDetector, which: str) -> float:
    if which == "global":
        if detector.global_threshold_ is None:
            raise ConfigError(
                "this model has no global threshold (it was trained locally); use --threshold local"
            )
        return float(detector.global_threshold_)
    return float(detector.threshold_)


def _short(token: object) -> str:
    text = " ".join(str(token).split())
    return text if len(text) <= _TOKEN_WIDTH else text[: _TOKEN_WIDTH - 1] + "…"


def top_events_texts(detector: SequenceDetector, scored: ScoredTable, n: int) -> list[str]:
    """The ``n`` most surprising events of every sequence, each as one compact string.

    ``"pos 17: open (expected read, write); pos 3: ..."``, most surprising first.
    Positions are 0-based, as in ``seqwatch explain``; unseen tokens are marked
    ``[unseen]``. ``n <= 0`` gives empty strings (and skips the model pass).
    """
    data = scored.encoded
    if n <= 0:
        return [""] * len(data)
    from common.vocab import END, UNK

    events = scored.events
    expected = events.expected
    if expected is None:
        raise ValueError("top_events_texts() needs a table scored with expected_k > 0")
    positions = [scored.top_events(i, n) for i in range(len(data))]
    vocab = detector.encoder_.vocab
    texts = []
    for i, pos in enumerate(positions):
        start, length = int(data.offsets[i]), int(data.lengths[i])
        parts = []
        for t in pos:
            if t == length and events.end_expected is not None:  # the END step
                raw, unseen, guess_ids = vocab.token(END), "", events.end_expected[i, :TOP_EVENT_EXPECTED]
            else:
                row = start + int(t)
                token = int(data.tokens[row])
                raw = scored.raw_events[row] if scored.raw_events is not None else vocab.token(token)
                unseen = " [unseen]" if token == UNK else ""
                guess_ids = expected[row, :TOP_EVENT_EXPECTED]
            guesses = ", ".join(_short(vocab.token(int(a))) for a in guess_ids)
            parts.append(f"pos {int(t)}: {_short(raw)}{unseen} (expected {guesses})")
        texts.append("; ".join(parts))
    return texts


def score_frame(
    detector: SequenceDetector, scored: ScoredTable, threshold: float, top_events: int
) -> pd.DataFrame:
    """Per-sequence table.

    Columns: sequence_id, score, flagged, threshold, n_events, unknown_events,
    top_events, and label when the data is labelled.
    """
    import numpy as np
    import pandas as pd

    from common.vocab import UNK

    enc = scored.encoded
    lengths = np.diff(enc.offsets)
    n_seq = len(lengths)
    owner = np.repeat(np.arange(n_seq), lengths)
    unknown = np.bincount(owner, weights=(enc.tokens == UNK), minlength=n_seq).astype(np.int64)
    scores = np.asarray(scored.scores, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "sequence_id": np.asarray(enc.ids).astype(str),
            "score": scores,
            "flagged": scores > threshold,
            "threshold": np.full(n_seq, threshold, dtype=np.float64),
            "n_events": lengths.astype(np.int64),
            "unknown_events": unknown,
            "top_events": top_events_texts(detector, scored, top_events),
        }
    )
    if enc.labels is not None:
        frame["label"] = np.asarray(enc.labels).astype(np.int64)
    return frame


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet for ``.parquet``, TSV for ``.tsv``/``.tsv.gz``, else CSV (gzip for ``.gz``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.name.lower()
    if name.endswith(".parquet"):
        frame.to_parquet(out, index=False)
    else:
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        frame.to_csv(out, index=False, sep=sep, compression="infer")
    return out


def labelled_metrics(scored: ScoredTable, threshold: float, source: str) -> dict[str, Any] | None:
    """``detection_report`` plus ``threshold_source``, or None without labels."""
    labels = scored.encoded.labels
    if labels is None:
        return None
    from common.metrics import detection_report

    return {**detection_report(labels, scored.scores, threshold), "threshold_source": source}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_metrics(console: Console, metrics: dict[str, Any]) -> None:
    rows = [
        ("AUROC", "auroc"),
        ("AUPRC", "auprc"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("F1", "f1"),
        ("false-alarm rate", "false_alarm_rate"),
        ("detection @1% FAR", "detection_rate_at_1pct_far"),
        ("detection @5% FAR", "detection_rate_at_5pct_far"),
    ]
    console.result(
        f"metrics ({metrics['n_sequences']} sequences, {metrics['n_anomalous']} anomalous; "
        f"tp {metrics['tp']} fp {metrics['fp']} tn {metrics['tn']} fn {metrics['fn']}):"
    )
    for title, key in rows:
        console.result(f"  {title:<18} {_fmt(metrics.get(key))}")
