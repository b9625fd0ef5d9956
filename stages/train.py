"""Stage `train@<space>`: fit each predictor family on one device's latencies of one space; log, compare and select in MLflow.

Params: `train.<space>` (sizes, seeds, predictors, selection), and `spaces.<space>.device`, the device
whose rows it learns. Data: the device's rows of the space under its current measurement
configuration, for the archs of the architectures table, one row per arch; the split is by arch. Every input is tagged on the runs with
the md5 DVC computes for it (``data.<name>.dvc_md5``), computed here from what was read.

MLflow: the experiment ``<train.experiment>-<space>-<device>``; one parent run per invocation and a
child run per family and seed, with params prefixed by family, validation and test metrics, plots,
the train/validation/test tables as datasets, and the model as a pyfunc. The best child by
``train.select`` becomes ``models:/leti-<space>-<device>@champion`` when it beats the champion
(``leti.registry``). ``--models`` (``models/<space>/<device>`` in dvc.yaml) holds this invocation's predictors and
``mlflow.json`` (its runs and the registry's decision); the registry keeps the history.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from leti import evaluation, features, layerwise, mlflow_model, params, plots, predictors, registry, spaces, tables, tracking
from leti.features import graph
from leti.metrics import regression_metrics

SPLITS = {"train": "training", "val": "validation", "test": "testing"}  # split -> MLflow dataset context


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow registers its local-file dataset source for both "" and "file:" and warns that a path is ambiguous.
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=spaces.DEFAULT, help="a search space under `spaces:` (default: %(default)s)")
    parser.add_argument("--store", default="data/latency", help="latency store (<device>/<space>/ folders)")
    parser.add_argument("--op-latency", default="data/op_latency", help="per-op lookup tables (one folder per device)")
    parser.add_argument("--architectures", default="data/architectures/nb201.parquet")
    parser.add_argument("--features", default="data/features/nb201.parquet")
    parser.add_argument("--graphs", default="data/graphs/nb201.parquet", help="cell graphs for graph predictors (stage featurize)")
    parser.add_argument("--models", default="models")
    parser.add_argument("--predictions", default="data/predictions/nb201.parquet")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    space = spaces.get(args.space).NAME
    config = params.section("train", args.params).get(space)
    chosen = (params.section("spaces", args.params) or {}).get(space)
    if config is None or chosen is None:
        raise SystemExit(f"train: {args.params} needs `spaces.{space}.device` and a `train.{space}` section")
    device = params.device(chosen["device"], args.params, space)
    statistic = config.get("statistic", "median_ms")
    rule = registry.Rule.from_params(config.get("select"))
    seeds = config["seed"] if isinstance(config["seed"], list) else [config["seed"]]

    lookup = space in layerwise.SPACES  # the layer-wise family sums measured per-op latencies only there
    inputs = {
        "latency": f"{args.store}/{device.name}/{space}",
        **({"op_latency": f"{args.op_latency}/{device.name}"} if lookup else {}),
        "architectures": args.architectures,
        "features": args.features,
        "graphs": args.graphs,
    }
    data_tags = tracking.data_tags(inputs)
    architectures = tables.read(args.architectures, tables.ARCHITECTURES)
    one_space(architectures, space)
    data = evaluation.training_data(args.store, device, architectures["arch"].to_list(), statistic)
    features.preload(tables.read(args.features, tables.FEATURES))
    graph.preload(tables.read(args.graphs, tables.GRAPHS))
    # What a family may take from the stage (explicit params in params.yaml win).
    supplied = {
        "space": space,
        **({"lookup": inputs["op_latency"]} if lookup else {}),
        "config_id": device.config_id,
        "network": dataclasses.asdict(device.network),
        "statistic": statistic,
    }
    target = {"space": space, "device": device.name, "config_id": device.config_id, "statistic": statistic}
    tags = {**data_tags, **target}

    experiment_id = tracking.setup(tracking.experiment_name(config["experiment"], space, device.name))
    shared = {
        "train.train_size": config["train_size"], "train.val_size": config["val_size"], "train.seeds": seeds,
        "train.statistic": statistic, "train.cells": len(data.archs), "train.select": rule.describe(),
    }
    frames, candidates, children = [], [], {}
    with mlflow.start_run(run_name=f"train-{space}-{device.name}", tags={**tags, "leti.run": "train"}) as parent:
        mlflow.log_params(flat(shared | {
            f"{family}.{key}": value for family, configured in config["predictors"].items() for key, value in (configured or {}).items()
        }))
        log_data_counts(data)
        for seed in seeds:
            parts = evaluation.split(len(data.archs), config["train_size"], config["val_size"], seed)
            log_datasets(data, parts, seed, inputs["latency"], data_tags["data.latency.dvc_md5"])
            for family, configured in config["predictors"].items():
                family_params = predictors.with_defaults(family, configured or {}, {"seed": seed, **supplied})
                predictor = predictors.make_predictor(family, **family_params)
                folder = Path(args.models) / (family if len(seeds) == 1 else f"{family}-seed{seed}")
                frame, candidate = fit_child(predictor, data, parts, seed, folder, tags, shared, rule)
                frames.append(frame)
                candidates.append(candidate)
                children[candidate.name] = candidate.run_id
        predictions = pl.concat(frames)
        log_plots(predictions.filter(pl.col("split") == "test"), device.name)
        if data_only(tracking.data_tags(inputs)) != data_only(data_tags):
            raise SystemExit(f"train: an input changed while it was being read ({', '.join(inputs.values())}); run again")
        decision = registry.select(
            mlflow.MlflowClient(), tracking.model_name(space, device.name), candidates, rule,
            version_tags={**{key: str(value) for key, value in tags.items()}, "parent_run": parent.info.run_id},
        )
        mlflow.set_tags({
            "selection.candidate": decision.candidate.name, "selection.registered": str(decision.register).lower(),
            "selection.reason": decision.reason, "selection.champion_version": decision.version or "",
        })
    tables.write(predictions, args.predictions, tables.PREDICTIONS)
    summary = {
        "experiment": experiment_id, "parent_run": parent.info.run_id, "runs": children,
        "model": tracking.model_name(space, device.name), "registered": decision.register,
        "champion_version": decision.version, "reason": decision.reason,
    }
    Path(args.models, "mlflow.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"train: {decision.reason}; {'registered' if decision.register else 'kept'} "
          f"{tracking.champion_uri(space, device.name)} (v{decision.version})")
    print(f"train: compare the runs at {tracking.runs_url(experiment_id)} (`make mlflow-ui`)")


def fit_child(
    predictor: predictors.Predictor, data: evaluation.TrainingData, parts: evaluation.Split, seed: int, folder: Path,
    tags: dict[str, str], shared: dict[str, Any], rule: registry.Rule,
) -> tuple[pl.DataFrame, registry.Candidate]:
    """One child run: fit, log params, metrics, datasets, plots and the model; its predictions and its candidacy."""
    family, target = predictor.family, {key: tags[key] for key in registry.TARGET_KEYS}
    name = f"{family}-seed{seed}"
    with mlflow.start_run(run_name=name, nested=True, tags={**tags, "family": family, "seed": str(seed)}) as child:
        result = evaluation.evaluate(predictor, data.archs, data.latency_ms, parts)
        frame = predictions_frame(data, parts, result, family, seed)
        mlflow.log_params(flat({
            "family": family, **shared, "train.seed": seed, **{f"{family}.{key}": value for key, value in predictor.params.items()},
        }))
        metrics = split_metrics(frame) | {
            "fit_seconds": float(result.metrics["fit_seconds"]), "predict_seconds": float(result.metrics["predict_seconds"]),
        }
        mlflow.log_metrics(metrics)
        log_datasets(data, parts, seed, tags["data.latency.path"], tags["data.latency.dvc_md5"])
        log_plots(frame.filter(pl.col("split") == "test"), f"{name}, {data.device}")
        predictor.save(folder, space=target["space"], statistic=target["statistic"])
        info = mlflow_model.log_predictor(folder, "model", data.archs[:3], {
            **target, "family": family, "seed": seed, "feature_schema": predictors.describe(folder)["feature_schema"],
            "data": data_only(tags),
        })
    return frame, registry.Candidate(child.info.run_id, info.model_uri, name, metrics.get(rule.metric, float("nan")), target)


def data_only(tags: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in tags.items() if key.startswith("data.")}


def one_space(architectures: pl.DataFrame, space: str) -> None:
    found = sorted(set(architectures["space"].to_list()))
    if found != [space]:
        raise SystemExit(f"train: the architectures table holds {', '.join(found) or 'no'} cells, not only {space}")


def flat(values: dict[str, Any]) -> dict[str, str]:
    """MLflow params are strings: JSON for lists and dicts so they read back as written."""
    return {key: json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value) for key, value in values.items()}


def log_data_counts(data: evaluation.TrainingData) -> None:
    mlflow.log_metrics({
        "data.rows_read": data.rows_read, "data.cells": len(data.archs), "data.other_config_rows": data.other_config,
        "data.not_sampled_rows": data.not_sampled, "data.repeated_rows": data.repeats,
    })


def log_datasets(data: evaluation.TrainingData, parts: evaluation.Split, seed: int, source: str, digest: str) -> None:
    """The train, validation and test tables as MLflow datasets, named by the DVC md5 of their folder."""
    import mlflow.data

    archs = np.asarray(data.archs, dtype=object)
    for split, context in SPLITS.items():
        index = getattr(parts, split)
        table = pl.DataFrame({"arch": archs[index].tolist(), data.statistic: data.latency_ms[index]})
        dataset = mlflow.data.from_pandas(table.to_pandas(), source=source, targets=data.statistic, name=f"{data.device}-{split}", digest=digest)
        mlflow.log_input(dataset, context=context, tags={"split": split, "seed": str(seed), "cells": str(table.height), "config_id": data.config_id})


def predictions_frame(data: evaluation.TrainingData, parts: evaluation.Split, result: evaluation.Evaluation, family: str, seed: int) -> pl.DataFrame:
    archs = np.asarray(data.archs, dtype=object)
    return pl.concat([
        pl.DataFrame({
            "arch": archs[getattr(parts, split)].tolist(), "device": data.device, "predictor": family, "seed": seed,
            "split": split, "measured_ms": data.latency_ms[getattr(parts, split)], "predicted_ms": result.predicted[split],
        })
        for split in SPLITS
    ])


def split_metrics(frame: pl.DataFrame) -> dict[str, float]:
    """``val_*`` and ``test_*`` regression metrics (acc@1/5/10, RMSE, MAPE, Spearman, Kendall) and sizes."""
    metrics: dict[str, float] = {}
    for split in SPLITS:
        rows = frame.filter(pl.col("split") == split)
        metrics[f"n_{split}"] = rows.height
        if split != "train" and rows.height >= 2:
            values = regression_metrics(rows["measured_ms"].to_numpy(), rows["predicted_ms"].to_numpy())
            metrics |= {f"{split}_{key}": value for key, value in values.items()}
    return metrics


def log_plots(test: pl.DataFrame, title: str) -> None:
    with tempfile.TemporaryDirectory(prefix="leti-plots-") as scratch:
        for path in (
            plots.predicted_vs_measured(test, Path(scratch) / "predicted_vs_measured.png", title),
            plots.error_cdf(test, Path(scratch) / "error_cdf.png", f"relative error, {title}"),
        ):
            mlflow.log_artifact(str(path), "plots")


if __name__ == "__main__":
    main()
