"""User-facing errors: one line that names what is wrong and how to fix it."""

from __future__ import annotations


class TransferkitError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""


class UnknownNameError(TransferkitError, KeyError):
    """A dataset, model or method name that is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataError(TransferkitError):
    """A data file that is missing, truncated or has the wrong format."""


class CheckpointError(TransferkitError):
    """A checkpoint that cannot be read or does not fit the model."""


class ConfigError(TransferkitError):
    """A configuration field of the wrong type or range."""


class NonFiniteLossError(TransferkitError):
    """A loss became NaN or infinite during training."""


class RunDirError(TransferkitError):
    """A run directory or file that cannot be written, or that another run is using."""


class DivergenceError(TransferkitError):
    """Training whose loss exploded or whose predictions collapsed to one class."""
