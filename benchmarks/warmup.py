"""How many warm-up runs a cell needs on a CPU backend: each run's time against the cell's settled time.

    python benchmarks/warmup.py [--backend torch-cpu|onnxruntime-cpu] [--cells 40] [--runs 60]

Each cell of a seeded NB201 sample (the pipeline's network) is prepared by the backend and timed
``--runs`` times in a row with no warm-up, one thread, through the backend's own ``measure``.
A cell's settled time is the median of its last half of runs; the script prints, for each early run
index, the median and 90th percentile over cells of that run's time over the settled time, and what
the protocol's statistic (the minimum of 30 runs) would read after ``w`` warm-up runs, relative to
after 10. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from leti.devices import make_backend
from leti.devices.base import Protocol
from leti.spaces import nb201


def run_times(backend_name: str, arch: str, runs: int, workdir: Path) -> np.ndarray:
    """The cell's per-run times (ms), from its first run on: no warm-up."""
    network = nb201.build_network(arch).eval()
    example = torch.randn(1, 3, 32, 32)
    return np.asarray(make_backend(backend_name).measure(network, example, Protocol(threads=1, warmup_runs=0, runs=runs), workdir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch-cpu", choices=["torch-cpu", "onnxruntime-cpu"])
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        table = np.stack([run_times(args.backend, arch, args.runs, Path(workdir)) for arch in nb201.sample_valid(args.cells, seed=123)])
    settled = np.median(table[:, args.runs // 2:], axis=1, keepdims=True)
    ratio = table / settled
    print(f"{args.backend}: {args.cells} cells x {args.runs} runs in {time.time() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print("run index: median / 90th percentile of run time over the settled time")
    for i in range(12):
        print(f"  run {i:2d}: {np.median(ratio[:, i]):.3f} / {np.percentile(ratio[:, i], 90):.3f}")
    reference = table[:, 10:40].min(1)
    print("min of 30 runs after w warm-up runs, relative to after 10: median / 10th / 90th percentile over cells")
    for w in (0, 1, 2, 3, 5, 10, 20):
        relative = table[:, w:w + 30].min(1) / reference
        print(f"  w={w:2d}: {np.median(relative):.4f} / {np.percentile(relative, 10):.4f} / {np.percentile(relative, 90):.4f}")


if __name__ == "__main__":
    main()
