"""``transferkit report`` on adapt runs made with ``--select``: the comparison table scores the
epoch model.pt holds (not the last epoch's figures beside model.pt's size and latency) and
says which epoch that is; an ``oracle`` run says its model was chosen with target labels."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

import transferkit as tk
from conftest import FAST, TINY

PAIR = "digits->digits_shifted"
TSNE = 40  # rows per domain: the page is built the same way, in a fraction of the time
EPOCHS = 3
TABLE = re.compile(r'<h2 id="comparison">Comparison</h2>\s*<table>(.*?)</table>', re.S)
ROW = re.compile(r"<tr>(.*?)</tr>", re.S)
CELL = re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.S)
TAG = re.compile(r"<[^>]+>")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 3-epoch dann run three times: kept by entropy (an earlier epoch), by the
    oracle, and the last epoch (the default)."""
    base = tmp_path_factory.mktemp("report_select")
    settings = {**FAST, "epochs": EPOCHS}
    out = {}
    for select in ("entropy", "oracle", "last"):
        out[select] = base / select
        tk.adapt("mlp", PAIR, method="dann", model_options=TINY, select=select,
                 out=out[select], **settings)
    return out


def summary_of(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())


def comparison(text: str) -> list[dict[str, str]]:
    """The comparison table as one {header: cell text} per run."""
    found = TABLE.search(text)
    assert found is not None, "no comparison table"
    rows = [[html.unescape(TAG.sub("", c)).strip() for c in CELL.findall(r)]
            for r in ROW.findall(found.group(1))]
    head, body = rows[0], rows[1:]
    assert all(len(r) == len(head) for r in body), rows
    return [dict(zip(head, r, strict=True)) for r in body]


def section(text: str, run_index: int) -> str:
    """The HTML of one run's part of the page."""
    start = text.index(f'<h2 id="run-{run_index}">')
    end = text.find('<h2 id="run-', start + 1)
    return text[start:] if end < 0 else text[start:end]


def report(runs: list[Path], out: Path) -> str:
    return tk.report_runs(runs, out, tsne_points=TSNE).read_text()


def test_table_scores_the_epoch_model_pt_holds(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["entropy"]
    summary = summary_of(run)
    selected = summary["selected"]
    # The premise: entropy keeps an earlier epoch than the last, with other scores.
    assert selected["epoch"] < EPOCHS, "entropy kept the last epoch: pick another setting"
    assert selected["target_test"] != summary["final"]["target_test"]
    scores = tk.evaluate(run, PAIR, device="cpu")  # model.pt, scored independently
    for split in ("source_test", "target_test"):
        assert scores[split]["accuracy"] == pytest.approx(selected[split])

    text = report([run], tmp_path / "page.html")
    (row,) = comparison(text)
    for split in ("source_test", "target_test"):
        # the first accuracy column of a split is the one beside model.pt's size and latency
        shown = next(v for k, v in row.items() if k.startswith(f"{split} accuracy"))
        assert shown == f"{scores[split]['accuracy']:.2%}", (split, row)
        assert row[f"{split} accuracy (model.pt)"] == shown
        # the last epoch's figures stay, in a column that says so
        assert row[f"{split} accuracy, last epoch"] == f"{summary['final'][split]:.2%}"
    assert row["model.pt holds"] == f"epoch {selected['epoch']} of {EPOCHS}, chosen by entropy"
    # the table agrees with the page's own confusion matrix of model.pt
    target = f"{scores['target_test']['accuracy']:.2%}"
    assert f"accuracy {target} with the saved model" in text
    # only the last-epoch column shows the last epoch's target accuracy
    last = f"{summary['final']['target_test']:.2%}"
    assert [k for k, v in row.items() if v == last] == ["target_test accuracy, last epoch"]
    about = html.unescape(section(text, 0))
    assert f"model.pt holds epoch {selected['epoch']}, not the last epoch ({EPOCHS})" in about
    # a validator's choice is still a label-free one
    assert "<h3>Model choice without target labels</h3>" in text
    assert "reference only, never used to choose" in text
    assert "validator entropy [kept in model.pt]" in text


def test_oracle_run_says_it_chose_with_target_labels(runs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    run = runs["oracle"]
    selected = summary_of(run)["selected"]
    text = report([runs["entropy"], run], tmp_path / "page.html")
    oracle = html.unescape(section(text, 1))
    assert "Model choice without target labels" not in oracle
    assert "never used to choose" not in oracle
    assert "<h3>Model choice WITH target labels (select=oracle)</h3>" in oracle
    assert (f"made with --select oracle: model.pt holds epoch {selected['epoch']}, the epoch "
            "with the best target-test accuracy, chosen WITH target labels") in oracle
    assert "reads target labels; this run chose its kept model with it" in oracle
    # the entropy run on the same page keeps the label-free wording
    entropy = html.unescape(section(text, 0))
    assert "<h3>Model choice without target labels</h3>" in entropy
    assert "(reads target labels; reference only, never used to choose)" in entropy
    rows = comparison(text)
    assert rows[1]["model.pt holds"].endswith("chosen by oracle (WITH target labels)")
    for split in ("source_test", "target_test"):
        assert rows[1][f"{split} accuracy (model.pt)"] == f"{selected[split]:.2%}"


def test_select_last_run_renders_as_before(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["last"]
    summary = summary_of(run)
    assert "selected" not in summary
    text = report([run], tmp_path / "page.html")
    (row,) = comparison(text)
    for split, accuracy in summary["final"].items():
        assert row[f"{split} accuracy"] == f"{accuracy:.2%}"
    assert not any("model.pt holds" in k or "last epoch" in k for k in row)
    assert "Final accuracy: summary.json (the kept model)." in text
    assert "<h3>Model choice without target labels</h3>" in text
    assert "(reads target labels; reference only, never used to choose)" in html.unescape(text)
    assert "[kept in" not in text


def test_a_last_run_beside_a_selected_one(runs: dict[str, Path], tmp_path: Path) -> None:
    text = report([runs["last"], runs["entropy"]], tmp_path / "page.html")
    last, entropy = comparison(text)
    final = summary_of(runs["last"])["final"]
    assert last["model.pt holds"] == "the last epoch"
    for split, accuracy in final.items():  # model.pt is the last epoch: both columns agree
        assert last[f"{split} accuracy (model.pt)"] == f"{accuracy:.2%}"
        assert last[f"{split} accuracy, last epoch"] == f"{accuracy:.2%}"
    kept = summary_of(runs["entropy"])["selected"]["epoch"]
    assert entropy["model.pt holds"] == f"epoch {kept} of {EPOCHS}, chosen by entropy"
