"""Stage `adapt@<device>`: a measured device predicted from `transfer.shots` of its cells by the
pretrained transfer model, scored on the device's test cells beside the predictors trained on its
training cells (train@<space>'s predictions), and beside the ridge baseline on the same shots.

The shots are designed from the pretrained model (`transfer.design`) among the device's cells
outside the test split, so every model is scored on the same cells.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from leti import params, spaces
from leti.devices.config import device_from_params
from leti.errors import stage_main
from leti.metrics import regression_metrics
from leti.predictors import transfer
from leti.store import reader, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", required=True)
    parser.add_argument("--store", required=True, help="the device's latency store")
    parser.add_argument("--sources", nargs="+", required=True, help="the source stores (for the ridge baseline)")
    parser.add_argument("--pretrained", type=Path, required=True, help="the pretrain stage's model folder")
    parser.add_argument("--predictions", type=Path, required=True, help="train@<space>'s predictions table")
    parser.add_argument("--output", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("transfer", args.params)
    space = spaces.get(config["space"]).NAME
    pretrained = transfer.Pretrained.load(args.pretrained)
    if args.device in pretrained.devices:
        raise ValueError(f"device {args.device!r} is a source of the pretrained model: drop its store from transfer.stores")
    device = device_from_params(args.device, args.params, space)
    train = params.section("train", args.params)[space]
    statistic = train.get("statistic", "median_ms")
    cells = reader.read_cells(args.store, args.device, space, reader.ReadPolicy(statistic, configuration=device.config_id))
    predictions = tables.read(args.predictions, tables.PREDICTIONS).filter((pl.col("device") == args.device) & (pl.col("split") == "test"))
    test = sorted(set(predictions["arch"].to_list()) & set(cells.archs))
    if len(test) < 2:  # no predictor trained on this device: every cell but the shots is scored
        test = cells.archs
    index = {arch: i for i, arch in enumerate(cells.archs)}
    candidates = [arch for arch in cells.archs if arch not in set(test)] or cells.archs
    shots_at = transfer.design_shots(pretrained.embed(candidates), config["shots"], config.get("seed", 0), config.get("design", "auto"))
    shots = [candidates[i] for i in shots_at]
    test = [arch for arch in test if arch not in set(shots)]
    measured = cells.latency_ms[[index[arch] for arch in test]]
    model = transfer.TransferPredictor(pretrained=str(args.pretrained), space=space).fit(shots, cells.latency_ms[[index[a] for a in shots]])
    results = {"transfer": {**regression_metrics(measured, model.predict(test)), "n_train": len(shots), "n_test": len(test)}}
    matrix = reader.read_devices([store for store in args.sources if Path(store).is_dir()], space,
                                 reader.ReadPolicy(statistic="median_ms", configuration=reader.NEWEST), pretrained.devices)
    ridge = transfer.ridge_scores(pretrained, matrix, [*shots, *test], np.r_[cells.latency_ms[[index[a] for a in shots]], measured], shots)
    results["ridge"] = {key.removeprefix("ridge_"): value for key, value in ridge.items()}
    for family, rows in predictions.filter(pl.col("arch").is_in(test)).group_by("predictor", maintain_order=True):
        results[f"{family[0]}, {train['train_size']} cells"] = regression_metrics(rows["measured_ms"].to_numpy(), rows["predicted_ms"].to_numpy())
    summary = {"device": args.device, "space": space, "shots": len(shots), "test_cells": len(test), "design": config.get("design", "auto"),
               "sources": len(pretrained.devices), **results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({name: round(values["acc_10pct"], 1) for name, values in results.items()}))


if __name__ == "__main__":
    stage_main("adapt", main)
