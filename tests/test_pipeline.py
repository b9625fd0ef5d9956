"""End to end: `dvc repro` in a temporary copy of the repository on a tiny params set (the session's
``tiny_repo``), then what it leaves behind: lineage, MLflow runs, the registry, `leti predict`, the Python API
(servers and a changed protocol: tests/test_pipeline_servers.py)."""

import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from pipeline_helpers import (EXPERIMENT, GOOD, INPUTS, MODEL, MODELS, ROOT, STATISTIC, TRAIN, TRAIN_STAGE, client, declared_outputs,
                              dvc_status_clean, lock_hashes, measured_cells, repro_targets, run)

from leti import predictors, spaces
from leti.store import reader, tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This file's copy of the reproduced project: its tests run commands in it, in order."""
    return shutil.copytree(tiny_repo, tmp_path_factory.mktemp("pipeline") / "leti", symlinks=True)


def test_every_declared_out_exists(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    outputs = declared_outputs(yaml.safe_load((repo / "dvc.yaml").read_text()), params)
    assert "metrics/nb201.json" in outputs and "data/latency/torch-cpu" in outputs and str(MODELS) in outputs
    missing = [path for path in outputs if not (repo / path).exists()]
    assert not missing


def test_latency_table_holds_real_measurements(repo: Path) -> None:
    latency = measured_cells(repo / "data/latency/torch-cpu/nb201")
    archs = tables.read(repo / "data/architectures/nb201.parquet", tables.ARCHITECTURES)
    assert latency.height == 8
    assert sorted(latency["arch"]) == sorted(archs["arch"])
    assert latency["error"].null_count() == 8
    assert all(len(samples) == 3 and min(samples) > 0 for samples in latency["samples_ms"])
    assert (latency["median_ms"] > 0).all()
    sentinels = reader.sentinel_rows(repo / "data/latency", "torch-cpu", "nb201")
    assert sentinels.height >= 2 and set(sentinels["arch"]) == {spaces.get("nb201").SENTINEL}  # the campaign timed its sentinel
    assert latency["min_ms_corrected"].null_count() == 0 and (latency["sentinel_reference_ms"] == sentinels["min_ms"][0]).all()


def test_metrics_file_has_every_predictor(repo: Path) -> None:
    metrics = json.loads((repo / "metrics/nb201.json").read_text())
    assert set(metrics) == {"gcn", "layerwise", "linear", "xgboost"}
    for values in metrics.values():
        assert {"acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall"} <= set(values)
        assert values["n_test"] == 3


NB101_CELL = "1333m|111010.00001.0001.100.01.1"


def test_nb101_is_measured_on_both_cpus_and_every_family_trained(repo: Path, e2e_home: Path) -> None:
    archs = tables.read(repo / "data/architectures/nb101.parquet", tables.ARCHITECTURES)
    assert archs.height == 8 and set(archs["space"]) == {"nb101"}
    for device in ("torch-cpu", "onnxruntime-cpu"):
        latency = measured_cells(repo / "data/latency" / device / "nb101")
        assert sorted(latency["arch"]) == sorted(archs["arch"]) and latency["error"].null_count() == 8
        assert set(latency["space"]) == {"nb101"} and latency["input_shape"].to_list()[0] == [1, 3, 32, 32]
    nb201_archs = tables.read(repo / "data/architectures/nb201.parquet", tables.ARCHITECTURES)["arch"]
    on_ort = measured_cells(repo / "data/latency/onnxruntime-cpu/nb201")  # it lists both spaces
    assert sorted(on_ort["arch"]) == sorted(nb201_archs) and set(on_ort["space"]) == {"nb201"}
    metrics = json.loads((repo / "metrics/nb101.json").read_text())
    trained = set(yaml.safe_load((repo / "params.yaml").read_text())["train"]["nb101"]["predictors"])
    assert trained == set(predictors.FAMILIES) - {"transfer"}  # every family but few-shot transfer (its own stages)
    assert set(metrics) == trained and all(values["n_test"] == 3 for values in metrics.values())
    version = client(repo).get_model_version_by_alias("leti-nb101-torch-cpu", "champion")
    assert client(repo).get_run(version.run_id).data.tags["space"] == "nb101"
    result = run([sys.executable, "-m", "leti", "predict", "--space", "nb101", "--device", "torch-cpu", NB101_CELL, GOOD[0]],
                 repo, e2e_home, expect=1)
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["arch"] == NB101_CELL and line["predicted_ms"] > 0
    assert "arch 2 is malformed" in result.stderr and "NAS-Bench-101" in result.stderr  # an NB201 cell is not NB101's


def test_second_repro_does_nothing(repo: Path, e2e_home: Path) -> None:
    result = run(["dvc", "repro", *repro_targets()], repo, e2e_home)
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


# --- Lineage, MLflow runs, the registry, `leti predict` and serving (issue 8) -------------------


def train_runs(repo: Path) -> list:
    store = client(repo)
    experiment = store.get_experiment_by_name(EXPERIMENT)
    return store.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_runs_tag_the_hashes_dvc_lock_records_over_a_stale_lock(repo: Path, e2e_home: Path) -> None:
    lock, committed = lock_hashes(repo), lock_hashes(ROOT)
    assert lock["data/latency/torch-cpu"] != committed.get("data/latency/torch-cpu")  # the clone's lock was stale
    trained = lock_hashes(repo, TRAIN_STAGE)  # what train@nb201 recorded (stages the tiny run skipped keep stale deps)
    commit = run(["git", "rev-parse", "HEAD"], repo, e2e_home).stdout.strip()
    runs = train_runs(repo)
    assert runs
    for run_ in runs:
        for name, path in INPUTS.items():
            assert run_.data.tags[f"data.{name}.dvc_md5"] == trained[path], (run_.info.run_name, name)
        # DVC stages dvc.lock as the pipeline runs, so the tree is honestly marked dirty.
        assert run_.data.tags["git_commit"].removesuffix("-dirty") == commit
    dvc_status_clean(repo, e2e_home)


def test_one_parent_run_with_a_child_per_family(repo: Path) -> None:
    runs = train_runs(repo)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1
    assert sorted(r.data.tags["family"] for r in children) == ["gcn", "layerwise", "linear", "xgboost"]
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


def test_logged_model_is_installable_and_says_what_it_predicts(repo: Path, tiny_repo: Path) -> None:
    from mlflow.models import Model

    child = next(r for r in train_runs(repo) if r.data.tags.get("family") == "xgboost")
    [output] = child.outputs.model_outputs
    location = client(repo).get_logged_model(output.model_id).artifact_location
    assert location.startswith(f"file://{tiny_repo / 'mlartifacts'}")  # the artifact root of the project that trained it
    folder = Path(location.removeprefix("file://"))
    requirements = (folder / "requirements.txt").read_text().split()
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {"torch==2.13.0", "xgboost-cpu==3.2.0", "polars==2.1.0", "dgl==2.1.0", "mlflow==3.17.2"} <= set(requirements)
    assert set(requirements) <= declared  # leti's own pins, never `leti`, which no index has
    assert (folder / "code" / "leti" / "predictors" / "xgboost.py").exists()
    model = Model.load(folder)
    assert model.metadata["space"] == "nb201" and model.metadata["device"] == "torch-cpu"
    assert model.metadata["statistic"] == STATISTIC and model.metadata["config_id"] == child.data.tags["config_id"]
    assert model.metadata["feature_schema"]["feature_set"] == "onehot"
    assert model.signature.inputs.input_names() == ["arch"]
    assert model.saved_input_example_info is not None
    saved = json.loads((repo / MODELS / "xgboost" / "predictor.json").read_text())
    assert (saved["space"], saved["statistic"], saved["feature_schema"]["feature_set"]) == ("nb201", STATISTIC, "onehot")


def test_champion_is_registered_with_its_reason(repo: Path) -> None:
    store = client(repo)
    version = store.get_model_version_by_alias(MODEL, "champion")
    assert version.tags["selection.metric"] == "val_acc_10pct"
    assert version.tags["selection.reason"].startswith("first model")
    assert version.tags["data.latency.dvc_md5"] == lock_hashes(repo, TRAIN_STAGE)[INPUTS["latency"]]
    champion_run = store.get_run(version.run_id)
    assert champion_run.data.tags["data.latency.dvc_md5"] == lock_hashes(repo, TRAIN_STAGE)[INPUTS["latency"]]
    summary = json.loads((repo / MODELS / "mlflow.json").read_text())
    assert summary["registered"] and summary["champion_version"] == str(version.version)


def test_training_again_without_change_registers_nothing(repo: Path, tmp_path: Path, e2e_home: Path) -> None:
    """After the tests above: it adds runs to the shared repository's MLflow store."""
    store = client(repo)
    before = store.search_model_versions(f"name='{MODEL}'")
    result = run([*TRAIN, "--models", str(tmp_path / "models"),
                  "--predictions", str(tmp_path / "predictions.parquet")], repo, e2e_home)
    assert "does not beat champion" in result.stdout
    assert len(store.search_model_versions(f"name='{MODEL}'")) == len(before)
    assert store.get_model_version_by_alias(MODEL, "champion").version == before[0].version
    assert not json.loads((tmp_path / "models" / "mlflow.json").read_text())["registered"]


def test_leti_predict_with_the_champion(repo: Path, tmp_path: Path, e2e_home: Path) -> None:
    output = tmp_path / "predicted.parquet"
    result = run([sys.executable, "-m", "leti", "predict", "--device", "torch-cpu", GOOD[0], "not-a-cell", GOOD[1],
                  "--output", str(output)], repo, e2e_home, expect=1)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["arch"] for line in lines] == GOOD
    assert all(set(line) == {"arch", "device", "predicted_ms"} and line["device"] == "torch-cpu" for line in lines)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "arch 2" in errors[0] and "'not-a-cell'" in errors[0]
    assert pl.read_parquet(output).to_dicts() == lines
    version = client(repo).get_model_version_by_alias(MODEL, "champion")
    family = client(repo).get_run(version.run_id).data.tags["family"]
    expected = predictors.load(repo / MODELS / family).predict(GOOD)
    assert [line["predicted_ms"] for line in lines] == pytest.approx(expected.tolist())


