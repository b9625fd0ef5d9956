"""Command line of the Prefect measurement flow (``leti.orchestration.measure``); the `measure` stage of
dvc.yaml runs it once per device, which measures the cells of every space the device lists.

    python flows/measure.py --device torch-cpu --device onnxruntime-cpu --runner dask --workers 2
"""

import argparse
import json

from leti.errors import BackendUnavailableError, stage_main
from leti.orchestration import measure as measure_flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", help="a name under 'devices:' (repeatable; default: all of them)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--architectures", required=True,
                        help="a folder of <space>.parquet architectures tables (stage sample@<space>), or one table")
    parser.add_argument("--store", required=True, help="latency store to append to")
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
    stage_main("measure", main, also=(BackendUnavailableError,))
