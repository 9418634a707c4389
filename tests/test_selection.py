"""Choosing the kept epoch without target labels: the held-out source split, the validators'
scores in every evaluated epoch, ``select``, the oracle reported but never used unless asked
for, and a resume that keeps the preferred weights whatever moment the run was killed."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import torch

import transferkit as tk
from conftest import CLI_FAST, TINY
from transferkit.config import TrainConfig
from transferkit.data import load_pair
from transferkit.engine import loop
from transferkit.engine.checkpoint import load_torch
from transferkit.engine.selection import (
    ValidationSets,
    best_epoch,
    choices,
    holdout_rows,
    sample_rows,
)
from transferkit.errors import CheckpointError, ConfigError
from transferkit.validators import VALIDATORS

RUN = {"epochs": 4, "steps_per_epoch": 8, "batch_size": 32, "progress": False, "device": "cpu",
       "lr": 0.05}


def test_select_accepts_exactly_last_the_validators_and_oracle() -> None:
    allowed = typing.get_args(TrainConfig.model_fields["select"].annotation)
    assert set(allowed) == {"last", "oracle", *VALIDATORS}
    with pytest.raises(ConfigError, match="select"):
        tk.adapt("mlp", "digits->digits_shifted", select="target_accuracy", **RUN)


def test_holdout_is_stratified_disjoint_and_the_same_for_every_seed() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3])
    kept, held = holdout_rows(y, 0.1)
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(y)))
    assert torch.bincount(y[held], minlength=4).tolist() == [5, 3, 2, 0]
    assert torch.equal(held, holdout_rows(y, 0.1)[1])
    assert len(holdout_rows(y, 0.0)[1]) == 0
    with pytest.raises(ConfigError, match="source_holdout"):
        holdout_rows(y, 1.0)
    assert torch.equal(sample_rows(10, 20), torch.arange(10))
    sample = sample_rows(5000, 2000)
    assert len(sample) == 2000 == len(set(sample.tolist())) and torch.equal(sample,
                                                                              sample_rows(5000))


def test_best_epoch_and_choices_read_the_history() -> None:
    history = [
        {"epoch": 1, "eval": {"target_test": {"accuracy": 0.5}}, "validators": {"im": 0.2}},
        {"epoch": 2, "eval": {"target_test": {"accuracy": 0.7}}, "validators": {"im": 0.9}},
        {"epoch": 3, "eval": {"target_test": {"accuracy": 0.9}}, "validators": {"im": 0.9}},
        {"epoch": 4, "eval": {"target_test": {"accuracy": 0.6}},
         "validators": {"im": float("nan")}},
    ]
    assert best_epoch(history, "im") == 1  # ties: the earlier; NaN never chosen
    assert best_epoch(history, "oracle") == 2
    assert best_epoch(history, "snd") is None
    picked = choices(history)
    assert {k: v["epoch"] for k, v in picked.items()} == {"last": 4, "im": 2, "oracle": 3}
    assert picked["im"]["target_test"] == 0.7 and "target labels" in picked["oracle"]["note"]


def test_adapt_reports_every_choice_and_keeps_the_selected_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = tk.adapt("mlp", "digits->digits_shifted", method="dann", model_options=TINY,
                      select="source_accuracy", out=out, **RUN)
    summary, history = result.summary, result.history
    assert all(set(row["validators"]) == set(VALIDATORS) for row in history)
    scores = [row["validators"]["source_accuracy"] for row in history]
    chosen = max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert summary["selected"]["epoch"] == chosen + 1
    assert set(summary["choices"]) == {"last", "oracle", *VALIDATORS}
    accuracies = [row["eval"]["target_test"]["accuracy"] for row in history]
    assert summary["choices"]["oracle"]["target_test"] == max(accuracies)
    assert summary["choices"]["last"]["target_test"] == summary["final"]["target_test"]
    assert "source_accuracy validator" in summary["selection"]
    assert "no target labels" in summary["selection"]
    # model.pt is the chosen epoch's model: it scores that epoch's target accuracy
    saved = tk.load_model(out / "model.pt")
    scores = tk.evaluate(saved, "digits->digits_shifted")
    assert scores["target_test"]["accuracy"] == pytest.approx(
        summary["selected"]["target_test"])
    assert load_torch(out / "selected.pt")["epoch"] == summary["selected"]["epoch"]
    source_y = load_pair("digits->digits_shifted").source.train.y
    assert summary["source_holdout_rows"] == len(holdout_rows(source_y, 0.1)[1]) > 0


def test_oracle_only_when_asked_and_then_said(tmp_path: Path) -> None:
    result = tk.adapt("mlp", "digits->digits_shifted", method="dann", model_options=TINY,
                      select="oracle", **RUN)
    assert "WITH target labels" in result.summary["selection"]
    assert result.summary["selected"]["target_test"] == result.summary["choices"]["oracle"][
        "target_test"]
    default = tk.adapt("mlp", "digits->digits_shifted", method="dann", model_options=TINY,
                       **RUN)
    assert default.summary["selection"].startswith("last epoch")
    assert "selected" not in default.summary


def test_a_validator_that_scores_no_epoch_is_said_not_passed_off_as_last() -> None:
    """SND needs two target rows: on one it scores nothing, and the summary used to read
    as if no selection had been asked for."""
    from transferkit.data import DomainPair, Split

    pair = load_pair("digits->digits_shifted")
    one = Split(pair.target.train.x[:1], pair.target.train.y[:1])
    target = type(pair.target)("one_row", one, pair.target.test, pair.num_classes)
    tiny = DomainPair("digits->one_row", pair.source, target)
    result = tk.adapt("mlp", tiny, method="dann", model_options=TINY, select="snd",
                      **{**RUN, "epochs": 2})
    note = result.summary["selection"]
    assert note.startswith("last epoch: select=snd gave no finite score at any epoch"), note
    assert "selected" not in result.summary and "snd" not in result.summary["choices"]


def test_select_refused_where_no_target_scores_exist(digits) -> None:
    with pytest.raises(ConfigError, match="only adapt"):
        tk.train("mlp", digits, model_options=TINY, select="im", **RUN)


def test_a_kill_between_checkpoint_and_selected_file_resumes_to_the_same_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"method": "dann", "model_options": TINY, "select": "source_accuracy", **RUN}
    whole = tk.adapt("mlp", "digits->digits_shifted", out=tmp_path / "whole", **settings)
    real_save, kept = loop.save_torch, []

    def killed(obj, path):
        if Path(path).name == loop.SELECTED and obj["epoch"] >= 2:
            kept.append(obj["epoch"])
            raise KeyboardInterrupt  # the checkpoint of this epoch is already written
        real_save(obj, path)

    monkeypatch.setattr(loop, "save_torch", killed)
    run_dir = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        tk.adapt("mlp", "digits->digits_shifted", out=run_dir, **settings)
    monkeypatch.setattr(loop, "save_torch", real_save)
    assert kept and load_torch(run_dir / "checkpoint.pt")["epoch"] == kept[0]
    assert load_torch(run_dir / "selected.pt")["epoch"] < kept[0]
    resumed = tk.adapt("mlp", "digits->digits_shifted", out=run_dir, resume=True, **settings)
    assert resumed.summary["selected"] == whole.summary["selected"]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_a_selected_file_from_another_epoch_is_refused_at_resume(tmp_path: Path) -> None:
    settings = {"method": "dann", "model_options": TINY, "select": "source_accuracy",
                **{**RUN, "epochs": 2}}
    run_dir = tmp_path / "run"
    first = tk.adapt("mlp", "digits->digits_shifted", out=run_dir, **settings)
    best = first.summary["selected"]["epoch"]
    (run_dir / "model.pt").unlink()  # as if killed before the end, then tampered with
    state = load_torch(run_dir / "selected.pt")
    state["epoch"] = best + 7
    torch.save(state, run_dir / "selected.pt")
    # (were it 2, the checkpoint itself would hold the preferred weights: nothing to refuse)
    assert best == 1, "this test needs a run whose preferred epoch is not its last"
    with pytest.raises(CheckpointError, match=r"selected\.pt"):
        tk.adapt("mlp", "digits->digits_shifted", out=run_dir, resume=True,
                 **{**settings, "epochs": 3})


def test_validation_sets_sample_at_most_the_limit() -> None:
    x, y = torch.randn(3000, 4), torch.randint(0, 3, (3000,))
    sets = ValidationSets.build(x, y, torch.randn(2500, 4))
    assert len(sets.source_x) == len(sets.source_y) == 2000 and len(sets.target_x) == 2000
    empty = ValidationSets.build(x[:0], y[:0], torch.randn(10, 4))
    assert empty.source_x is None and len(empty.target_x) == 10


def test_cli_select_writes_the_choice(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, _ = cli("adapt", "--data", "digits->digits_shifted", "--model", "mlp",
                          "--model-opt", "widths=[16]", "--method", "dann", "--select", "snd",
                          "--epochs", "2", "--out", str(out), *CLI_FAST)
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and summary["selected"]["epoch"] == summary["choices"]["snd"]["epoch"]
    # the printed scores say which epoch model.pt holds, not only the last epoch's
    kept = next(line for line in stdout.splitlines() if "kept in model.pt" in line)
    epoch = summary["selected"]["epoch"]
    assert f"epoch {epoch}, preferred by the snd validator" in kept, kept
    assert "(unlabelled target inputs; no target labels)" in kept, kept  # snd reads no source
    assert f"target_test accuracy {summary['selected']['target_test']:.2%}" in kept, kept
    assert stdout.startswith("adapt (last epoch): "), stdout


def test_select_by_source_rows_is_refused_when_there_are_none() -> None:
    with pytest.raises(ConfigError, match=r"held-out source rows.*--source-holdout 0\.1"):
        tk.adapt("mlp", "digits->digits_shifted", method="dann", model_options=TINY,
                 select="dev", source_holdout=0.0, **RUN)
    run = tk.adapt("mlp", "digits->digits_shifted", method="dann", model_options=TINY,
                   select="im", source_holdout=0.0, **RUN)
    assert set(run.history[-1]["validators"]) == {"entropy", "im", "snd"}
    assert run.summary["source_holdout_rows"] == 0
