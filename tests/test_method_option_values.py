"""Method options refuse values of the wrong kind or absurd size, in one line, at construction.

True/false options take real booleans only: ``bool('false')`` is True, so a quoted
``warmup='false'`` (or ``maybe``, ``no``, ``0.5``) used to switch the option on. Counts whose
huge values would hang a run or allocate absurd memory (MCD's ``num_k``, a discriminator's
width, DML's ``peers``, CRD's memory banks) are capped; the caps and the values up to them
are checked both ways.
"""

from __future__ import annotations

import inspect
import re

import pytest
from torch import nn

from transferkit.errors import ConfigError
from transferkit.methods import METHODS, build_method, build_methods, method_options

# Every true/false option of every method (cache_teacher, false/true/memory/disk, is not one).
FLAGS = [
    ("dann", "warmup"),
    ("cdan", "warmup"),
    ("cdan", "entropy"),
    ("cdan", "randomized"),
    ("cdan+e", "warmup"),
    ("cdan+e", "randomized"),
    ("mdd", "warmup"),
    ("dan", "linear"),
    ("jan", "linear"),
    ("shot", "freeze_head"),
    ("pseudo_label", "class_balance"),
    ("dml", "ce"),
    ("kd", "standardize"),
    ("dkd", "standardize"),
]

NOT_BOOLEANS = ["false", "true", "no", "maybe", "", 0, 1, 0.5, [True], {"x": 1}]


def teacher_for(name: str) -> nn.Module | None:
    params = inspect.signature(METHODS.get(name)).parameters
    return nn.Linear(4, 3) if "teacher" in params else None


def build(name: str, **options: object) -> nn.Module:
    return build_method(name, teacher_for(name), **options)


def refused(name: str, message: str, **options: object) -> str:
    with pytest.raises(ConfigError, match=message) as info:
        build(name, **options)
    text = str(info.value)
    assert "\n" not in text, text
    return text


def is_flag(annotation: object) -> bool:
    """``bool`` or ``bool | None`` (annotations are strings here: future annotations)."""
    parts = {p.strip() for p in str(annotation).split("|")}
    return "bool" in parts and parts <= {"bool", "None"}


def test_flag_list_is_complete() -> None:
    found = {(name, option) for name in METHODS
             for option, p in inspect.signature(METHODS.get(name)).parameters.items()
             if is_flag(p.annotation)}
    assert found == set(FLAGS)


@pytest.mark.parametrize(("name", "option"), FLAGS)
@pytest.mark.parametrize("value", NOT_BOOLEANS, ids=repr)
def test_flag_refuses_non_booleans(name: str, option: str, value: object) -> None:
    text = refused(name, f"^{re.escape(name)}: {option} must be true", **{option: value})
    assert f"got {value!r}" in text


@pytest.mark.parametrize(("name", "option"), FLAGS)
def test_flag_quoted_false_says_unquote(name: str, option: str) -> None:
    text = refused(name, "true or false, unquoted", **{option: "false"})
    assert text.startswith(f"{name}: {option} must be true") and "(a string" in text


@pytest.mark.parametrize(("name", "option"), FLAGS)
@pytest.mark.parametrize("value", [True, False])
def test_flag_takes_true_and_false(name: str, option: str, value: bool) -> None:
    method = build(name, **{option: value})
    if hasattr(method, option) and not callable(getattr(method, option)):
        assert getattr(method, option) is value


def test_flags_none_only_where_unset_means_something() -> None:
    assert build("cdan", randomized=None).randomized is None
    assert build("cdan+e").randomized is None
    refused("dann", r"^dann: warmup must be true or false, got None \(empty\)$", warmup=None)
    refused("cdan", "^cdan: randomized must be true, false or left unset", randomized="auto")


def test_flag_refused_through_options() -> None:
    """YAML ``method_options: {warmup: "no"}`` and ``--opt warmup='false'`` reach here."""
    assert "warmup" in method_options("dann")
    with pytest.raises(ConfigError, match=r"^dann: warmup must be true or false, got 'no'"):
        build_methods("supervised+dann", options={"warmup": "no"})
    with pytest.raises(ConfigError, match=r"^mdd: warmup must be true or false, got 'false'"):
        build_methods("mdd", options={"mdd.warmup": "false"})
    [method] = build_methods("dann", options={"warmup": False})
    assert method.warmup is False and method.coefficient(0.0) == method.trade_off


def test_flag_behaviour_kept() -> None:
    """The values that were valid still do what they did."""
    assert build("dann").warmup is True and build("mdd").warmup is True
    assert build("dan").linear is False and build("jan").linear is False
    assert build("shot").freeze_head is True
    assert build("shot", freeze_head=False).freeze_head is False
    assert build("cdan+e").entropy is True and build("cdan").entropy is False
    assert build("pseudo_label").class_balance is False


