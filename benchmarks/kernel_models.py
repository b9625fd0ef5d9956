"""Network-level latency prediction on the model set, leaving whole families out.

    python benchmarks/kernel_models.py measure --device torch-cpu --device onnxruntime-cpu --passes 3
    python benchmarks/kernel_models.py campaign --device onnxruntime-cpu --campaign full
    python benchmarks/kernel_models.py evaluate --device torch-cpu --device onnxruntime-cpu

Every subcommand times with ``--clock`` (default ``thread``: the timing thread's CPU time, immune to
the other processes of this shared 2-core host taking turns; ``leti.devices.base.Protocol.clock``) and
keeps its data under ``benchmarks/data/<clock>/``.

``measure`` times every network of ``leti.model_set`` (202 variants of 15 torchvision families) and
the popular networks of ``params.yaml`` end to end on each device, pass by pass, the devices
interleaved (pass 1 on every device, then pass 2, ...): the second against the first is the noise
floor, and the fastest pass is the reference the evaluation scores against. It resumes:
a rerun measures only the passes the store lacks.

``cells`` times NAS-Bench-201 and NAS-Bench-101 cells (200 each) in the pipeline's networks on each
device, for the cells-through-the-kernel-path comparison.

``campaign`` runs a device's kernel campaign (fusion tests, samples, adaptive rounds) into the
benchmark's kernel store, with ``kernels.campaigns.<name>`` of ``params.yaml``, and records its cost.

``evaluate`` fits kernel predictors on the device's kernels only (no network is ever fitted on) and
compares, per held-out family: the kernel-level sum with the device's fusion rules; the same
kernels with no fusion (leti's layer-wise view: every op timed alone); the FLOPs line fitted on the
other families' networks; and the second pass of the measurement (the noise floor). It writes
``benchmarks/results/kernel_models/``: a Markdown table, per-network predictions and figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "kernel_models"


def device_with_clock(name: str, params: str, clock: str):  # noqa: ANN201 - a DeviceConfig
    """The device of ``params.yaml`` timed with ``clock`` (``thread``: its thread's CPU time, see
    ``leti.devices.base.Protocol.clock``); both the networks and the kernels of a run use the same."""
    import dataclasses

    from leti.devices.config import device_from_params

    device = device_from_params(name, params)
    return dataclasses.replace(device, protocol=dataclasses.replace(device.protocol, clock=clock))


def measure(args: argparse.Namespace) -> None:
    from leti import model_set, networks, params
    from leti.measure import named_models

    popular = params.section("models", args.params)["names"]
    names = model_set.names(popular)
    if args.families:
        names = [name for name in names if model_set.family_of(name) in args.families]
    sources = [networks.resolve(name) for name in names]
    store = DATA / args.clock / "model_latency"
    for number in range(1, args.passes + 1):
        for device_name in args.device:
            device = device_with_clock(device_name, args.params, args.clock)
            started = time.monotonic()
            results = []
            for start in range(0, len(sources), 20):  # a batch's networks are loaded together: keep memory small
                results += named_models.measure_models(sources[start:start + 20], device, store, passes=number, progress=not args.quiet)
            print(json.dumps({"device": device_name, "pass": number, "measured": len(results),
                              "failed": sum(1 for r in results if r.error), "seconds": round(time.monotonic() - started, 1)}), flush=True)


CELLS = {"nb201": 200, "nb101": 200}
"""Cells per space measured for the cells-through-the-kernel-path comparison (seed 0, valid cells)."""


def cells(args: argparse.Namespace) -> None:
    """NAS-Bench-201 and NAS-Bench-101 cells on each device, in the pipeline's networks
    (``measure.networks``), for the cells-through-the-kernel-path row of the evaluation."""
    import dataclasses

    from leti import spaces
    from leti.devices.config import device_from_params
    from leti.measure import campaign as cell_campaign

    for space, count in CELLS.items():
        archs = spaces.get(space).sample_valid(count, seed=0)
        for device_name in args.device:
            device = device_from_params(device_name, args.params, space)
            device = dataclasses.replace(device, protocol=dataclasses.replace(device.protocol, clock=args.clock))
            result = cell_campaign.run_campaign(archs, device, DATA / args.clock / "cell_latency", progress=not args.quiet,
                                                prepare_ahead=False)
            print(json.dumps({"space": space, "device": device_name, "measured": result.measured, "seconds": round(result.seconds, 1)}),
                  flush=True)


def campaign(args: argparse.Namespace) -> None:
    from leti import params
    from leti.measure import kernels

    section = params.section("kernels", args.params)
    settings = kernels.Campaign.from_params({**section["campaigns"][args.campaign], "retry_errors": args.retry_errors})
    for device_name in args.device:
        device = device_with_clock(device_name, args.params, args.clock)
        store = DATA / args.clock
        summary = kernels.run_campaign(device, store / "kernel_latency", store / "fusion_rules", settings, print)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"campaign_{device_name}.json").write_text(json.dumps({**summary, "campaign": args.campaign, "clock": args.clock},
                                                                         indent=2) + "\n")
        print(json.dumps(summary), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("measure", "cells", "campaign", "evaluate"):
        sub = commands.add_parser(name)
        sub.add_argument("--device", action="append", required=True)
        sub.add_argument("--params", default=str(ROOT / "params.yaml"))
        sub.add_argument("--quiet", action="store_true")
        sub.add_argument("--clock", default="thread", choices=("wall", "thread"),
                         help="what a timed run's duration is (default: %(default)s, this shared host's CPU time per thread)")
        if name == "measure":
            sub.add_argument("--passes", type=int, default=2)
            sub.add_argument("--families", nargs="*")
        if name == "campaign":
            sub.add_argument("--campaign", default="full")
            sub.add_argument("--retry-errors", action="store_true", help="measure again kernels whose last attempt failed")
    args = parser.parse_args()
    {"measure": measure, "cells": cells, "campaign": campaign, "evaluate": evaluate}[args.command](args)


def evaluate(args: argparse.Namespace) -> None:
    from kernel_evaluation import run  # noqa: PLC0415 - benchmarks/kernel_evaluation.py, beside this script

    run(args.device, args.params, DATA / args.clock, RESULTS)


if __name__ == "__main__":
    main()
