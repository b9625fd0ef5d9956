"""Stage `measure_models`: popular networks (params `models`) on each listed device, appended to a latency store.

Each device is an entry of `devices:` (its backend, options and timing protocol); the networks are
torchvision classifiers by builder name, randomly initialised (see `leti measure-model`). A rerun
measures only the passes the store lacks.
"""

import argparse
import json
from pathlib import Path

from leti import networks, params
from leti.devices.config import device_from_params
from leti.errors import stage_main
from leti.measure import named_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--op-profiles", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("models", args.params)
    sources = [networks.resolve(name) for name in config["names"]]
    args.store.mkdir(parents=True, exist_ok=True)
    args.op_profiles.mkdir(parents=True, exist_ok=True)
    for name in config["devices"]:
        device = named_models.with_batch(device_from_params(name, args.params), int(config.get("batch", 1)))
        results = named_models.measure_models(
            sources, device, args.store, input_shape=config.get("input_shape"), passes=int(config.get("passes", 1)),
            op_profile=bool(config.get("op_profile", False)), op_profile_store=args.op_profiles,
        )
        for result in results:
            print(json.dumps(result.summary()))


if __name__ == "__main__":
    stage_main("measure_models", main)
