"""``transferkit report``: one self-contained HTML page comparing finished runs.

The page holds a comparison table (methods, final accuracy, parameters, model.pt size, CPU
latency, training time, the label-free and oracle choices of adaptation runs) and, for each
run, its learning curves (``metrics.jsonl``), the confusion matrix on its test split (the
target's for a pair), and for a pair the t-SNE picture and proxy A-distance of source vs
target features. Every picture is a PNG embedded as a ``data:`` URI, the style is inline, and
the page loads nothing from anywhere (its Content-Security-Policy forbids it), so the file can
be mailed or archived alone. Every text read from a run (names, methods, messages) is
escaped. A part of a run that cannot be read (no metrics, a damaged line, data that is not
on this machine) becomes one line in its place; only a path that is not a run stops it.

Models and data are read the way ``evaluate`` and ``export`` read them: ``api.report_runs``
passes its own loaders in (:class:`Readers`), so ``report/`` stays below ``api``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit import __version__
from transferkit.config import read_yaml
from transferkit.data import DomainPair
from transferkit.data.inputs import fit_splits
from transferkit.engine.evaluate import predict
from transferkit.engine.loop import METRICS
from transferkit.engine.selection import LAST, ORACLE
from transferkit.errors import ConfigError, TransferkitError
from transferkit.files import atomic_write
from transferkit.model_file import MODEL_FILE
from transferkit.models import count_parameters
from transferkit.models.base import eval_mode
from transferkit.models.features import features_and_logits
from transferkit.report.adistance import feature_rows, proxy_a_distance
from transferkit.report.confusion import confusion_matrix, confusion_png
from transferkit.report.curves import curves_png
from transferkit.report.plotting import require_matplotlib
from transferkit.report.tsne import tsne_png
from transferkit.run_dir import IN_MEMORY

# Nothing may load from outside the file: no script, no remote picture, style inline only.
PAGE_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SUMMARY_FILE = "summary.json"  # as the training verbs write it
RUN_MARKERS = ("config.yaml", METRICS, MODEL_FILE, "checkpoint.pt")  # any one: a run
TSNE_POINTS = 500  # per domain: t-SNE is quadratic, and the picture reads the same
TSNE_SKIP = "rely on the proxy A-distance alone"  # ends a t-SNE refusal's message
LATENCY_BATCH = 64
LATENCY_REPEATS = 5
# What reading a damaged or foreign file may raise besides transferkit's own errors.
READ_ERRORS = (TransferkitError, OSError, ValueError, TypeError, KeyError, IndexError,
               RuntimeError, AttributeError, ArithmeticError)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.4em 0; }
.note { color: #8a5a00; margin: 0.3em 0; } .meta { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def esc(value: Any) -> str:
    """Any value as HTML text: quotes and angle brackets escaped, never markup."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _why(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _label(value: Any, limit: int = 120) -> str:
    """Plain text for a recorded value (a crafted file may hold anything)."""
    if isinstance(value, list | tuple):
        text = " + ".join(str(v) for v in value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- finding the runs ------------------------------------------------------------------------
def _is_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


def resolve_runs(runs: str | Path | Sequence[str | Path]) -> list[Path]:
    """The run directories to report on; a folder of runs (``demo``'s) stands for its runs.

    A path that does not exist or holds no run is a :class:`ConfigError` naming it.
    """
    items = [runs] if isinstance(runs, str | Path) else list(runs)
    if not items:
        raise ConfigError("give at least one run directory to report on")
    found: list[Path] = []
    fix = "give the --out folder of a train, distill or adapt run"
    for item in items:
        path = Path(item)
        if not str(item).strip():
            raise ConfigError(f"a run path is empty; {fix}")
        if not path.exists():
            raise ConfigError(f"run {path} does not exist; {fix}")
        if path.is_file():
            if path.name != MODEL_FILE:
                raise ConfigError(f"{path} is a file, not a run directory; {fix}")
            path = path.parent
        if _is_run(path):
            found.append(path)
            continue
        try:
            children = sorted(c for c in path.iterdir() if _is_run(c))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not children:
            raise ConfigError(f"{path} is not a run directory: it holds none of "
                              f"{', '.join(RUN_MARKERS)}, nor runs in sub-folders; {fix}")
        found.extend(children)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def run_names(paths: list[Path]) -> list[str]:
    """Folder names when they tell the runs apart, else the paths as given."""
    names = [p.resolve().name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


# ---- reading one run -------------------------------------------------------------------------
def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a :class:`ConfigError` names a missing file or the first
    line that is not a JSON object."""
    if not path.is_file():
        raise ConfigError(f"no {path.name}: the run wrote no epoch")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path.name}: {_why(exc)}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise ConfigError(f"{path.name} line {number} is not a JSON object (the file is "
                              "damaged)")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path.name} is empty: the run wrote no epoch")
    return rows


def _read_summary(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        return {}, f"no {path.name} (an unfinished run?): no final accuracy"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, f"{path.name} cannot be read ({_why(exc)})"
    if not isinstance(summary, dict):
        return {}, f"{path.name} is not a JSON object"
    return summary, None


def _read_record(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        return {}, None
    try:
        record = read_yaml(path, "run record")
    except TransferkitError as exc:
        return {}, _why(exc)
    return (record, None) if isinstance(record, dict) else ({}, f"{path.name} is not a mapping")


@dataclass
class Readers:
    """How a run's model and data are loaded: ``model_file.load_record`` (model and its
    record: input shape...) and ``resolve_data`` (name, data_dir, options)."""

    model: Callable[[Path], tuple[nn.Module, dict[str, Any]]]
    data: Callable[[str, str | Path | None, dict[str, Any] | None], Any]


@dataclass
class Context:
    """What all runs share: the loaders, where data lives, the t-SNE size, and loaded data."""

    readers: Readers
    data_dir: str | Path | None = None
    tsne_points: int = TSNE_POINTS
    seed: int = 0
    loaded: dict[str, Any] = field(default_factory=dict)

    def data(self, name: str, options: dict[str, Any] | None) -> Any:
        """The dataset or pair, loaded once per name and options (a failure is kept too)."""
        key = json.dumps([name, options or {}], sort_keys=True, default=str)
        if key not in self.loaded:
            try:
                self.loaded[key] = self.readers.data(name, self.data_dir, options or None)
            except READ_ERRORS as exc:
                self.loaded[key] = ConfigError(_why(exc))
        found = self.loaded[key]
        if isinstance(found, Exception):
            raise found
        return found


@dataclass
class RunPage:
    """One run's cells in the comparison table and its own sections (HTML, escaped)."""

    name: str
    path: Path
    cells: dict[str, str] = field(default_factory=dict)  # plain text
    accuracy: dict[str, float] = field(default_factory=dict)  # split -> final accuracy
    sections: list[tuple[str, str]] = field(default_factory=list)  # (title, html)
    final: dict[str, float] = field(default_factory=dict)  # split -> the last epoch's accuracy
    # The kept epoch when the run chose one (``--select``): model.pt holds it, and ``accuracy``
    # is its recorded scores; ``earlier`` when it is not the last epoch.
    kept_epoch: int | None = None
    earlier: bool = False


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def cpu_latency_ms(model: nn.Module, input_shape: Sequence[int], batch: int = LATENCY_BATCH,
                   repeats: int = LATENCY_REPEATS) -> float:
    """Median milliseconds of one forward pass of ``batch`` random inputs on the CPU."""
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    times = []
    with eval_mode(model), torch.no_grad():
        model(x)  # warm-up: first-call allocations
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000.0 * sorted(times)[len(times) // 2]


def collect_run(path: Path, name: str, context: Context) -> RunPage:
    """Everything the page shows of one run; what cannot be read becomes a note."""
    page = RunPage(name, path)
    summary, summary_note = _read_summary(path / SUMMARY_FILE)
    record, record_note = _read_record(path / "config.yaml")
    known = {**record, **summary}
    page.cells["command"] = _label(known.get("command", "?"))
    page.cells["methods"] = _label(known.get("methods") or known.get("method") or "?")
    data_name = known.get("data")
    page.cells["data"] = _label(data_name if data_name is not None else "?")
    page.final = page.accuracy = _scores(summary.get("final"))
    notes = [n for n in (summary_note, record_note) if n]
    if isinstance(summary.get("warning"), str):
        notes.append(f"warning recorded by the run: {summary['warning']}")
    if isinstance(summary.get("selection"), str):
        notes.append(f"kept model: {summary['selection']}")
    select = _select_of(record, summary)
    notes += _kept(page, summary, select)
    page.sections.append(("About", "".join(_note(n) for n in notes) or
                          '<p class="meta">nothing to note</p>'))

    _curves(page, path)
    model, input_shape = _model(page, path, context.readers)
    recorded = summary.get("parameters")
    if model is not None and isinstance(recorded, int) and recorded != count_parameters(model):
        page.sections.append(("Model", _note(
            f"{MODEL_FILE} has {count_parameters(model):,} parameters but the run's "
            f"{SUMMARY_FILE} records {recorded:,}: the file is not the model this run trained "
            "(replaced?), so its accuracy above is not this file's")))
    pair = isinstance(data_name, str) and "->" in data_name
    data = None
    unlabelled_target = isinstance(summary.get("target"), str)  # the run says it had none
    if model is not None and unlabelled_target and not pair:
        page.sections.append(("Confusion matrix", _note(
            f"no confusion matrix: {summary['target']}")))
    elif model is not None and known.get(IN_MEMORY):  # "arrays" is no file: never read one
        page.sections.append(("Confusion matrix", _note(
            f"the run trained on arrays in memory ({_label(known[IN_MEMORY])}), which are not "
            f"on disk: no confusion matrix{' or t-SNE' if pair else ''}")))
    elif model is not None and isinstance(data_name, str):
        options = known.get("data_options")
        try:
            data = context.data(data_name, options if isinstance(options, dict) else None)
        except TransferkitError as exc:
            page.sections.append(("Confusion matrix", _note(
                f"data {data_name!r} cannot be loaded here, so no confusion matrix"
                f"{' or t-SNE' if pair else ''}: {_why(exc)}")))
    elif model is not None:
        page.sections.append(("Confusion matrix", _note("the run does not record its data")))
    if model is not None and data is not None:
        _confusion(page, model, data)
        if isinstance(data, DomainPair):
            layer = known.get("feature_layer")
            _features(page, model, data, layer if isinstance(layer, str) else None, context)
    if model is not None and input_shape is not None:
        try:
            page.cells["latency"] = f"{cpu_latency_ms(model, input_shape):.2f}"
        except READ_ERRORS as exc:
            page.cells["latency"] = "n/a"
            page.sections.append(("Latency", _note(f"latency not measured: {_why(exc)}")))
    _choices(page, summary, select)
    return page


def _scores(entry: Any) -> dict[str, float]:
    """split -> accuracy of a recorded ``final`` or ``choices`` entry (its epoch left out)."""
    if not isinstance(entry, dict):
        return {}
    return {str(k): float(v) for k, v in entry.items() if _number(v) and k != "epoch"}


def _select_of(record: dict[str, Any], summary: dict[str, Any]) -> str | None:
    """What chose the kept model: config.yaml's ``train.select``, else summary's selection
    note; None when neither tells."""
    train = record.get("train")
    if isinstance(train, dict) and isinstance(train.get("select"), str):
        return train["select"]
    note = summary.get("selection")
    if not isinstance(note, str):
        return None
    if "(oracle)" in note:
        return ORACLE
    found = re.search(r"preferred by the (\w+) validator", note)
    return found.group(1) if found else (LAST if note.startswith("last epoch") else None)


def _chosen_by(select: str | None) -> str:
    if select == ORACLE:
        return "oracle (WITH target labels)"
    return select or "an unrecorded criterion"


def _kept(page: RunPage, summary: dict[str, Any], select: str | None) -> list[str]:
    """For a run that kept a chosen epoch (``--select``): the table's accuracy becomes that
    epoch's recorded scores (model.pt holds it), and the page says which epoch it is."""
    selected = summary.get("selected")
    if not isinstance(selected, dict) or not _number(selected.get("epoch")):
        return []
    epoch = int(selected["epoch"])
    total = summary.get("epochs")
    choices = summary.get("choices")
    last_entry = choices.get(LAST) if isinstance(choices, dict) else None
    last = last_entry.get("epoch") if isinstance(last_entry, dict) else None
    last = int(last) if _number(last) else int(total) if _number(total) else None
    page.kept_epoch = epoch
    page.earlier = last is not None and epoch != last
    of = f" of {int(total)}" if _number(total) else ""
    where = "" if page.earlier or last is None else " (the last)"
    page.cells["kept"] = f"epoch {epoch}{of}{where}, chosen by {_chosen_by(select)}"
    kept = _scores(selected)
    if not kept:
        return [f"summary.json does not record the scores of epoch {epoch}, which {MODEL_FILE} "
                "holds: the accuracy shown is the last epoch's"]
    page.accuracy = kept
    if not page.earlier:
        return []
    last_scores = ", ".join(f"{s} {v:.2%}" for s, v in page.final.items())
    return [f"{MODEL_FILE} holds epoch {epoch}, not the last epoch ({last}): the accuracy in "
            f"the comparison table is epoch {epoch}'s"
            + (f"; the last epoch scored {last_scores}" if last_scores else "")]


def _curves(page: RunPage, path: Path) -> None:
    title = "Learning curves"
    try:
        rows = read_metrics(path / METRICS)
    except ConfigError as exc:
        page.cells["seconds"] = "n/a"
        page.sections.append((title, _note(f"no learning curves: {_why(exc)}")))
        return
    seconds = [float(r["seconds"]) for r in rows if _number(r.get("seconds"))]
    page.cells["seconds"] = f"{sum(seconds):.1f}" if seconds else "n/a"
    epochs = [r.get("epoch") for r in rows if _number(r.get("epoch"))]
    page.cells["epochs"] = str(int(max(epochs))) if epochs else str(len(rows))
    try:
        png = curves_png(rows, f"{page.name}: learning curves")
    except READ_ERRORS as exc:
        page.sections.append((title, _note(f"learning curves not drawn: {_why(exc)}")))
        return
    body = _img(png, f"learning curves of {page.name}") if png else _note(
        f"{METRICS} holds no numbers to plot")
    page.sections.append((title, body))


def _model(page: RunPage, path: Path,
           readers: Readers) -> tuple[nn.Module | None, tuple[int, ...] | None]:
    """The run's model (transferkit's own loading) with its input shape, or a note."""
    model_file = path / MODEL_FILE
    page.cells["parameters"] = page.cells["size"] = page.cells["latency"] = "n/a"
    if not model_file.is_file():
        page.sections.append(("Model", _note(f"no {MODEL_FILE}: no parameters, latency, "
                                             "confusion matrix or features")))
        return None, None
    page.cells["size"] = f"{model_file.stat().st_size / 1024:,.1f} KiB"
    try:
        model, saved = readers.model(model_file)
        model = model.to("cpu")
    except READ_ERRORS as exc:
        page.sections.append(("Model", _note(f"{MODEL_FILE} cannot be loaded: "
                                             f"{_why(exc)}")))
        return None, None
    page.cells["parameters"] = f"{count_parameters(model):,}"
    shape = saved.get("input_shape")
    return model, tuple(shape) if isinstance(shape, list | tuple) else None


def _confusion(page: RunPage, model: nn.Module, data: Any) -> None:
    pair = isinstance(data, DomainPair)
    split_name = "target test" if pair else "test"
    title = f"Confusion matrix ({split_name})"
    split = data.target.test if pair else data.test
    if not (data.target if pair else data).labelled:
        page.sections.append((title, _note(f"no confusion matrix: {data.name}'s "
                                           f"{'target' if pair else 'data'} has no labels")))
        return
    try:
        splits, _ = fit_splits(model, data, {"test": split}, f"model of {page.name}")
        x, y = splits["test"].x, splits["test"].y
        predicted = predict(model, x, torch.device("cpu")).argmax(1)
        matrix = confusion_matrix(y, predicted, data.num_classes)
        accuracy = float(matrix.diag().sum()) / max(len(y), 1)
        target = data.target if pair else data
        png = confusion_png(matrix, f"{page.name}: {data.name}, {split_name}, accuracy "
                            f"{accuracy:.2%}", getattr(target, "classes", None))
    except READ_ERRORS as exc:
        page.sections.append((title, _note(f"no confusion matrix: {_why(exc)}")))
        return
    caption = (f'<p class="meta">{len(y):,} rows of {esc(data.name)} ({split_name}); accuracy '
               f"{accuracy:.2%} with the saved model</p>")
    page.sections.append((title, _img(png, f"confusion matrix of {page.name}") + caption))


def _features(page: RunPage, model: nn.Module, data: DomainPair, layer: str | None,
              context: Context) -> None:
    """Proxy A-distance and t-SNE of the features on both test splits (no label read); a
    t-SNE that cannot be drawn (features all alike, 1 wide...) leaves the A-distance shown."""
    title = "Source vs target features"
    try:
        splits, _ = fit_splits(model, data, {"source": data.source.test,
                                             "target": data.target.test},
                               f"model of {page.name}")
        cpu = torch.device("cpu")
        source, _ = features_and_logits(model, splits["source"].x, layer, cpu)
        target, _ = features_and_logits(model, splits["target"].x, layer, cpu)
        distance = proxy_a_distance(source, target, context.seed)
    except READ_ERRORS as exc:
        page.sections.append((title, _note(f"no t-SNE or A-distance: {_why(exc)}")))
        return
    page.cells["a_distance"] = f"{distance['a_distance']:.3f}"
    rows = feature_rows(data)
    body = (f"<p>proxy A-distance {distance['a_distance']:.3f} (domain classifier error "
            f"{distance['domain_error']:.1%} on held-out rows; 0: the domains look alike, 2: "
            f"they separate perfectly), features of {esc(layer or 'the head input')} on "
            f"{esc(rows['source'])} of the source and {esc(rows['target'])} of the target.</p>")
    try:
        picture = tsne_png(source, target, f"{page.name}: t-SNE of {data.name} features, "
                           f"proxy A-distance {distance['a_distance']:.2f}", context.seed,
                           context.tsne_points, skip=TSNE_SKIP)
    except READ_ERRORS as exc:
        page.sections.append((title, body + _note(f"no t-SNE picture: {_why(exc)}")))
        return
    shown = min(len(source), context.tsne_points), min(len(target), context.tsne_points)
    body += (_img(picture, f"t-SNE of source and target features of {page.name}")
             + f'<p class="meta">t-SNE of {shown[0]} source (blue) and {shown[1]} target (red) '
             "rows</p>")
    page.sections.append((title, body))


def _choices(page: RunPage, summary: dict[str, Any], select: str | None = None) -> None:
    """What the last epoch, each validator and the oracle would keep (adapt runs); a run that
    kept the oracle's choice says it chose with target labels."""
    choices = summary.get("choices")
    if not isinstance(choices, dict) or not choices:
        return
    kept = page.kept_epoch is not None and select not in (None, LAST)
    by_oracle = kept and select == ORACLE
    splits: dict[str, None] = {}
    for entry in choices.values():
        if isinstance(entry, dict):
            splits.update(dict.fromkeys(k for k, v in entry.items() if _number(v)
                                        and k != "epoch"))
    head = "".join(f"<th>{esc(s)} accuracy</th>" for s in splits)
    lines = [f'<table><tr><th class="text">chosen by</th><th>epoch</th>{head}</tr>']
    for criterion, entry in choices.items():
        if not isinstance(entry, dict):
            continue
        oracle = ("oracle: best target-test accuracy (reads target labels; this run chose its "
                  "kept model with it)" if by_oracle else
                  "oracle: best target-test accuracy (reads target labels; reference only, "
                  "never used to choose)")
        label = {LAST: "last epoch", ORACLE: oracle}.get(criterion, f"validator {criterion}")
        if kept and criterion == select:
            label += f" [kept in {MODEL_FILE}]"
        epoch = entry.get("epoch")
        cells = "".join(f"<td>{entry[s]:.2%}</td>" if _number(entry.get(s)) else "<td></td>"
                        for s in splits)
        lines.append(f'<tr><td class="text">{esc(label)}</td>'
                     f"<td>{esc(epoch if _number(epoch) else '')}</td>{cells}</tr>")
    lines.append("</table>")
    if by_oracle:
        head_note = _note(f"This run was made with --select oracle: {MODEL_FILE} holds epoch "
                          f"{page.kept_epoch}, the epoch with the best target-test accuracy, "
                          "chosen WITH target labels; its accuracy is not a label-free result.")
        page.sections.append(("Model choice WITH target labels (select=oracle)",
                              head_note + "".join(lines)))
        return
    page.sections.append(("Model choice without target labels", "".join(lines)))


# ---- the page ----------------------------------------------------------------------------------
COLUMNS = (("command", "command"), ("methods", "method(s)"), ("data", "data"))
NUMBERS = (("parameters", "parameters"), ("size", "model.pt"),
           ("latency", f"CPU ms / batch of {LATENCY_BATCH}"), ("seconds", "training s"),
           ("epochs", "epochs"), ("a_distance", "proxy A-distance"))


def render(pages: list[RunPage], title: str = "transferkit report") -> str:
    """The whole page as text."""
    splits: dict[str, None] = {}
    for page in pages:
        splits.update(dict.fromkeys(page.accuracy))
    # Runs that kept a chosen epoch (--select): say which epoch model.pt holds, and when it is
    # not the last, give the last epoch's scores in their own columns.
    kept = any(page.kept_epoch is not None for page in pages)
    last_splits: dict[str, None] = {}
    if any(page.earlier for page in pages):
        for page in pages:
            last_splits.update(dict.fromkeys(page.final))
    head = ['<th class="text">run</th>'] + [f'<th class="text">{esc(t)}</th>'
                                            for _, t in COLUMNS]
    suffix = f" ({MODEL_FILE})" if kept else ""
    head += [f"<th>{esc(s)} accuracy{esc(suffix)}</th>" for s in splits]
    if kept:
        head.append(f'<th class="text">{esc(MODEL_FILE)} holds</th>')
    head += [f"<th>{esc(s)} accuracy, last epoch</th>" for s in last_splits]
    head += [f"<th>{esc(t)}</th>" for _, t in NUMBERS]
    rows = []
    for index, page in enumerate(pages):
        cells = [f'<td class="text"><a href="#run-{index}">{esc(page.name)}</a></td>']
        cells += [f'<td class="text">{esc(page.cells.get(key, ""))}</td>' for key, _ in COLUMNS]
        cells += [f"<td>{page.accuracy[s]:.2%}</td>" if s in page.accuracy else "<td></td>"
                  for s in splits]
        if kept:
            holds = page.cells.get("kept", "the last epoch" if page.final else "")
            cells.append(f'<td class="text">{esc(holds)}</td>')
        cells += [f"<td>{page.final[s]:.2%}</td>" if s in page.final else "<td></td>"
                  for s in last_splits]
        cells += [f"<td>{esc(page.cells.get(key, ''))}</td>" for key, _ in NUMBERS]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    threads = torch.get_num_threads()
    accuracy_note = "Final accuracy: summary.json (the kept model)."
    if kept:
        accuracy_note = (f"Accuracy: summary.json's scores of the epoch {MODEL_FILE} holds; a run "
                         "made with --select keeps the epoch its criterion prefers, which may "
                         f"not be the last (column '{MODEL_FILE} holds')"
                         + ("; the 'last epoch' columns give the last epoch's scores."
                            if last_splits else "."))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{len(pages)} run{"s" if len(pages) != 1 else ""}, written by '
        f"transferkit {esc(__version__)}. {esc(accuracy_note)} CPU latency: median of "
        f"{LATENCY_REPEATS} forward passes of a batch of {LATENCY_BATCH}, "
        f"{threads} thread{'s' if threads != 1 else ''}. Training seconds: the sum over "
        "metrics.jsonl's epochs.</p>",
        '<h2 id="comparison">Comparison</h2>',
        f"<table><tr>{''.join(head)}</tr>{''.join(rows)}</table>",
    ]
    for index, page in enumerate(pages):
        parts.append(f'<h2 id="run-{index}">{esc(page.name)}</h2>')
        parts.append(f'<p class="meta">{esc(page.cells.get("command", ""))} &middot; '
                     f'{esc(page.cells.get("methods", ""))} &middot; '
                     f'{esc(page.cells.get("data", ""))} &middot; <code>{esc(page.path)}</code>'
                     "</p>")
        for section, body in page.sections:
            parts.append(f"<h3>{esc(section)}</h3>{body}")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(
    runs: str | Path | Sequence[str | Path],
    out: str | Path,
    readers: Readers,
    *,
    data_dir: str | Path | None = None,
    tsne_points: int | None = None,
    seed: int = 0,
    title: str = "transferkit report",
) -> Path:
    """Write the page for ``runs`` to ``out`` (atomically) and return its path;
    ``tsne_points`` rows per domain in the t-SNE pictures (default TSNE_POINTS)."""
    require_matplotlib()
    tsne_points = TSNE_POINTS if tsne_points is None else tsne_points
    if isinstance(tsne_points, bool) or not isinstance(tsne_points, int) or tsne_points < 5:
        raise ConfigError(f"tsne_points (--tsne-points) must be an integer >= 5, got "
                          f"{tsne_points!r}")
    if not str(out).strip():  # before Path(): Path('') is '.', the current folder
        raise ConfigError("report --out is empty; give the page to write, e.g. --out "
                          "report.html")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is not a file name; give the page to write, "
                          "e.g. --out report.html")
    paths = resolve_runs(runs)
    context = Context(readers, data_dir, tsne_points, seed)
    pages = [collect_run(path, name, context)
             for path, name in zip(paths, run_names(paths), strict=True)]
    text = render(pages, title)
    atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    return out
