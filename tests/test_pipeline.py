"""End to end: `dvc repro` in a temporary copy of the repository, on a tiny params set."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from leti import tables

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HELP = (ROOT / ".." / "shared" / "datasets" / "help").resolve()
LATBENCH = (ROOT / ".." / "shared" / "datasets" / "latbench").resolve()
HAS_HELP = (HELP / "nasbench201" / "str_arch2idx.pt").exists() and LATBENCH.is_dir()
MAIN_STAGES = {"sample", "measure", "measure_ops", "featurize", "train", "evaluate"}

pytestmark = pytest.mark.slow


def tiny_params(params: dict) -> dict:
    params["sample"]["n"] = 8
    params["measure"]["defaults"].update(runs=3, warmup_runs=1, warmup_seconds=0.0)
    params["train"].update(train_size=3, val_size=2)
    params["train"]["predictors"]["xgboost"]["n_estimators"] = 20
    params["ingest_help"].update(source=str(HELP), devices=["gold_6240"])
    params["report"].update(
        devices=["gold_6240"], seeds=[0], train_size=60, val_size=20, study_device="gold_6240",
        predictors={"flops": {}, "linear": {}, "gcn": {"hidden": 16, "layers": 2, "batch_size": 16, "epochs": 2}},
        ensemble_members=["gcn", "linear"], ablations={"identity_adjacency": {"adjacency": "identity"}},
        train_sizes=[30], train_size_predictors=["linear"], batch_sizes=[],
    )
    params["ingest_latbench"].update(source=str(LATBENCH), devices=["desktop-gpu-gtx-1080ti-fp32"])
    params["report_latbench"].update(
        train_size=60, val_size=20,
        predictors={"linear": {}, "gcn": {"hidden": 16, "layers": 2, "batch_size": 16, "epochs": 2, "precision": "float32"}},
    )
    return params


def stages_run() -> set[str]:
    """Every stage when the published HELP and LatBench data are here; the measurement pipeline otherwise."""
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) if HAS_HELP else MAIN_STAGES


def declared_outputs(dvc_yaml: dict, params: dict) -> list[str]:
    paths = []
    for name, stage in dvc_yaml["stages"].items():
        if name not in stages_run():
            continue
        keys = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in keys.get(kind, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                path = path.replace("${train.device}", params["train"]["device"])
                if "foreach" in stage:
                    paths += [path.replace("${key}", device) for device in params["devices"]]
                else:
                    paths.append(path)
    return paths


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd),
           "DVC_SITE_CACHE_DIR": str(cwd / ".dvc" / "site-cache"), "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC copy of the project (tracked and untracked-but-not-ignored files)."""
    copy = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / "dvc.lock").unlink(missing_ok=True)
    params = tiny_params(yaml.safe_load((copy / "params.yaml").read_text()))
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        run(command, copy)
    run(["dvc", "repro", *([] if HAS_HELP else sorted(MAIN_STAGES))], copy)
    return copy


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


def test_second_repro_does_nothing(repo: Path) -> None:
    result = run(["dvc", "repro", *([] if HAS_HELP else sorted(MAIN_STAGES))], repo)
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


def test_mlflow_runs_carry_their_data_versions(repo: Path) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    latency_md5 = next(
        out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
        if out["path"] == "data/latency/torch-cpu"
    )
    commit = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
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
