"""``transferkit report``: one self-contained HTML page of runs (curves, comparison table,
confusion matrices, t-SNE and A-distance), its escaping, its one-line errors, ``demo --report``
and a real headless browser showing every picture."""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

import transferkit as tk
from conftest import FAST, TINY, CliRunner, error_line
from transferkit.errors import ConfigError
from transferkit.models import count_parameters
from transferkit.report import html as report_html

PAIR = "digits->digits_shifted"
PNG = b"\x89PNG\r\n\x1a\n"
CRAFTED = "<script>alert(\"tk\")<b>'"  # a run folder name that would be markup unescaped
IMG = re.compile(r"<img\b[^>]*>")
SRC = re.compile(r'src="([^"]*)"')
TSNE = 40  # rows per domain: the picture is drawn the same way, in a fraction of the time


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-epoch train run on digits, a 2-epoch dann run on the pair, and a copy of the
    train run under a crafted folder name."""
    base = tmp_path_factory.mktemp("report")
    settings = {**FAST, "epochs": 2}
    tk.train("mlp", "digits", model_options=TINY, out=base / "train", **settings)
    tk.adapt("mlp", PAIR, method="dann", model_options=TINY, out=base / "dann", **settings)
    shutil.copytree(base / "train", base / CRAFTED)
    return {"train": base / "train", "dann": base / "dann", "crafted": base / CRAFTED}


@pytest.fixture(scope="module")
def page(runs: dict[str, Path]) -> Path:
    out = runs["train"].parent / "report.html"
    written = tk.report_runs([runs["train"], runs["dann"], runs["crafted"]], out,
                             tsne_points=TSNE)
    assert written == out
    return out


def pictures(text: str) -> list[bytes]:
    """Every <img>'s bytes; fails unless each is a base64 PNG data: URI."""
    found = []
    for tag in IMG.findall(text):
        src = SRC.search(tag)
        assert src is not None, tag
        assert src.group(1).startswith("data:image/png;base64,"), tag[:80]
        found.append(base64.b64decode(src.group(1).split(",", 1)[1], validate=True))
    return found


def test_report_holds_every_section(runs: dict[str, Path], page: Path) -> None:
    text = page.read_text()
    for heading in ('<h2 id="comparison">Comparison</h2>', "<h3>Learning curves</h3>",
                    "<h3>Confusion matrix (test)</h3>", "<h3>Confusion matrix (target test)</h3>",
                    "<h3>Source vs target features</h3>",
                    "<h3>Model choice without target labels</h3>"):
        assert heading in text, heading
    assert text.count("<h3>Learning curves</h3>") == 3
    assert text.count("<h3>Source vs target features</h3>") == 1  # the pair's run only
    assert "proxy A-distance" in text and "oracle: best target-test accuracy" in text
    assert "reads target labels" in text
    for name in ("train", "dann"):  # the comparison table's numbers come from the run
        run = runs[name]
        summary = json.loads((run / "summary.json").read_text())
        for accuracy in summary["final"].values():
            assert f"<td>{accuracy:.2%}</td>" in text
        parameters = count_parameters(tk.load_model(run))
        assert f"<td>{parameters:,}</td>" in text
        assert f"<td>{(run / 'model.pt').stat().st_size / 1024:,.1f} KiB</td>" in text
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert f"<td>{sum(r['seconds'] for r in rows):.1f}</td>" in text
    assert "<th>CPU ms / batch of 64</th>" in text
    assert "supervised + dann" in text and "digits-&gt;digits_shifted" in text


def test_every_picture_is_an_embedded_png_and_nothing_is_fetched(page: Path) -> None:
    text = page.read_text()
    found = pictures(text)
    # train: curves + confusion; dann: curves + confusion + t-SNE; the copy: as train
    assert len(found) == 7
    assert all(png.startswith(PNG) and len(png) > 1000 for png in found)
    assert "://" not in text  # no URL of any kind: nothing loads from elsewhere
    for tag in ("<script", "<link", "<iframe", "url(", "@import"):
        assert tag not in text.lower(), tag
    assert f'content="{report_html.PAGE_CSP}"' in text


def test_crafted_run_name_is_escaped(page: Path) -> None:
    text = page.read_text()
    assert CRAFTED not in text and "<b>" not in text
    assert html.escape(CRAFTED) in text
    assert f'<h2 id="run-2">{html.escape(CRAFTED)}</h2>' in text


def test_a_folder_of_runs_stands_for_its_runs(runs: dict[str, Path]) -> None:
    folder = runs["train"].parent
    found = report_html.resolve_runs([folder, runs["train"]])
    assert sorted(found) == sorted(runs.values())  # the run given twice is listed once
    assert report_html.run_names([runs["train"], runs["dann"]]) == ["train", "dann"]


