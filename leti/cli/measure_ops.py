"""``leti measure-ops``: the layer-wise lookup table of one device (see ``leti.layerwise``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from leti import layerwise, params


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure-ops",
        help="time each distinct operator instance alone on a device; builds its per-op lookup table",
        description="Measure every distinct NAS-Bench-201 operator instance (op x input shape x channels x stride) "
        "alone on a device from params.yaml and append the rows to STORE/DEVICE/. Operators already measured with "
        "the same configuration are skipped. The table feeds the layer-wise baseline (sum of per-op latencies).",
    )
    parser.add_argument("--device", required=True, help="a device name under 'devices:' in the params file")
    parser.add_argument("--store", type=Path, default=Path("data/op_latency"), help="lookup table folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    device = params.device(args.device, args.params)
    rows = layerwise.measure_ops(device, args.store)
    print(json.dumps({
        "device": device.name,
        "operators": rows.height,
        "failed": rows.filter(pl.col("error").is_not_null()).height,
        "total_median_ms": round(float(rows["median_ms"].sum()), 4),
    }))
    return 0
