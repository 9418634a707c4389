"""The CIFAR architectures of the distillation tables (transferkit.models.cifar)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.models import MODELS, Classifier, build_model, count_parameters

NAMES = [
    "resnet8x4",
    "resnet32x4",
    "resnet20",
    "resnet56",
    "wrn_16_2",
    "wrn_40_2",
    "vgg8",
    "vgg13",
    "mobilenetv2",
]

# Published sizes (CRD / RepDistiller tables, 3x32x32 inputs, 100 classes), in millions.
PUBLISHED_M = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "resnet20": 0.28,
    "resnet56": 0.86,
    "wrn_16_2": 0.70,
    "wrn_40_2": 2.25,
    "vgg8": 3.96,
    "vgg13": 9.46,
    "mobilenetv2": 0.81,
}

# What this build gives (same setting); pinned so that an accidental change shows up.
MEASURED = {
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "resnet20": 278_324,
    "resnet56": 861_620,
    "wrn_16_2": 703_284,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,
}

_RESNET_X4 = [(64, 32), (128, 16), (256, 8)]
_RESNET = [(16, 32), (32, 16), (64, 8)]
_WRN = [(32, 32), (64, 16), (128, 8)]
_VGG = [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)]
# (channels, side) of features.stage1..N on 32x32 inputs
STAGES_32 = {
    "resnet8x4": _RESNET_X4,
    "resnet32x4": _RESNET_X4,
    "resnet20": _RESNET,
    "resnet56": _RESNET,
    "wrn_16_2": _WRN,
    "wrn_40_2": _WRN,
    "vgg8": _VGG,
    "vgg13": _VGG,
    "mobilenetv2": [(12, 16), (16, 8), (48, 4), (160, 2)],
}
# sides of features.stage1..N on 28x28 inputs (the channels are as for 32x32)
SIDES_28 = {
    "resnet8x4": [28, 14, 7],
    "resnet32x4": [28, 14, 7],
    "resnet20": [28, 14, 7],
    "resnet56": [28, 14, 7],
    "wrn_16_2": [28, 14, 7],
    "wrn_40_2": [28, 14, 7],
    "vgg8": [28, 14, 7, 4, 4],
    "vgg13": [28, 14, 7, 4, 4],
    "mobilenetv2": [14, 7, 4, 2],
}
FEATURE_DIM = {
    "resnet8x4": 256,
    "resnet32x4": 256,
    "resnet20": 64,
    "resnet56": 64,
    "wrn_16_2": 128,
    "wrn_40_2": 128,
    "vgg8": 512,
    "vgg13": 512,
    "mobilenetv2": 1280,
}


def _stage_outputs(model: nn.Module, x: Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of each named child of ``model.features`` for input ``x``."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, key=name: shapes.__setitem__(key, tuple(out.shape))
        )
        for name, module in model.features.named_children()
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_all_cifar_models_are_registered_with_a_description() -> None:
    described = MODELS.describe()
    for name in NAMES:
        assert name in MODELS
        assert "20" in described[name] and len(described[name]) <= 100  # names the paper year


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("shape", "classes"), [((3, 32, 32), 100), ((1, 28, 28), 10), ((1, 8, 8), 10)]
)
def test_models_give_logits(name: str, shape: tuple[int, int, int], classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, classes)
    assert isinstance(model, Classifier)
    assert model.feature_dim == FEATURE_DIM[name] and model.num_classes == classes
    x = torch.randn(2, *shape)
    logits, feats = model.forward_with_features(x)
    assert logits.shape == (2, classes)
    assert feats.shape == (2, FEATURE_DIM[name])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_the_published_tables(name: str) -> None:
    params = count_parameters(build_model(name, (3, 32, 32), 100))
    assert params == MEASURED[name]
    assert abs(params / (PUBLISHED_M[name] * 1e6) - 1) <= 0.03


@pytest.mark.parametrize("name", NAMES)
def test_named_stages_and_their_shapes(name: str) -> None:
    stages = STAGES_32[name]
    model = build_model(name, (3, 32, 32), 100)
    children = [child for child, _ in model.features.named_children()]
    expected = ["stem", *(f"stage{k}" for k in range(1, len(stages) + 1)), "pool"]
    assert children == expected
    paths = [path for path, _ in model.named_modules()]
    for short in [*expected, "head"]:
        # the engine resolves a short name to the one path that ends with it
        matches = [p for p in paths if p == short or p.endswith("." + short)]
        assert matches == [short if short == "head" else f"features.{short}"]
    shapes = _stage_outputs(model.eval(), torch.randn(2, 3, 32, 32))
    for k, (channels, side) in enumerate(stages, start=1):
        assert shapes[f"stage{k}"] == (2, channels, side, side)
    assert shapes["pool"] == (2, FEATURE_DIM[name])

    model28 = build_model(name, (1, 28, 28), 10)
    shapes28 = _stage_outputs(model28.eval(), torch.randn(2, 1, 28, 28))
    for k, ((channels, _), side) in enumerate(zip(stages, SIDES_28[name], strict=True), 1):
        assert shapes28[f"stage{k}"] == (2, channels, side, side)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (3, 16, 16), 5)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 3])
    nn.functional.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_a_one_pixel_input_still_runs(name: str) -> None:
    model = build_model(name, (2, 1, 1), 3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 2, 1, 1)).shape == (2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=r"no option 'depth'.*valid options: .*width"):
        build_model(name, (3, 32, 32), 10, depth=3)


@pytest.mark.parametrize("bad", [0, -1.0, "2", True, float("nan")])
@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2", "vgg8", "mobilenetv2"])
def test_bad_width_is_a_config_error(name: str, bad: object) -> None:
    with pytest.raises(ConfigError, match="width must be a number > 0"):
        build_model(name, (3, 32, 32), 10, width=bad)


def test_other_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs images shaped C x H x W"):
        build_model("resnet20", (784,), 10)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("vgg8", (3, 32, 32), 0)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("wrn_16_2", (3, 32, 32), 10, dropout=1.5)
    with pytest.raises(ConfigError, match="stem_stride must be 1 or 2"):
        build_model("mobilenetv2", (3, 32, 32), 10, stem_stride=3)
    with pytest.raises(ConfigError, match="expansion must be a positive int"):
        build_model("mobilenetv2", (3, 32, 32), 10, expansion=0)


@pytest.mark.parametrize("name", NAMES)
def test_width_option_changes_the_size(name: str) -> None:
    default = build_model(name, (3, 32, 32), 10)
    half = build_model(name, (3, 32, 32), 10, width=0.25)
    assert count_parameters(half) < count_parameters(default)
    if name != "mobilenetv2":  # its last 1x1 conv stays 1280 wide for width <= 1
        assert half.feature_dim == FEATURE_DIM[name] // 4
    wide = build_model(name, (3, 32, 32), 10, width=2)
    assert count_parameters(wide) > count_parameters(default)


def test_resnet8x4_width_half_halves_the_channels() -> None:
    model = build_model("resnet8x4", (3, 32, 32), 10, width=0.5)
    shapes = _stage_outputs(model.eval(), torch.randn(2, 3, 32, 32))
    assert [shapes[f"stage{k}"][1] for k in (1, 2, 3)] == [32, 64, 128]
    assert model.feature_dim == 128


def test_wrn_dropout_option() -> None:
    plain = build_model("wrn_16_2", (3, 32, 32), 10)
    dropped = build_model("wrn_16_2", (3, 32, 32), 10, dropout=0.3)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    drops = [m for m in dropped.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 6 and all(d.p == 0.3 for d in drops)  # one per block
    assert count_parameters(plain) == count_parameters(dropped)


def test_vgg_pools_before_stage5_only_for_large_inputs() -> None:
    model = build_model("vgg8", (3, 64, 64), 10)
    shapes = _stage_outputs(model.eval(), torch.randn(2, 3, 64, 64))
    assert [shapes[f"stage{k}"][-1] for k in range(1, 6)] == [64, 32, 16, 8, 4]


def test_mobilenetv2_stem_stride_option() -> None:
    model = build_model("mobilenetv2", (3, 32, 32), 10, stem_stride=1)
    shapes = _stage_outputs(model.eval(), torch.randn(2, 3, 32, 32))
    assert shapes["stem"] == (2, 16, 32, 32)
    assert [shapes[f"stage{k}"][-1] for k in range(1, 5)] == [32, 16, 8, 4]
    default = build_model("mobilenetv2", (3, 32, 32), 10)
    assert count_parameters(model) == count_parameters(default)


def test_resnet_shortcuts_follow_the_shape_changes() -> None:
    def shortcuts(name: str) -> list[str]:
        model = build_model(name, (3, 32, 32), 100)
        return [
            path
            for path, module in model.named_modules()
            if path.endswith(".shortcut") and not isinstance(module, nn.Identity)
        ]

    # resnet20: 16 -> 16 keeps the identity; 16 -> 32 and 32 -> 64 (stride 2) project
    assert shortcuts("resnet20") == ["features.stage2.0.shortcut", "features.stage3.0.shortcut"]
    # resnet8x4: the 32-channel stem feeds a 64-channel stage1, so that block projects too
    assert shortcuts("resnet8x4") == [f"features.stage{k}.0.shortcut" for k in (1, 2, 3)]


def test_initialisation() -> None:
    torch.manual_seed(0)
    model = build_model("vgg8", (3, 32, 32), 10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            assert torch.all(module.bias == 0)
    conv = model.features.stage4[1]
    assert isinstance(conv, nn.Conv2d)
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5  # kaiming normal, fan-out
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
