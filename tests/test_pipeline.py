"""End to end: `dvc repro` in a temporary copy of the repository, on a tiny params set."""

from pathlib import Path

import mlflow
import pytest
import yaml
from pipeline_helpers import declared_outputs, repro_targets, run

from leti import tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tiny_repo: Path) -> Path:
    return tiny_repo


def test_every_declared_out_exists(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    outputs = declared_outputs(yaml.safe_load((repo / "dvc.yaml").read_text()), params)
    assert "metrics.json" in outputs and "data/latency/torch-cpu" in outputs
    missing = [path for path in outputs if not (repo / path).exists()]
    assert not missing


def test_latency_table_holds_real_measurements(repo: Path) -> None:
    latency = tables.read(repo / "data/latency/torch-cpu", tables.LATENCY)
    archs = tables.read(repo / "data/architectures.parquet", tables.ARCHITECTURES)
    assert latency.height == 8
    assert sorted(latency["arch"]) == sorted(archs["arch"])
    assert latency["error"].null_count() == 8
    assert all(len(samples) == 3 and min(samples) > 0 for samples in latency["samples_ms"])
    assert (latency["median_ms"] > 0).all()


def test_metrics_file_has_every_predictor(repo: Path) -> None:
    import json

    metrics = json.loads((repo / "metrics.json").read_text())
    assert set(metrics) == {"layerwise", "linear", "xgboost"}
    for values in metrics.values():
        assert {"acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall"} <= set(values)
        assert values["n_test"] == 3


def test_second_repro_does_nothing(repo: Path, e2e_home: Path) -> None:
    result = run(["dvc", "repro", *repro_targets()], repo, e2e_home)
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


def test_mlflow_runs_carry_their_data_versions(repo: Path, e2e_home: Path) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    latency_md5 = next(
        out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
        if out["path"] == "data/latency/torch-cpu"
    )
    commit = run(["git", "rev-parse", "HEAD"], repo, e2e_home).stdout.strip()
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["leti"])
    assert sorted(runs["params.family"]) == ["layerwise", "linear", "xgboost"]
    assert set(runs["tags.data.latency.dvc_md5"]) == {latency_md5}
    # DVC stages dvc.lock as the pipeline runs, so the tree is honestly marked dirty.
    assert all(tag.removesuffix("-dirty") == commit for tag in runs["tags.git_commit"])
    assert runs["metrics.test_acc_10pct"].notna().all()
    model = mlflow.pyfunc.load_model(f"runs:/{runs['run_id'][0]}/{runs['params.family'][0]}")
    import pandas as pd

    predicted = model.predict(pd.DataFrame({"arch": ["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"]}))
    assert len(predicted) == 1 and float(predicted[0]) == float(predicted[0])  # a number, not NaN


def test_nothing_lands_in_the_home_directory(repo: Path, e2e_home: Path) -> None:
    """Prefect's database, DVC's site cache, MLflow, matplotlib and ONNX Runtime state stay in the
    project, git-ignored, though `dvc repro` ran with none of leti's variables set."""
    assert not list(e2e_home.iterdir())
    assert (repo / ".prefect" / "prefect.db").exists()  # the measure stage's Prefect flow
    assert (repo / ".cache" / "dvc" / "repo").is_dir()  # DVC's site cache (core.site_cache_dir)
    assert (repo / "mlflow.db").exists()
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], repo, e2e_home).stdout
    assert ".prefect" not in status and ".cache" not in status and "mlflow.db" not in status
