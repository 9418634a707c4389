"""Reading a grid's JSON-lines results file; no torch, so the report can use it too."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """The JSON lines of a grid's results file ([] if absent).

    A last line without its newline is a row whose write was cut (kill -9, full disk): it is
    dropped with a warning, and the grid reruns that row. Any other bad line stops with its
    file and line number.
    """
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                print(f"{path}:{number}: a row cut off while being written is ignored",
                      file=sys.stderr)
                continue
            raise SystemExit(f"{path}:{number}: not a JSON row ({exc.msg}); remove or fix that "
                             "line (a grid reruns a removed row)") from None
    return rows


def done(path: Path, *fields: str) -> set[tuple]:
    """The ``fields`` of every finished row: what a rerun of a grid skips."""
    return {tuple(row.get(f) for f in fields) for row in read_rows(path)}
