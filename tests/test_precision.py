"""``amp``: bf16 autocast only where the hardware computes bf16 natively; ``auto`` never picks
it on a CPU without AMX / AVX-512 BF16 (there it is emulated, several times slower)."""

from __future__ import annotations

import json

import pytest
import torch

import transferkit as tk
from conftest import FAST, TINY
from transferkit.config import TrainConfig
from transferkit.engine import precision
from transferkit.engine.precision import choose_precision, cpu_bf16_units
from transferkit.errors import ConfigError

CPU = torch.device("cpu")


def fake_cpu(monkeypatch: pytest.MonkeyPatch, amx: bool | None, avx512: bool | None,
             cpuinfo: str = "") -> None:
    """torch's probes answer ``amx``/``avx512`` (None: the probe is missing), and
    /proc/cpuinfo holds ``cpuinfo``'s flags."""
    for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: set(cpuinfo.split()))


@pytest.mark.parametrize(("amx", "avx512", "cpuinfo"), [
    (False, False, "avx2 fma"),
    (None, None, "avx2 fma avx512f"),  # AVX-512 without its BF16 extension
    (None, None, ""),
])
def test_auto_never_picks_bf16_without_native_support(monkeypatch, amx, avx512, cpuinfo) -> None:
    fake_cpu(monkeypatch, amx, avx512, cpuinfo)
    assert cpu_bf16_units() is None
    chosen = choose_precision("auto", CPU)
    assert chosen.dtype is None and chosen.name == "fp32"
    assert "no AMX or AVX-512 BF16" in chosen.reason
    # bf16 asked for explicitly is honoured, with the warning in the record
    forced = choose_precision("bf16", CPU)
    assert forced.dtype is torch.bfloat16 and "emulated" in forced.reason


@pytest.mark.parametrize(("amx", "avx512", "cpuinfo", "unit"), [
    (True, False, "", "AMX-BF16"),
    (False, True, "", "AVX512-BF16"),
    (None, None, "avx2 amx_bf16 amx_tile", "AMX-BF16"),
    (None, None, "avx2 avx512_bf16", "AVX512-BF16"),
])
def test_auto_picks_bf16_on_native_units(monkeypatch, amx, avx512, cpuinfo, unit) -> None:
    fake_cpu(monkeypatch, amx, avx512, cpuinfo)
    chosen = choose_precision("auto", CPU)
    assert chosen.dtype is torch.bfloat16 and unit in chosen.reason


def test_off_and_the_old_boolean() -> None:
    assert choose_precision("off", CPU).dtype is None
    assert TrainConfig(amp=True).amp == "bf16" and TrainConfig(amp=False).amp == "off"
    assert TrainConfig(amp="Auto").amp == "auto"
    with pytest.raises(ConfigError, match="amp"):
        tk.train("mlp", "digits", model_options=TINY, amp="fp8", **FAST)


def test_a_gpu_without_bf16_is_refused_bf16_and_auto_takes_fp32(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    assert choose_precision("auto", cuda).dtype is None
    with pytest.raises(ConfigError, match="no bf16 support"):
        choose_precision("bf16", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision("auto", cuda).dtype is torch.bfloat16


def test_the_run_records_what_it_picked_and_why(monkeypatch, tmp_path) -> None:
    fake_cpu(monkeypatch, False, False, "avx2")
    result = tk.train("mlp", "digits", model_options=TINY, amp="auto", out=tmp_path / "r",
                      **FAST)
    record = json.loads((tmp_path / "r" / "summary.json").read_text())["precision"]
    assert record == result.summary["precision"]
    assert record["requested"] == "auto" and record["used"] == "fp32"
    assert "no AMX or AVX-512 BF16" in record["reason"]


def test_bf16_autocast_runs_on_this_cpu_and_may_be_switched_at_resume(tmp_path) -> None:
    """Emulated or native, bf16 trains; a resume may change amp (like the device)."""
    run = tmp_path / "r"
    first = tk.train("mlp", "digits", model_options=TINY, amp="bf16", out=run, **FAST)
    assert first.summary["precision"]["used"] == "bf16"
    assert 0.0 <= first.summary["final"]["test"] <= 1.0
    again = tk.train("mlp", "digits", model_options=TINY, amp="off", out=run, resume=True,
                     **{**FAST, "epochs": 2})
    assert again.summary["precision"]["used"] == "fp32" and again.summary["resumed"]


def test_a_checkpoint_from_before_amp_was_resume_free_still_resumes(tmp_path) -> None:
    """Older checkpoints recorded ``amp: False`` among the binding settings; they resume."""
    run = tmp_path / "old"
    tk.train("mlp", "digits", model_options=TINY, out=run, **FAST)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert "amp" not in state["config"]
    state["config"]["amp"] = False  # what transferkit wrote before amp became resume-free
    torch.save(state, run / "checkpoint.pt")
    again = tk.train("mlp", "digits", model_options=TINY, out=run, resume=True,
                     **{**FAST, "epochs": 2})
    assert again.summary["resumed"] and again.summary["epochs"] == 2
    state["config"]["seed"] = 12345  # a binding setting still binds
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(tk.errors.CheckpointError, match=r"settings differ \(seed\)"):
        tk.train("mlp", "digits", model_options=TINY, out=run, resume=True,
                 **{**FAST, "epochs": 3})


def test_cli_amp_flag_spellings(cli, tmp_path) -> None:
    base = ["train", "--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]",
            "--epochs", "1", "--steps-per-epoch", "2", "--device", "cpu", "--no-progress"]
    for flag, used in ((["--amp"], "bf16"), (["--amp", "off"], "fp32")):
        out = tmp_path / "-".join(flag)
        code, _, err = cli(*base, *flag, "--out", out)
        assert code == 0, err
        assert json.loads((out / "summary.json").read_text())["precision"]["used"] == used
    code, _, err = cli(*base, "--amp", "fp8")
    assert code == 2 and "fp8" in err
