"""Registry models, the feature tap and external model loading."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.errors import CheckpointError, ConfigError, TransferkitError, UnknownNameError
from transferkit.models import (
    MODELS,
    Classifier,
    FeatureTap,
    build_model,
    count_parameters,
    load_factory,
    load_torchscript,
)

SHAPES = {
    "mlp": [(1, 28, 28), (3, 32, 32), (1, 8, 8), (64,)],
    "lenet": [(1, 28, 28), (3, 32, 32)],
    "small-cnn": [(1, 28, 28), (3, 32, 32), (1, 8, 8)],
    "seed-cnn": [(1, 28, 28), (3, 32, 32), (1, 8, 8)],
    "seed-mlp": [(1, 28, 28), (3, 32, 32), (1, 8, 8), (64,)],
}


def test_every_registered_model_is_covered() -> None:
    from test_cifar_models import NAMES as CIFAR_MODELS  # the CIFAR zoo has its own tests

    assert set(MODELS) == set(SHAPES) | set(CIFAR_MODELS)


@pytest.mark.parametrize(
    ("name", "shape"), [(n, s) for n, shapes in SHAPES.items() for s in shapes]
)
def test_models_give_logits(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    assert isinstance(model, Classifier)
    x = torch.randn(3, *shape)
    logits = model(x)
    assert logits.shape == (3, 7)
    feats = model.features(x)
    assert feats.shape == (3, model.feature_dim)
    assert model.head.in_features == model.feature_dim and model.head.out_features == 7
    model.eval()
    logits, feats = model.forward_with_features(x)
    torch.testing.assert_close(logits, model.head(feats))


def test_seed_cnn_structure_and_parameter_count() -> None:
    model = build_model("seed-cnn", (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    dense = [m for m in model.features.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(22 * 22 * 64, 512)]
    assert (model.head.in_features, model.head.out_features) == (512, 10)
    conv1 = 1 * 3 * 3 * 32 + 32  # 320
    conv2 = 32 * 3 * 3 * 64 + 64  # 18496
    conv3 = 64 * 3 * 3 * 64 + 64  # 36928
    fc = 22 * 22 * 64 * 512 + 512  # 15860224
    head = 512 * 10 + 10  # 5130
    assert (conv1, conv2, conv3, fc, head) == (320, 18496, 36928, 15860224, 5130)
    assert count_parameters(model) == conv1 + conv2 + conv3 + fc + head == 15921098


def test_seed_mlp_structure_and_parameter_count() -> None:
    model = build_model("seed-mlp", (1, 28, 28), 10)
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(784, 512), (512, 10)]
    assert count_parameters(model) == 784 * 512 + 512 + 512 * 10 + 10 == 407050
    model.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 0


def test_lenet_flatten_and_small_input() -> None:
    model = build_model("lenet", (1, 28, 28), 10)
    first_linear = next(m for m in model.features.modules() if isinstance(m, nn.Linear))
    assert (first_linear.in_features, first_linear.out_features) == (800, 500)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (50, (5, 5))]
    assert any(isinstance(m, nn.Dropout2d) for m in model.modules())
    assert model.feature_dim == 500
    rgb = build_model("lenet", (3, 32, 32), 10)
    assert next(m for m in rgb.features.modules() if isinstance(m, nn.Linear)).in_features == 1250
    with pytest.raises(ConfigError, match=r"1x8x8.*small-cnn"):
        build_model("lenet", (1, 8, 8), 10)


def test_lenet_bottleneck() -> None:
    model = build_model("lenet", (1, 28, 28), 10, bottleneck=256)
    assert model.feature_dim == 256
    assert isinstance(model.features[-2], nn.BatchNorm1d)
    assert (model.features[-3].in_features, model.features[-3].out_features) == (500, 256)
    plain = build_model("lenet", (1, 28, 28), 10)
    # 500*256 + 256 (fc) + 2*256 (BN) more, and a head of 256*10+10 instead of 500*10+10
    extra = 500 * 256 + 256 + 2 * 256 + (256 * 10 + 10) - (500 * 10 + 10)
    assert count_parameters(model) - count_parameters(plain) == extra
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    for bad in (-1, 2.5, "x"):
        with pytest.raises(ConfigError, match="bottleneck"):
            build_model("lenet", (1, 28, 28), 10, bottleneck=bad)


def test_lenet_bottleneck_dropout() -> None:
    """TLlib's AFN classifier: Dropout(p) after the bottleneck's ReLU, only in training."""
    model = build_model("lenet", (1, 28, 28), 10, bottleneck=64, bottleneck_dropout=0.5)
    assert isinstance(model.features[-1], nn.Dropout) and model.features[-1].p == 0.5
    assert isinstance(model.features[-2], nn.ReLU) and model.feature_dim == 64
    plain = build_model("lenet", (1, 28, 28), 10, bottleneck=64)
    assert count_parameters(model) == count_parameters(plain)  # dropout adds no weights
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(0)
    model.train()
    features = model.features(x)
    dropped = (features == 0).float().mean().item()
    model.eval()
    kept = (model.features(x) == 0).float().mean().item()
    assert dropped > kept  # training zeroes about half of the units on top of the ReLU's
    with pytest.raises(ConfigError, match="set bottleneck too"):
        build_model("lenet", (1, 28, 28), 10, bottleneck_dropout=0.5)
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ConfigError, match="bottleneck_dropout"):
            build_model("lenet", (1, 28, 28), 10, bottleneck=64, bottleneck_dropout=bad)


def test_lenet_multi_layer_head() -> None:
    """``head_hidden``: fc -> BN -> ReLU per width, then fc(classes); features stay the head's
    input, so every feature method reads the same 256-d vector."""
    model = build_model("lenet", (1, 28, 28), 10, bottleneck=256, head_hidden=[64, 32])
    assert (model.feature_dim, model.num_classes) == (256, 10)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 64), (64, 32), (32, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.head) == 2
    logits, feats = model.forward_with_features(torch.zeros(3, 1, 28, 28))
    assert logits.shape == (3, 10) and feats.shape == (3, 256)
    plain = build_model("lenet", (1, 28, 28), 10, bottleneck=256, head_hidden=[])
    assert isinstance(plain.head, nn.Linear)
    for bad in ([0], ["x"], "wide", [2.5]):
        with pytest.raises(ConfigError, match="head_hidden"):
            build_model("lenet", (1, 28, 28), 10, head_hidden=bad)
    with pytest.raises(TypeError, match="head must be"):
        Classifier(nn.Identity(), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))


def test_mlp_options() -> None:
    teacher = build_model(
        "mlp", (1, 28, 28), 10, widths=(1200, 1200), dropout=0.5, input_dropout=0.2
    )
    dense = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
    assert [d.out_features for d in dense] == [1200, 1200, 10]
    drops = [m.p for m in teacher.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.2, 0.5, 0.5]
    student = build_model("mlp", (1, 28, 28), 10, widths=[800, 800])
    assert [m.out_features for m in student.modules() if isinstance(m, nn.Linear)] == [800, 800, 10]
    assert not any(isinstance(m, nn.Dropout) for m in student.modules())
    linear = build_model("mlp", (5,), 3, widths=())
    assert linear.feature_dim == 5


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet-9000", (1, 28, 28), 10)
    for name in SHAPES:
        assert name in str(info.value)


def test_bad_options_and_shapes() -> None:
    with pytest.raises(ConfigError, match=r"'width'.*dropout, input_dropout, widths"):
        build_model("mlp", (1, 28, 28), 10, width=3)
    with pytest.raises(ConfigError, match="no options"):
        build_model("seed-cnn", (1, 28, 28), 10, hidden=3)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("mlp", (4,), 2, dropout=1.5)
    with pytest.raises(ConfigError, match="widths"):
        build_model("mlp", (4,), 2, widths=[0])
    with pytest.raises(ConfigError, match="C x H x W"):
        build_model("small-cnn", (64,), 10)
    with pytest.raises(ConfigError, match="6x6"):
        build_model("seed-cnn", (1, 6, 6), 10)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", (4,), 0)
    with pytest.raises(ConfigError, match="input_shape"):
        build_model("mlp", (4, 0), 3)


# ---------------------------------------------------------------- FeatureTap


def test_feature_tap_captures_head_input() -> None:
    model = build_model("small-cnn", (1, 8, 8), 4).eval()
    x = torch.randn(5, 1, 8, 8)
    with FeatureTap(model) as tap:
        assert tap.layer == "head"
        model(x)
        assert tap.value is not None
        torch.testing.assert_close(tap.value, model.features(x))
        assert tap.value.requires_grad  # still on the graph for adaptation losses
    assert not tap.active
    tap.value = None
    model(x)
    assert tap.value is None


def test_feature_tap_named_layer_and_last_linear() -> None:
    model = build_model("seed-cnn", (1, 8, 8), 3)
    tap = FeatureTap(model, "features.6", detach=True)  # the Flatten after the third conv
    model(torch.randn(2, 1, 8, 8))
    assert tap.value is not None and tap.value.shape == (2, 64 * 2 * 2)
    assert not tap.value.requires_grad
    tap.remove()
    tap.remove()

    plain = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 2)
    )
    with FeatureTap(plain) as tap:
        assert tap.layer == "4"
        plain(torch.randn(3, 1, 4, 4))
        assert tap.value is not None and tap.value.shape == (3, 5)


def test_feature_tap_errors() -> None:
    model = build_model("mlp", (4,), 2)
    with pytest.raises(ConfigError, match=r"no layer 'nope'.*features"):
        FeatureTap(model, "nope")
    with pytest.raises(ConfigError, match="no 'head'"):
        FeatureTap(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))


# ---------------------------------------------------------------- external models


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"tk_user_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build(input_shape, num_classes):
                return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes))

            def sized(input_shape, num_classes, hidden=4):
                layers = [nn.Linear(input_shape[0], hidden), nn.Linear(hidden, num_classes)]
                return nn.Sequential(*layers)

            def fixed():
                return nn.Linear(4, 2)

            def loose(**kwargs):
                return nn.Linear(kwargs["input_shape"][0], kwargs["num_classes"])

            def not_a_module():
                return 42

            def needs_more(depth):
                return nn.Linear(1, 1)

            def broken():
                raise RuntimeError("boom")

            instance = nn.Linear(2, 2)
            VALUE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_load_factory(user_module: str) -> None:
    model = load_factory(f"{user_module}:build", (1, 6), 3)
    assert model(torch.randn(2, 1, 6)).shape == (2, 3)
    assert isinstance(load_factory(f"{user_module}:fixed"), nn.Linear)
    assert isinstance(load_factory(f"{user_module}:fixed", (1, 6), 3), nn.Linear)
    assert load_factory(f"{user_module}:loose", (4,), 2).out_features == 2
    assert isinstance(load_factory(f"{user_module}:instance"), nn.Linear)
    assert isinstance(load_factory("torch.nn:Identity"), nn.Identity)
    sized = load_factory(f"{user_module}:sized", (3,), 2, hidden=6)
    assert sized[0].out_features == 6 and sized[1].out_features == 2


def test_load_factory_errors(user_module: str) -> None:
    with pytest.raises(ConfigError, match=r"package\.module:factory"):
        load_factory("no_colon_here")
    with pytest.raises(TransferkitError, match="PYTHONPATH"):
        load_factory("tk_surely_missing_module:build")
    with pytest.raises(TransferkitError, match="no attribute 'nothing'"):
        load_factory(f"{user_module}:nothing")
    with pytest.raises(TransferkitError, match=r"not a torch\.nn\.Module"):
        load_factory(f"{user_module}:not_a_module")
    with pytest.raises(TransferkitError, match="not a callable"):
        load_factory(f"{user_module}:VALUE")
    with pytest.raises(TransferkitError, match="needs input_shape"):
        load_factory(f"{user_module}:build")
    with pytest.raises(TransferkitError, match="cannot be called"):
        load_factory(f"{user_module}:needs_more", (1,), 2)
    with pytest.raises(ConfigError, match=r"no option 'depth'.*hidden"):
        load_factory(f"{user_module}:sized", (3,), 2, depth=2)
    with pytest.raises(ConfigError, match="no options"):
        load_factory(f"{user_module}:instance", hidden=2)
    with pytest.raises(TransferkitError, match="RuntimeError: boom"):
        load_factory(f"{user_module}:broken")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_load_torchscript(tmp_path: Path) -> None:
    model = build_model("mlp", (4,), 3, widths=(8,)).eval()
    path = tmp_path / "teacher.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = load_torchscript(path)
    x = torch.randn(2, 4)
    torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training
    assert count_parameters(loaded, trainable_only=True) == 0
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torchscript(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        load_torchscript(junk)
    with pytest.raises(ConfigError, match="TorchScript"):
        FeatureTap(loaded)


def test_eval_mode_gives_each_submodule_its_own_mode_back() -> None:
    from transferkit.models.base import eval_mode

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    model[1].eval()  # a frozen BatchNorm inside a model in train mode
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("the block fails")
    assert [m.training for m in model.modules()] == [True, True, False, True]
