"""Run a grid's rows as separate processes, several at a time, each on its own threads.

A grid of one-thread runs fills a multi-core machine (or a GPU) far better than one process
with many threads: small models leave most threads waiting. Each job is a command line that
trains one row and appends it to the grid's results file itself (``_common.append`` locks the
file), so a killed scheduler loses only the rows in flight, and those resume from their
checkpoints when the grid is run again.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Job:
    """One row: ``argv`` trains it; ``after`` names a job that must have succeeded first."""

    name: str
    argv: list[str]
    after: str | None = None


def run_jobs(jobs: Sequence[Job], workers: int, threads: int, poll: float = 2.0,
             log: Callable[[str], None] = print) -> list[str]:
    """Run ``jobs`` in list order, at most ``workers`` at a time, a job starting once its
    ``after`` job succeeded (skipped if that failed); returns the names that failed or were
    skipped."""
    if workers < 1 or threads < 1:
        raise ValueError(f"need workers >= 1 and threads >= 1, got {workers} and {threads}")
    names = {job.name for job in jobs}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    waiting = list(jobs)
    running: dict[str, subprocess.Popen] = {}
    succeeded: set[str] = set()
    failed: list[str] = []
    while waiting or running:
        for name, process in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[name]
            if code == 0:
                succeeded.add(name)
            else:
                failed.append(name)
                log(f"[parallel] {name} failed (exit status {code})")
        for job in list(waiting):
            if job.after in failed:
                waiting.remove(job)
                failed.append(job.name)
                log(f"[parallel] {job.name} skipped: {job.after} failed")
            elif len(running) < workers and (job.after is None or job.after not in names
                                              or job.after in succeeded):
                waiting.remove(job)
                log(f"[parallel] start {job.name} ({len(running) + 1}/{workers} running)")
                running[job.name] = subprocess.Popen(job.argv, env=env)
        if running:
            time.sleep(poll)
    return failed
