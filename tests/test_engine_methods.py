"""The engine every method runs on: taps by module path, phases, lr factors, method lists with
declared needs, extra trained networks, born-again generations and data-free distillation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY, CliRunner
from transferkit.config import TrainConfig
from transferkit.data import Dataset
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError, RunDirError
from transferkit.files import RunLock
from transferkit.methods import (
    METHODS,
    Batch,
    Method,
    Outputs,
    Phase,
    Tap,
    TrainInfo,
    build_methods,
    check_needs,
    method_names,
    route_options,
)
from transferkit.models import build_model
from transferkit.models.layers import resolve_layer

CONFIG = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "progress": False,
          "device": "cpu"}
STAGED = ("resnet8x4", {"width": 0.125})


def staged(digits: Dataset, width: float = 0.125) -> nn.Module:
    return build_model("resnet8x4", digits.input_shape, 10, width=width)


# ---------------------------------------------------------------- taps


def test_layers_are_found_by_path_or_unique_ending(digits: Dataset) -> None:
    model = staged(digits)
    assert resolve_layer(model, "stage2") == "features.stage2"
    assert resolve_layer(model, "features.stage2") == "features.stage2"
    with pytest.raises(ConfigError, match=r"has no layer 'stage9'; valid layers: "
                                          r"features.stage1, features.stage2, features.stage3"):
        resolve_layer(model, "stage9")
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_layer(model, "conv1")  # in every block


class Reader(Method):
    """Reads a student and a teacher layer and records what it saw."""

    name = "reader"

    def __init__(self, teacher: nn.Module, taps: list[Tap]) -> None:
        super().__init__()
        object.__setattr__(self, "teacher", teacher)
        self._taps = taps
        self.info: TrainInfo | None = None
        self.seen: dict[Tap, Tensor] = {}

    def taps(self) -> list[Tap]:
        return self._taps

    def teachers(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def setup(self, info: TrainInfo) -> None:
        self.info = info

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        self.seen = {tap: out.get(tap) for tap in self._taps}
        return {"ce": F.cross_entropy(out.logits, batch.y)}


def test_taps_are_probed_before_training_and_captured_every_step(digits: Dataset) -> None:
    student, teacher = staged(digits), staged(digits, width=0.25)
    taps = [Tap("student", "stage2"), Tap("teacher", "stage3"),
            Tap("student", "stage2", flatten=True), Tap("teacher", "features", "input")]
    reader = Reader(teacher, taps)
    trainer = Trainer(student, [reader], TrainData(digits.train.x, digits.train.y, 10),
                      TrainConfig(**CONFIG))
    info = reader.info
    assert info is not None and info.student is student and info.teachers == {"teacher": teacher}
    # resnet8x4 (channels 64, 128, 256 per stage) at width 0.125 on 8x8 digits: stage2 has 16
    # channels at 4x4; the teacher at width 0.25 has 64 in stage3 at 2x2
    assert info.shape(taps[0]) == (16, 4, 4) and info.shape(taps[1]) == (64, 2, 2)
    assert info.shape(taps[2]) == (16 * 4 * 4,) and info.shape(taps[3]) == (1, 8, 8)
    x, y = digits.train.x[:5], digits.train.y[:5]
    trainer.objective(Batch(x, y), 0.0)
    with torch.no_grad():
        expected = student.features.stage2(student.features.stage1(student.features.stem(x)))
    torch.testing.assert_close(reader.seen[taps[0]], expected)
    torch.testing.assert_close(reader.seen[taps[2]], expected.flatten(1))
    torch.testing.assert_close(reader.seen[taps[3]], x)  # the teacher's input
    assert not reader.seen[taps[1]].requires_grad  # the teacher runs without grad
    trainer.close()
    assert not student.features.stage2._forward_hooks  # hooks removed after training


def test_a_wrong_tap_names_the_network_and_lists_its_layers(digits: Dataset) -> None:
    reader = Reader(staged(digits), [Tap("teacher", "stage7")])
    with pytest.raises(ConfigError, match=r"teacher network .* has no layer 'stage7'; valid"):
        Trainer(staged(digits), [reader], TrainData(digits.train.x, digits.train.y, 10),
                TrainConfig(**CONFIG))
    lonely = Reader(staged(digits), [Tap("peer3", "stage1")])
    with pytest.raises(ConfigError, match="no network 'peer3'"):
        Trainer(staged(digits), [lonely], TrainData(digits.train.x, digits.train.y, 10),
                TrainConfig(**CONFIG))


# ---------------------------------------------------------------- phases and lr factors


class TwoPhases(Method):
    """Phase ``head`` trains the head on CE; phase ``body`` (run twice) trains the features."""

    name = "twophases"
    needs_labels = True

    def phases(self) -> list[Phase]:
        return [Phase("head", ("model.head",)), Phase("body", ("model.features",), repeat=2)]

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        return {out.phase: F.cross_entropy(out.logits, batch.y)}


def test_each_phase_steps_its_own_parameters_with_its_own_optimizer(digits: Dataset) -> None:
    model = tk.models.mlp(digits.input_shape, 10, widths=[8])
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    config = TrainConfig(**{**CONFIG, "steps_per_epoch": 3}, optim={"name": "adam"})
    trainer = Trainer(model, [TwoPhases()], TrainData(digits.train.x, digits.train.y, 10),
                      config)
    head, body = trainer.optimizers
    assert {id(p) for g in head.param_groups for p in g["params"]} == {
        id(p) for p in model.head.parameters()}
    assert {id(p) for g in body.param_groups for p in g["params"]} == {
        id(p) for p in model.features.parameters()}
    calls.clear()
    history = trainer.fit()
    assert len(calls) == 9  # 3 steps x (1 head pass + 2 body passes); no evaluation splits
    assert head.state[model.head.weight]["step"].item() == 3
    assert body.state[model.features[1].weight]["step"].item() == 6
    assert set(history[0]["train"]) == {"twophases.head", "twophases.body", "loss"}


def test_a_phase_that_trains_nothing_is_refused(digits: Dataset) -> None:
    class Empty(TwoPhases):
        def phases(self) -> list[Phase]:
            return [Phase("ghost", ("model.nothing",))]

    with pytest.raises(ConfigError, match=r"phase 'ghost' trains nothing.*model.nothing"):
        Trainer(tk.models.mlp(digits.input_shape, 10, widths=[8]), [Empty()],
                TrainData(digits.train.x, digits.train.y, 10), TrainConfig(**CONFIG))


def test_lr_factors_scale_the_named_layers(digits: Dataset) -> None:
    model = staged(digits)
    config = TrainConfig(**CONFIG, optim={"lr": 0.2, "lr_factors": {"stage1": 0.1, "head": 0}})
    trainer = Trainer(model, build_methods("supervised"),
                      TrainData(digits.train.x, digits.train.y, 10), config)
    stage1 = {id(p) for p in model.features.stage1.parameters()}
    head = {id(p) for p in model.head.parameters()}
    before = model.head.weight.detach().clone()
    trainer.fit()
    for group in trainer.optimizers[0].param_groups:
        ids = {id(p) for p in group["params"]}
        expected = 0.02 if ids <= stage1 else 0.0 if ids <= head else 0.2
        assert group["lr"] == pytest.approx(expected)
    assert torch.equal(model.head.weight, before)  # factor 0: frozen
    with pytest.raises(ConfigError, match="has no layer 'stage8'"):
        Trainer(model, build_methods("supervised"), TrainData(digits.train.x, digits.train.y,
                10), TrainConfig(**CONFIG, optim={"lr_factors": {"stage8": 0.5}}))


# ---------------------------------------------------------------- lists, options, needs


def test_method_lists_parse_route_options_and_check_needs() -> None:
    assert method_names("kd + fitnet") == ["kd", "fitnet"] == method_names(["kd", "fitnet"])
    for bad, message in (("kd+", "empty name"), ("kd+kd", "listed twice"),
                         ("kd+nope", "unknown method 'nope'"), (3, "must be a name")):
        with pytest.raises((ConfigError, tk.errors.UnknownNameError), match=message):
            method_names(bad)
    routed = route_options(["kd", "dkd"], {"temperature": 3, "dkd.beta": 2, "alpha": 0.5})
    assert routed == {"kd": {"temperature": 3, "alpha": 0.5},
                      "dkd": {"temperature": 3, "beta": 2, "alpha": 0.5}}
    with pytest.raises(ConfigError, match=r"option 'at.p' is for method 'at', which is not"):
        route_options(["kd"], {"at.p": 2})
    with pytest.raises(ConfigError, match=r"no method in kd\+fitnet has an option 'beta'"):
        route_options(["kd", "fitnet"], {"beta": 1})
    with pytest.raises(ConfigError, match="method 'fitnet' has no option 'p'"):
        route_options(["kd", "fitnet"], {"fitnet.p": 1})
    # from Python any keyword that is not a setting lands here: a misspelt setting is named
    for key, guess in (("epoch", "'epochs'"), ("learning_rate", "'lr'"), ("wd", "'weight_decay'"),
                       ("momentom", "'momentum'")):
        with pytest.raises(ConfigError, match=f"did you mean the training setting {guess}"):
            route_options(["dann"], {key: 1})
        with pytest.raises(ConfigError, match=f"did you mean the training setting {guess}"):
            route_options(["dann", "kd"], {key: 1})
    with pytest.raises(ConfigError) as info:  # a near miss of an option is no setting
        route_options(["dann"], {"trade_of": 1})
    assert "training setting" not in str(info.value)
    methods = build_methods("dann+kd", nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="adapt: method 'kd' needs teacher"):
        check_needs(methods, {"labels", "target"}, "adapt")
    with pytest.raises(ConfigError, match="train: method 'dann' needs target, which") as info:
        check_needs(methods, {"teacher", "labels"}, "train")
    assert "use adapt on a domain pair" in str(info.value)  # train cannot: the verb that can


def test_every_method_is_listed_with_its_paper(cli: CliRunner) -> None:
    code, out, _ = cli("list")
    assert code == 0
    for name in METHODS:
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        if name not in ("supervised", "l2"):
            assert "(" in line and any(c.isdigit() for c in line), line  # a paper and year


# ---------------------------------------------------------------- networks, generations


def test_dml_peers_are_evaluated_saved_and_reported(digits: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "dml"
    result = tk.train("mlp", digits, method="dml", model_options=TINY, out=out,
                      method_options={"peers": 2}, **FAST)
    assert set(result.summary["networks"]) == {"peer1", "peer2"}
    for name in ("peer1", "peer2"):
        peer = tk.load_model(out / f"{name}.pt")
        accuracy = tk.evaluate(peer, digits)["test"]["accuracy"]
        assert accuracy == pytest.approx(result.summary["networks"][name]["final"]["test"])
    assert set(result.history[-1]["peers"]) == {"peer1", "peer2"}


def test_born_again_generations_teach_each_other(
    digits: Dataset, trained_run: Path, tmp_path: Path, cli: CliRunner
) -> None:
    out = tmp_path / "ban"
    result = tk.distill(trained_run, "mlp", digits, student_options=TINY, generations=2,
                        out=out, **FAST)
    gens = result.summary["generations"]
    assert [g["generation"] for g in gens] == [1, 2] and result.run_dir == out / "gen2"
    second = yaml.safe_load((out / "gen2" / "config.yaml").read_text())
    assert second["teacher"]["source"] == str(out / "gen1")  # gen 1's student teaches gen 2
    assert json.loads((out / "summary.json").read_text())["generations"] == gens
    with pytest.raises(ConfigError, match="generations must be an integer >= 1"):
        tk.distill(trained_run, "mlp", digits, generations=0)
    code, stdout, _ = cli("distill", "--teacher", trained_run, "--model-opt", "widths=[8]",
                          "--generations", "2", "--epochs", "1", *CLI_FAST,
                          "--out", tmp_path / "cli")
    assert code == 0 and "generation 2: test accuracy" in stdout


def test_data_free_trains_on_synthesised_inputs_only(digits: Dataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = staged(digits, width=0.25)  # has BatchNorm statistics to invert
    options = {"n_synthetic": 48, "synth_steps": 3, "synth_batch": 32}
    out = tmp_path / "df"
    seen: list[Tensor] = []
    teacher.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    result = tk.distill(teacher, "mlp", digits, method="data-free", student_options=TINY,
                        method_options=options, out=out, **FAST)
    assert "synthesised from the teacher" in result.summary["training_data"]
    assert result.summary["method"] == "data-free" and "supervised" not in str(
        result.history[0]["train"])
    saved = torch.load(out / "transfer_set.pt", weights_only=True)
    assert saved["x"].shape == (48, 1, 8, 8)
    train_rows = {row.numpy().tobytes() for row in digits.train.x}
    assert not any(r.numpy().tobytes() in train_rows for batch in seen for r in batch)
    # a resume reads the same set back instead of synthesising another one
    again = tk.distill(teacher, "mlp", digits, method="data-free", student_options=TINY,
                       method_options=options, out=out, resume=True, **{**FAST, "epochs": 2})
    assert torch.equal(torch.load(out / "transfer_set.pt", weights_only=True)["x"], saved["x"])
    assert again.summary["epochs"] == 2
    # a second run into a directory in use is refused before it writes a transfer set
    busy = tmp_path / "busy"
    busy.mkdir()
    with RunLock(busy), pytest.raises(RunDirError, match="in use by another"):
        tk.distill(teacher, "mlp", digits, method="data-free", student_options=TINY,
                   method_options=options, out=busy, **FAST)
    assert not (busy / "transfer_set.pt").exists()


# ---------------------------------------------------------------- CLI and YAML


def test_cli_lists_options_and_ensembles(
    cli: CliRunner, trained_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kdfit"
    code, _, err = cli("distill", "--teacher", trained_run, "--model-opt", "widths=[8]",
                       "--method", "kd+l2", "--opt", "kd.temperature=3", "--opt", "ce_weight=0.5",
                       "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 0, err
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["method"] == "kd+l2" and record["methods"] == ["kd", "l2"]
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"kd", "kd.ce", "l2", "l2.ce"} <= set(row["train"])
    config = tmp_path / "run.yaml"
    config.write_text(f"method: [kd, l2]\nteacher_checkpoint: {trained_run}\n"
                      "model: {name: mlp, widths: [8]}\nepochs: 1\n")
    code, _, err = cli("distill", "--config", config, *CLI_FAST, "--out", tmp_path / "yaml")
    assert code == 0, err
    ens = tmp_path / "ens"
    code, _, err = cli("distill", "--teacher", trained_run, "--teacher", trained_run,
                       "--method", "ensemble", "--model-opt", "widths=[8]", "--epochs", "1",
                       *CLI_FAST, "--out", ens)
    assert code == 0, err
    teachers = yaml.safe_load((ens / "config.yaml").read_text())["teacher"]
    assert [t["source"] for t in teachers] == [str(trained_run)] * 2
    code, _, err = cli("distill", "--teacher", trained_run, "--teacher", trained_run,
                       "--method", "ensemble", "--opt", "weights=[0.3,0.7]", "--model-opt",
                       "widths=[8]", "--epochs", "1", *CLI_FAST, "--out", tmp_path / "w")
    assert code == 0, err  # checked against one stand-in per --teacher, not a single one
    assert yaml.safe_load((tmp_path / "w" / "config.yaml").read_text())["method_options"] == {
        "weights": [0.3, 0.7]}
    code, _, err = cli("distill", "--teacher", trained_run, "--teacher", "mlp", "--out",
                       tmp_path / "bad")
    assert code == 2 and "several teachers must each be a saved model.pt" in err


def test_augment_cifar_trains_and_refuses_a_cached_teacher(
    digits: Dataset, trained_run: Path
) -> None:
    result = tk.train("mlp", digits, model_options=TINY, augment="cifar", **FAST)
    assert result.history[-1]["train"]["supervised.ce"] > 0
    with pytest.raises(ConfigError, match="cannot be used with jitter or augment"):
        tk.distill(trained_run, "mlp", digits, student_options=TINY, augment="flip",
                   method_options={"cache_teacher": True}, **FAST)


def test_one_teacher_under_two_roles_runs_once_per_step(digits: Dataset) -> None:
    teacher = tk.models.mlp(digits.input_shape, 10, widths=[8])
    calls: list[int] = []
    methods = build_methods("kd+ensemble", [teacher])
    trainer = Trainer(tk.models.mlp(digits.input_shape, 10, widths=[8]), methods,
                      TrainData(digits.train.x, digits.train.y, 10), TrainConfig(**CONFIG))
    teacher.register_forward_hook(lambda *_: calls.append(1))  # after the shape probe
    trainer.fit()
    assert len(calls) == CONFIG["steps_per_epoch"]  # roles teacher and teacher1, one pass
    trainer.close()


def test_a_run_recorded_before_a_new_setting_still_resumes(
    digits: Dataset, tmp_path: Path
) -> None:
    out = tmp_path / "old"
    tk.train("mlp", digits, model_options=TINY, out=out, **FAST)
    # Make the record look as an older transferkit wrote it: without `augment` and `lr_factors`.
    record = yaml.safe_load((out / "config.yaml").read_text())
    del record["train"]["augment"], record["train"]["optim"]["lr_factors"]
    (out / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["config"]["augment"], state["config"]["optim"]["lr_factors"]
    torch.save(state, out / "checkpoint.pt")
    again = tk.train("mlp", digits, model_options=TINY, out=out, resume=True,
                     **{**FAST, "epochs": 2})
    assert again.summary["epochs"] == 2 and again.summary["resumed"]
    with pytest.raises(tk.errors.CheckpointError, match=r"settings differ \(train.augment\)"):
        tk.train("mlp", digits, model_options=TINY, out=out, resume=True, augment="flip",
                 **{**FAST, "epochs": 3})


def test_numbered_models_name_their_stages_and_feature_methods_find_them(
    digits: Dataset, tmp_path: Path
) -> None:
    cnn = build_model("small-cnn", digits.input_shape, 10, hidden=16)
    assert resolve_layer(cnn, "stage2") == "features.3"  # the second conv's ReLU: a map
    assert set(cnn.state_dict()) == set(build_model("small-cnn", (1, 8, 8), 10,
                                                    hidden=16).state_dict())
    teacher_run = tmp_path / "t"
    tk.train("small-cnn", digits, model_options={"hidden": 16}, out=teacher_run, **FAST)
    # a saved teacher keeps its stage names (rebuilt by its factory), and `at` reads every
    # stage of both networks by default
    result = tk.distill(teacher_run, "small-cnn", digits, method="at",
                        student_options={"hidden": 8}, **FAST)
    assert result.history[-1]["train"]["at"] >= 0
    with pytest.raises(ConfigError, match="has no layer 'stage3'; valid layers: stage1, stage2"):
        resolve_layer(cnn, "stage3")


def test_lr_factor_flag(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "frozen-head"
    code, _, err = cli("train", "--data", "digits", "--model-opt", "widths=[8]", "--epochs", "1",
                       "--lr-factor", "head=0", "--lr-factor", "features=0.5", "--lr", "0.1",
                       *CLI_FAST, "--out", out)
    assert code == 0, err
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["train"]["optim"]["lr_factors"] == {"head": 0, "features": 0.5}
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert sorted(g["lr"] for g in state["optimizer"][0]["param_groups"]) == [0.0, 0.05]
    code, _, err = cli("train", "--data", "digits", "--lr-factor", "nowhere=2", *CLI_FAST,
                       "--out", tmp_path / "bad")
    assert code == 2 and "has no layer 'nowhere'" in err


def test_data_free_refuses_an_absurd_transfer_set(trained_run: Path) -> None:
    with pytest.raises(ConfigError, match="n_synthetic must be at most 1,000,000"):
        build_methods("data-free", nn.Linear(2, 2), {"n_synthetic": 10**12})