def test_kernel_predictors_answer_leti_predict_model_from_the_champion(repo: Path, tmp_path: Path, e2e_home: Path) -> None:
    """The tiny kernel campaign (SqueezeNet's kernel types on onnxruntime-cpu) trained and registered; predict-model
    answers for a torchvision network and an ONNX file from models:/leti-kernels-onnxruntime-cpu@champion."""
    import warnings

    import torch

    rules = tables.read(repo / "data/fusion_rules/onnxruntime-cpu", tables.FUSION_RULES)
    assert set(zip(rules["first"], rules["second"])) == {("conv", "relu"), ("pwconv", "relu")}
    kernels = tables.read(repo / "data/kernel_latency/onnxruntime-cpu", tables.KERNEL_LATENCY)
    assert {"fusion", "sample", "empty"} <= set(kernels["campaign"]) and kernels["error"].null_count() == kernels.height
    metrics = json.loads((repo / "metrics/kernels/onnxruntime-cpu.json").read_text())
    assert set(metrics["families"]) == {"xgboost", "linear"} and metrics["kernels"] > 0
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1),
                                  torch.nn.Conv2d(16, 32, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.randn(1, 3, 32, 32),), str(tmp_path / "small.onnx"), opset_version=17, dynamo=False)
    result = run([sys.executable, "-m", "leti", "predict-model", "--device", "onnxruntime-cpu", "squeezenet1_1",
                  str(tmp_path / "small.onnx"), "--input-shape", "3,32,32"], repo, e2e_home)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["model"] for line in lines] == ["squeezenet1_1", str(tmp_path / "small.onnx")]
    assert all(line["predicted_ms"] > metrics["overhead_ms"] and line["kernels"] > 0 for line in lines)
    version = client(repo).get_model_version_by_alias("leti-kernels-onnxruntime-cpu", "champion")
    assert version.tags["space"] == "kernels" and version.tags["config_id"] == metrics["config_id"]


