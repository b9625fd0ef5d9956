"""End to end, on this file's copy of the tiny reproduced project: the servers users run beside it
(`mlflow models serve`, an MLflow tracking server) and a changed measurement protocol. Apart from
tests/test_pipeline.py so that the two xdist workers share the end-to-end tests after the build."""

import json
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from pipeline_helpers import (EXPERIMENT, GOOD, INPUTS, MODEL, STATISTIC, TRAIN, TRAIN_STAGE, TRAINED, client, dvc_status_clean,
                              free_port, http_json, lock_hashes, measured_cells, run, serving)

from leti.store import tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This file's copy of the reproduced project: its tests run commands in it, in order."""
    return shutil.copytree(tiny_repo, tmp_path_factory.mktemp("servers") / "leti", symlinks=True)


def test_mlflow_models_serve_answers_invocations(repo: Path, tmp_path: Path, e2e_home: Path) -> None:
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, repo, e2e_home, f"http://127.0.0.1:{port}/health", tmp_path / "serve.log",
                 MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}"):
        answer = http_json(f"http://127.0.0.1:{port}/invocations",
                           {"dataframe_split": {"columns": ["arch"], "data": [[arch] for arch in GOOD]}})
    predicted = run([sys.executable, "-m", "leti", "predict", "--device", "torch-cpu", *GOOD], repo, e2e_home).stdout
    expected = [json.loads(line)["predicted_ms"] for line in predicted.splitlines()]
    assert [row["predicted_ms"] for row in answer["predictions"]] == pytest.approx(expected)


def test_training_against_a_tracking_server(repo: Path, tmp_path: Path, e2e_home: Path) -> None:
    port = free_port()
    command = ["mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    base = f"http://127.0.0.1:{port}"
    params = yaml.safe_load((repo / "params.yaml").read_text())  # one family: the server, not the families, is tested here
    params["train"]["nb201"]["predictors"] = {"linear": params["train"]["nb201"]["predictors"]["linear"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with serving(command, repo, e2e_home, f"{base}/health", tmp_path / "server.log"):
        run([*TRAIN, "--models", str(tmp_path / "models"), "--predictions", str(tmp_path / "predictions.parquet"),
             "--params", str(tmp_path / "params.yaml")], repo, e2e_home, MLFLOW_TRACKING_URI=base)
        experiment = http_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}")["experiment"]
        runs = http_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        alias = http_json(f"{base}/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias=champion")["model_version"]
    assert len(runs) == 1 + 1  # the parent and the family's child
    lock = lock_hashes(repo, TRAIN_STAGE)
    for run_ in runs:
        tags = {tag["key"]: tag["value"] for tag in run_["data"]["tags"]}
        assert tags["data.latency.dvc_md5"] == lock[INPUTS["latency"]]
    assert alias["run_id"] in {run_["info"]["run_id"] for run_ in runs}
    assert (tmp_path / "artifacts").is_dir() and any((tmp_path / "artifacts").rglob("MLmodel"))


def test_a_changed_protocol_measures_again_and_keeps_splits_apart(repo: Path, e2e_home: Path) -> None:
    """Last in this file, on its copy of the reproduced project: a new measurement configuration must
    not touch the rows of the first one."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["measure"]["defaults"]["runs"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old_champion = client(repo).get_model_version_by_alias(MODEL, "champion")
    # Only what evaluate@nb201 needs (measure@torch-cpu, measure_ops@torch-cpu, train@nb201): the rest
    # of the pipeline reacts to the same change the same way, and rerunning it all costs minutes.
    run(["dvc", "repro", TRAINED], repo, e2e_home)

    latency = measured_cells(repo / INPUTS["latency"])
    assert latency["config_id"].n_unique() == 2 and latency.height == 16  # both protocols kept
    ops = tables.read(repo / "data/op_latency/torch-cpu", tables.OP_LATENCY)
    assert ops["config_id"].n_unique() == 2
    new_config = latency.sort("measured_at")["config_id"][-1]
    predictions = tables.read(repo / "data/predictions/nb201.parquet", tables.PREDICTIONS)
    archs = set(tables.read(repo / INPUTS["architectures"], tables.ARCHITECTURES)["arch"])
    for (family, seed), rows in predictions.group_by(["predictor", "seed"]):
        assert rows.height == 8 and set(rows["arch"]) == archs  # one row per arch: no cell in two splits
        measured = latency.filter(pl.col("config_id") == new_config).select("arch", STATISTIC)
        joined = rows.join(measured, on="arch")
        assert (joined["measured_ms"] == joined[STATISTIC]).all()  # the new protocol's rows only
    champion = client(repo).get_model_version_by_alias(MODEL, "champion")
    assert champion.version != old_champion.version
    assert "predicts another target" in champion.tags["selection.reason"]
    assert champion.tags["config_id"] == new_config
    assert champion.tags["data.latency.dvc_md5"] == lock_hashes(repo, TRAIN_STAGE)[INPUTS["latency"]]
    dvc_status_clean(repo, e2e_home, [TRAINED])

