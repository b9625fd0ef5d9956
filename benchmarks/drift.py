"""Measurements you can trust on a drifting device: the figures behind `measure.sentinel`'s defaults.

    python benchmarks/drift.py passes --passes 3 --output benchmarks/results/drift      # ~10 min a pass
    python benchmarks/drift.py passes --passes 3 --clock thread --output benchmarks/results/drift  # thread CPU time
    python benchmarks/drift.py phone --repeats 5 --output benchmarks/results/drift      # the stand-in phone
    python benchmarks/drift.py concurrent --output benchmarks/results/drift
    python benchmarks/drift.py report --output benchmarks/results/drift                # drift.md from the JSON files

`passes`: fresh campaigns of the pipeline's NB201 sample on `torch-cpu` (params.yaml: `sample.nb201`,
`devices.torch-cpu`, `measure`), each in its own store, with the sentinel on. Every attempt of every
chunk is kept, so one set of passes scores every policy: **none** (each chunk's first attempt, raw
`min_ms`: what a campaign without the sentinel measures), **detect** (the latest attempt, raw),
**correct** (first attempts, `min_ms_corrected`), **detect+correct** (latest attempt, corrected).
Per pass and policy: linear regression's acc@10 on the pipeline's split (`train.nb201`), and the
pass-to-pass median difference of the statistic. `--clock thread` runs the same passes with the
protocol's thread CPU-time clock (which leaves out time the hypervisor steals) into their own stores
(`passes-thread.json`), so the two clocks compare on the same sample. The sentinel's own cost and the re-measured chunks'
cost are given as shares of the campaign's wall time. A pass resumes where it stopped.
`phone`: the stand-in phone (tests/fakes/adb) slowed by a scripted 20 % mid-campaign, `--repeats`
times at different points, against an undisturbed run: detected or not, and the corrected cells'
median distance from the undisturbed ones. `concurrent`: two `leti measure` processes started
together on the same 30 cells, against one alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
STORES = ROOT / "benchmarks" / "data" / "drift"  # the passes' latency stores (not committed: benchmarks/data/ is ignored)
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in phone

from leti import params, predictors  # noqa: E402
from leti.devices.config import DeviceConfig, device_from_params  # noqa: E402
from leti.measure import campaign  # noqa: E402
from leti.measure.sentinel import SentinelPolicy  # noqa: E402
from leti.metrics import regression_metrics  # noqa: E402
from leti.predictors import evaluation  # noqa: E402
from leti.spaces import nb201  # noqa: E402
from leti.store import tables  # noqa: E402

POLICIES = {"none": ("min_ms", "first"), "detect": ("min_ms", "latest"), "correct": ("min_ms_corrected", "first"),
            "detect+correct": ("min_ms_corrected", "latest")}


def cells_of(store: Path, device: DeviceConfig, policy: str) -> pl.DataFrame:
    """arch -> latency under a policy, from every attempt kept in one pass's store."""
    statistic, attempt = POLICIES[policy]
    rows = tables.read(store, tables.LATENCY).filter(
        pl.col("role").is_null() & pl.col("error").is_null() & (pl.col("config_id") == device.config_id))
    rows = rows.sort("measured_at")
    chosen = rows.unique("arch", keep="first" if attempt == "first" else "last")
    return chosen.select("arch", pl.col(statistic).alias("ms")).sort("arch")


def linear_acc10(cells: pl.DataFrame, train: dict) -> float:
    archs, latency = cells["arch"].to_list(), cells["ms"].to_numpy()
    parts = evaluation.split(len(archs), train["train_size"], train["val_size"], train["seed"])
    result = evaluation.evaluate(predictors.make_predictor("linear", space="nb201"), archs, latency, parts)
    return float(result.metrics["acc_10pct"])


def costs(store: Path, seconds: float) -> dict[str, float]:
    """Shares of a pass's wall time spent timing sentinels and re-measuring drifted chunks."""
    rows = tables.read(store, tables.LATENCY).filter(pl.col("error").is_null())

    def busy(frame: pl.DataFrame) -> float:  # timed runs plus warm-up runs of the same length
        return float(sum(sum(s) / 1000 * (1 + w / r) for s, w, r in frame.select("samples_ms", "warmup_runs", "runs").iter_rows()))

    return {"sentinel_share": busy(rows.filter(pl.col("role") == "sentinel")) / seconds,
            "remeasure_share": busy(rows.filter(pl.col("role").is_null() & (pl.col("attempt") > 1))) / seconds}


