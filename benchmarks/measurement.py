"""Measurement benchmark: noise floor, campaign overhead and the layer-wise baseline.

    python benchmarks/measurement.py                      # 50 cells, torch-cpu and onnxruntime-cpu
    python benchmarks/measurement.py --runs 100 --warmup-seconds 0.2 --pin 1 --layerwise

Noise floor: the same cells are measured twice (two full campaign passes, one after the other)
and each cell's relative pass-to-pass difference |a - b| / mean(a, b) is taken for the median
and the interquartile mean; the script prints the median and 90th percentile over cells.
Overhead: a pass's wall time divided by the time spent inside timed runs (build, export,
warm-up and bookkeeping are the rest). Targets: median difference <= 1 %, overhead <= 1.5.
It prints figures; it asserts nothing. The machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from leti import campaign, layerwise
from leti.campaign import DeviceConfig
from leti.spaces import nb201


def relative_differences(first: pl.DataFrame, second: pl.DataFrame, statistic: str) -> np.ndarray:
    joined = first.select("arch", pl.col(statistic).alias("a")).join(second.select("arch", pl.col(statistic).alias("b")), on="arch")
    a, b = joined["a"].to_numpy(), joined["b"].to_numpy()
    return np.abs(a - b) / ((a + b) / 2)


def noise_and_overhead(backend: str, archs: list[str], defaults: dict, store: Path) -> dict:
    device = DeviceConfig.from_params(backend, {"backend": backend}, defaults)
    passes, results = [], []
    for index in range(2):
        pass_store = store / f"pass{index}"
        results.append(campaign.run_campaign(archs, device, pass_store, progress=False))
        passes.append(campaign.latency_table(pass_store, backend))
    figures = {"backend": backend, "cells": passes[0].height,
               "unstable_cells": int(passes[0]["unstable"].sum() + passes[1]["unstable"].sum()),
               "median_latency_ms": float(passes[0]["median_ms"].median())}
    for statistic in ("median_ms", "iqm_ms", "min_ms"):
        diff = relative_differences(passes[0], passes[1], statistic)
        figures[statistic] = (float(np.median(diff)), float(np.percentile(diff, 90)))
    figures["overhead"] = [result.seconds / result.timed_seconds for result in results]
    figures["wall_s"] = [result.seconds for result in results]
    return figures


def layerwise_check(archs: list[str], defaults: dict, store: Path, measured: pl.DataFrame) -> dict:
    device = DeviceConfig.from_params("torch-cpu", {"backend": "torch-cpu"}, defaults)
    layerwise.measure_ops(device, store / "ops")
    predicted = layerwise.predict_from_lookup(measured["arch"].to_list(), layerwise.lookup_table(store / "ops", device), device.network)
    actual = measured["median_ms"].to_numpy()
    return {"spearman": float(spearmanr(predicted, actual).statistic), "median_ratio_pred_over_measured": float(np.median(predicted / actual))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup-runs", type=int, default=10)
    parser.add_argument("--warmup-seconds", type=float, default=0.0)
    parser.add_argument("--pin", type=int, nargs="*", default=[], help="CPUs to pin to (os.sched_setaffinity)")
    parser.add_argument("--backend", action="append", help="default: torch-cpu and onnxruntime-cpu")
    parser.add_argument("--layerwise", action="store_true", help="also build the torch-cpu op table and score the sum baseline")
    args = parser.parse_args()
    defaults = {"runs": args.runs, "warmup_runs": args.warmup_runs, "warmup_seconds": args.warmup_seconds,
                "threads": 1, "pin_cpus": args.pin}
    archs = nb201.sample_valid(args.cells, args.seed)
    print(f"protocol: {defaults}; cells: {args.cells}; load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="leti-bench-") as folder:
        for backend in args.backend or ["torch-cpu", "onnxruntime-cpu"]:
            figures = noise_and_overhead(backend, archs, defaults, Path(folder) / backend)
            print(f"\n{backend}: {figures['cells']} cells, median latency {figures['median_latency_ms']:.3f} ms, "
                  f"unstable rows {figures['unstable_cells']}/{2 * figures['cells']}")
            for statistic in ("median_ms", "iqm_ms", "min_ms"):
                median, p90 = figures[statistic]
                print(f"  pass-to-pass difference of {statistic:9s}: median {100 * median:.2f} %, p90 {100 * p90:.2f} %")
            print("  overhead (wall / timed runs): " + ", ".join(f"{value:.2f}" for value in figures["overhead"])
                  + " (wall " + ", ".join(f"{value:.1f} s" for value in figures["wall_s"]) + ")")
        if args.layerwise:
            measured = campaign.latency_table(Path(folder) / "torch-cpu" / "pass0", "torch-cpu")
            check = layerwise_check(archs, defaults, Path(folder), measured)
            print(f"\nlayer-wise baseline on torch-cpu: Spearman {check['spearman']:.3f}, "
                  f"median predicted/measured {check['median_ratio_pred_over_measured']:.2f}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
