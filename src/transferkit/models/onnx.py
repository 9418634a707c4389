"""An ONNX file as a network: a teacher exported from another framework, run by onnxruntime.

Only the logits are available (no inner layers, no gradient): methods that read a teacher's
features need a PyTorch teacher, and say so. The file's SHA-256 is a buffer of the module, so
a run records which file taught it (``weights_sha256``) and a resume with another is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from transferkit.errors import CheckpointError, ConfigError


class OnnxModel(nn.Module):
    """``forward(x)``: the ONNX graph's single output for ``x`` (float32, on ``x``'s device)."""

    logits_only = True  # taps on inner layers are refused (engine/taps.py)

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"{path} is an ONNX file; reading it needs onnxruntime: pip "
                              "install 'transferkit[onnx]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX file {self.path} does not exist")
        data = self.path.read_bytes()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.path} is not a readable ONNX model ({first[:160]})"
                                  ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ConfigError(f"{self.path}: a teacher takes one input and gives logits first; "
                              f"this graph has {len(inputs)} inputs and {len(outputs)} outputs")
        self.input_name = inputs[0].name
        # One input's dimensions as the graph fixes them (None where symbolic, e.g. batch).
        self.input_dims = tuple(d if isinstance(d, int) and d > 0 else None
                                for d in list(inputs[0].shape or [])[1:]) or None
        # The input convention transferkit's export wrote (JSON), if this file came from it.
        meta = self.session.get_modelmeta().custom_metadata_map
        self.inputs_record: str | None = meta.get("transferkit_inputs")
        digest = hashlib.sha256(data).digest()
        self.register_buffer("onnx_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def forward(self, x: Tensor) -> Tensor:
        feed = {self.input_name: x.detach().float().cpu().numpy()}
        try:
            out = self.session.run(None, feed)[0]
        except Exception as exc:  # e.g. a batch whose shape the graph does not take
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"ONNX model {self.path} refused inputs of shape "
                              f"{tuple(x.shape)}: {first[:200]}; if it expects other inputs, "
                              "convert them with --teacher-input (teacher_input= in the API)"
                              ) from None
        return torch.from_numpy(out).float().to(x.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


def torchscript_inputs_record(path: Path) -> str | None:
    """The ``transferkit.json`` extra file of a TorchScript archive transferkit exported."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("/extra/transferkit.json"):
                return archive.read(name).decode("utf-8", "replace")
    return None


def is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive (a zip whose entries hold TorchScript ``code/``)."""
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())
