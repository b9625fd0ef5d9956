"""Stage `train`: fit each configured predictor family on one device's latencies, log to MLflow."""

import argparse
import json
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from leti import campaign, evaluation, features, params, predictors, tables, tracking
from leti.features import graph
from leti.metrics import regression_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="data/latency")
    parser.add_argument("--features", default="data/features.parquet")
    parser.add_argument("--graphs", default="data/graphs.parquet")
    parser.add_argument("--models", default="models")
    parser.add_argument("--predictions", default="data/predictions.parquet")
    args = parser.parse_args()
    config = params.section("train")
    device = config["device"]
    latency = campaign.latency_table(Path(args.store), device).sort("arch")
    archs = latency["arch"].to_list()
    statistic = config.get("statistic", "median_ms")
    if statistic not in ("median_ms", "iqm_ms", "mean_ms", "min_ms"):
        raise SystemExit(f"train: unknown statistic {statistic!r} (median_ms, iqm_ms, mean_ms, min_ms)")
    measured = latency[statistic].to_numpy()
    features.preload(tables.read(args.features, tables.FEATURES))
    graph.preload(tables.read(args.graphs, tables.GRAPHS))
    parts = evaluation.split(len(archs), config["train_size"], config["val_size"], config["seed"])
    tracking.setup(config["experiment"])
    tags = tracking.data_tags(
        {"latency": f"{args.store}/{device}", "features": args.features, "graphs": args.graphs}
    ) | {"device": device}
    prediction_frames, runs = [], {}
    for family, family_params in config["predictors"].items():
        predictor = predictors.make_predictor(family, **(family_params or {}))
        with mlflow.start_run(run_name=f"{family}-{device}", tags=tags) as run:
            result = evaluation.evaluate(predictor, archs, measured, parts)
            folder = predictor.save(Path(args.models) / family)
            mlflow.log_params({**predictor.params, "family": family, "seed": config["seed"], "statistic": statistic})
            mlflow.log_metrics(
                {f"val_{k}": v for k, v in regression_metrics(measured[parts.val], result.predicted["val"]).items()}
                | {"fit_seconds": float(result.metrics["fit_seconds"])}
            )
            tracking.log_predictor(folder, family, archs[:3])
            runs[family] = run.info.run_id
        for name in ("train", "val", "test"):
            index = getattr(parts, name)
            prediction_frames.append(
                pl.DataFrame(
                    {
                        "arch": np.asarray(archs, dtype=object)[index].tolist(),
                        "device": device,
                        "predictor": family,
                        "seed": config["seed"],
                        "split": name,
                        "measured_ms": measured[index],
                        "predicted_ms": result.predicted[name],
                    }
                )
            )
    tables.write(pl.concat(prediction_frames), args.predictions, tables.PREDICTIONS)
    Path(args.models, "mlflow_runs.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
