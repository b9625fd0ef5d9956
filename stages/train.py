"""Stage `train@<space>`: fit each predictor family on one device's latencies of one space; log, compare and select in MLflow.

Params: `train.<space>` (sizes, seeds, predictors, selection), and `spaces.<space>.device`, the device
whose rows it learns, with that device's measurement configuration. Data: the device's rows of the
space under its current configuration, for the archs of the architectures table, one row per arch
(the latest); the split is by arch. Every input is tagged on the runs with the md5 DVC computes for
it (``data.<name>.dvc_md5``). MLflow (``leti.tracking.training``): the experiment
``<train.experiment>-<space>-<device>``, a parent run per invocation and a child run per family and
seed; the best child becomes ``models:/leti-<space>-<device>@champion`` when it beats the champion.
``--models`` holds this invocation's predictors and ``mlflow.json`` (its runs and the registry's
decision); the registry keeps the history.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import warnings
from pathlib import Path

import polars as pl

from leti import params, spaces, tracking
from leti.devices.config import device_from_params
from leti.errors import stage_main
from leti.store import quality as measurement_quality
from leti.store import reader, tables
from leti.store.parts import device_dir, space_dir
from leti.tracking import registry, training


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow registers its local-file dataset source for both "" and "file:" and warns that a path is ambiguous.
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True, help="a search space under `spaces:`")
    parser.add_argument("--store", required=True, help="latency store (<device>/<space>/ folders)")
    parser.add_argument("--op-latency", required=True, help="per-op lookup tables (one folder per device)")
    parser.add_argument("--architectures", required=True, help="architectures table (stage sample@<space>)")
    parser.add_argument("--models", required=True, help="folder for this invocation's predictors")
    parser.add_argument("--predictions", required=True, help="predictions table to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    space = spaces.get(args.space).NAME
    config = params.section("train", args.params).get(space)
    chosen = (params.section("spaces", args.params) or {}).get(space)
    if config is None or chosen is None:
        raise KeyError(f"{args.params} needs `spaces.{space}.device` and a `train.{space}` section")
    device = device_from_params(chosen["device"], args.params, space)
    statistic = config.get("statistic", "median_ms")
    lookup = space in spaces.OPERATOR_DECOMPOSITIONS  # the layer-wise family sums measured per-op latencies only there
    inputs = {
        "latency": str(space_dir(Path(args.store), device.name, space)),
        **({"op_latency": str(device_dir(Path(args.op_latency), device.name))} if lookup else {}),
        "architectures": args.architectures,
    }
    architectures = tables.read(args.architectures, tables.ARCHITECTURES)
    found = sorted(set(architectures["space"].to_list()))
    if found != [space]:
        raise ValueError(f"{args.architectures} holds {', '.join(found) or 'no'} cells, not only {space}")
    # A store measured without the sentinel has no corrected statistic: its raw minimum stands in.
    fallback = "min_ms" if statistic == "min_ms_corrected" else None
    policy = reader.ReadPolicy(statistic=statistic, configuration=device.config_id, duplicates="latest", fallback=fallback)
    cells = reader.read_cells(args.store, device.name, space, policy, architectures["arch"].to_list())
    sentinels = reader.sentinel_rows(args.store, device.name, space, device.config_id)
    quality = measurement_quality.summarize(cells.rows, sentinels.filter(pl.col("chunk").is_in(cells.rows["chunk"].drop_nulls().to_list())))
    print(f"train: {device.name} {space} measurement: {quality.line()}")
    outcome = training.train(
        training.Training(
            cells=cells, families=config["predictors"],
            supplied={"space": space, **({"lookup": inputs["op_latency"]} if lookup else {}), "config_id": device.config_id,
                      # the op-latency lookup's summary: operators are timed without the sentinel, so the raw one
                      "network": dataclasses.asdict(device.network), "statistic": fallback or statistic},
            seeds=config["seed"] if isinstance(config["seed"], list) else [config["seed"]],
            train_size=config["train_size"], val_size=config["val_size"], rule=registry.Rule.from_params(config.get("select")),
            inputs=inputs, experiment=tracking.experiment_name(config["experiment"], space, device.name), tags=quality.tags(),
        ),
        Path(args.models),
    )
    tables.write(outcome.predictions, args.predictions, tables.PREDICTIONS)
    Path(args.models, "mlflow.json").write_text(json.dumps(training.summary(outcome, space, device.name), indent=2) + "\n")
    print(f"train: {outcome.decision.reason}; {'registered' if outcome.decision.register else 'kept'} "
          f"{tracking.champion_uri(space, device.name)} (v{outcome.decision.version})")
    print(f"train: compare the runs at {tracking.runs_url(outcome.experiment_id)} (`make mlflow-ui`)")


if __name__ == "__main__":
    stage_main("train", main)
