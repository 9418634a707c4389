"""The demo's distillation recipe is the one benchmarks/demo_recipe.py chose on validation."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from transferkit import demo
from transferkit.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "demo_recipe.json"


def result() -> dict:
    return json.loads(RESULT.read_text())


def test_demo_uses_the_recipe_chosen_on_validation() -> None:
    recorded = result()
    choice = recorded["choice"]
    assert recorded["settings"]["student"] == list(demo.STUDENT)
    assert choice["teacher_epochs"] == demo.TEACHER_SETTINGS["epochs"]
    jitter = 1 if choice["teacher"].endswith("jitter 1") else 0
    assert jitter == demo.TEACHER_SETTINGS["jitter"]
    assert choice["epochs"] == demo.STUDENT_EPOCHS
    assert dict(demo.DISTIL_RECIPES) == {"l2": choice["l2"], "kd": choice["kd"]}


def test_recorded_test_means_meet_the_issue() -> None:
    """At the demo's shared budget, on the test split, neither distilled student's 3-seed mean
    falls below the student alone's (what issue 6 asked of the recipe)."""
    rows = result()["rows"]
    epochs = demo.STUDENT_EPOCHS
    alone = rows[f"student alone ({epochs} epochs)"]
    assert len(alone["per_seed"]) == 3
    for method, options in demo.DISTIL_RECIPES:
        settings = " ".join(f"{k}={v}" for k, v in options.items())
        row = rows[f"student + {method} {settings} ({epochs} epochs)"]
        assert len(row["per_seed"]) == 3
        assert row["mean"] >= alone["mean"], method


def test_validation_split_holds_only_training_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("demo_recipe")
    digits = load_dataset("digits")
    val = bench.validation_split(digits)
    assert (len(val.train), len(val.test)) == (1077, 270)
    assert torch.bincount(val.test.y, minlength=10).min() >= 25  # stratified: ~27 per class

    def rows(*splits) -> list:
        return sorted((*x.flatten().tolist(), int(y)) for s in splits
                      for x, y in zip(s.x, s.y, strict=True))

    assert rows(val.train, val.test) == rows(digits.train)  # a partition of the training rows
    assert torch.equal(bench.validation_split(digits).test.y, val.test.y)  # fixed split
