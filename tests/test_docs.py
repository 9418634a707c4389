"""docs/benchmarks.md must be exactly what the recorded benchmark results render to."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_matches_results() -> None:
    report = load_report()
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render(), (
        "docs/benchmarks.md is stale: run python benchmarks/report.py"
    )


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")))
def test_every_result_records_its_command(path: Path) -> None:
    result = json.loads(path.read_text())
    assert result["command"].startswith("python benchmarks/")
    assert result["environment"]["torch"]
    assert result["rows"]
