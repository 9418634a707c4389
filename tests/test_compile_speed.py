"""benchmarks/compile_speed.py runs end to end on a tiny budget and records its rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compile_speed_smoke(tmp_path: Path) -> None:
    out = tmp_path / "compile_speed.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compile_speed.py"), "--device", "cpu",
         "--threads", "1", "--steps", "1", "--rounds", "1", "--amps", "off", "--kinds", "dann",
         "--backend", "aot_eager", "--out", str(out)],
        check=True, env=env, cwd=tmp_path, timeout=600,
    )
    result = json.loads(out.read_text())
    rows = result["rows"]["dann"]
    # no CUDA graphs row on a CPU
    assert list(rows) == ["bare fp32", "transferkit eager fp32", "transferkit compiled fp32"]
    assert rows["bare fp32"]["speed_vs_bare_fp32"] == 1.0
    assert rows["transferkit compiled fp32"]["compile"]["used"] == "aot_eager"
    assert rows["transferkit compiled fp32"]["compile"]["graphs"] == 1
    assert rows["transferkit eager fp32"]["compile"]["used"] == "eager"
    for row in rows.values():
        assert row["samples_per_s"] > 0
        assert abs(row["samples_per_s"] * row["ms_per_step"] / 1000 - 128) < 1
