"""Measurement benchmark: noise floor, campaign overhead and the layer-wise baseline.

    python benchmarks/measurement.py                      # 50 cells: torch-cpu, onnxruntime-cpu, android-adb
    python benchmarks/measurement.py --backend android-adb --cells 20 --runs 100
    python benchmarks/measurement.py --runs 100 --warmup-seconds 0.2 --pin 1 --layerwise

Noise floor: the same cells are measured twice (two full campaign passes, one after the other)
and each cell's relative pass-to-pass difference |a - b| / mean(a, b) is taken per statistic;
the script prints the median and 90th percentile over cells.

Overhead: a pass's wall time over the time the device spent running the networks (warm-up plus
timed runs). 1.0 means the host never kept the device waiting; building, converting, pushing and
bookkeeping are the rest. The first pass starts with an empty artifact cache (every cell is
converted, the worker and converter processes start); the second finds every cell converted.
Targets: torch-cpu <= 1.1, onnxruntime-cpu <= 2, android-adb on the stand-in phone <= 1.1.

android-adb runs against the stand-in adb (tests/fakes/adb: a folder plays the phone, the local
TFLite interpreter plays benchmark_model), so its "device" is this machine's CPU.
It prints figures; it asserts nothing. The machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from leti.devices.config import DeviceConfig
from leti.measure import campaign, operators
from leti.predictors.layerwise import predict_from_lookup
from leti.spaces import nb201
from leti.store import reader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakes import phone  # noqa: E402 - the tests' stand-in phone (tests/fakes/adb)

STATISTICS = ("median_ms", "iqm_ms", "min_ms", "mean_ms")


def stand_in_phone(folder: Path) -> dict:
    """Options for android-adb that reach the stand-in phone living in ``folder``."""
    root, adb = phone.install(folder)
    os.environ["FAKE_ADB_ROOT"] = str(root)
    return {"serial": os.environ.setdefault("FAKE_ADB_SERIAL", phone.SERIAL), "adb": str(adb)}


def relative_differences(first: pl.DataFrame, second: pl.DataFrame, statistic: str) -> np.ndarray:
    joined = first.select("arch", pl.col(statistic).alias("a")).join(second.select("arch", pl.col(statistic).alias("b")), on="arch")
    joined = joined.drop_nulls()
    a, b = joined["a"].to_numpy(), joined["b"].to_numpy()
    return np.abs(a - b) / ((a + b) / 2)


def noise_and_overhead(device: DeviceConfig, archs: list[str], store: Path, prepare_ahead: bool) -> dict:
    passes, results = [], []
    for index in range(2):
        pass_store = store / f"pass{index}"
        results.append(campaign.run_campaign(archs, device, pass_store, progress=False, prepare_ahead=prepare_ahead))
        passes.append(reader.device_rows(pass_store, device.name))
    figures = {"cells": passes[0].height, "unstable_cells": int(passes[0]["unstable"].sum() + passes[1]["unstable"].sum()),
               "median_latency_ms": float(passes[0]["mean_ms" if passes[0]["median_ms"].null_count() else "median_ms"].median())}
    for statistic in STATISTICS:
        diff = relative_differences(passes[0], passes[1], statistic)
        figures[statistic] = (float(np.median(diff)), float(np.percentile(diff, 90))) if len(diff) else None
    figures["passes"] = [(result.seconds, result.device_seconds, result.overhead) for result in results]
    return figures


def layerwise_check(archs: list[str], defaults: dict, store: Path, measured: pl.DataFrame) -> dict:
    device = DeviceConfig.from_params("torch-cpu", {"backend": "torch-cpu"}, defaults)
    operators.measure_ops(device, store / "ops")
    lookup = reader.read_op_lookup(store / "ops" / device.name, configuration=device.config_id)
    predicted = predict_from_lookup(measured["arch"].to_list(), lookup, device.network)
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
    parser.add_argument("--backend", action="append", help="default: torch-cpu, onnxruntime-cpu and android-adb")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a backend option (YAML value), e.g. exporter=torchscript or op_profiling=true")
    parser.add_argument("--no-prepare-ahead", action="store_true", help="convert each cell in turn (the sequential baseline)")
    parser.add_argument("--layerwise", action="store_true", help="also build the torch-cpu op table and score the sum baseline")
    args = parser.parse_args()
    import yaml

    defaults = {"runs": args.runs, "warmup_runs": args.warmup_runs, "warmup_seconds": args.warmup_seconds,
                "threads": 1, "pin_cpus": args.pin}
    options = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.option)}
    archs = nb201.sample_valid(args.cells, args.seed)
    print(f"protocol: {defaults}; cells: {args.cells}; prepare ahead: {not args.no_prepare_ahead}; "
          f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="leti-bench-") as folder:
        os.environ["LETI_CACHE_DIR"] = str(Path(folder) / "cache")  # the first pass starts cold
        for backend in args.backend or ["torch-cpu", "onnxruntime-cpu", "android-adb"]:
            extra = {**stand_in_phone(Path(folder)), **options} if backend == "android-adb" else options
            device = DeviceConfig.from_params(backend, {"backend": backend, "options": extra}, defaults)
            figures = noise_and_overhead(device, archs, Path(folder) / backend, not args.no_prepare_ahead)
            print(f"\n{backend}{' (stand-in phone)' if backend == 'android-adb' else ''}: {figures['cells']} cells, "
                  f"median latency {figures['median_latency_ms']:.3f} ms, unstable rows {figures['unstable_cells']}/{2 * figures['cells']}")
            for statistic in STATISTICS:
                if figures[statistic]:
                    median, p90 = figures[statistic]
                    print(f"  pass-to-pass difference of {statistic:9s}: median {100 * median:.2f} %, p90 {100 * p90:.2f} %")
            for name, (wall, device_s, overhead) in zip(("cold cache", "warm cache"), figures["passes"]):
                print(f"  overhead, {name}: {overhead:.2f} (wall {wall:.1f} s / device {device_s:.1f} s)")
        if args.layerwise:
            measured = reader.device_rows(Path(folder) / "torch-cpu" / "pass0", "torch-cpu")
            check = layerwise_check(archs, defaults, Path(folder), measured)
            print(f"\nlayer-wise baseline on torch-cpu: Spearman {check['spearman']:.3f}, "
                  f"median predicted/measured {check['median_ratio_pred_over_measured']:.2f}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
