"""``leti measure-ops``: the layer-wise lookup table of one device (see ``leti.measure.operators``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from leti import params, spaces
from leti.devices.config import device_from_params
from leti.measure import operators


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure-ops",
        help="time each distinct operator instance alone on a device; builds its per-op lookup table",
        description="Measure every distinct operator instance (op x input shape x channels x stride) of a space's "
        "networks alone on a device from params.yaml and append the rows to STORE/DEVICE/. Operators already "
        "measured with the same configuration are skipped. The table feeds the layer-wise baseline (sum of "
        f"per-op latencies); leti decomposes {', '.join(spaces.OPERATOR_DECOMPOSITIONS)} networks into operators.",
    )
    parser.add_argument("--device", required=True, help="a device name under 'devices:' in the params file")
    parser.add_argument("--space", action="append", metavar="NAME",
                        help="a space whose operators to time (repeatable; default: every space the device measures "
                        f"that has an operator decomposition: {', '.join(spaces.OPERATOR_DECOMPOSITIONS)})")
    parser.add_argument("--store", type=Path, default=Path("data/op_latency"), help="lookup table folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    device_from_params(args.device, args.params)  # an unknown device fails here, in one line
    chosen = args.space or [space for space in params.device_spaces(args.device, args.params) if space in spaces.OPERATOR_DECOMPOSITIONS]
    (args.store / args.device).mkdir(parents=True, exist_ok=True)  # the stage's out, even with no space to time
    for space in chosen:
        device = device_from_params(args.device, args.params, spaces.get(space).NAME)
        rows = operators.measure_ops(device, args.store)
        print(json.dumps({
            "device": device.name,
            "space": space,
            "operators": rows.height,
            "failed": rows.filter(pl.col("error").is_not_null()).height,
            "total_median_ms": round(float(rows["median_ms"].sum()), 4),
        }))
    if not chosen:
        print(json.dumps({"device": args.device, "operators": 0, "note": "no space of this device has an operator decomposition"}))
    return 0