def test_leti_predict_names_a_missing_champion(repo: Path, e2e_home: Path) -> None:
    result = run([sys.executable, "-m", "leti", "predict", "--device", "pixel7-gpu", GOOD[0]], repo, e2e_home, expect=2)
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "models:/leti-nb201-pixel7-gpu@champion" in line and "make pipeline" in line


def test_nothing_lands_in_the_home_directory(repo: Path, e2e_home: Path) -> None:
    """Last: Prefect's database, DVC's site cache, MLflow, matplotlib and ONNX Runtime state stay in
    the project, git-ignored, though every command above ran with none of leti's variables set."""
    assert not list(e2e_home.iterdir())
    assert (repo / ".prefect" / "prefect.db").exists()  # the measure stage's Prefect flow
    assert (repo / ".cache" / "dvc" / "repo").is_dir()  # DVC's site cache (core.site_cache_dir)
    assert (repo / "mlflow.db").exists()
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], repo, e2e_home).stdout
    assert ".prefect" not in status and ".cache" not in status and "mlflow.db" not in status


def test_the_readme_python_api_example_runs_against_the_champion(repo: Path, e2e_home: Path) -> None:
    """The README's random search, as written, with the budget set to what the tiny test network takes."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API for NAS code"):]
    example = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    assert "leti.load_predictor(\"torch-cpu\")" in example and len(example.strip().splitlines()) <= 12
    champion = predictors.load(repo / MODELS / client(repo).get_run(
        client(repo).get_model_version_by_alias(MODEL, "champion").run_id).data.tags["family"])
    predicted = champion.predict(spaces.get("nb201").sample_valid(1000, seed=0))
    budget = float(np.median(predicted))
    script = example.replace("budget_ms = 5.0", f"budget_ms = {budget!r}")
    result = run([sys.executable, "-c", script], repo, e2e_home)
    found = re.match(r"(\d+) of 1000 cells within .* ms; best: (\S+)", result.stdout.strip())
    # The example's champion, loaded through MLflow, keeps the cells the saved model predicts within the
    # budget (at least half: a median budget, ties at the median included).
    assert found and int(found.group(1)) == int(np.sum(predicted <= budget)) >= 500
    space = spaces.get("nb201")
    assert space.is_valid(found.group(2))


def test_load_predictor_answers_as_leti_predict_does(repo: Path, e2e_home: Path) -> None:
    script = ("import json, leti; p = leti.load_predictor('torch-cpu'); "
              f"print(json.dumps(p.predict({GOOD!r}).tolist()))")
    in_process = json.loads(run([sys.executable, "-c", script], repo, e2e_home).stdout)
    command = run([sys.executable, "-m", "leti", "predict", "--device", "torch-cpu", *GOOD], repo, e2e_home)
    assert in_process == pytest.approx([json.loads(line)["predicted_ms"] for line in command.stdout.splitlines()])
    bad = run([sys.executable, "-c", "import leti; leti.load_predictor('torch-cpu').predict(['|x~0|'])"], repo, e2e_home, expect=1)
    assert "ValueError: arch 1 is malformed: '|x~0|'" in bad.stderr
    missing = run([sys.executable, "-c", "import leti; leti.load_predictor('no-such-device')"], repo, e2e_home, expect=1)
    assert "no model models:/leti-nb201-no-such-device@champion" in missing.stderr
