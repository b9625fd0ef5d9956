"""End to end: `dvc repro` in a temporary copy of the repository, on a tiny params set."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import mlflow
import polars as pl
import pytest
import yaml

from leti import predictors, tables

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


def environment(cwd: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd),
           "DVC_SITE_CACHE_DIR": str(cwd / ".dvc" / "site-cache"), "DVC_NO_ANALYTICS": "1", **extra}
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run(command: list[str], cwd: Path, expect: int = 0, **extra_env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=environment(cwd, **extra_env), capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
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
    # The committed dvc.lock stays: it is stale for these params, as on a fresh clone that re-measures.
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
    metrics = json.loads((repo / "metrics.json").read_text())
    assert set(metrics) == {"layerwise", "linear", "xgboost"}
    for values in metrics.values():
        assert {"acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall"} <= set(values)
        assert values["n_test"] == 3


def test_second_repro_does_nothing(repo: Path) -> None:
    result = run(["dvc", "repro", *([] if HAS_HELP else sorted(MAIN_STAGES))], repo)
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


# --- Lineage, MLflow runs, the registry, `leti predict` and serving (issue 8) -------------------

EXPERIMENT = "leti-nb201-torch-cpu"
MODEL = "leti-nb201-torch-cpu"
GOOD = ["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
        "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"]
INPUTS = {"latency": "data/latency/torch-cpu", "op_latency": "data/op_latency/torch-cpu",
          "architectures": "data/architectures.parquet", "features": "data/features.parquet"}


def lock_hashes(root: Path) -> dict[str, str]:
    """Path -> md5 of every out and dep that ``dvc.lock`` under ``root`` records."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"].values()
    return {entry["path"]: entry["md5"] for stage in stages for entry in stage.get("outs", []) + stage.get("deps", [])}


