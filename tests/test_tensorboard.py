"""``--tensorboard`` / ``tensorboard=True``: metrics.jsonl's scalars in RUN/tensorboard, one
point per epoch (the epoch is the step), never twice after a resume; one line without the
package."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY, CliRunner, error_line
from transferkit.errors import ConfigError

pytest.importorskip("tensorboard", reason="pip install 'transferkit[tensorboard]' to test it")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

PAIR = "digits->digits_shifted"
INSTALL = "pip install 'transferkit[tensorboard]'"


def board(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] as TensorBoard shows it."""
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def raw_points(run: Path) -> list[tuple[str, int]]:
    """Every (tag, step) in the event files as written (no purge applied)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    points = []
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            points += [(value.tag, event.step) for value in event.summary.value]
    return points


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_adapt_logs_every_scalar_of_the_metrics(tmp_path: Path) -> None:
    run = tmp_path / "dann"
    tk.adapt("mlp", PAIR, method="dann", model_options=TINY, out=run, tensorboard=True,
             **{**FAST, "epochs": 2})
    found = board(run)
    expected = {"train/loss", "train/supervised.ce", "train/dann.domain",
                "eval/source_test/accuracy", "eval/source_test/loss",
                "eval/target_test/accuracy", "eval/target_test/loss",
                "method/dann.grl_coeff", "method/dann.domain_acc", "lr",
                *(f"validators/{name}" for name in rows(run)[0]["validators"])}
    assert set(found) == expected
    assert all([step for step, _ in points] == [1, 2] for points in found.values())
    for row in rows(run):  # the same numbers as metrics.jsonl (float32 in the events)
        epoch = row["epoch"]
        assert dict(found["train/loss"])[epoch] == pytest.approx(row["train"]["loss"], 1e-6)
        assert dict(found["eval/target_test/accuracy"])[epoch] == pytest.approx(
            row["eval"]["target_test"]["accuracy"], 1e-6)
        assert dict(found["method/dann.grl_coeff"])[epoch] == pytest.approx(
            row["dann.grl_coeff"], 1e-6)
        assert dict(found["validators/entropy"])[epoch] == pytest.approx(
            row["validators"]["entropy"], 1e-6)


def test_resume_never_duplicates_a_point(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = {**FAST, "tensorboard": True}
    tk.train("mlp", "digits", model_options=TINY, out=run, **{**settings, "epochs": 1})
    # As if a killed run had logged epoch 2 but not checkpointed it: the resume replaces it.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run / "tensorboard")) as stale:
        stale.add_scalar("train/loss", 999.0, 2)
    tk.train("mlp", "digits", model_options=TINY, out=run, resume=True,
             **{**settings, "epochs": 3})
    found = board(run)
    assert [step for step, _ in found["train/loss"]] == [1, 2, 3]
    assert 999.0 not in [value for _, value in found["train/loss"]]
    assert [r["train"]["loss"] for r in rows(run)] == pytest.approx(
        [value for _, value in found["train/loss"]], rel=1e-6)
    points = raw_points(run)
    assert len(points) == len(set(points))  # not even the files hold a point twice

    # A run started without tensorboard may turn it on at a resume: its whole history is logged
    plain = tmp_path / "plain"
    tk.train("mlp", "digits", model_options=TINY, out=plain, **{**FAST, "epochs": 1})
    assert not (plain / "tensorboard").exists()
    tk.train("mlp", "digits", model_options=TINY, out=plain, resume=True,
             **{**settings, "epochs": 2})
    assert [step for step, _ in board(plain)["train/loss"]] == [1, 2]


def test_cli_flag_and_yaml_field(cli: CliRunner, tmp_path: Path) -> None:
    common = ["--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]", *CLI_FAST,
              "--epochs", "1"]
    out = tmp_path / "flag"
    code, _, err = cli("train", *common, "--tensorboard", "--out", out)
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["tensorboard"] is True
    assert [step for step, _ in board(out)["eval/test/accuracy"]] == [1]
    settings = tmp_path / "run.yaml"
    settings.write_text("tensorboard: true\n")
    out = tmp_path / "yaml"
    code, _, err = cli("train", *common, "--config", settings, "--out", out)
    assert code == 0, err
    assert "train/loss" in board(out)


def test_missing_package_or_run_directory_is_one_line(
        cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="give out="):
        tk.train("mlp", "digits", model_options=TINY, tensorboard=True, **FAST)
    original = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else original(name, *a))
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", "digits", *CLI_FAST, "--tensorboard", "--out", out)
    assert code == 2 and INSTALL in error_line(err)
    assert not out.exists()  # refused before anything was written or trained
    with pytest.raises(ConfigError, match=r"pip install 'transferkit\[tensorboard\]'"):
        tk.train("mlp", "digits", model_options=TINY, out=out, tensorboard=True, **FAST)
    assert not (out / "checkpoint.pt").exists()
