"""Peak memory (max RSS) and wall time of ``transferkit demo``, run as a child process.

    python benchmarks/demo_memory.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from _common import parser, write_result


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "transferkit.cli", "demo", "--out", tmp, "--seed",
             str(args.seed)], env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(done.stdout)
    row = {"peak_rss_mib": round(peak_kib / 1024, 1), "wall_seconds": round(seconds, 1),
           "cpu_count": os.cpu_count()}
    print(row)
    write_result("demo_memory", {"rows": {"demo": row}, "stdout": done.stdout}, args.out)


if __name__ == "__main__":
    main()
