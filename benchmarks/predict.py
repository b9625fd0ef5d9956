"""`leti predict` on every cell of a space, startup included: the time a NAS script waits.

    python benchmarks/predict.py --device torch-cpu            # after `make pipeline`, from the repo root

Writes all of the space's cells to a file, runs ``leti predict --device D --file FILE`` REPEATS times
as a fresh process (Python start, imports, MLflow registry lookup, model load, prediction, JSON
output), and prints each run's wall and CPU seconds, their medians and the load average. Target:
all 15625 NB201 cells under 5 s. On a shared machine wall time follows the load; CPU time (user +
system of the process) is what the command itself costs. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from leti import spaces


def run_once(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system of the child) and the number of output lines."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"predict benchmark: {' '.join(command[:4])} ... exited {result.returncode}: {result.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout.count("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="torch-cpu")
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--model", help="a model URI instead of the champion")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    space = spaces.get(args.space)
    if not hasattr(space, "all_arch_strings"):
        raise SystemExit(f"predict benchmark: space {args.space} has no list of all its cells")
    archs = space.all_arch_strings()
    leti = [sys.executable, "-m", "leti"] if not Path(sys.executable).with_name("leti").exists() else [str(Path(sys.executable).with_name("leti"))]
    with tempfile.TemporaryDirectory(prefix="leti-predict-") as scratch:
        cells = Path(scratch) / "cells.txt"
        cells.write_text("\n".join(archs) + "\n")
        command = [*leti, "predict", "--device", args.device, "--space", args.space, "--file", str(cells)]
        if args.model:
            command += ["--model", args.model]
        print(f"leti predict, {len(archs)} {args.space} cells on {args.device}, {args.repeats} runs, "
              f"load average before {os.getloadavg()[0]:.2f}")
        walls, cpus = [], []
        for index in range(args.repeats):
            wall, cpu, lines = run_once(command)
            walls.append(wall)
            cpus.append(cpu)
            print(f"  run {index + 1}: wall {wall:.2f} s, cpu {cpu:.2f} s, {lines} lines")
    print(f"median wall {statistics.median(walls):.2f} s, median cpu {statistics.median(cpus):.2f} s "
          f"(target: under 5 s); load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