def client(repo: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def train_runs(repo: Path) -> list:
    store = client(repo)
    experiment = store.get_experiment_by_name(EXPERIMENT)
    return store.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def dvc_status_clean(repo: Path) -> None:
    result = run(["dvc", "status", *([] if HAS_HELP else sorted(MAIN_STAGES))], repo)
    assert "up to date" in result.stdout, result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], repo: Path, port: int, log: Path, **extra_env: str):
    """Start ``command`` in its own process group, wait for /health, and stop it by its PID."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=repo, env=environment(repo, **extra_env), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"{command[:3]} exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"{command[:3]} did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the group led by the server's PID: its workers too
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def http_json(url: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_runs_tag_the_hashes_dvc_lock_records_over_a_stale_lock(repo: Path) -> None:
    lock, committed = lock_hashes(repo), lock_hashes(ROOT)
    assert lock["data/latency/torch-cpu"] != committed["data/latency/torch-cpu"]  # the clone's lock was stale
    runs = train_runs(repo)
    assert runs
    for run_ in runs:
        for name, path in INPUTS.items():
            assert run_.data.tags[f"data.{name}.dvc_md5"] == lock[path], (run_.info.run_name, name)
    dvc_status_clean(repo)


def test_one_parent_run_with_a_child_per_family(repo: Path) -> None:
    runs = train_runs(repo)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1
    assert sorted(r.data.tags["family"] for r in children) == ["layerwise", "linear", "xgboost"]
    store = client(repo)
    experiment = store.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for child in children:
        family = child.data.tags["family"]
        assert child.info.run_name == f"{family}-seed0"
        assert child.data.params["family"] == family and child.data.params["train.seed"] == "0"
        assert any(key.startswith(f"{family}.") for key in child.data.params)
        assert not [key for key in child.data.params if key not in ("family",) and key.split(".")[0] not in (family, "train")]
        for split in ("val", "test"):
            assert {f"{split}_acc_10pct", f"{split}_mape", f"{split}_spearman"} <= set(child.data.metrics)
        assert child.data.metrics["n_train"] == 3 and child.data.metrics["n_val"] == 2 and child.data.metrics["n_test"] == 3
        assert {"plots/predicted_vs_measured.png", "plots/error_cdf.png"} <= {
            f.path for f in store.list_artifacts(child.info.run_id, "plots")}
        datasets = {d.dataset.name: d for d in child.inputs.dataset_inputs}
        assert set(datasets) == {"torch-cpu-train", "torch-cpu-val", "torch-cpu-test"}
        assert {d.dataset.digest for d in datasets.values()} == {child.data.tags["data.latency.dvc_md5"]}
        contexts = {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"] for d in datasets.values()}
        assert contexts == {"torch-cpu-train": "training", "torch-cpu-val": "validation", "torch-cpu-test": "testing"}


def test_logged_model_is_installable_and_says_what_it_predicts(repo: Path) -> None:
    from mlflow.models import Model

    child = next(r for r in train_runs(repo) if r.data.tags.get("family") == "xgboost")
    [output] = child.outputs.model_outputs
    location = client(repo).get_logged_model(output.model_id).artifact_location
    assert location.startswith(f"file://{repo / 'mlartifacts'}")  # the project's artifact root
    folder = Path(location.removeprefix("file://"))
    requirements = (folder / "requirements.txt").read_text().split()
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {"torch==2.13.0", "xgboost-cpu==3.2.0", "polars==2.1.0", "dgl==2.1.0", "mlflow==3.17.2"} <= set(requirements)
    assert set(requirements) <= declared  # leti's own pins, never `leti`, which no index has
    assert (folder / "code" / "leti" / "predictors" / "xgboost.py").exists()
    model = Model.load(folder)
    assert model.metadata["space"] == "nb201" and model.metadata["device"] == "torch-cpu"
    assert model.metadata["statistic"] == "min_ms" and model.metadata["config_id"] == child.data.tags["config_id"]
    assert model.metadata["feature_schema"]["feature_set"] == "onehot"
    assert model.signature.inputs.input_names() == ["arch"]
    assert model.saved_input_example_info is not None
    saved = json.loads((repo / "models" / "xgboost" / "predictor.json").read_text())
    assert (saved["space"], saved["statistic"], saved["feature_schema"]["feature_set"]) == ("nb201", "min_ms", "onehot")


def test_champion_is_registered_with_its_reason(repo: Path) -> None:
    store = client(repo)
    version = store.get_model_version_by_alias(MODEL, "champion")
    assert version.tags["selection.metric"] == "val_acc_10pct"
    assert version.tags["selection.reason"].startswith("first model")
    assert version.tags["data.latency.dvc_md5"] == lock_hashes(repo)["data/latency/torch-cpu"]
    champion_run = store.get_run(version.run_id)
    assert champion_run.data.tags["data.latency.dvc_md5"] == lock_hashes(repo)["data/latency/torch-cpu"]
    summary = json.loads((repo / "models" / "mlflow.json").read_text())
    assert summary["registered"] and summary["champion_version"] == str(version.version)


def test_training_again_without_change_registers_nothing(repo: Path, tmp_path: Path) -> None:
    store = client(repo)
    before = store.search_model_versions(f"name='{MODEL}'")
    result = run([sys.executable, "stages/train.py", "--models", str(tmp_path / "models"),
                  "--predictions", str(tmp_path / "predictions.parquet")], repo)
    assert "does not beat champion" in result.stdout
    assert len(store.search_model_versions(f"name='{MODEL}'")) == len(before)
    assert store.get_model_version_by_alias(MODEL, "champion").version == before[0].version
    assert not json.loads((tmp_path / "models" / "mlflow.json").read_text())["registered"]


def test_leti_predict_with_the_champion(repo: Path, tmp_path: Path) -> None:
    output = tmp_path / "predicted.parquet"
    result = run([sys.executable, "-m", "leti", "predict", "--device", "torch-cpu", GOOD[0], "not-a-cell", GOOD[1],
                  "--output", str(output)], repo, expect=1)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["arch"] for line in lines] == GOOD
    assert all(set(line) == {"arch", "device", "predicted_ms"} and line["device"] == "torch-cpu" for line in lines)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "arch 2" in errors[0] and "'not-a-cell'" in errors[0]
    assert pl.read_parquet(output).to_dicts() == lines
    version = client(repo).get_model_version_by_alias(MODEL, "champion")
    family = client(repo).get_run(version.run_id).data.tags["family"]
    expected = predictors.load(repo / "models" / family).predict(GOOD)
    assert [line["predicted_ms"] for line in lines] == pytest.approx(expected.tolist())


def test_leti_predict_names_a_missing_champion(repo: Path) -> None:
    result = run([sys.executable, "-m", "leti", "predict", "--device", "pixel7-gpu", GOOD[0]], repo, expect=2)
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "models:/leti-nb201-pixel7-gpu@champion" in line and "make pipeline" in line


def test_mlflow_models_serve_answers_invocations(repo: Path, tmp_path: Path) -> None:
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]
    with server(command, repo, port, tmp_path / "serve.log", MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}"):
        answer = http_json(f"http://127.0.0.1:{port}/invocations",
                           {"dataframe_split": {"columns": ["arch"], "data": [[arch] for arch in GOOD]}})
    predicted = run([sys.executable, "-m", "leti", "predict", "--device", "torch-cpu", *GOOD], repo).stdout
    expected = [json.loads(line)["predicted_ms"] for line in predicted.splitlines()]
    assert [row["predicted_ms"] for row in answer["predictions"]] == pytest.approx(expected)


def test_training_against_a_tracking_server(repo: Path, tmp_path: Path) -> None:
    port = free_port()
    command = ["mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    base = f"http://127.0.0.1:{port}"
    with server(command, repo, port, tmp_path / "server.log"):
        run([sys.executable, "stages/train.py", "--models", str(tmp_path / "models"),
             "--predictions", str(tmp_path / "predictions.parquet")], repo, MLFLOW_TRACKING_URI=base)
        experiment = http_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}")["experiment"]
        runs = http_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        alias = http_json(f"{base}/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias=champion")["model_version"]
    assert len(runs) == 4
    lock = lock_hashes(repo)
    for run_ in runs:
        tags = {tag["key"]: tag["value"] for tag in run_["data"]["tags"]}
        assert tags["data.latency.dvc_md5"] == lock["data/latency/torch-cpu"]
    assert alias["run_id"] in {run_["info"]["run_id"] for run_ in runs}
    assert (tmp_path / "artifacts").is_dir() and any((tmp_path / "artifacts").rglob("MLmodel"))


def test_a_changed_protocol_measures_again_and_keeps_splits_apart(repo: Path) -> None:
    """Last: it changes the shared repository's params (a new measurement configuration)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["measure"]["defaults"]["runs"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old_champion = client(repo).get_model_version_by_alias(MODEL, "champion")
    run(["dvc", "repro", *([] if HAS_HELP else sorted(MAIN_STAGES))], repo)

    latency = tables.read(repo / "data/latency/torch-cpu", tables.LATENCY)
    assert latency["config_id"].n_unique() == 2 and latency.height == 16  # both protocols kept
    ops = tables.read(repo / "data/op_latency/torch-cpu", tables.OP_LATENCY)
    assert ops["config_id"].n_unique() == 2
    new_config = latency.sort("measured_at")["config_id"][-1]
    predictions = tables.read(repo / "data/predictions.parquet", tables.PREDICTIONS)
    archs = set(tables.read(repo / "data/architectures.parquet", tables.ARCHITECTURES)["arch"])
    for (family, seed), rows in predictions.group_by(["predictor", "seed"]):
        assert rows.height == 8 and set(rows["arch"]) == archs  # one row per arch: no cell in two splits
        measured = latency.filter(pl.col("config_id") == new_config).select("arch", "min_ms")
        joined = rows.join(measured, on="arch")
        assert (joined["measured_ms"] == joined["min_ms"]).all()  # the new protocol's rows only
    champion = client(repo).get_model_version_by_alias(MODEL, "champion")
    assert champion.version != old_champion.version
    assert "predicts another target" in champion.tags["selection.reason"]
    assert champion.tags["config_id"] == new_config
    assert champion.tags["data.latency.dvc_md5"] == lock_hashes(repo)["data/latency/torch-cpu"]
    dvc_status_clean(repo)
