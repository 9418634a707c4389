"""The benchmark grids' results files: a row cut off by a kill is dropped, not fatal, and
the next row is not glued to it; any other damage stops with the file and line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from _common import append  # noqa: E402
from _rows import done, read_rows  # noqa: E402


def test_a_row_cut_off_mid_write_is_dropped_and_the_next_append_stays_whole(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "grid.jsonl"
    append(path, {"pair": "a->b", "method": "dann", "seed": 0})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"pair": "a->b", "method": "dan", "se')  # kill -9 mid-write
    assert read_rows(path) == [{"pair": "a->b", "method": "dann", "seed": 0}]
    assert "grid.jsonl:2: a row cut off" in capsys.readouterr().err
    assert done(path, "method", "seed") == {("dann", 0)}  # the cut row reruns
    append(path, {"pair": "a->b", "method": "dan", "seed": 0})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["method"] for line in lines] == ["dann", "dan"]


def test_a_damaged_row_inside_the_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "grid.jsonl"
    path.write_text('{"seed": 0}\nnot json\n{"seed": 1}\n')
    with pytest.raises(SystemExit, match=r"grid\.jsonl:2: not a JSON row"):
        read_rows(path)
    assert read_rows(tmp_path / "absent.jsonl") == []
