"""The student leaves as a deployable file: ONNX or TorchScript, optionally int8.

``export_model`` writes the file (atomically) with the model's input convention inside
(ONNX metadata ``transferkit_inputs``; TorchScript extra file ``transferkit.json``), with its
class names and its feature normalisation when it has them, then
checks it against the PyTorch model on the given inputs (largest absolute logit difference
and top-1 agreement, plus accuracy when labels are given) and measures its size and CPU
latency per batch (median and 95th percentile, onnxruntime for ONNX). ``int8`` is dynamic
quantisation of the weights of linear layers only (onnxruntime's ``quantize_dynamic`` on
MatMul/Gemm, or torch's for TorchScript): a model of linear layers gets about 4x smaller, at
some cost in accuracy; convolutions stay fp32 (int8 ``ConvInteger`` was 3-4x slower here).
"""

from __future__ import annotations

import io
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.data.inputs import (
    CLASSES_ATTR,
    COLUMNS_ATTR,
    IMAGE_READ_ATTR,
    INPUTS_ATTR,
    NORMALIZATION_ATTR,
)
from transferkit.data.normalize import Normalization
from transferkit.errors import ConfigError
from transferkit.files import atomic_write, json_text
from transferkit.models.base import eval_mode

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}
QUANTIZE = (None, "int8")


class NormalizedInputs(nn.Module):
    """``model`` behind its feature normalisation, so the exported graph takes raw rows: the
    steps of :mod:`transferkit.data.normalize` with the training statistics as constants
    (``log``: log1p; ``l1``: each row over its sum of absolute values, a zero row kept;
    ``zscore``: ``(x - mean) / std``)."""

    def __init__(self, fitted: Normalization, model: nn.Module) -> None:
        super().__init__()
        self.steps = fitted.steps
        self.model = model
        for name in ("mean", "std"):
            value = getattr(fitted, name)
            self.register_buffer(name, None if value is None else value.float())

    def forward(self, x: Tensor) -> Tensor:
        for step in self.steps:
            if step == "log":
                x = torch.log1p(x)
            elif step == "l1":
                norm = x.abs().flatten(1).sum(1).view(-1, *([1] * (x.dim() - 1)))
                x = x / torch.where(norm == 0, torch.ones_like(norm), norm)
            else:
                x = (x - self.mean) / self.std
        return self.model(x)


def _inputs_record(model: nn.Module, input_shape: Sequence[int], in_graph: bool = False) -> str:
    """What a deployment needs beside the graph: the input shape and convention, the class
    names (when the data had them), the CSV column names in input order, the image read options
    (``size``, ``channels``) the training images were read with, and the feature
    normalisation fitted on the training rows (steps, and zscore's mean and std) that raw rows
    must go through first."""
    spec = getattr(model, INPUTS_ATTR, None)
    record: dict[str, Any] = {"input_shape": list(input_shape),
                              "inputs": None if spec is None else spec.to_dict()}
    names = getattr(model, CLASSES_ATTR, None)
    if isinstance(names, list) and names:
        record["classes"] = names
    fitted = getattr(model, NORMALIZATION_ATTR, None)
    if isinstance(fitted, Normalization):  # in the graph: for the reader's information only
        record["normalization_in_graph" if in_graph else "normalize"] = fitted.to_record()
    columns = getattr(model, COLUMNS_ATTR, None)
    if isinstance(columns, dict):
        record["columns"] = columns  # the CSV header, in input order
    image_read = getattr(model, IMAGE_READ_ATTR, None)
    if isinstance(image_read, dict) and image_read:
        record["image_read"] = image_read  # e.g. {"size": 32}: how field images are read
    return json_text(record, indent=None)


def _onnx_bytes(model: nn.Module, example: Tensor, record: str, int8: bool) -> bytes:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'transferkit[onnx]'"
                          ) from None
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter: no onnxscript needed
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    graph = onnx.load_from_string(buffer.getvalue())
    entry = graph.metadata_props.add()
    entry.key, entry.value = "transferkit_inputs", record
    data = graph.SerializeToString()
    if not int8:
        return data
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(data)
        # Linear layers only (MatMul/Gemm), as torch's dynamic quantisation does: int8
        # convolutions (ConvInteger) ran 3-4x slower than fp32 on a CPU (deploy table, o).
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice
        try:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            logging.getLogger().setLevel(quiet)
        return target.read_bytes()


