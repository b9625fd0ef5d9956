"""A training invocation in MLflow: one parent run, a child run per family and seed, the champion.

Every child run fits one family on one seed's split of a device's cells and logs its params
(prefixed by family), validation and test metrics, plots, the train/validation/test tables as
datasets named by the DVC md5 of the folder they came from, and the model as a pyfunc. The best child
by the selection rule becomes ``models:/leti-<space>-<device>@champion`` when it beats the champion
(``leti.tracking.registry``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from leti import predictors, tracking
from leti.metrics import regression_metrics
from leti.predictors import evaluation
from leti.reports import plots
from leti.store.reader import Cells
from leti.tracking import pyfunc, registry

SPLITS = {"train": "training", "val": "validation", "test": "testing"}  # split -> MLflow dataset context


@dataclass(frozen=True)
class Training:
    """What one ``train`` invocation fits: the cells, the families, the seeds and the sizes."""

    cells: Cells
    families: dict[str, dict[str, Any]]  # family -> constructor parameters, the stage's supplied ones filled in per seed
    supplied: dict[str, Any]  # what a family may take from the stage (space, lookup, config_id, network, statistic)
    seeds: list[int]
    train_size: int
    val_size: int
    rule: registry.Rule
    inputs: dict[str, str]  # name -> path of every input, tagged with its DVC md5
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)  # more tags for every run (the measurement's quality)


@dataclass(frozen=True)
class Outcome:
    experiment_id: str
    parent_run: str
    runs: dict[str, str]
    decision: registry.Decision
    predictions: pl.DataFrame


def train(training: Training, models: Path) -> Outcome:
    """Fit every family on every seed, log each as a child run, and let the registry decide."""
    cells, space, device = training.cells, training.cells.space, training.cells.device
    data_tags = tracking.data_tags(training.inputs)
    target = {"space": space, "device": device, "config_id": cells.config_id, "statistic": cells.statistic}
    tags = {**data_tags, **target, **training.tags}
    experiment_id = tracking.setup(training.experiment)
    shared = {
        "train.train_size": training.train_size, "train.val_size": training.val_size, "train.seeds": training.seeds,
        "train.statistic": cells.statistic, "train.cells": len(cells.archs), "train.select": training.rule.describe(),
    }
    frames, candidates, children = [], [], {}
    with mlflow.start_run(run_name=f"train-{space}-{device}", tags={**tags, "leti.run": "train"}) as parent:
        mlflow.log_params(tracking.flat_params(shared | {
            f"{family}.{key}": value for family, configured in training.families.items() for key, value in (configured or {}).items()
        }))
        log_data_counts(cells)
        for seed in training.seeds:
            parts = evaluation.split(len(cells.archs), training.train_size, training.val_size, seed)
            log_datasets(cells, parts, seed, training.inputs["latency"], data_tags["data.latency.dvc_md5"])
            for family, configured in training.families.items():
                family_params = predictors.with_defaults(family, configured or {}, {"seed": seed, **training.supplied})
                predictor = predictors.make_predictor(family, **family_params)
                folder = models / (family if len(training.seeds) == 1 else f"{family}-seed{seed}")
                frame, candidate = fit_child(predictor, cells, parts, seed, folder, tags, shared, training.rule)
                frames.append(frame)
                candidates.append(candidate)
                children[candidate.name] = candidate.run_id
        predictions = pl.concat(frames)
        log_plots(predictions.filter(pl.col("split") == "test"), device)
        if data_only(tracking.data_tags(training.inputs)) != data_only(data_tags):
            raise ValueError(f"an input changed while it was being read ({', '.join(training.inputs.values())}); run again")
        decision = registry.select(
            mlflow.MlflowClient(), tracking.model_name(space, device), candidates, training.rule,
            version_tags={**{key: str(value) for key, value in tags.items()}, "parent_run": parent.info.run_id},
        )
        mlflow.set_tags({
            "selection.candidate": decision.candidate.name, "selection.registered": str(decision.register).lower(),
            "selection.reason": decision.reason, "selection.champion_version": decision.version or "",
        })
    return Outcome(experiment_id, parent.info.run_id, children, decision, predictions)


def fit_child(
    predictor: predictors.Predictor, cells: Cells, parts: evaluation.Split, seed: int, folder: Path,
    tags: dict[str, str], shared: dict[str, Any], rule: registry.Rule,
) -> tuple[pl.DataFrame, registry.Candidate]:
    """One child run: fit, log params, metrics, datasets, plots and the model; its predictions and its candidacy."""
    family, target = predictor.family, {key: tags[key] for key in registry.TARGET_KEYS}
    name = f"{family}-seed{seed}"
    with mlflow.start_run(run_name=name, nested=True, tags={**tags, "family": family, "seed": str(seed)}) as child:
        result = evaluation.evaluate(predictor, cells.archs, cells.latency_ms, parts)
        frame = predictions_frame(cells, parts, result, family, seed)
        mlflow.log_params(tracking.flat_params({
            "family": family, **shared, "train.seed": seed, **{f"{family}.{key}": value for key, value in predictor.params.items()},
        }))
        metrics = split_metrics(frame) | {
            "fit_seconds": float(result.metrics["fit_seconds"]), "predict_seconds": float(result.metrics["predict_seconds"]),
        }
        mlflow.log_metrics(metrics)
        log_datasets(cells, parts, seed, tags["data.latency.path"], tags["data.latency.dvc_md5"])
        log_plots(frame.filter(pl.col("split") == "test"), f"{name}, {cells.device}")
        predictor.save(folder, space=target["space"], statistic=target["statistic"])
        info = pyfunc.log_predictor(folder, "model", cells.archs[:3], {
            **target, "family": family, "seed": seed, "feature_schema": predictors.describe(folder)["feature_schema"],
            "data": data_only(tags),
        })
    return frame, registry.Candidate(child.info.run_id, info.model_uri, name, metrics.get(rule.metric, float("nan")), target)


def data_only(tags: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in tags.items() if key.startswith("data.")}


def log_data_counts(cells: Cells) -> None:
    mlflow.log_metrics({
        "data.rows_read": cells.rows_read, "data.cells": len(cells.archs), "data.other_config_rows": cells.other_config,
        "data.not_sampled_rows": cells.not_asked, "data.repeated_rows": cells.repeats,
    })


def log_datasets(cells: Cells, parts: evaluation.Split, seed: int, source: str, digest: str) -> None:
    """The train, validation and test tables as MLflow datasets, named by the DVC md5 of their folder."""
    import mlflow.data

    archs = np.asarray(cells.archs, dtype=object)
    for split, context in SPLITS.items():
        index = getattr(parts, split)
        table = pl.DataFrame({"arch": archs[index].tolist(), cells.statistic: cells.latency_ms[index]})
        dataset = mlflow.data.from_pandas(table.to_pandas(), source=source, targets=cells.statistic, name=f"{cells.device}-{split}", digest=digest)
        mlflow.log_input(dataset, context=context, tags={"split": split, "seed": str(seed), "cells": str(table.height), "config_id": cells.config_id})


def predictions_frame(cells: Cells, parts: evaluation.Split, result: evaluation.Evaluation, family: str, seed: int) -> pl.DataFrame:
    archs = np.asarray(cells.archs, dtype=object)
    return pl.concat([
        pl.DataFrame({
            "arch": archs[getattr(parts, split)].tolist(), "device": cells.device, "predictor": family, "seed": seed,
            "split": split, "measured_ms": cells.latency_ms[getattr(parts, split)], "predicted_ms": result.predicted[split],
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


def summary(outcome: Outcome, space: str, device: str) -> dict[str, Any]:
    """What ``models/<space>/<device>/mlflow.json`` records: the runs and the registry's decision."""
    decision = outcome.decision
    return {
        "experiment": outcome.experiment_id, "parent_run": outcome.parent_run, "runs": outcome.runs,
        "model": tracking.model_name(space, device), "registered": decision.register,
        "champion_version": decision.version, "reason": decision.reason,
    }



