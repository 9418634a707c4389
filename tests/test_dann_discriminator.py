"""The domain discriminator's size is an option: ``hidden`` widths, or the user's own module.

``dann`` (and ``cdan``, ``cdan+e``, ``adda``, which build the same network) take ``hidden``
as one width (two layers of it, as before) or a list, and ``discriminator`` as a module
(Python) or ``package.module:factory`` (CLI), checked at setup to give N x 1 logits.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY, CliRunner
from transferkit.errors import ConfigError
from transferkit.losses import DomainDiscriminator
from transferkit.methods import build_methods
from transferkit.methods.base import TrainInfo

PAIR = "digits->digits_shifted"
FEATURES = 16  # mlp widths [16]: the feature vector the discriminator sees


def linear_widths(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def adapt(method: str = "dann", out: Path | None = None, epochs: int = 1,
          **options) -> tk.RunResult:
    return tk.adapt("mlp", PAIR, method=method, model_options=TINY, method_options=options,
                    out=out, **{**FAST, "epochs": epochs})


@pytest.mark.parametrize(("hidden", "widths"), [
    (1024, [(8, 1024), (1024, 1024), (1024, 1)]),  # an int: two layers, as before
    (32, [(8, 32), (32, 32), (32, 1)]),
    ([100], [(8, 100), (100, 1)]),  # Ganin & Lempitsky's digits discriminator
    ([256, 256], [(8, 256), (256, 256), (256, 1)]),
    ((64, 32, 16), [(8, 64), (64, 32), (32, 16), (16, 1)]),
])
def test_hidden_gives_the_layer_widths(hidden, widths) -> None:
    disc = DomainDiscriminator(8, hidden=hidden)
    assert linear_widths(disc) == widths
    assert sum(isinstance(m, nn.BatchNorm1d) for m in disc.modules()) == len(widths) - 1
    assert disc(torch.randn(5, 8)).shape == (5,)
    (dann,) = build_methods("dann", None, {"hidden": hidden})
    dann.setup(TrainInfo(num_classes=10, feature_dim=8))
    assert linear_widths(dann.discriminator) == widths


def test_the_default_is_unchanged() -> None:
    (dann,) = build_methods("dann")
    dann.setup(TrainInfo(num_classes=10, feature_dim=8))
    assert isinstance(dann.discriminator, DomainDiscriminator)
    assert {k: tuple(v.shape) for k, v in dann.discriminator.state_dict().items()
            if k.endswith("weight")} == {"net.0.weight": (1024, 8), "net.1.weight": (1024,),
                                         "net.3.weight": (1024, 1024), "net.4.weight": (1024,),
                                         "net.6.weight": (1, 1024)}


@pytest.mark.parametrize("hidden", [0, -3, [], [0], [100, 0], "100", 1.5, [1.5], True, None])
def test_bad_hidden_is_refused_in_one_line(hidden) -> None:
    with pytest.raises(ConfigError, match="hidden must be an integer >= 1"):
        build_methods("dann", None, {"hidden": hidden})


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan+e", "adda"])
def test_every_discriminator_method_takes_a_list(name: str) -> None:
    assert adapt(name, epochs=2, hidden=[12]).history  # trains end to end (adda: 2 stages)
    (method,) = build_methods(name, None, {"hidden": [12]})
    student = tk.models.mlp((1, 8, 8), 10, widths=[8])
    method.setup(TrainInfo(num_classes=10, feature_dim=8, student=student, feature_layer="head",
                           epochs=2))
    assert len(linear_widths(method.discriminator)) == 2
    assert linear_widths(method.discriminator)[-1] == (12, 1)


def test_a_module_given_in_python_is_trained_and_named_in_the_record(tmp_path: Path) -> None:
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Linear(FEATURES, 4), nn.ReLU(), nn.Linear(4, 1))  # N x 1 logits
    before = [p.detach().clone() for p in disc.parameters()]
    result = adapt(out=tmp_path / "run", discriminator=disc)
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters(), strict=True))
    assert result.history[-1]["train"]["dann.domain"] > 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["method_options"] == {"discriminator": "module Sequential (from Python)"}


@pytest.mark.parametrize("name", ["dann", "adda"])
def test_a_given_module_is_registered_once(name: str) -> None:
    disc = nn.Linear(8, 1)
    (method,) = build_methods(name, None, {"discriminator": disc})
    assert not list(method.parameters())  # not trained (nor saved) before setup places it
    method.setup(TrainInfo(num_classes=10, feature_dim=8, student=tk.models.mlp(
        (1, 8, 8), 10, widths=[8]), feature_layer="head", epochs=2))
    assert method.discriminator is disc
    assert {k for k in method.state_dict() if not k.startswith("source_encoder.")} == {
        "discriminator.weight", "discriminator.bias"}


FACTORY = '''
from torch import nn


def small(in_features):
    return nn.Sequential(nn.Linear(in_features, 6), nn.ReLU(), nn.Linear(6, 1))


def two_logits(in_features):
    return nn.Linear(in_features, 2)


def broken(in_features):
    raise ValueError("no such size")


def not_a_module(in_features):
    return 3


INSTANCE = nn.Linear(16, 1)
'''


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``tk_disc_factories`` on sys.path (and PYTHONPATH) with discriminators."""
    (tmp_path / "tk_disc_factories.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tk_disc_factories", raising=False)
    return "tk_disc_factories"


