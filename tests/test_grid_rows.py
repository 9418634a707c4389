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


def test_parallel_rows_run_at_most_n_at_once_and_wait_for_what_they_need(tmp_path) -> None:
    from _parallel import Job, run_jobs

    def job(name: str, seconds: float, code: int = 0, after: str | None = None) -> Job:
        script = (f"import time, pathlib; p = pathlib.Path({str(tmp_path)!r}); "
                  f"(p / '{name}.start').write_text(repr(time.time())); time.sleep({seconds}); "
                  f"(p / '{name}.end').write_text(repr(time.time())); raise SystemExit({code})")
        return Job(name, [sys.executable, "-c", script], after)

    jobs = [job("a", 0.6), job("b", 0.6), job("c", 0.1, code=3), job("d", 0.1, after="a"),
            job("e", 0.1, after="c")]
    failed = run_jobs(jobs, workers=2, threads=1, poll=0.05, log=lambda line: None)
    assert failed == ["c", "e"]  # c exited 3; e needed c, so it never started
    assert not (tmp_path / "e.start").exists()
    spans = {p.stem: (float(p.read_text()), float((tmp_path / f"{p.stem}.end").read_text()))
             for p in tmp_path.glob("*.start")}
    assert spans["d"][0] >= spans["a"][1]  # d waited for a
    moments = sorted(t for span in spans.values() for t in span)
    assert max(sum(s <= m < e for s, e in spans.values()) for m in moments) <= 2


def test_the_digits_grid_schedules_source_only_then_mcd_and_free_rows_after_their_model(
    monkeypatch,
) -> None:
    import argparse

    import adapt_table

    captured = {}
    monkeypatch.setattr(adapt_table, "run_jobs",
                        lambda jobs, workers, threads: captured.update(jobs=jobs) or [])
    args = argparse.Namespace(device="cpu", steps=8, free_steps=4, evals=2, runs="r", out=None,
                              data_dir=None, pairs="a->b", seeds="0,1", jobs=2,
                              threads_per_job=1)
    names = ["dann", "tent", "mcd", "source-only"]
    adapt_table.schedule(args, names, seen={("a->b", "source-only", 1)})
    order = [job.name for job in captured["jobs"]]
    assert order == ["a->b seed 0 source-only", "a->b seed 0 mcd", "a->b seed 1 mcd",
                     "a->b seed 0 dann", "a->b seed 1 dann", "a->b seed 0 tent",
                     "a->b seed 1 tent"]
    after = {job.name: job.after for job in captured["jobs"]}
    assert after["a->b seed 0 tent"] == "a->b seed 0 source-only"
    assert after["a->b seed 1 tent"] == "a->b seed 1 source-only"  # done: starts at once
    assert after["a->b seed 0 dann"] is None
