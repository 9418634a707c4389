"""The ``multistep`` learning-rate schedule: RepDistiller's CIFAR-100 recipe, its validation,
how a run records it, and the CLI taking it from ``--schedule`` and a YAML ``--config``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from transferkit.cli import main as cli_main
from transferkit.config import OptimConfig, RunConfig, TrainConfig, normalize_settings, validate
from transferkit.engine.optim import learning_rate
from transferkit.errors import ConfigError

RECIPE = OptimConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                     milestones=[150, 180, 210], gamma=0.1)
TINY_RUN = ["train", "--data", "digits", "--model", "mlp", "--model-opt", "widths=[8]",
            "--epochs", "3", "--steps-per-epoch", "2", "--batch-size", "16", "--device", "cpu",
            "--no-progress"]


def lrs(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["lr"] for line in lines]


@pytest.mark.parametrize(("epoch", "rate"), [
    (0, 0.05), (149, 0.05), (150, 0.005), (179, 0.005), (180, 5e-4), (209, 5e-4),
    (210, 5e-5), (239, 5e-5),
])
def test_recipe_rates(epoch: int, rate: float) -> None:
    # 0-based epochs: index 150 (RepDistiller's 1-based epoch 151, ``epoch > 150``) decays.
    for step in (0, 1000 * epoch, 10**6):  # the step plays no part
        assert learning_rate(RECIPE, step, epoch, 240 * 782) == pytest.approx(rate, rel=1e-12)


def test_defaults_and_gamma() -> None:
    cfg = OptimConfig(schedule="multistep")
    assert cfg.milestones == [150, 180, 210] and cfg.gamma == 0.1
    half = OptimConfig(lr=1.0, schedule="multistep", milestones=[1, 3], gamma=0.5)
    assert [learning_rate(half, 0, e, 10) for e in range(5)] == [1.0, 0.5, 0.5, 0.25, 0.25]
    # No milestones: a constant rate.
    assert learning_rate(OptimConfig(lr=0.3, schedule="multistep", milestones=[]), 0, 99, 1) == 0.3


@pytest.mark.parametrize("bad", [[0, 5], [-1], [5, 5], [180, 150], [1.5], ["150"], [True], 150])
def test_bad_milestones_refused_in_one_line(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        validate(TrainConfig, {"optim": {"schedule": "multistep", "milestones": bad}},
                 "training settings")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("training settings: optim.milestones")


def test_milestones_recorded_only_with_multistep() -> None:
    """Records of other schedules keep their old fields, so runs written before resume."""
    assert "milestones" not in OptimConfig(schedule="cosine").model_dump()
    assert "milestones" not in TrainConfig().model_dump()["optim"]
    dumped = TrainConfig(optim=RECIPE).model_dump()
    assert dumped["optim"]["milestones"] == [150, 180, 210]
    assert validate(TrainConfig, dumped).optim == RECIPE  # the record reads back the same


@pytest.mark.parametrize("raw", [
    {"train": {"optim": {"schedule": "multistep", "milestones": [2, 4]}}},
    {"train": {"schedule": "multistep", "milestones": [2, 4]}},
    {"schedule": "multistep", "milestones": [2, 4]},
    {"optimizer": {"name": "sgd", "schedule": "multistep", "milestones": [2, 4]}},
])
def test_settings_spellings(raw: dict) -> None:
    tree = normalize_settings(raw, "config x.yaml")
    cfg = validate(RunConfig, {"command": "train", **tree})
    assert cfg.train.optim.schedule == "multistep" and cfg.train.optim.milestones == [2, 4]


def test_cli_schedule_flag_and_yaml_milestones(tmp_path: Path) -> None:
    settings = tmp_path / "run.yaml"
    settings.write_text(yaml.safe_dump({"train": {"optim": {"milestones": [1, 2]}}}))
    out = tmp_path / "run"
    code = cli_main([*TINY_RUN, "--lr", "0.1", "--schedule", "multistep", "--config",
                     str(settings), "--out", str(out)])
    assert code == 0
    assert lrs(out) == pytest.approx([0.1, 0.01, 0.001], rel=1e-12)
    recorded = yaml.safe_load((out / "config.yaml").read_text())["train"]["optim"]
    assert recorded["schedule"] == "multistep" and recorded["milestones"] == [1, 2]


def test_cli_yaml_only(tmp_path: Path) -> None:
    settings = tmp_path / "run.yaml"
    settings.write_text("schedule: multistep\nmilestones: [2, 4]\nlr: 0.2\ngamma: 0.5\n")
    out = tmp_path / "run"
    assert cli_main([*TINY_RUN, "--config", str(settings), "--out", str(out)]) == 0
    assert lrs(out) == pytest.approx([0.2, 0.2, 0.1], rel=1e-12)


def test_cli_bad_milestones_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "run.yaml"
    settings.write_text("train: {optim: {schedule: multistep, milestones: [4, 2]}}\n")
    code = cli_main([*TINY_RUN, "--config", str(settings), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "milestones" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
