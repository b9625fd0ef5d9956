"""Command line of the Prefect measurement flow (``leti.measure_flow``); the `measure` stage of
dvc.yaml runs it once per device, which measures the cells of every space the device lists.

    python flows/measure.py --device torch-cpu --device onnxruntime-cpu --runner dask --workers 2
"""

import argparse
import json
import os
import sys

from leti import measure_flow
from leti.devices import BackendUnavailableError, DeviceError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", help="a name under 'devices:' (repeatable; default: all of them)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--architectures", default="data/architectures",
                        help="a folder of <space>.parquet architectures tables (stage sample@<space>), or one table")
    parser.add_argument("--store", default="data/latency")
    parser.add_argument("--op-profiles", default=None, help="per-operator profiles (default: op_profiles beside --store)")
    parser.add_argument("--runner", choices=["default", "dask"], default=None, help="default: measure.runner in params")
    parser.add_argument("--workers", type=int, default=None, help="Dask workers (default: measure.dask_workers)")
    args = parser.parse_args()
    results = measure_flow.run_from_params(
        args.device, args.params, args.architectures, args.store, runner=args.runner, workers=args.workers,
        op_profile_store=args.op_profiles,
    )
    for result in results:  # one flow run per space
        print(json.dumps(result["summary"]))


if __name__ == "__main__":
    try:
        main()
    except DeviceError as error:  # a device dropped out: EX_TEMPFAIL tells the pipeline flow to retry
        print(f"measure: error: {error}", file=sys.stderr)
        raise SystemExit(os.EX_TEMPFAIL) from None
    except (KeyError, ValueError, FileNotFoundError, BackendUnavailableError) as error:  # bad input or setup: one line
        raise SystemExit(f"measure: error: {error.args[0] if error.args else error}") from None
