"""Which arithmetic a run uses: fp32, or bfloat16 autocast where the hardware does it natively.

bf16 autocast halves the bytes a matrix product moves, which pays where the hardware has bf16
matrix units: AMX or AVX-512 BF16 on a CPU, any CUDA GPU that reports bf16 (Ampere and
later). On an AVX2-only CPU bf16 is emulated, and the MNIST KD step measured 0.15x fp32's
speed (issue 9), so ``amp="auto"`` never picks it there. ``amp="bf16"`` is honoured
everywhere it can run, with a warning where it is emulated. The run records what was
picked and why (``summary.json``: ``precision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferkit.errors import ConfigError

AMP_CHOICES = ("off", "auto", "bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """``dtype`` None is fp32 (autocast off)."""

    requested: str
    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else "bf16"

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype or torch.bfloat16,
                              enabled=self.dtype is not None)

    def record(self) -> dict[str, str]:
        return {"requested": self.requested, "used": self.name, "reason": self.reason}


def _torch_flag(name: str) -> bool | None:
    """torch's own CPU feature probe (``torch.cpu._is_*_supported``), None when absent."""
    probe = getattr(torch.cpu, name, None)
    if probe is None:
        return None
    try:
        return bool(probe())
    except Exception:  # an old or unusual build: fall back to /proc/cpuinfo
        return None


def _cpuinfo_flags() -> set[str]:
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_bf16_units() -> str | None:
    """The CPU's native bf16 matrix unit (``AMX-BF16`` or ``AVX512-BF16``), None if it has none."""
    amx, avx512 = _torch_flag("_is_amx_tile_supported"), _torch_flag("_is_avx512_bf16_supported")
    if amx is None or avx512 is None:
        flags = _cpuinfo_flags()
        amx = "amx_bf16" in flags if amx is None else amx
        avx512 = "avx512_bf16" in flags if avx512 is None else avx512
    return "AMX-BF16" if amx else "AVX512-BF16" if avx512 else None


def _cpu_name() -> str:
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return f"this CPU ({capability})"


def normalize_amp(value: object) -> str:
    """``True`` (the old flag) is ``bf16``, ``False`` is ``off``; else one of AMP_CHOICES."""
    if value is True:
        return "bf16"
    if value is False or value is None:
        return "off"
    if isinstance(value, str) and value.strip().lower() in AMP_CHOICES:
        return value.strip().lower()
    raise ConfigError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {value!r}")


def choose_precision(amp: object, device: torch.device) -> Precision:
    """The precision for ``amp`` on ``device``, with the reason in words."""
    requested = normalize_amp(amp)
    if requested == "off":
        return Precision(requested, None, "fp32: amp is off")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(requested, torch.bfloat16,
                             "bf16 autocast: this GPU computes bf16 natively")
        if requested == "bf16":
            raise ConfigError("--amp bf16: this GPU has no bf16 support; use --amp off "
                              "(or --amp auto, which picks fp32 here)")
        return Precision(requested, None, "fp32: this GPU has no bf16 (fp16 would need loss "
                         "scaling, which transferkit does not do)")
    if device.type == "cpu":
        units = cpu_bf16_units()
        if units is not None:
            return Precision(requested, torch.bfloat16,
                             f"bf16 autocast: {_cpu_name()} has {units}")
        if requested == "bf16":
            return Precision(requested, torch.bfloat16, f"bf16 autocast as asked, but "
                             f"{_cpu_name()} has no AMX or AVX-512 BF16: bf16 is emulated and "
                             "several times slower than fp32 (--amp auto picks fp32 here)")
        return Precision(requested, None, f"fp32: {_cpu_name()} has no AMX or AVX-512 BF16, "
                         "so bf16 would be emulated and slower")
    if requested == "bf16":
        raise ConfigError(f"--amp bf16 is supported on CPU and CUDA, not on {device.type}; "
                          "use --amp off")
    return Precision(requested, None, f"fp32: no bf16 autocast on {device.type}")