def adapt(cells: Cells, shots: list[str], pretrained: Path, pretrained_uri: str, store: str,
          rule: registry.Rule = registry.Rule(), experiment: str = "leti") -> dict[str, Any]:
    """``leti adapt``: the transfer family fitted to a device's ``shots``, logged as one run and offered
    to the registry. Its validation score is leave-one-out on the shots (no other cell is needed); from
    ``transfer.FINETUNE_SHOTS`` shots, where the trunk may be fine-tuned, it is the score on a tenth of
    the shots held out of the fit instead. The device's other measured cells, if any, are its test cells."""
    import hashlib

    from leti.predictors import transfer

    index = {arch: i for i, arch in enumerate(cells.archs)}
    chosen = np.asarray([index[arch] for arch in shots])
    rest = np.setdiff1d(np.arange(len(cells.archs)), chosen)
    y = cells.latency_ms
    predictor = transfer.TransferPredictor(pretrained=str(pretrained), space=cells.space)
    if cells.device in predictor.model().devices:
        raise ValueError(f"device {cells.device!r} is one of the pretrained model's sources: adapting to it would score "
                         "cells it was trained on")
    if len(shots) < transfer.FINETUNE_SHOTS:
        predictor.fit(shots, y[chosen])
        validation = (y[chosen], transfer.leave_one_out(predictor.pretrained, shots, y[chosen]))
    else:
        held = transfer.held_out(len(shots))
        kept = np.setdiff1d(np.arange(len(shots)), held)
        val_shots = [shots[i] for i in held]
        predictor.fit([shots[i] for i in kept], y[chosen[kept]], val_shots, y[chosen[held]])
        validation = (y[chosen[held]], predictor.predict(val_shots))
    model = predictor.pretrained
    assert model is not None
    metrics = {f"val_{k}": v for k, v in regression_metrics(*validation).items()}
    if len(rest) >= 2:
        archs = [cells.archs[i] for i in rest]
        metrics |= {f"test_{k}": v for k, v in regression_metrics(y[rest], predictor.predict(archs)).items()}
    metrics |= {"n_train": len(shots), "n_test": len(rest)}
    target = {"space": cells.space, "device": cells.device, "config_id": cells.config_id, "statistic": cells.statistic}
    shot_text = "\n".join(shots) + "\n"
    tags = {**tracking.data_tags({"latency": store}), **target, "family": "transfer", "leti.run": "adapt",
            "transfer.pretrained": pretrained_uri, "transfer.pretrained_data": model.data, "transfer.shots": str(len(shots)),
            "transfer.shots_sha256": hashlib.sha256(shot_text.encode()).hexdigest()}
    experiment_id = tracking.setup(tracking.experiment_name(experiment, cells.space, cells.device))
    with mlflow.start_run(run_name=f"adapt-{len(shots)}-shots", tags=tags) as run, tempfile.TemporaryDirectory(prefix="leti-adapt-") as scratch:
        mlflow.log_params(tracking.flat_params({"family": "transfer", "transfer.shots": len(shots), "transfer.penalty": predictor.head.penalty,
                                                "transfer.mix": predictor.head.mix,
                                                "transfer.sources": model.devices}))
        mlflow.log_metrics(metrics)
        mlflow.log_text(shot_text, "shots.txt")
        folder = predictor.save(Path(scratch) / "transfer", space=cells.space, statistic=cells.statistic)
        info = pyfunc.log_predictor(folder, "model", shots[:3], {**target, "family": "transfer", "seed": 0,
                                                                 "feature_schema": predictor.feature_schema(), "data": data_only(tags)})
        candidate = registry.Candidate(run.info.run_id, info.model_uri, f"transfer-{len(shots)}shots",
                                       metrics.get(rule.metric, float("nan")), target)
        decision = registry.select(mlflow.MlflowClient(), tracking.model_name(cells.space, cells.device), [candidate], rule,
                                   version_tags={key: str(value) for key, value in tags.items()})
        mlflow.set_tags({"selection.registered": str(decision.register).lower(), "selection.reason": decision.reason})
    return {"device": cells.device, "space": cells.space, "shots": len(shots), "run": run.info.run_id, "experiment": experiment_id,
            "val_acc_10pct": metrics.get("val_acc_10pct"), "test_acc_10pct": metrics.get("test_acc_10pct"),
            "registered": decision.register, "champion_version": decision.version, "reason": decision.reason,
            "model": tracking.champion_uri(cells.space, cells.device)}
