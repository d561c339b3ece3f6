"""Percentiles, aligned tables and JSON result files."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    """n, p50, p95, mean of a sample."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": sum(values) / len(values) if values else math.nan,
    }


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: floats with fixed digits, everything else as str."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    """A titled table; numeric columns are right-aligned."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [[fmt(v) for v in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.headers)]
        numeric = [
            all(isinstance(row[i], int | float) for row in self.rows) and bool(self.rows)
            for i in range(len(self.headers))
        ]

        def line(values: list[str]) -> str:
            return "  ".join(
                v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
            ).rstrip()

        out = [self.title, "=" * len(self.title), line(self.headers), line(["-" * w for w in widths])]
        out += [line(r) for r in cells]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "headers": self.headers, "rows": self.rows, "notes": self.notes}


@dataclass
class Result:
    """One benchmark's outcome: printed tables, raw figures, and checks (name -> passed)."""

    name: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # correctness: a failure fails the command
    goals: dict[str, bool] = field(default_factory=dict)  # targets from the issue: reported, not enforced

    def print(self) -> None:
        for t in self.tables:
            print()
            print(t.render())
        if self.checks:
            print("  checks: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in self.checks.items()))
        if self.goals:
            print("  goals:  " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in self.goals.items()))

    def write(self, results_dir: Path = RESULTS_DIR) -> Path:
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{self.name}.json"
        doc = {
            "benchmark": self.name,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "checks": self.checks,
            "goals": self.goals,
            "tables": [t.as_json() for t in self.tables],
            "data": self.data,
        }
        path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)