def run_passes(args: argparse.Namespace) -> None:
    sample, train = params.section("sample")["nb201"], params.section("train")["nb201"]
    device = device_from_params("torch-cpu")
    if args.clock != device.protocol.clock:
        device = dataclasses.replace(device, protocol=dataclasses.replace(device.protocol, clock=args.clock))
    options = campaign.options_from_params(params.section("measure"))
    suffix = "" if args.clock == "wall" else f"-{args.clock}"
    archs = nb201.sample_valid(args.cells or sample["n"], sample["seed"])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / f"passes{suffix}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"passes": {}}
    for index in range(1, args.passes + 1):
        store = STORES / f"pass{suffix}{index}"
        if str(index) in record["passes"]:
            continue
        started = time.monotonic()
        result = campaign.run_campaign(archs, device, store, **options)
        seconds = time.monotonic() - started
        record["passes"][str(index)] = {"seconds": seconds, "quality": result.quality().line(), **costs(store, seconds),
                                        "loadavg": os.getloadavg()}
        print(f"pass {index}: {seconds:.0f} s, {result.quality().line()}", flush=True)
        record_path.write_text(json.dumps(record, indent=2))
    stores = [STORES / f"pass{suffix}{index}" for index in range(1, args.passes + 1)]
    scores = {}
    for policy in POLICIES:
        frames = [cells_of(store, device, policy) for store in stores]
        common = frames[0]["arch"]
        for frame in frames[1:]:
            common = common.filter(common.is_in(frame["arch"].implode()))
        aligned = [frame.filter(pl.col("arch").is_in(common.implode())).sort("arch") for frame in frames]
        acc = [linear_acc10(frame, train) for frame in aligned]
        diffs = [float(np.median(np.abs(a["ms"].to_numpy() - b["ms"].to_numpy()) / ((a["ms"].to_numpy() + b["ms"].to_numpy()) / 2)))
                 for i, a in enumerate(aligned) for b in aligned[i + 1:]]
        scores[policy] = {"linear_acc_10pct": acc, "pass_to_pass_median_diff_pct": [100 * d for d in diffs], "cells": common.len()}
    record["scores"] = scores
    record_path.write_text(json.dumps(record, indent=2))
    print(json.dumps(scores, indent=2))