def _torchscript_bytes(model: nn.Module, example: Tensor, record: str, int8: bool) -> bytes:
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={"transferkit.json": record})
    return buffer.getvalue()


def _runner(fmt: str, data: bytes, threads: int) -> Callable[[Tensor], Tensor]:
    """A function running the exported bytes as a deployment would: onnxruntime or torch."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(data))
    loaded.eval()

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return loaded(x)

    return run


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block, then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _latency(run: Callable[[Tensor], Tensor], x: Tensor, repeats: int) -> dict[str, float]:
    run(x)  # warm-up (allocation, lazy initialisation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"median_ms": 1000 * statistics.median(times), "p95_ms": 1000 * p95,
            "per_image_ms": 1000 * statistics.median(times) / len(x), "repeats": repeats}


def export_model(
    model: nn.Module,
    x: Tensor,
    path: str | Path,
    *,
    fmt: str = "onnx",
    quantize: str | None = None,
    y: Tensor | None = None,
    batch_sizes: Sequence[int] = (1, 256),
    repeats: int = 30,
    threads: int = 1,
    raw: Tensor | None = None,
) -> dict[str, Any]:
    """Write ``model`` to ``path`` and return the parity, size and latency report; ``x`` are
    inputs in the model's convention (a test split), ``y`` their labels when known. A model
    that records a feature normalisation is exported behind it (:class:`NormalizedInputs`):
    the file takes ``raw``, the same rows before normalisation."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize must be int8 or left out, got {quantize!r}")
    if x.dim() < 2 or len(x) == 0:
        raise ConfigError(f"export needs a batch of example inputs, got shape {tuple(x.shape)}")
    model = model.cpu()
    x = x.detach().float().cpu()
    fitted = getattr(model, NORMALIZATION_ATTR, None)
    graph: nn.Module = model
    if isinstance(fitted, Normalization):
        if raw is None or raw.shape != x.shape:
            raise ConfigError("a model with a recorded normalisation is exported behind it: "
                              "give raw=, the rows of x before normalisation")
        graph = NormalizedInputs(fitted, model)
    feed = x if graph is model else raw.detach().float().cpu()
    record = _inputs_record(model, tuple(x.shape[1:]), in_graph=graph is not model)
    with eval_mode(model):
        example = feed[: min(2, len(feed))]
        writer = _onnx_bytes if fmt == "onnx" else _torchscript_bytes
        data = writer(graph, example, record, quantize == "int8")
        with torch.inference_mode():
            reference = torch.cat([model(chunk) for chunk in x.split(256)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    run = _runner(fmt, data, threads)
    exported = torch.cat([run(chunk) for chunk in feed.split(256)])
    agree = float((exported.argmax(1) == reference.argmax(1)).float().mean())
    report: dict[str, Any] = {
        "file": str(path), "format": fmt, "quantize": quantize or "none",
        "bytes": len(data), "rows_checked": len(x),
        "max_abs_diff": float((exported - reference).abs().max()),
        "top1_agreement": agree, "threads": threads,
    }
    if y is not None:
        y = y.cpu()
        report["accuracy"] = float((exported.argmax(1) == y).float().mean())
        report["pytorch_accuracy"] = float((reference.argmax(1) == y).float().mean())
    latency = {}
    with _torch_threads(threads):  # TorchScript times on torch's threads
        for batch in batch_sizes:
            rows = feed[:batch] if len(feed) >= batch else feed.repeat(
                (batch + len(feed) - 1) // len(feed), *[1] * (feed.dim() - 1))[:batch]
            latency[f"batch_{batch}"] = _latency(run, rows, repeats if batch == 1 else
                                                 max(5, repeats // 3))
    report["latency"] = latency
    if graph is not model:
        assert isinstance(fitted, Normalization)
        stats = " with the training rows' statistics" if "zscore" in fitted.steps else ""
        report["inputs"] = f"raw rows: the graph applies {', '.join(fitted.steps)}{stats} itself"
    return report
