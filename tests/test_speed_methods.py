"""benchmarks/speed_methods.py runs end to end on a tiny budget and records what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_methods_smoke(tmp_path: Path) -> None:
    out = tmp_path / "speed_methods.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed_methods.py"), "--device", "cpu",
         "--threads", "1", "--steps", "1", "--rounds", "2", "--rows", "256",
         "--teacher-width", "0.0625", "--student-width", "0.0625",
         "--only", "supervised", "fitnet", "ensemble", "kd+fitnet+at+crd", "--out", str(out)],
        check=True, env=env, cwd=tmp_path, timeout=600,
    )
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert set(rows) == {"bare", "kd", "supervised", "fitnet", "ensemble (2 teachers)",
                         "ensemble (1 teacher twice)", "kd+fitnet+at+crd"}
    assert rows["supervised"]["methods"] == ["supervised"]
    assert rows["fitnet"]["methods"] == ["supervised", "fitnet"]  # as distill builds it
    assert rows["supervised"]["teacher_calls_per_step"] == {}
    assert rows["kd"]["ratio_to_kd"] == 1.0
    assert all(row["ms_per_step"] > 0 for row in rows.values())
    # One teacher forward per step, however many methods read it (probe not counted).
    assert result["teacher_calls_check"]["one_per_step"] is True
    assert rows["kd"]["teacher_calls_per_step"] == {"teacher": 1.0}
    assert rows["ensemble (1 teacher twice)"]["teacher_calls_per_step"] == {"teacher1": 1.0}
    assert rows["ensemble (2 teachers)"]["teacher_calls_per_step"] == {"teacher1": 1.0,
                                                                      "teacher2": 1.0}
    assert result["kd_vs_bare"]["ratio_median"] > 0
    assert result["settings"]["teacher"]["width"] == 0.0625
    assert result["data_free_synthesis"] is None  # not asked for
    assert result["errors"] == {}
    assert result["environment"]["threads"] == 1