# (method, option, smallest, largest): the ends of the range, both taken.
CAPPED = [
    ("mcd", "num_k", 1, 100),
    ("shot", "rounds", 0, 100),
    ("fixmatch", "shift", 0, 256),
    ("cdan", "random_dim", 1, 16384),
    ("cdan+e", "random_dim", 1, 16384),
    ("dann", "hidden", 1, 16384),
    ("cdan", "hidden", 1, 16384),
    ("adda", "hidden", 1, 16384),
    ("mdd", "hidden", 1, 16384),
    # Distillation methods.
    ("dml", "peers", 1, 32),
    ("data-free", "synth_steps", 0, 100_000),
    ("cc", "embed_dim", 1, 16384),
    ("cc", "p_order", 1, 170),
    ("crd", "feat_dim", 1, 4096),
    ("crd", "nce_k", 1, 131072),
    ("vid", "hidden_channels", 1, 16384),
    ("reviewkd", "mid_channels", 1, 8192),
]


@pytest.mark.parametrize(("name", "option", "least", "most"), CAPPED)
def test_cap_takes_the_ends_of_the_range(name: str, option: str, least: int, most: int) -> None:
    for value in (least, most):
        build(name, **{option: value})


@pytest.mark.parametrize(("name", "option", "least", "most"), CAPPED)
@pytest.mark.parametrize("over", [1, 10**6, 10**9])
def test_cap_refuses_absurd_values(name: str, option: str, least: int, most: int,
                                   over: int) -> None:
    value = most + over
    text = refused(name, f"^{re.escape(name)}: {option} must be an integer from {least} to "
                         f"{most} \\(", **{option: value})
    assert text.endswith(f"got {value}")


@pytest.mark.parametrize(("name", "option", "least", "most"), CAPPED)
def test_cap_keeps_the_old_lower_bound(name: str, option: str, least: int, most: int) -> None:
    refused(name, f"{option} must be an integer >= {least}", **{option: least - 1})
    refused(name, f"{option} must be an integer", **{option: 2.5})


def test_mcd_num_k_default_and_value_kept() -> None:
    assert build("mcd").num_k == 4
    assert build("mcd", num_k=100).num_k == 100
    refused("mcd", r"^mcd: num_k must be an integer from 1 to 100 \(.*the paper uses 4",
            num_k=1000000)


def test_hidden_list_capped_per_layer() -> None:
    assert build("dann", hidden=[100, 16384]).hidden == (100, 16384)
    assert build("dann").hidden == (1024, 1024) and build("adda").hidden == (500, 500)
    refused("dann", "^dann: hidden must be an integer from 1 to 16384", hidden=[100, 16385])
    refused("adda", "^adda: hidden must be an integer from 1 to 16384", hidden=[16385])
    refused("cdan", "^cdan: hidden must be an integer from 1 to 16384", hidden=10**9)


def test_defaults_unchanged() -> None:
    assert build("shot").rounds == 1
    assert build("fixmatch").shift == 4
    assert build("cdan").random_dim == 1024
    assert build("mdd").hidden == 1024


# The reason each distillation cap gives, with the value the paper (or reference) uses.
CAP_REASONS = [
    ("dml", "peers", "the paper uses 1, at most 4"),
    ("data-free", "synth_steps", "the reference uses 2,000"),
    ("cc", "embed_dim", "RepDistiller's 128"),
    ("cc", "p_order", "the paper uses 2"),
    ("crd", "feat_dim", "the paper's 128"),
    ("crd", "nce_k", "the paper uses 16384"),
    ("vid", "hidden_channels", "widest teacher stage (2048)"),
    ("reviewkd", "mid_channels", "the paper's 512"),
]


@pytest.mark.parametrize(("name", "option", "reason"), CAP_REASONS)
def test_distillation_caps_say_why(name: str, option: str, reason: str) -> None:
    text = refused(name, f"^{re.escape(name)}: {option} must be an integer from ",
                   **{option: 10**9})
    assert reason in text and text.endswith("got 1000000000"), text


def test_data_free_n_synthetic_cap() -> None:
    """Capped before (at 1,000,000); the message now names the method and the range, and
    keeps the words "must be at most 1,000,000" that callers match."""
    for value in (1, 1_000_000):
        assert build("data-free", n_synthetic=value).n_synthetic == value
    for value in (1_000_001, 10**9):
        text = refused("data-free", r"^data-free: n_synthetic must be at most 1,000,000, an "
                       r"integer from 1 to 1000000 \(each input is optimised", n_synthetic=value)
        assert text.endswith(f"got {value}")
    refused("data-free", "n_synthetic must be an integer >= 1", n_synthetic=0)


def test_distillation_defaults_unchanged() -> None:
    assert build("dml").peers == 1
    free = build("data-free")
    assert (free.n_synthetic, free.synth_steps, free.synth_batch, free.jitter) == (2048, 500,
                                                                                  256, 1)
    assert (build("cc").embed_dim, build("cc").p_order) == (128, 2)
    assert (build("crd").feat_dim, build("crd").nce_k) == (128, 16384)
    assert build("vid").hidden_channels is None and build("reviewkd").mid_channels is None
    assert build("vid", hidden_channels=2048).hidden_channels == 2048
    assert build("reviewkd", mid_channels=512).mid_channels == 512


