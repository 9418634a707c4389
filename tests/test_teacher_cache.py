"""``cache_teacher="disk"``: teacher logits kept on disk across runs (methods/teacher_cache.py).

A hit gives the run the in-run cache gives, bit for bit; the key follows the teacher's
weights, its modules, the input conversion and the rows; a bad file is ignored with a note
and rewritten; an old file is not even opened once the teacher changes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY, CliRunner
from transferkit.data import Dataset, DomainPair, InputConverted, InputSpec
from transferkit.data.teacher_input import TeacherInput, TeacherInputConverted
from transferkit.errors import ConfigError
from transferkit.methods import build_methods
from transferkit.methods.teacher_cache import (
    FOLDER,
    TeacherOutputCache,
    default_dir,
    key_record,
    record_key,
)
from transferkit.models import mlp

CPU = torch.device("cpu")
RUN = {**FAST, "epochs": 2}


def teacher_for(data: Dataset, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return mlp(data.input_shape, 10, widths=[8])


def distill(teacher: nn.Module, data: Any, cache: bool | str, folder: Path | None = None,
            **options: Any) -> tk.RunResult:
    if folder is not None:
        options["teacher_cache_dir"] = str(folder)
    return tk.distill(teacher, "mlp", data, method="kd", student_options=TINY,
                      cache_teacher=cache, **options, **RUN)


def status(result: tk.RunResult, rows: str = "source") -> str:
    return result.summary["teacher_cache"]["kd"][rows]["status"]


def cache_file(result: tk.RunResult, rows: str = "source") -> Path:
    return Path(result.summary["teacher_cache"]["kd"][rows]["file"])


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def key_of(teacher: nn.Module, x: Tensor) -> str:
    return record_key(key_record(teacher, x, CPU))


# ---------------------------------------------------------------- hit and miss


def test_a_hit_trains_the_student_the_in_run_cache_trains(digits: Dataset, tmp_path: Path,
                                                          capsys) -> None:
    teacher = teacher_for(digits)
    memory = distill(teacher, digits, True)
    miss = distill(teacher, digits, "disk", tmp_path)
    assert status(miss) == "written" and cache_file(miss).parent == tmp_path
    assert "wrote the teacher's logits on 1347 rows" in capsys.readouterr().err
    hit = distill(teacher, digits, "disk", tmp_path)
    assert status(hit) == "hit" and cache_file(hit) == cache_file(miss)
    assert "read the teacher's logits on 1347 rows" in capsys.readouterr().err
    # bit for bit: the file holds the very logits the in-run cache computes (never downcast)
    assert same_weights(hit.model, memory.model) and same_weights(miss.model, memory.model)
    assert [r["train"] for r in hit.history] == [r["train"] for r in memory.history]
    assert "teacher_cache" not in memory.summary
    # and the live teacher: the same run up to float rounding (batch size vs chunks of rows)
    live = distill(teacher, digits, False)
    for a, b in zip(live.history, hit.history, strict=True):
        assert b["train"] == pytest.approx(a["train"], rel=1e-5, abs=1e-7)


def test_the_file_holds_the_key_and_float32_logits(digits: Dataset, tmp_path: Path) -> None:
    teacher = teacher_for(digits)
    result = distill(teacher, digits, "disk", tmp_path)
    stored = torch.load(cache_file(result), weights_only=True)
    assert stored["key"] == key_of(teacher, digits.train.x)
    assert cache_file(result).name == f"logits-{stored['key']}.pt"
    assert stored["logits"].dtype == torch.float32 and stored["logits"].shape == (1347, 10)
    with torch.no_grad():
        assert torch.equal(stored["logits"], teacher.eval()(digits.train.x))


def test_target_and_both_rows_get_their_own_files(digits_pair: DomainPair,
                                                  tmp_path: Path) -> None:
    teacher = teacher_for(digits_pair.source)
    runs = [tk.distill(teacher, "mlp", digits_pair, method="dann+kd", student_options=TINY,
                       cache_teacher="disk", teacher_cache_dir=str(tmp_path), inputs="both",
                       **RUN) for _ in range(2)]
    first, second = (r.summary["teacher_cache"]["kd"] for r in runs)
    assert (first["source"]["status"], first["target"]["status"]) == ("written", "written")
    assert (second["source"]["status"], second["target"]["status"]) == ("hit", "hit")
    assert first["source"]["file"] != first["target"]["file"]
    assert len(list(tmp_path.glob("logits-*.pt"))) == 2
    assert same_weights(runs[0].model, runs[1].model)


def test_the_cli_turns_it_on_with_an_option(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    teacher = tmp_path / "teacher"
    assert cli("train", "--model", "mlp", "--model-opt", "widths=[8]", "--data", "digits",
               "--epochs", "1", *CLI_FAST, "--out", teacher)[0] == 0
    for expected in ("written", "hit"):
        out = tmp_path / expected
        code, _, err = cli("distill", "--teacher", teacher, "--data", "digits",
                           "--model-opt", "widths=[8]", "--method", "kd", "--opt",
                           "cache_teacher=disk", "--opt", f"teacher_cache_dir={folder}",
                           "--epochs", "1", *CLI_FAST, "--out", out)
        assert code == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["teacher_cache"]["kd"]["source"]["status"] == expected
    assert len(list(folder.glob("logits-*.pt"))) == 1


def test_the_default_folder_is_beside_the_datasets(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_dir() == tmp_path / "transferkit" / FOLDER
    assert TeacherOutputCache().folder == default_dir()
    assert TeacherOutputCache("~/x").folder == Path.home() / "x"


# ---------------------------------------------------------------- the key


def test_the_key_follows_weights_rows_and_input_conversion(digits: Dataset) -> None:
    teacher, x = teacher_for(digits), digits.train.x
    base = key_of(teacher, x)
    assert key_of(teacher, x.clone()) == base  # the same bytes, another tensor
    assert key_of(teacher_for(digits, seed=1), x) != base  # other weights
    other = x.clone()
    other[5, 0, 0, 0] += 1e-3
    assert key_of(teacher, other) != base  # one value of one row
    assert key_of(teacher, x[:-1]) != base  # one row fewer
    assert key_of(teacher, x.double()) != base  # other dtype
    swapped = mlp(digits.input_shape, 10, widths=[8])
    swapped.load_state_dict(teacher.state_dict())
    assert key_of(swapped, x) == base
    swapped.features[-1] = nn.Tanh()  # same weights, another activation
    assert key_of(swapped, x) != base
    spec = InputSpec(0.5, 0.5, digits.input_shape)
    half = InputConverted(teacher, InputSpec(), spec)
    assert key_of(half, x) != base  # the weights digest is the teacher's own...
    assert key_of(InputConverted(teacher, InputSpec(), InputSpec(0.2, 0.5)), x) != key_of(half, x)
    given = TeacherInputConverted(teacher, TeacherInput((0.1,), (0.3,)), InputSpec(), (1, 8, 8))
    other_given = TeacherInputConverted(teacher, TeacherInput((0.2,), (0.3,)), InputSpec(),
                                        (1, 8, 8))
    other_data = TeacherInputConverted(teacher, TeacherInput((0.1,), (0.3,)),
                                       InputSpec(0.5, 0.5), (1, 8, 8))
    keys = {key_of(m, x) for m in (given, other_given, other_data)}
    assert len(keys) == 3 and base not in keys


def test_another_teacher_never_opens_the_old_file(digits: Dataset, tmp_path: Path,
                                                  monkeypatch) -> None:
    teacher = teacher_for(digits)
    old = cache_file(distill(teacher, digits, "disk", tmp_path))
    with torch.no_grad():
        teacher.head.weight[0, 0] += 1.0
    opened: list[str] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: (opened.append(str(f)),
                                                            load(f, *a, **k))[1])
    new = distill(teacher, digits, "disk", tmp_path)
    assert status(new) == "written" and cache_file(new) != old
    assert str(old) not in opened
    assert old.is_file()  # left alone
    assert status(distill(teacher, digits, "disk", tmp_path)) == "hit"
    assert str(cache_file(new)) in opened and str(old) not in opened


# ---------------------------------------------------------------- bad files


def _corrupt(path: Path, how: str, teacher: nn.Module, x: Tensor) -> None:
    good = torch.load(path, weights_only=True)
    if how == "garbage":
        path.write_bytes(b"not a torch file")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other key":  # another key's file under this name
        torch.save({**good, "key": "0" * 64}, path)
    elif how == "fewer rows":
        logits = good["logits"][:-1]
        torch.save({**good, "logits": logits, "shape": list(logits.shape)}, path)
    elif how == "float16":
        logits = good["logits"].half()
        torch.save({**good, "logits": logits}, path)
    elif how == "changed values":  # a flipped value the checksum catches
        logits = good["logits"].clone()
        logits[3, 3] += 1.0
        torch.save({**good, "logits": logits}, path)
    elif how == "not a dict":
        torch.save([good["logits"]], path)


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "other key", "fewer rows",
                                 "float16", "changed values", "not a dict"])
def test_a_bad_file_is_ignored_and_rewritten(digits: Dataset, tmp_path: Path, capsys,
                                             how: str) -> None:
    teacher = teacher_for(digits)
    first = distill(teacher, digits, "disk", tmp_path)
    path = cache_file(first)
    _corrupt(path, how, teacher, digits.train.x)
    capsys.readouterr()
    again = distill(teacher, digits, "disk", tmp_path)
    info = again.summary["teacher_cache"]["kd"]["source"]
    assert info["status"] == "written" and info["ignored"]
    err = capsys.readouterr().err
    assert f"teacher cache: ignored {path}: {info['ignored']}; recomputing it" in err
    assert same_weights(again.model, first.model)  # never trusted: the numbers are unchanged
    assert status(distill(teacher, digits, "disk", tmp_path)) == "hit"  # rewritten whole


class Scaled(nn.Module):
    """A teacher whose output depends on a plain attribute (not a weight, not in repr)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.factor = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.factor