def run_phone(args: argparse.Namespace) -> None:
    from fakes.phone import SERIAL, install

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    archs = nb201.sample_valid(args.cells, seed=31)
    shape = {"input_size": 32, "channels": 16, "cells_per_stage": 2, "num_classes": 10}  # runs of about a millisecond
    runs = []
    with tempfile.TemporaryDirectory(prefix="leti-drift-phone-") as scratch:
        root, adb = install(Path(scratch))
        os.environ.update(FAKE_ADB_ROOT=str(root), FAKE_ADB_SERIAL=SERIAL, FAKE_ADB_CLOCK=args.phone_clock)
        device = DeviceConfig.from_params("phone", {"backend": "android-adb", "options": {"serial": SERIAL, "adb": str(adb)}},
                                          {"runs": 50, "warmup_runs": 5, **shape})
        policy = SentinelPolicy.from_params(params.section("measure").get("sentinel"))
        calm_store = Path(scratch) / "calm"
        campaign.run_campaign(archs, device, calm_store, part_size=2, progress=False, policy=policy, order_seed=None)
        calm = cells_of(calm_store, device, "none")
        # The stand-in's own noise floor: a second undisturbed campaign against the first.
        again_store = Path(scratch) / "calm-again"
        campaign.run_campaign(archs, device, again_store, part_size=2, progress=False, policy=policy, order_seed=None)
        again = cells_of(again_store, device, "detect+correct").join(calm, on="arch", suffix="_calm")
        floor = 100 * float((again["ms"] / again["ms_calm"] - 1).abs().median())
        print(f"noise floor (undisturbed against undisturbed): {floor:.2f} %", flush=True)
        benchmarks = 1 + len(archs) + len(archs) // 2  # sentinels and cells of one undisturbed campaign
        first, last = 4, benchmarks - 2  # from the first chunk's cells (after the reference sentinel) to the last chunk's
        for repeat in range(args.repeats):
            after = first + repeat * max(1, (last - first) // max(1, args.repeats - 1))  # slow down at a different call each time
            (root / ".slowdown").write_text(json.dumps({"after": after, "runs": 10_000, "factor": 1.2}))
            (root / ".benchmarks").unlink(missing_ok=True)
            store = Path(scratch) / f"slow{repeat}"
            result = campaign.run_campaign(archs, device, store, part_size=2, progress=False, policy=policy, order_seed=None)
            corrected = cells_of(store, device, "detect+correct").join(calm, on="arch", suffix="_calm")
            raw = cells_of(store, device, "detect").join(calm, on="arch", suffix="_calm")
            runs.append({"slowdown_after_call": after, "detected": result.quality().remeasured_chunks > 0,
                         "corrected_median_error_pct": 100 * float((corrected["ms"] / corrected["ms_calm"] - 1).abs().median()),
                         "raw_median_error_pct": 100 * float((raw["ms"] / raw["ms_calm"] - 1).abs().median()),
                         "cells": corrected.height, "quality": result.quality().line()})
            print(json.dumps(runs[-1]), flush=True)
    (out / f"phone-{args.phone_clock}.json").write_text(json.dumps({"cells": args.cells, "clock": args.phone_clock,
                                                                   "noise_floor_pct": floor, "runs": runs}, indent=2))


def run_concurrent(args: argparse.Namespace) -> None:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    archs = nb201.sample_valid(30, seed=40)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="leti-drift-concurrent-") as scratch:
        config = params.load()
        for label, processes in (("one", 1), ("two", 2)):
            store = Path(scratch) / label
            command = [sys.executable, "-m", "leti", "measure", "--device", "torch-cpu", "--store", str(store), "--no-progress",
                       "--params", str(ROOT / "params.yaml"), *[f"--arch={arch}" for arch in archs]]
            started = time.monotonic()
            running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                       for _ in range(processes)]
            for process in running:
                process.communicate()
            seconds = time.monotonic() - started
            rows = tables.read(store, tables.LATENCY).filter(pl.col("role").is_null())
            latest = rows.sort("measured_at").unique("arch", keep="last")
            first = rows.filter(pl.col("attempt").is_null() | (pl.col("attempt") == 1))
            figures[label] = {"seconds": seconds, "cell_rows": rows.height, "first_attempt_rows": first.height,
                              "cells_measured_twice": first.height - first["arch"].n_unique(), "cells": latest.height,
                              "returncodes": [process.returncode for process in running]}
        figures["part_size"] = config["measure"]["part_size"]
    (out / "concurrent.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


def fmt(values: list[float], digits: int = 1) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def run_report(args: argparse.Namespace) -> None:
    out = Path(args.output)
    lines = ["# Measurements on a drifting device: the sentinel's figures", "", "Produced by `benchmarks/drift.py`."]
    for name, clock in (("passes.json", "wall clock"), ("passes-thread.json", "thread CPU-time clock")):
        if not (out / name).exists():
            continue
        record = json.loads((out / name).read_text())
        lines += ["", f"## Fresh passes of the pipeline's NB201 sample on torch-cpu, {clock}", "",
                  "| pass | wall s | load average (1/5/15 min) at the end | sentinel share of wall % | re-measured share % | quality |",
                  "|---|---|---|---|---|---|"]
        for index, item in sorted(record["passes"].items()):
            load = fmt(item["loadavg"], 2) if item.get("loadavg") else "–"  # a pipeline pass counted in records none
            lines.append(f"| {index} | {item['seconds']:.0f} | {load} | {100 * item['sentinel_share']:.1f} | "
                         f"{100 * item['remeasure_share']:.1f} | {item['quality']} |")
        indices = sorted(record["passes"], key=int)
        pairs = " / ".join(f"{a}-{b}" for i, a in enumerate(indices) for b in indices[i + 1:])
        lines += ["", f"| policy | linear acc@10 per pass % | spread (max − min) | pass-to-pass median difference % ({pairs}) |",
                  "|---|---|---|---|"]
        for policy, score in record.get("scores", {}).items():
            acc = score["linear_acc_10pct"]
            lines.append(f"| {policy} | {fmt(acc)} | {max(acc) - min(acc):.1f} | {fmt(score['pass_to_pass_median_diff_pct'], 2)} |")
    for path in sorted(out.glob("phone-*.json")):
        record = json.loads(path.read_text())
        runs = record["runs"]
        lines += ["", f"## The stand-in phone ({record['clock']} clock), a scripted 20 % slowdown ({record['cells']} cells, part size 2)", "",
                  "| slowed from benchmark call | detected | raw median error % | corrected median error % |", "|---|---|---|---|"]
        lines += [f"| {r['slowdown_after_call'] + 1} | {'yes' if r['detected'] else 'NO'} | {r['raw_median_error_pct']:.2f} | "
                  f"{r['corrected_median_error_pct']:.2f} |" for r in runs]
        lines += ["", f"Detected {sum(r['detected'] for r in runs)} of {len(runs)}; corrected error median over runs "
                      f"{statistics.median(r['corrected_median_error_pct'] for r in runs):.2f} %; the stand-in's noise floor "
                      f"(a second undisturbed campaign against the first, median over cells) {record.get('noise_floor_pct', float('nan')):.2f} %."]
    if (out / "concurrent.json").exists():
        record = json.loads((out / "concurrent.json").read_text())
        lines += ["", "## Two campaigns at once on the same 30 cells", "",
                  "| campaigns | wall s | cell rows (all attempts) | first-attempt rows | cells measured twice | distinct cells |",
                  "|---|---|---|---|---|---|"]
        for label in ("one", "two"):
            item = record[label]
            lines.append(f"| {label} | {item['seconds']:.1f} | {item['cell_rows']} | {item.get('first_attempt_rows', '–')} | "
                         f"{item.get('cells_measured_twice', '–')} | {item['cells']} |")
    (out / "drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["passes", "phone", "concurrent", "report"])
    parser.add_argument("--output", default="benchmarks/results/drift")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--cells", type=int, default=None, help="passes: cells of the sample (default: sample.nb201.n); phone: 8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall", help="passes: the timing protocol's clock")
    parser.add_argument("--phone-clock", choices=["scripted", "timed"], default="scripted",
                        help="phone: the stand-in's clock, scripted (its speed is exactly what the slowdown says) or timed "
                             "(this host's TFLite runs, with this host's noise)")
    args = parser.parse_args()
    if args.what == "phone" and args.cells is None:
        args.cells = 8
    {"passes": run_passes, "phone": run_phone, "concurrent": run_concurrent, "report": run_report}[args.what](args)


if __name__ == "__main__":
    main()
