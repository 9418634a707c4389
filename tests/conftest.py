"""Shared fixtures for the engine, method, CLI and distributed tests.

Everything trains on the bundled 8x8 ``digits`` (no download) with tiny widths, a few steps
per epoch and ``device="cpu"``, so one run takes well under a second. Helper models live in
a small module written to a temporary folder that is put on ``sys.path`` and on the
``PYTHONPATH`` of subprocesses, so the CLI can name them as ``tk_test_helpers:factory``.
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP threads that spin while waiting slow everything down
# badly when the CPU is shared (CI, other processes); subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from transferkit import api
from transferkit.cli import main as cli_main
from transferkit.data import Dataset, DomainPair, load_dataset, load_pair

HELPERS = "tk_test_helpers"
# Python API settings for a run of a fraction of a second.
FAST: dict = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 32, "progress": False,
              "device": "cpu"}
TINY = {"widths": [16]}
# The same for the CLI (epochs given per test).
CLI_FAST = ["--device", "cpu", "--no-progress", "--batch-size", "32", "--steps-per-epoch", "3"]

HELPER_SOURCE = '''
"""Models for the tests: NaN after a known number of steps, a wrong class count, RNG draws."""

import os
import signal

import torch
from torch import nn

from transferkit.models import mlp


class NanAfter(nn.Module):
    """Logits of a small mlp that turn NaN from the ``calls``-th forward in training mode."""

    def __init__(self, inner, calls):
        super().__init__()
        self.inner = inner
        self.calls = calls
        self.seen = 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.seen += 1
            if self.seen >= self.calls:
                out = out * float("nan")
        return out


def nan_after(input_shape, num_classes, calls=5):
    return NanAfter(mlp(input_shape, num_classes, widths=[16]), calls)


def nan_on_rank(input_shape, num_classes, calls=5, rank=1):
    """NaN on one rank of a torchrun job only (the others' losses stay finite)."""
    if os.environ.get("RANK", "0") != str(rank):
        calls = 10**9
    return NanAfter(mlp(input_shape, num_classes, widths=[16]), calls)


class RandomProbe(nn.Module):
    """A small mlp that appends three draws of the global RNG to ``<path>.<RANK>`` at every
    training forward: what dropout or jitter would draw on that rank at that step. With
    ``kill_at=k`` the process SIGKILLs itself at its k-th forward, once per probe file."""

    def __init__(self, inner, path, kill_at=0):
        super().__init__()
        self.inner = inner
        self.path = f"{path}.{os.environ.get('RANK', '0')}"
        self.kill_at = kill_at
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.kill_at and not os.path.exists(self.path + ".killed"):
                open(self.path + ".killed", "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            with open(self.path, "a") as handle:
                handle.write(" ".join(f"{v:.8f}" for v in torch.rand(3).tolist()) + "\\n")
        return self.inner(x)


def random_probe(input_shape, num_classes, path, kill_at=0):
    return RandomProbe(mlp(input_shape, num_classes, widths=[16]), path, kill_at)


def broken(input_shape, num_classes):
    raise RuntimeError("first line\\nsecond line")


def five_classes(input_shape):
    """Ignores the data's class count: always 5 outputs."""
    return mlp(input_shape, 5, widths=[8])


class Picky(nn.Module):
    """Refuses inputs of another size with ValueError, as many models not written for torch do."""

    def __init__(self, features, num_classes):
        super().__init__()
        self.features = features
        self.linear = nn.Linear(features, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        if x.shape[1] != self.features:
            raise ValueError(f"expected {self.features} features, got {x.shape[1]}")
        return self.linear(x)


def picky(input_shape, num_classes, features=100):
    return Picky(features, num_classes)

def stuck(input_shape, num_classes):
    """An mlp whose class-0 bias dwarfs everything: it predicts class 0 for every input."""
    model = mlp(input_shape, num_classes, widths=[16])
    with torch.no_grad():
        model.head.bias[0] = 1e4
    return model
'''


@pytest.fixture(scope="session")
def helpers_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Folder holding ``tk_test_helpers.py``; importable here and in subprocesses."""
    folder = tmp_path_factory.mktemp("helpers")
    (folder / f"{HELPERS}.py").write_text(textwrap.dedent(HELPER_SOURCE))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(HELPERS, None)


@pytest.fixture(scope="session")
def sub_env(helpers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for subprocesses: passive OpenMP waits, helpers importable, no user data."""
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(helpers_dir), env.get("PYTHONPATH", "")) if p
    )
    env["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    env.pop("TRANSFERKIT_DATA_DIR", None)
    return env


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_pair() -> DomainPair:
    return load_pair("digits->digits_shifted")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run of ``mlp`` (widths [16]) on digits; tests must not modify it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    api.train("mlp", "digits", model_options=TINY, out=out, **{**FAST, "epochs": 2})
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` (recursively) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


CliRunner = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> CliRunner:
    """``cli(*argv)`` runs ``transferkit.cli.main`` in this process: (status, stdout, stderr).

    It runs in a temporary folder, so a default ``runs/...`` directory cannot land in the repo.
    """
    monkeypatch.chdir(tmp_path)

    def run(*argv: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def console_script() -> list[str]:
    """The installed ``transferkit`` console script (next to this Python, else on PATH)."""
    script = Path(sys.executable).parent / "transferkit"
    return [str(script)] if script.exists() else ["transferkit"]


def run_process(
    argv: list[str], env: dict[str, str], timeout: float = 240, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def error_line(err: str) -> str:
    """The single line a failing command prints; fails when there is more or a traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("transferkit: error: "), err
    return lines[0]