def test_bad_inputs_give_one_line(runs: dict[str, Path], tmp_path: Path, cli: CliRunner,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    for bad, message in ((tmp_path / "nowhere", "does not exist"),
                         (empty, "is not a run directory"),
                         (text_file, "is a file, not a run directory")):
        with pytest.raises(ConfigError, match=message):
            tk.report_runs([bad], tmp_path / "r.html")
        code, _, err = cli("report", str(bad), "--out", str(tmp_path / "r.html"))
        assert code == 2 and message in error_line(err)
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(ConfigError, match="at least one run"):
        tk.report_runs([], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="not a file name"):
        tk.report_runs([runs["train"]], tmp_path)

    original = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else original(name, *a))
    code, _, err = cli("report", str(runs["train"]), "--out", str(tmp_path / "r.html"))
    assert code == 2 and "pip install 'transferkit[report]'" in error_line(err)
    code, _, err = cli("demo", "--report", "--out", str(tmp_path / "demo"))  # before training
    assert code == 2 and "pip install 'transferkit[report]'" in error_line(err)
    assert not (tmp_path / "demo").exists()


def test_damaged_runs_become_one_line_notes(runs: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(runs["train"], tmp_path / name))

    (copy("no-metrics") / "metrics.jsonl").unlink()
    damaged = copy("bad-line") / "metrics.jsonl"
    lines = damaged.read_text().splitlines()
    damaged.write_text(f"{lines[0]}\n{{not json\n")
    elsewhere = copy("data-elsewhere")  # records mnist, which is not on this machine
    for name in ("summary.json", "config.yaml"):
        record = yaml.safe_load((elsewhere / name).read_text())
        record["data"] = "mnist"
        (elsewhere / name).write_text(json.dumps(record))
    broken = copy("bad-model")
    (broken / "model.pt").write_bytes(b"not a model")
    (broken / "summary.json").write_text("{")
    swapped = copy("swapped")  # another run's model.pt beside this run's summary
    tk.train("mlp", "digits", model_options={"widths": [5]}, out=tmp_path / "other",
             **{**FAST, "epochs": 1})
    shutil.copy(tmp_path / "other" / "model.pt", swapped / "model.pt")

    def offline(url: str, timeout: float):
        raise OSError("offline")

    monkeypatch.setattr("transferkit.data.paths.urlopen", offline)
    monkeypatch.delenv("TRANSFERKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    names = ("no-metrics", "bad-line", "data-elsewhere", "bad-model", "swapped")
    out = tk.report_runs([tmp_path / n for n in names], tmp_path / "r.html")
    text = html.unescape(out.read_text())
    assert "no learning curves: no metrics.jsonl: the run wrote no epoch" in text
    assert "no learning curves: metrics.jsonl line 2 is not a JSON object" in text
    assert "data 'mnist' cannot be loaded here, so no confusion matrix: mnist:" in text
    assert "model.pt cannot be loaded:" in text
    assert "summary.json cannot be read" in text
    assert "but the run's summary.json records" in text and "is not the model this run" in text
    assert "Traceback" not in text
    assert len(pictures(out.read_text())) == 6  # curves of 3, confusion matrices of 3


def test_cli_report(runs: dict[str, Path], tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "page.html"
    code, stdout, err = cli("report", str(runs["train"]), "--out", str(out))
    assert code == 0 and err == "" and stdout.strip() == f"wrote {out}"
    assert len(pictures(out.read_text())) == 2


def tiny_png(*args: object, **kwargs: object) -> bytes:
    """A 1x1 PNG: stands in for a picture where only the page's wiring is tested."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_demo_report(cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pictures are tested above; here the demo's six runs must reach the page.
    for name in ("curves_png", "confusion_png", "tsne_png"):
        monkeypatch.setattr(report_html, name, tiny_png)
    out = tmp_path / "demo"
    code, stdout, _ = cli("demo", "--epochs-scale", "0.01", "--report", "--out", out)
    assert code == 0
    assert f"Report: {out / 'report.html'}" in stdout
    text = (out / "report.html").read_text()
    for index, name in enumerate(("teacher", "student-alone", "student-l2", "student-kd",
                                  "source-only", "dann")):
        assert f'<h2 id="run-{index}">{name}</h2>' in text
    assert text.count("<h3>Source vs target features</h3>") == 2  # source-only and dann
    assert len(pictures(text)) == 6 * 2 + 2


# ---- a real browser ----------------------------------------------------------------------------
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Added to a copy of the page: after load, write what the browser made of each picture.
CHECK = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const out = document.createElement('pre');
  out.id = 'tk-check';
  out.textContent = JSON.stringify({images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)});
  document.body.appendChild(out);
});
</script>"""


def test_browser_shows_every_picture_without_console_errors(page: Path, tmp_path: Path) -> None:
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        pytest.skip("no headless Chromium found: install it (Debian/Ubuntu: "
                    "apt-get install -y chromium) to check the report in a browser")
    text = page.read_text()
    csp = report_html.PAGE_CSP
    checked = text.replace(csp, f"{csp}; script-src 'unsafe-inline'").replace(
        "</body>", CHECK + "</body>")
    copy = tmp_path / "checked.html"
    copy.write_text(checked)
    result = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="tk-check">([^<]*)</pre>', result.stdout)
    assert found is not None, result.stderr[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check == {"images": 7, "broken": []}
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # CSP violations, failed loads and errors are logged here
