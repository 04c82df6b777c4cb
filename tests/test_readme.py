"""The README's library example runs as written (on small files with its column names)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _behaviour(rng: np.random.Generator, users: range) -> pd.DataFrame:
    """Card-holder sessions with the README's column names: user, action, ts, amount, device."""
    rows = []
    for u in users:
        t = float(rng.integers(0, 10_000))
        for action in ("login", "view", *rng.choice(["pay", "view", "transfer"], size=3), "logout"):
            t += float(rng.exponential(30.0))
            amount = round(float(rng.lognormal(3, 1)), 2) if action in ("pay", "transfer") else None
            rows.append((f"user-{u}", action, t, amount, rng.choice(["phone", "laptop"])))
    return pd.DataFrame(rows, columns=["user", "action", "ts", "amount", "device"])


def test_library_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (block,) = [b for b in _python_blocks() if "SequenceDetector" in b]
    rng = np.random.default_rng(0)
    _behaviour(rng, range(0, 40)).to_csv(tmp_path / "train.csv", index=False)
    _behaviour(rng, range(40, 50)).to_csv(tmp_path / "test.csv", index=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert "user-42" in capsys.readouterr().out
    assert (tmp_path / "models" / "mine" / "detector.json").is_file()
    scores = namespace["scores"]
    assert isinstance(scores, np.ndarray) and scores.shape == (10,)
    pvals = namespace["pvals"]
    assert isinstance(pvals, np.ndarray) and pvals.shape == (10,) and ((pvals > 0) & (pvals <= 1)).all()
