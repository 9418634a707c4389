"""Features that t-SNE cannot embed (every row alike: constant data, a dead ReLU layer; one
column; NaN), strict JSON (NaN written as null), and `inspect`'s --out and rows.

sklearn's t-SNE kills the whole process (a segmentation fault) on rows that are all the same,
so the commands that would crash run in a child process, and the guard itself is called
directly on such features (it refuses them before sklearn sees them)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from conftest import TINY, error_line, run_process
from transferkit.errors import ConfigError
from transferkit.files import json_text, save_json
from transferkit.report.adistance import feature_rows, proxy_a_distance
from transferkit.report.tsne import check_features, embed

RUN = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "progress": False, "device": "cpu"}
CLI = [sys.executable, "-m", "transferkit.cli"]


def write_csv(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    head = [f"f{i}" for i in range(x.shape[1])] + (["label"] if y is not None else [])
    lines = [",".join(head)]
    for i, row in enumerate(x):
        lines.append(",".join([f"{v:.4f}" for v in row] + ([str(y[i])] if y is not None else [])))
    path.write_text("\n".join(lines) + "\n")
    return path


def blobs(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 3
    x = np.eye(3, 4)[y] * 3 + np.random.default_rng(seed).normal(size=(n, 4)) + shift
    return x, y


def strict(text: str) -> object:
    """JSON as a strict reader (JavaScript's JSON.parse, jq) reads it: no NaN, no Infinity."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("degenerate")
    labels = np.arange(30) % 3
    found = {
        "const_src": write_csv(folder / "const_src.csv", np.ones((30, 4)), labels),
        "const_tgt": write_csv(folder / "const_tgt.csv", np.ones((30, 4)), labels),
        "src": write_csv(folder / "src.csv", *blobs(60, 0.0, 0)),
        "tgt": write_csv(folder / "tgt.csv", *blobs(40, 0.5, 1)),
        "tgt1": write_csv(folder / "tgt1_nolab.csv", blobs(1, 0.5, 2)[0]),
        "tgt5": write_csv(folder / "tgt5_nolab.csv", blobs(5, 0.5, 3)[0]),
    }
    x, y = blobs(8, 0.5, 4)
    found["npz"] = folder / "tgt_test_labelled.npz"  # unlabelled rows, labelled test rows
    np.savez(found["npz"], x=blobs(20, 0.5, 5)[0].astype(np.float32),
             x_test=x.astype(np.float32), y_test=y)
    return found


@pytest.fixture(scope="module")
def runs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run adapted on constant data (every feature row alike) and one on ordinary data."""
    folder = tmp_path_factory.mktemp("degenerate_runs")
    const = f"{files['const_src']}->{files['const_tgt']}"
    plain = f"{files['src']}->{files['tgt']}"
    tk.adapt("mlp", const, method="dann", model_options=TINY, out=folder / "const", **RUN)
    tk.adapt("mlp", plain, method="dann", model_options=TINY, out=folder / "plain", **RUN)
    return {"const": folder / "const", "plain": folder / "plain", "const_pair": Path(const),
            "plain_pair": Path(plain)}


def test_tsne_refuses_rows_that_are_all_the_same() -> None:
    for x, why in ((np.ones((20, 5)), "every feature row is the same"),
                   (np.zeros((20, 5)), "the feature layer is dead"),
                   # float32 rounding of one computation is no spread either
                   (np.ones((20, 5)) + 1e-7 * np.random.default_rng(0).normal(size=(20, 5)),
                    "every feature row is the same")):
        with pytest.raises(ConfigError, match=why) as caught:
            check_features(x)
        assert "--no-picture" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="every feature row is the same"):
        embed(torch.ones(10, 16), torch.ones(12, 16))  # refused before sklearn sees them
    with pytest.raises(ConfigError, match="rely on the A"):  # the caller's way round it
        check_features(np.ones((20, 5)), skip="rely on the A-distance")


def test_tsne_refuses_one_wide_non_finite_and_too_few_rows() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"at least 2 wide.*1 value per row.*--no-picture"):
        check_features(rng.normal(size=(20, 1)))
    for bad in (math.nan, math.inf, -math.inf):
        x = rng.normal(size=(20, 4))
        x[3, 2] = bad
        with pytest.raises(ConfigError, match=r"NaN or infinity.*--no-picture"):
            check_features(x)
    with pytest.raises(ConfigError, match=r"at least 5 feature rows.*test=all"):
        check_features(rng.normal(size=(4, 3)))
    with pytest.raises(ConfigError, match="N x D"):
        embed(torch.randn(10, 2, 3), torch.randn(10, 2, 3))
    with pytest.raises(ConfigError, match="differ in width"):
        embed(torch.randn(10, 3), torch.randn(10, 4))


def test_tsne_scales_tiny_and_huge_features_and_embeds_many_duplicates() -> None:
    rng = np.random.default_rng(0)
    for scale in (1e-30, 1e30):  # squared distances under- or overflow sklearn's float32
        x = check_features(rng.normal(size=(30, 4)) * scale + 5 * scale)
        assert np.isfinite(x).all() and np.abs(x).max() == pytest.approx(1.0)
    # most rows alike but not all: t-SNE draws them (a partly dead layer)
    source = torch.cat([torch.zeros(20, 6), torch.randn(3, 6)])
    target = torch.cat([torch.ones(20, 6), torch.randn(2, 6)])
    points, n_source = embed(source, target)
    assert points.shape == (45, 2) and n_source == 23 and np.isfinite(points).all()


def test_proxy_a_distance_of_alike_rows_and_of_few_rows() -> None:
    same = proxy_a_distance(torch.ones(30, 8), torch.ones(30, 8))
    assert same["a_distance"] == 0.0 and same["rows"] == 60 and isinstance(same["rows"], int)
    for n, seed in ((4, 41), (5, 41), (4, 0), (9, 0)):  # seed 41 draws one domain alone
        result = proxy_a_distance(torch.randn(n, 3), torch.randn(n, 3) + 5.0, seed)  # into
        assert result["a_distance"] == 2.0 and result["rows"] == 2 * n  # the training half
    with pytest.raises(ConfigError, match=r"N >= 4.*\(2, 512\).*--data-opt test=all"):
        proxy_a_distance(torch.randn(2, 512), torch.randn(10, 512))


def test_inspect_of_a_run_on_constant_data_is_one_line_not_a_crash(
        runs: dict[str, Path], sub_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "inspect"
    argv = [*CLI, "inspect", str(runs["const"]), "--data", str(runs["const_pair"]),
            "--device", "cpu", "--out", str(out)]
    proc = run_process(argv, sub_env, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # 139: segfault
    line = error_line(proc.stderr)
    assert "every feature row is the same" in line and "--no-picture" in line
    proc = run_process([*argv, "--no-picture"], sub_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = strict((out / "inspect.json").read_text())
    assert isinstance(saved, dict)
    assert saved["after"]["a_distance"] == 0.0 and saved["after"]["rows"] == 12
    assert isinstance(saved["after"]["rows"], int)


def test_report_notes_a_picture_it_cannot_draw_and_shows_the_other_runs(
        runs: dict[str, Path], sub_env: dict[str, str], tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    proc = run_process([*CLI, "report", str(runs["const"]), str(runs["plain"]), "--out",
                        str(page)], sub_env, cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    text = page.read_text()
    assert "no t-SNE picture: t-SNE cannot embed these features: every feature row is the " \
        "same" in text
    assert "--no-picture" not in text  # report has no such flag: it keeps the A-distance
    assert text.count("no t-SNE picture") == 1
    assert text.count("(domain classifier error") == 2  # both runs keep their A-distance
    assert 'alt="t-SNE of source and target features of plain"' in text
    assert "12 test rows of the source and 9 test rows of the target" in text


def test_json_writers_write_null_for_nan_and_infinity(tmp_path: Path) -> None:
    value = {"a": math.nan, "b": [math.inf, 1.5, (-math.inf, 2)], "c": {"d": np.float64("nan")},
             "e": "NaN", "f": 3}
    expected = {"a": None, "b": [None, 1.5, [None, 2]], "c": {"d": None}, "e": "NaN", "f": 3}
    save_json(value, tmp_path / "x.json")
    assert strict((tmp_path / "x.json").read_text()) == expected
    assert strict(json_text(value, indent=None)) == expected
    assert math.isnan(value["a"])  # the caller's object is left as it was


def test_summary_and_evaluate_json_hold_null_for_a_nan_validator(
        cli, files: dict[str, Path], tmp_path: Path) -> None:
    pair = f"{files['src']}->{files['tgt1']}"  # one target row: snd has no neighbours (NaN)
    run = tmp_path / "run"
    tk.adapt("mlp", pair, method="dann", model_options=TINY, out=run, select="dev", **RUN)
    summary = strict((run / "summary.json").read_text())
    assert isinstance(summary, dict) and summary["validators"]["snd"] is None
    code, out, err = cli("evaluate", str(run), "--data", pair, "--validators", "--json",
                         "--device", "cpu")
    assert code == 0, err
    scores = strict(out)
    assert isinstance(scores, dict) and scores["validators"]["snd"] is None


def test_inspect_out_empty_is_refused_and_rows_are_ints(
        cli, runs: dict[str, Path], tmp_path: Path) -> None:
    for empty in ("", "  "):
        code, _, err = cli("inspect", str(runs["plain"]), "--data", str(runs["plain_pair"]),
                           "--out", empty, "--no-picture", "--device", "cpu")
        assert code == 2 and "inspect --out is empty" in error_line(err)
    assert list(tmp_path.iterdir()) == []  # the cli fixture's working folder: nothing written
    assert not (runs["plain"] / "inspect").exists()
    code, _, err = cli("report", str(runs["plain"]), "--out", "")
    assert code == 2 and "report --out is empty" in error_line(err)
    report = tk.inspect(runs["plain"], str(runs["plain_pair"]), picture=False,
                        data_options={"test": "all"}, out=tmp_path / "all")
    assert report["after"]["rows"] == 80 and isinstance(report["after"]["rows"], int)


def test_feature_rows_say_which_rows_are_measured(files: dict[str, Path]) -> None:
    plain = f"{files['src']}->{files['tgt']}"
    assert feature_rows(tk.load_data(plain)) == {"source": "12 test rows",
                                                  "target": "9 test rows"}
    assert feature_rows(tk.load_data(plain, test="all")) == {
        "source": "all 60 rows (test=all)", "target": "all 40 rows (test=all)"}
    assert feature_rows(tk.load_data(f"{files['src']}->{files['tgt5']}"))["target"] == \
        "all 5 rows (no labels)"
    assert feature_rows(tk.load_data(f"{files['src']}->{files['npz']}"))["target"] == \
        "8 labelled test rows"