def test_a_factory_path_gets_the_feature_size(factories: str) -> None:
    (dann,) = build_methods("dann", None, {"discriminator": f"{factories}:small"})
    dann.setup(TrainInfo(num_classes=10, feature_dim=8))
    assert linear_widths(dann.discriminator) == [(8, 6), (6, 1)]
    assert adapt(discriminator=f"{factories}:INSTANCE").history[-1]["train"]["dann.domain"] > 0


def test_the_cli_takes_a_factory_path(cli: CliRunner, factories: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli("adapt", "--model", "mlp", "--model-opt", "widths=[16]", "--data", PAIR,
                       "--method", "dann", "--opt", f"discriminator={factories}:small",
                       "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 0, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method_options"] == {"discriminator": f"{factories}:small"}
    code, _, err = cli("adapt", "--model", "mlp", "--model-opt", "widths=[16]", "--data", PAIR,
                       "--method", "dann", "--opt", f"discriminator={factories}:two_logits",
                       "--epochs", "1", *CLI_FAST, "--out", tmp_path / "bad")
    assert code != 0
    assert err.strip().splitlines() == [
        "transferkit: error: dann: the discriminator must map N x 16 features to N x 1 domain "
        "logits; it gives (2, 2) for (2, 16)"]


@pytest.mark.parametrize(("given", "match"), [
    (nn.Linear(FEATURES, 2), r"must map N x 16 features to N x 1 domain logits; it gives "
                             r"\(2, 2\) for \(2, 16\)"),
    (nn.Linear(7, 1), r"cannot take features of shape \(2, 16\)"),
    (nn.Identity(), r"it gives \(2, 16\) for \(2, 16\)"),
    (":two_logits", r"it gives \(2, 2\)"),
    (":broken", r"discriminator factory '.*:broken' raised ValueError: no such size \(it is "
                r"called with the feature size, 16\)"),
    (":not_a_module", "gave a int, not a torch.nn.Module"),
    (":missing", "has no attribute 'missing'"),
])
def test_a_bad_module_is_refused_at_setup(factories: str, given, match: str) -> None:
    if isinstance(given, str):
        given = factories + given
    with pytest.raises(tk.errors.TransferkitError, match=match):
        adapt(discriminator=given)


@pytest.mark.parametrize("given", [5, "no_colon", "a:b:c", ":x", "mod:", ["a:b"]])
def test_a_bad_discriminator_value_is_refused_when_built(given) -> None:
    with pytest.raises(ConfigError, match=r"discriminator must be a torch\.nn\.Module or "
                                          r"'package\.module:factory'"):
        build_methods("dann", None, {"discriminator": given})


def test_cdan_checks_against_its_own_input_width() -> None:
    """CDAN's discriminator sees f x g (or its randomized map), not the features."""
    (cdan,) = build_methods("cdan", None, {"discriminator": nn.Linear(8 * 10, 1)})
    cdan.setup(TrainInfo(num_classes=10, feature_dim=8))
    (cdan,) = build_methods("cdan", None, {"discriminator": nn.Linear(8, 1)})
    with pytest.raises(ConfigError, match=r"cannot take features of shape \(2, 80\)"):
        cdan.setup(TrainInfo(num_classes=10, feature_dim=8))
