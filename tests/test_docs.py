"""docs/benchmarks.md must be exactly what the recorded benchmark results render to."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_report():
    if str(ROOT / "benchmarks") not in sys.path:  # report.py imports its sibling _rows
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_matches_results() -> None:
    report = load_report()
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render(), (
        "docs/benchmarks.md is stale: run python benchmarks/report.py"
    )


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")))
def test_every_result_records_its_command(path: Path) -> None:
    result = json.loads(path.read_text())
    assert result["command"].startswith("python benchmarks/")
    assert result["environment"]["torch"]
    assert result["rows"]


# ---- docs/reliability.md: every fault it lists is tried by a test, every trust test is listed
RELIABILITY = ROOT / "docs" / "reliability.md"
CITED = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)`")


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name.startswith("test_")}


def reliability_rows() -> list[tuple[str, list[tuple[str, str]]]]:
    """(fault, [(test file, test name), ...]) for each row of the faults table."""
    rows = []
    for line in RELIABILITY.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and CITED.search(cells[2]):
            rows.append((cells[1], CITED.findall(cells[2])))
    return rows


def test_reliability_page_cites_tests_that_exist() -> None:
    rows = reliability_rows()
    assert len(rows) >= 30
    for fault, cited in rows:
        for file, name in cited:
            assert (ROOT / file).is_file(), f"{fault}: {file} does not exist"
            assert name in functions_in(ROOT / file), f"{fault}: {file}::{name} does not exist"


def test_every_trust_test_is_on_the_reliability_page() -> None:
    cited = {(file, name) for _, tests in reliability_rows() for file, name in tests}
    for path in sorted((ROOT / "tests").glob("test_trust_*.py")):
        file = f"tests/{path.name}"
        missing = sorted(n for n in functions_in(path) if (file, n) not in cited)
        assert not missing, f"add these tests of {file} to docs/reliability.md: {missing}"


def test_methods_page_has_a_row_for_every_registered_method() -> None:
    from transferkit.methods import METHODS

    page = (ROOT / "docs" / "methods.md").read_text()
    section = page.split("## The list", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w+-]+)` \|", section, flags=re.M))
    assert listed == set(METHODS), f"docs/methods.md rows differ: {listed ^ set(METHODS)}"


def test_source_free_section_gains_are_seed_by_seed_against_source_only(monkeypatch) -> None:
    report = load_report()

    def row(method: str, seed: int, acc: float) -> dict:
        return {"pair": "a->b", "method": method, "seed": seed, "target_test_last": acc}

    rows = [row("source-only", 0, 0.70), row("source-only", 1, 0.80),
            row("shot", 0, 0.90), row("shot", 1, 0.85), row("tent", 2, 0.99)]
    monkeypatch.setattr(report, "adapt_rows", lambda: rows)
    lines = report.section_source_free()
    shot = next(line for line in lines if "`shot`" in line)
    cells = [c.strip() for c in shot.strip("|").split("|")]
    # gains 20 and 5 pp: mean 12.5, sample std sqrt(112.5)
    assert cells[2] == "75.00 ± 7.07" and cells[3] == "87.50 ± 3.54", cells
    assert cells[4] == f"+12.50 ± {112.5 ** 0.5:.2f}" and cells[5] == "2", cells
    assert not any("`tent`" in line for line in lines)  # seed 2 has no source-only model
    cited = re.search(r"`(tests/\w+\.py)::(\w+)`", "\n".join(lines))
    assert cited and cited.group(2) in functions_in(ROOT / cited.group(1))


def test_a_collapsed_run_stays_in_the_digits_table_and_is_marked(monkeypatch) -> None:
    report = load_report()
    choices = {"im": {"target_test": 0.5}, "oracle": {"target_test": 0.6}}
    rows = [{"pair": "a->b", "method": "fixmatch", "seed": s, "steps": 10, "choices": choices,
             "target_test_last": acc, **({"warning": "predictions collapsed"} if s else {})}
            for s, acc in ((0, 0.9), (1, 0.1))]
    monkeypatch.setattr(report, "adapt_rows", lambda: rows)
    line = next(x for x in report.section_adapt_table() if "`fixmatch`" in x)
    assert "(collapsed: 1 of 2 runs)" in line and "50.00 ± 56.57" in line, line


def test_a_run_predicting_mostly_one_class_is_marked(monkeypatch) -> None:
    report = load_report()
    choices = {"im": {"target_test": 0.5}, "oracle": {"target_test": 0.6}}
    rows = [{"pair": "a->b", "method": "pseudo_label", "seed": s, "steps": 10,
             "choices": choices, "target_test_last": 0.3, "target_top_class_share": share,
             "target_largest_class_share": 0.11}
            for s, share in ((0, 0.2), (1, 0.5), (2, 0.88))]
    monkeypatch.setattr(report, "adapt_rows", lambda: rows)
    lines = report.section_adapt_table()
    line = next(x for x in lines if "`pseudo_label`" in x)
    assert "(one class ≥ 50%: 2 of 3 runs)" in line, line  # 0.5 and 0.88, not 0.2
    note = next(x for x in lines if x.startswith("(one class ≥ 50%) marks"))
    assert "at most 11.0%" in note and "rows record it" not in note, note


def test_digits_tables_list_methods_in_one_order_on_every_pair(monkeypatch) -> None:
    """Rows finish in any order (a resumed grid, two jobs); the tables follow the grid's list,
    and a method the grid does not list comes last."""
    report = load_report()
    choices = {"im": {"target_test": 0.5}, "oracle": {"target_test": 0.6}}
    finished = {"a->b": ["shot", "mcd", "mystery", "source-only", "dann"],
                "c->d": ["dann", "source-only", "mcd", "shot"]}
    rows = [{"pair": pair, "method": m, "seed": 0, "steps": 10, "choices": choices,
             "target_test_last": 0.5} for pair, methods in finished.items() for m in methods]
    monkeypatch.setattr(report, "adapt_rows", lambda: rows)
    lines = report.section_adapt_table()
    tables = "\n".join(lines).split("### ")[1:]
    order = [[m for m in re.findall(r"^\| `([^`]+)`", t, re.M)] for t in tables]
    assert order[0] == ["source-only", "dann", "mcd", "shot", "mystery"], order
    assert order[1] == ["source-only", "dann", "mcd", "shot"], order


def test_the_digits_section_names_runs_below_their_own_seeds_source_only(monkeypatch) -> None:
    report = load_report()

    def row(method: str, seed: int, acc: float) -> dict:
        return {"pair": "a->b", "method": method, "seed": seed, "target_test_last": acc}

    rows = [row("source-only", 0, 0.70), row("source-only", 1, 0.50), row("fixmatch", 0, 0.60),
            row("fixmatch", 1, 0.55), row("dann", 0, 0.90), row("dann", 2, 0.10)]
    [line, _] = report._below_source_only(rows)
    # fixmatch seed 0 is below its 0.70, seed 1 above its 0.50; dann seed 2 has no source-only
    assert "`fixmatch` 1 of 2 (a->b seed 0)" in line and "`dann`" not in line, line
    assert report._below_source_only([row("source-only", 0, 0.5), row("dann", 0, 0.9)]) == []


def test_methods_page_names_only_options_the_methods_take() -> None:
    import inspect

    from transferkit.methods import METHODS

    page = (ROOT / "docs" / "methods.md").read_text()
    section = page.split("## The list", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        found = re.match(r"^\| `([\w+-]+)` \|", line)
        if not found:
            continue
        options = [c.strip() for c in line.strip().strip("|").split("|")][3]
        named = set(re.findall(r"(?:^|[`,]\s*)(\w+)=", options))
        taken = set(inspect.signature(METHODS.get(found.group(1)).__init__).parameters)
        assert named <= taken, f"docs/methods.md, {found.group(1)}: no option {named - taken}"