def test_a_forward_that_changed_is_caught_on_sample_rows(digits: Dataset,
                                                         tmp_path: Path) -> None:
    teacher = Scaled(teacher_for(digits))
    first = distill(teacher, digits, "disk", tmp_path)
    teacher.factor = 2.0  # same weights, same modules: the same key
    second = distill(teacher, digits, "disk", tmp_path)
    info = second.summary["teacher_cache"]["kd"]["source"]
    assert info["file"] == str(cache_file(first))
    assert info["status"] == "written" and "differ" in info["ignored"]
    assert same_weights(second.model, distill(teacher, digits, True).model)


# ---------------------------------------------------------------- limits and refusals


def test_above_the_size_limit_the_run_keeps_its_memory_cache(digits: Dataset, tmp_path: Path,
                                                             capsys) -> None:
    teacher = teacher_for(digits)
    result = distill(teacher, digits, "disk", tmp_path, teacher_cache_max_gb=1e-6)
    assert status(result) == "computed (not written: above teacher_cache_max_gb)"
    assert "above the 1e-06 GiB limit" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pt"))
    assert same_weights(result.model, distill(teacher, digits, True).model)


def test_a_folder_it_cannot_write_leaves_the_run_going(digits: Dataset, tmp_path: Path,
                                                       capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = distill(teacher_for(digits), digits, "disk", blocker / "cache")
    assert status(result) == "computed (not written: the write failed)"
    assert "teacher cache: not written: cannot write" in capsys.readouterr().err


def test_concurrent_writers_of_one_key_leave_one_whole_file(digits: Dataset,
                                                            tmp_path: Path) -> None:
    teacher, x = teacher_for(digits).eval(), digits.train.x
    cache = TeacherOutputCache(tmp_path)
    with torch.no_grad():
        logits = teacher(x)
    record = key_record(teacher, x, CPU)
    key = record_key(record)
    threads = [threading.Thread(target=cache._write, args=(cache.path(key), key, record, logits))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.name for p in tmp_path.iterdir()] == [f"logits-{key}.pt"]  # no temporary left
    found, why = cache._read(cache.path(key), key, x, lambda rows: teacher(rows).detach())
    assert why == "" and found is not None and torch.equal(found, logits)


def test_jitter_is_still_refused(digits: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be used with jitter or augment"):
        tk.distill(teacher_for(digits), "mlp", digits, method="kd", student_options=TINY,
                   cache_teacher="disk", teacher_cache_dir=str(tmp_path), jitter=1, **FAST)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("options", "match"), [
    ({"cache_teacher": "yes"}, "cache_teacher must be false, true .* or disk"),
    ({"cache_teacher": 1}, "cache_teacher must be"),
    ({"teacher_cache_dir": "/tmp/x"}, "apply to cache_teacher=disk"),
    ({"cache_teacher": True, "teacher_cache_max_gb": 1}, "apply to cache_teacher=disk"),
    ({"cache_teacher": "disk", "teacher_cache_dir": ""}, "teacher_cache_dir must be a folder"),
    ({"cache_teacher": "disk", "teacher_cache_max_gb": 0}, "teacher_cache_max_gb must be"),
])
def test_bad_options_are_refused_in_one_line(digits: Dataset, options: dict,
                                             match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_methods("kd", teacher_for(digits), options)


@pytest.mark.parametrize("name", ["l2", "dkd", "dist"])
def test_every_cached_teacher_method_takes_the_disk(digits: Dataset, tmp_path: Path,
                                                    name: str) -> None:
    (method,) = build_methods(name, teacher_for(digits),
                              {"cache_teacher": "disk", "teacher_cache_dir": str(tmp_path)})
    assert method.cache_mode == "disk" and method.disk_cache is not None
    assert method.disk_cache.folder == tmp_path


def test_temporaries_of_killed_writers_are_removed_after_a_day(tmp_path: Path) -> None:
    """A writer killed mid-write leaves ``.logits-<key>.pt.<random>.tmp``; the next write into
    the folder removes those older than a day and keeps a younger one (maybe a live writer)."""
    import os
    import time

    from transferkit.methods.teacher_cache import STALE_SECONDS, remove_stale_temporaries

    old = tmp_path / ".logits-abc.pt.x1.tmp"
    young = tmp_path / ".logits-def.pt.x2.tmp"
    kept = tmp_path / "logits-abc.pt"
    for path in (old, young, kept):
        path.write_bytes(b"partial")
    now = time.time()
    os.utime(old, (now - STALE_SECONDS - 60, now - STALE_SECONDS - 60))
    os.utime(kept, (now - 10 * STALE_SECONDS, now - 10 * STALE_SECONDS))
    assert remove_stale_temporaries(tmp_path, now) == 1
    assert not old.exists() and young.exists() and kept.exists()
