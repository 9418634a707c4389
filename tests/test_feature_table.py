"""benchmarks/feature_table.py: its grid runs on a tiny budget on one real pair, and its
published numbers are those the issue quotes.

Reads Office-Caltech10 SURF from ``$TRANSFERKIT_DATA_DIR`` or ``<repo>/../shared/datasets``;
skipped when the files are absent.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from transferkit.data import paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("feature_table")


def data_dir() -> Path:
    env = os.environ.get(paths.ENV_VAR)
    for root in (Path(env) if env else None, ROOT.parent / "shared" / "datasets",
                 Path("/work/shared/datasets")):
        if root is not None and (root / "office_caltech10_surf" / "dslr_SURF_L10.mat").is_file():
            return root
    pytest.skip(f"office_caltech10_surf not found in the shared datasets (set {paths.ENV_VAR})")


def test_published_means_are_the_issues(bench) -> None:
    published = bench.PUBLISHED["office_caltech10_surf"]
    pairs = set(bench.all_pairs("office_caltech10_surf"))
    assert len(pairs) == 12
    for name, mean in {"SA": 44.7, "TCA": 43.6, "JDA": 46.3}.items():
        assert set(published[name]) == pairs
        assert round(sum(published[name].values()) / 12, 1) == mean
    assert len(bench.all_pairs("amazon_review_400")) == 12


def test_feature_table_smoke(bench, tmp_path: Path) -> None:
    root = data_dir()
    out = tmp_path / "feature_table.jsonl"
    budget = bench.Budget(steps=6, free_steps=2, evals=2)
    names = ["source-only", "dann", "shot"]
    rows = bench.run(["office_caltech10_surf"], ["D->W"], names, [0], budget, root,
                     tmp_path / "runs", out)
    assert [r["method"] for r in rows] == names
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == rows
    for row in rows:
        assert (row["dataset"], row["pair"], row["seed"]) == ("office_caltech10_surf", "D->W", 0)
        assert 0.0 <= row["target_test_last"] <= 1.0
        # the all-data protocol: no source rows held out, so only target-only validators
        assert {"last", "oracle"} <= set(row["choices"])
        assert not {"source_accuracy", "dev"} & set(row["choices"])
    assert rows[0]["methods"] == ["supervised"]
    assert rows[1]["methods"] == ["supervised", "dann"]
    assert rows[2]["methods"] == ["shot"] and rows[2]["steps"] == 2
    # transductive: the target test split is the whole target domain (295 webcam images)
    summary = json.loads((tmp_path / "runs" / "office_caltech10_surf" / "D2W" / "seed0"
                          / "dann" / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["eval"]["target_test"]["n"] == 295
    assert summary["eval"]["source_test"]["n"] == 157
    # a rerun skips what is done
    assert bench.run(["office_caltech10_surf"], ["D->W"], names, [0], budget, root,
                     tmp_path / "runs", out) == []
