"""What a user sees of an adaptation: proxy A-distance and the t-SNE picture, before and
after, from the API and ``transferkit inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import transferkit as tk
from conftest import TINY
from transferkit.errors import ConfigError
from transferkit.report import proxy_a_distance

PAIR = "digits->digits_shifted"
RUN = {"epochs": 2, "steps_per_epoch": 6, "batch_size": 32, "progress": False, "device": "cpu"}
PNG = b"\x89PNG\r\n\x1a\n"


def test_proxy_a_distance_is_two_for_separable_domains_and_small_for_one_domain() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 5, generator=gen)
    same = proxy_a_distance(a[:200], a[200:])
    apart = proxy_a_distance(a[:200], a[200:] + 10.0)
    assert apart["a_distance"] == 2.0 and apart["domain_error"] == 0.0
    assert same["a_distance"] < 0.4
    # d_A = 2 (1 - 2 e) from the reported error, for a partly separable pair
    mid = proxy_a_distance(a[:200], a[200:] + 0.8)
    assert mid["a_distance"] == pytest.approx(2 * (1 - 2 * mid["domain_error"]))
    assert same["a_distance"] < mid["a_distance"] < 2.0
    with pytest.raises(ConfigError, match="width"):
        proxy_a_distance(a[:10, :3], a[:10])
    with pytest.raises(ConfigError, match="N >= 4"):
        proxy_a_distance(a[:2], a[:10])


def test_inspect_before_and_after_adaptation(tmp_path: Path) -> None:
    source_only = tmp_path / "source"
    tk.adapt("mlp", PAIR, method="supervised", model_options=TINY, out=source_only, **RUN)
    adapted = tmp_path / "dann"
    tk.adapt(source_only, PAIR, method="dann", out=adapted, **RUN)
    report = tk.inspect(adapted, PAIR)  # "before": the saved model the run started from
    assert Path(report["before"]["model"]).resolve() == source_only.resolve()
    for when in ("before", "after"):
        assert 0.0 <= report[when]["a_distance"] <= 2.0
        assert Path(report[when]["picture"]).read_bytes()[:8] == PNG
    saved = json.loads((adapted / "inspect" / "inspect.json").read_text())
    assert saved["after"]["a_distance"] == report["after"]["a_distance"]
    alone = tk.inspect(source_only, PAIR, picture=False, out=tmp_path / "x")
    assert "not available" in alone["before"] and "picture" not in alone["after"]
    assert alone["after"]["a_distance"] == pytest.approx(report["before"]["a_distance"])
    with pytest.raises(ConfigError, match="pair"):
        tk.inspect(adapted, "digits")


def test_cli_inspect_prints_both(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    tk.adapt("mlp", PAIR, method="dann", model_options=TINY, out=run, **RUN)
    before = tmp_path / "before"
    tk.adapt("mlp", PAIR, method="supervised", model_options=TINY, out=before, **RUN)
    code, out, err = cli("inspect", str(run), "--data", PAIR, "--before", str(before),
                         "--no-picture", "--device", "cpu")
    assert code == 0, err
    assert "before: proxy A-distance" in out and "after: proxy A-distance" in out
    assert not (run / "inspect" / "tsne_after.png").exists()


def test_evaluate_validators_match_the_runs_last_epoch(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = tk.adapt("mlp", PAIR, method="dann", model_options=TINY, out=run, **RUN)
    scores = tk.evaluate(run, PAIR, validators=True)
    assert scores.validators.keys() == result.summary["validators"].keys()
    for name, value in result.summary["validators"].items():
        assert scores.validators[name] == pytest.approx(value, rel=1e-6), name
    code, out, _ = cli("evaluate", str(run), "--data", PAIR, "--validators", "--json")
    assert code == 0 and set(json.loads(out)["validators"]) == set(scores.validators)


def test_evaluate_validators_hold_out_the_runs_own_source_rows(tmp_path: Path) -> None:
    """The run's source_holdout (not the default 0.1) decides the rows scored; with 0 no
    source row is scored (the run trained on all of them)."""
    for holdout in (0.3, 0.0):
        run = tmp_path / f"h{holdout}"
        result = tk.adapt("mlp", PAIR, method="dann", model_options=TINY, out=run,
                          source_holdout=holdout, **RUN)
        scores = tk.evaluate(run, PAIR, validators=True).validators
        assert scores.keys() == result.summary["validators"].keys()
        for name, value in result.summary["validators"].items():
            assert scores[name] == pytest.approx(value, rel=1e-6), (holdout, name)
    assert "source_accuracy" not in scores and "dev" not in scores  # holdout 0


def test_inspect_refusals_and_a_model_without_record(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    tk.adapt("mlp", PAIR, method="dann", model_options=TINY, out=run, **RUN)
    taken = tmp_path / "a-file.txt"
    taken.write_text("x")
    code, _, err = cli("inspect", str(run), "--data", PAIR, "--out", str(taken),
                       "--no-picture", "--device", "cpu")
    assert code == 2 and "is a file" in err and "Traceback" not in err, err
    code, _, err = cli("inspect", str(run), "--data", PAIR, "--out", str(taken / "sub"),
                       "--no-picture", "--device", "cpu")  # refused before the work
    assert code == 2 and f"{taken} is a file" in err and "Traceback" not in err, err
    code, _, err = cli("inspect", str(run), "--data", PAIR, "--out", "x" * 300,
                       "--no-picture", "--device", "cpu")
    assert code == 2 and "File name too long" in err and "Traceback" not in err, err
    other = tmp_path / "other"  # a model file beside another run's record: that file is measured
    tk.adapt("mlp", PAIR, method="supervised", model_options={"widths": [24]}, out=other, **RUN)
    (run / "other.pt").write_bytes((other / "model.pt").read_bytes())
    given = tk.inspect(run / "other.pt", PAIR, picture=False, out=tmp_path / "o")
    own = tk.inspect(other, PAIR, picture=False, out=tmp_path / "o2")
    assert given["after"]["model"] == str(run / "other.pt")
    assert given["after"]["a_distance"] == pytest.approx(own["after"]["a_distance"])
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.pt").write_bytes((run / "model.pt").read_bytes())
    report = tk.inspect(alone / "model.pt", PAIR, picture=False)
    assert "holds no run record" in report["before"], report["before"]
