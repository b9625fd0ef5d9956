"""Stage `measure_ops@<device>`: the device's layer-wise lookup table, every distinct operator instance
of the spaces it measures timed alone (params `spaces`, `measure`, `devices.<device>`). Resumes."""

import argparse
import json
from pathlib import Path

import polars as pl

from leti import params, spaces
from leti.devices.config import device_from_params
from leti.errors import stage_main
from leti.measure import operators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True, help="a device name under `devices:`")
    parser.add_argument("--store", type=Path, required=True, help="lookup table folder (one folder per device)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    (args.store / args.device).mkdir(parents=True, exist_ok=True)  # the stage's out, even with no space to time
    chosen = [space for space in params.device_spaces(args.device, args.params) if space in spaces.OPERATOR_DECOMPOSITIONS]
    for space in chosen:
        rows = operators.measure_ops(device_from_params(args.device, args.params, space), args.store)
        print(json.dumps({"device": args.device, "space": space, "operators": rows.height,
                          "failed": rows.filter(pl.col("error").is_not_null()).height}))


if __name__ == "__main__":
    stage_main("measure_ops", main)