def test_harmless_large_values_stay_uncapped() -> None:
    """synth_batch is cut to what is left of n_synthetic (itself capped) and jitter rolls the
    image (an offset wraps around), so large values cost nothing and are still taken."""
    free = build("data-free", synth_batch=10**9, jitter=10**9)
    assert (free.synth_batch, free.jitter) == (10**9, 10**9)


# Temperatures and kernel widths: 1e300 overflowed (T**2) into a traceback, 1e-300 turned the
# logits into infinities and the run into NaN with a message that blamed the learning rate.
SCALES = [("kd", "temperature"), ("dkd", "temperature"), ("dist", "temperature"),
          ("dml", "temperature"), ("ensemble", "temperature"), ("data-free", "temperature"),
          ("mcc", "temperature"), ("crd", "nce_t"), ("cc", "gamma"), ("vid", "init_var")]


def _build(name: str, **options: object) -> object:
    teacher = nn.Linear(2, 2) if name not in ("mcc", "dml") else None
    return build_method(name, teacher, **options)


@pytest.mark.parametrize("name, option", SCALES)
def test_scales_refuse_overflowing_values_and_take_the_ends(name: str, option: str) -> None:
    from transferkit.methods.base import SCALE_RANGE

    for value in (1e300, 1e-300, SCALE_RANGE[1] * 1.01, SCALE_RANGE[0] * 0.99):
        with pytest.raises(ConfigError, match=option):
            _build(name, **{option: value})
    for value in SCALE_RANGE:
        assert getattr(_build(name, **{option: value}), option) == value


def test_a_prefixed_option_is_never_overridden_by_a_bare_one() -> None:
    for options in ({"dann.trade_off": 0.5, "trade_off": 2.0},
                    {"trade_off": 2.0, "dann.trade_off": 0.5}):
        dann, mcc = build_methods("dann+mcc", None, options)
        assert dann.trade_off == 0.5 and mcc.trade_off == 2.0  # the bare one: the others


def test_options_of_the_wrong_kind_are_one_line() -> None:
    import numpy as np

    from transferkit.api import split_settings

    for bad in ([("trade_off", 1)], "trade_off=1"):
        with pytest.raises(ConfigError, match="method_options must be a mapping"):
            split_settings({}, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="option names must be strings"):
        build_methods("dann", None, {1: 2})  # type: ignore[dict-item]
    _, options = split_settings({}, {"num_k": np.int64(3), "trade_off": np.float32(0.5),
                                     "kernel_multipliers": np.array([1.0, 2.0])})
    assert options == {"num_k": 3, "trade_off": 0.5, "kernel_multipliers": [1.0, 2.0]}
    assert type(options["num_k"]) is int
    assert build_method("mcd", None, num_k=np.int64(3)).num_k == 3
    for name, option in (("dan", "kernel_multipliers"), ("jan", "kernel_multipliers"),
                         ("jan", "prediction_multipliers")):
        for bad in (5, True, "abc", []):
            with pytest.raises(ConfigError, match=f"{name}: {option} must be a non-empty list"):
                build_method(name, None, **{option: bad})


def test_cdan_and_cdan_e_together_are_one_method_twice() -> None:
    from transferkit.methods import method_names

    for spec in ("cdan+e+cdan", "cdan+cdan+e"):
        with pytest.raises(ConfigError, match="lists cdan twice"):
            method_names(spec)
    assert method_names("dann+cdan+e") == ["dann", "cdan+e"]


@pytest.mark.parametrize("name, options", [
    ("dann", {"warmup": False, "warmup_steps": 500}), ("dann", {"warmup": False, "gamma": 3}),
    ("mdd", {"warmup": False, "gamma": 3}), ("cdan", {"randomized": False, "random_dim": 64}),
])
def test_an_option_another_turns_off_is_refused(name: str, options: dict) -> None:
    """It was accepted, recorded in config.yaml, and did nothing."""
    with pytest.raises(ConfigError, match=f"^{re.escape(name)}: .* turns off"):
        build_method(name, None, **options)
    flag = "randomized" if "randomized" in options else "warmup"
    build_method(name, None, **{flag: False})  # the switch alone is fine


def test_kd_weights_given_with_alpha_are_refused() -> None:
    teacher = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="kd_weight and ce_weight replace alpha"):
        build_method("kd", teacher, alpha=0.2, kd_weight=9, ce_weight=0.1)
    assert build_method("kd", teacher, kd_weight=9, ce_weight=0.1).soft_weight == 9


def test_fixmatch_shift_must_be_below_the_image_side() -> None:
    """shift=100 on 8x8 digits was accepted: every strong view could be blank."""
    import transferkit as tk

    settings = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 16, "progress": False,
                "device": "cpu"}
    with pytest.raises(ConfigError, match=r"shift=8 pixels is not below .* \(8x8\)"):
        tk.adapt("small-cnn", "digits->digits_shifted", method="fixmatch",
                 method_options={"shift": 8}, **settings)
    tk.adapt("small-cnn", "digits->digits_shifted", method="fixmatch",
             method_options={"shift": 7}, **settings)
