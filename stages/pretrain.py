"""Stage `pretrain`: the transfer model pretrained on every device of the source stores (params
`transfer`), saved for the adapt stages and `leti adapt`, logged and registered in MLflow as
`models:/leti-pretrained-<space>@champion` (a new version when it learned other data or code)."""

import argparse
import json
import os
from pathlib import Path

from leti import params, spaces
from leti.errors import stage_main
from leti.predictors import transfer
from leti.store import reader
from leti.tracking import transfer as transfer_tracking


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", nargs="+", required=True, help="latency stores whose devices are the sources")
    parser.add_argument("--output", type=Path, required=True, help="folder of the pretrained model")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("transfer", args.params)
    space = spaces.get(config["space"]).NAME
    stores = [store for store in args.stores if Path(store).is_dir()]
    if not stores:
        raise FileNotFoundError(f"no source store at {', '.join(args.stores)} (run the ingest stages: dvc repro)")
    policy = reader.ReadPolicy(statistic=config.get("statistic", "median_ms"), configuration=reader.NEWEST)
    matrix = reader.read_devices(stores, space, policy)
    excluded = set(config.get("exclude") or [])
    keep = [i for i, device in enumerate(matrix.devices) if device not in excluded]
    devices = [matrix.devices[i] for i in keep]
    pretrained = transfer.pretrain(space, matrix.archs, matrix.latency_ms[keep], devices,
                                   transfer.PretrainConfig.from_params(config.get("pretrain")))
    pretrained.save(args.output)
    summary = {"space": space, "devices": devices, "cells": len(matrix.archs), "seconds": pretrained.train_seconds,
               "data": pretrained.data}
    print(f"pretrain: {len(devices)} devices, {len(matrix.archs)} {space} cells, {pretrained.train_seconds:.0f} s")
    registered = transfer_tracking.register(pretrained, args.output, {Path(store).name: store for store in stores},
                                   config.get("experiment", "leti-transfer"))
    print(json.dumps({**summary, **registered}))


if __name__ == "__main__":
    stage_main("pretrain", main)
