"""transferkit: knowledge distillation and domain adaptation in one PyTorch toolkit."""

from transferkit.api import (
    RunResult,
    adapt,
    distill,
    evaluate,
    export,
    inspect,
    list_components,
    load_data,
    load_model,
    load_run,
    predict,
    report_runs,
    train,
)
from transferkit.data.base import Dataset, DomainPair
from transferkit.data.memory import from_arrays, pair
from transferkit.errors import TransferkitError
from transferkit.explain import explain

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DomainPair",
    "RunResult",
    "TransferkitError",
    "__version__",
    "adapt",
    "distill",
    "evaluate",
    "explain",
    "export",
    "from_arrays",
    "inspect",
    "list_components",
    "load_data",
    "load_model",
    "load_run",
    "pair",
    "predict",
    "report_runs",
    "train",
]
