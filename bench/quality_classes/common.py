"""What every part of the incentives benchmark shares: the quality classes, the models the nodes serve, the
MATH500 problems (prompts and the reference judge's vocabulary), and writing CSV files."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.common import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]
MATH500 = REPO_ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"
CLASSES = ("a", "b", "c")
CLASS_NAMES = {"a": "SmolLM2 (honest)", "b": "degraded (short answers)", "c": "random responder"}
# The intended ordering: a lower rank is better.
RANK = {"a": 0, "b": 1, "c": 2}
ORIGIN_MODEL = "dispatch-only"
JUDGE_POOL_MODEL = "judge-pool"
ETH = 10**18


def problems_and_solutions() -> list[str]:
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    return [r["problem"] for r in rows] + [r.get("solution", "") for r in rows]


def load_problems() -> list[str]:
    if not MATH500.exists():
        raise BenchError(f"{MATH500} is missing (the benchmark's prompts and the reference judge's vocabulary)")
    return [json.loads(line)["problem"] for line in MATH500.read_text().splitlines() if line.strip()]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)

