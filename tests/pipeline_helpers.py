"""Shared by the end-to-end tests: a tiny params set, a copy of the project in a temporary git repo,
commands run there as a new user would run them (a clean environment and an empty home), and servers
started there and stopped by their PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from leti import project
from leti.store import tables

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HELP = (ROOT / ".." / "shared" / "datasets" / "help").resolve()
LATBENCH = (ROOT / ".." / "shared" / "datasets" / "latbench").resolve()
HAS_PUBLISHED = (HELP / "nasbench201" / "str_arch2idx.pt").exists() and LATBENCH.is_dir()
MAIN_STAGES = {"sample", "measure", "measure_ops", "featurize", "train", "evaluate", "measure_kernels", "train_kernels"}
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


TINY_GCN = {"hidden": 16, "layers": 2, "batch_size": 16, "epochs": 2}
TINY_KERNELS = {  # the kernels of SqueezeNet (the tests predict it), fused or not, three configurations each
    "per_type": 3, "adaptive_rounds": 1, "adaptive_share": 0.3, "fusion_cases": 1, "fusion_repeats": 1, "threshold": 0.5,
    "pairs": [["conv", "relu"], ["pwconv", "relu"]],
    "types": ["conv", "pwconv", "relu", "conv+relu", "pwconv+relu", "maxpool", "concat", "gap", "reshape"],
}


def tiny_params(params: dict) -> dict:
    for space in params["spaces"]:
        params["sample"][space]["n"] = 8
        params["train"][space].update(train_size=3, val_size=2)
    params["measure"]["defaults"].update(runs=3, warmup_runs=1, warmup_seconds=0.0)
    # The sentinel runs in the tiny pipeline too; three runs of a tiny network vary by far more than
    # 3 %, so only a large move measures a chunk again (tests/test_sentinel.py tests the threshold).
    params["measure"]["sentinel"].update(threshold=0.5, max_attempts=2)
    params["train"]["nb201"]["predictors"]["xgboost"]["n_estimators"] = 20
    params["train"]["nb201"]["predictors"]["gcn"] = {**TINY_GCN, "batch_size": 4}
    nb101 = params["train"]["nb101"]["predictors"]  # every family, each as small as it gets
    nb101["xgboost"]["n_estimators"] = 20
    nb101["gcn"].update(TINY_GCN)
    nb101["ensemble"]["members"]["gcn"].update(TINY_GCN)
    nb101["ensemble"]["members"]["xgboost"]["n_estimators"] = 20
    nb101["auto"]["candidates"]["xgboost"]["n_estimators"] = 20
    params["ingest_help"].update(source=str(HELP), devices=["gold_6240"])
    params["report"].update(
        devices=["gold_6240"], seeds=[0], train_size=60, val_size=20, study_device="gold_6240",
        predictors={"flops": {}, "linear": {}, "gcn": {"hidden": 16, "layers": 2, "batch_size": 16, "epochs": 2}},
        ensemble_members=["gcn", "linear"], ablations={"identity_adjacency": {"adjacency": "identity"}},
        train_sizes=[30], train_size_predictors=["linear"], batch_sizes=[],
    )
    params["ingest_latbench"].update(source=str(LATBENCH), devices=["desktop-gpu-gtx-1080ti-fp32"])
    params["models"].update(names=["squeezenet1_1", "mobilenet_v3_small"], input_shape=[3, 32, 32])
    params["kernels"]["campaigns"]["small"] = TINY_KERNELS
    params["kernels"]["train"]["regressors"] = {"xgboost": {"n_estimators": 20}, "linear": {}}
    params["investigate"].update(train_size=60, val_size=20, min_cells=5)
    params["report_latbench"].update(
        train_size=60, val_size=20,
        predictors={"linear": {}, "gcn": {"hidden": 16, "layers": 2, "batch_size": 16, "epochs": 2, "precision": "float32"}},
    )
    # Transfer: a pretrained model as small as it gets, adapted from 3 of the tiny sample's cells
    params["transfer"]["pretrain"].update(hidden=16, layers=2, epochs=1, batch_size=256, max_cells=500)
    params["transfer"]["shots"] = 3
    return params


def stages_run() -> set[str]:
    """Every stage when the published HELP and LatBench data are here; the measurement pipeline otherwise."""
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) if HAS_PUBLISHED else MAIN_STAGES


def repro_targets() -> list[str]:
    """`dvc repro` targets for the stages this machine can run (all, with the published data)."""
    return [] if HAS_PUBLISHED else sorted(MAIN_STAGES)


def declared_outputs(dvc_yaml: dict, params: dict) -> list[str]:
    """Every out, metric and plot path of the stages run here, with each ``foreach`` entry's
    ``${key}`` (a space or a device) and ``${item.device}`` filled in."""
    paths = []
    for name, stage in dvc_yaml["stages"].items():
        if name not in stages_run():
            continue
        keys = stage.get("do", stage)
        loop: Any = {None: {}}
        if "foreach" in stage:
            loop = params
            for part in stage["foreach"].strip("${}").split("."):
                loop = loop[part]
        pairs = loop.items() if isinstance(loop, dict) else [(item, item) for item in loop]
        for kind in ("outs", "metrics", "plots"):
            for entry in keys.get(kind, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                for key, item in pairs:
                    filled = path.replace("${key}", str(key)).replace("${item}", str(item))
                    paths.append(filled.replace("${item.device}", str((item or {}).get("device") if isinstance(item, dict) else item)))
    return paths


def environment(home: Path, cwd: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: an empty home, none of the variables leti would set (they come from
    the project the command runs in), no Prefect server unless ``extra`` names one."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd), "HOME": str(home),
           **GIT_IDENTITY}
    for name in (*project.local_environment(cwd), "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "XDG_CONFIG_HOME",
                 "XDG_DATA_HOME", "XDG_STATE_HOME", "DVC_NO_ANALYTICS"):
        env.pop(name, None)
    return {**env, **extra}


# A guard against a hung command, not a speed limit: a slow machine may take twice as long as this
# one's ~5 min for the tiny `dvc repro` (speed is the benchmarks' business).
HANG_SECONDS = 1800


def run(command: list[str], cwd: Path, home: Path, expect: int = 0, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=environment(home, cwd, **extra), capture_output=True, text=True,
                            timeout=HANG_SECONDS)
    assert result.returncode == expect, (
        f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], cwd: Path, home: Path, health: str, log: Path, **extra: str) -> Iterator[subprocess.Popen]:
    """Start ``command`` in its own process group, wait until ``health`` answers, and stop the group
    led by the server's PID (its workers too) at the end."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=environment(home, cwd, **extra), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a fresh database's migrations, on a loaded machine
        while True:
            assert process.poll() is None, f"{command[:3]} exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(health, timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"{command[:3]} did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def copy_project(dest: Path) -> Path:
    """The project's tracked and untracked-but-not-ignored files. The committed dvc.lock comes along:
    stale for the tiny params, as in a fresh clone that measures again."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def commit_all(repo: Path, home: Path, message: str) -> None:
    run(["git", "add", "-A"], repo, home)
    run(["git", "commit", "-qm", message], repo, home)


# --- What the end-to-end tests check in a reproduced project (train@nb201 on torch-cpu, its lineage) ---

EXPERIMENT = "leti-nb201-torch-cpu"
MODEL = "leti-nb201-torch-cpu"
GOOD = ["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
        "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"]
INPUTS = {"latency": "data/latency/torch-cpu/nb201", "op_latency": "data/op_latency/torch-cpu",
          "architectures": "data/architectures/nb201.parquet"}
TRAIN = [sys.executable, "stages/train.py", "--space", "nb201", "--store", "data/latency", "--op-latency", "data/op_latency",
         "--architectures", "data/architectures/nb201.parquet"]  # train@nb201's command, less its outputs
MODELS = Path("models") / "nb201" / "torch-cpu"  # train@nb201's --models for spaces.nb201.device
TRAINED = "evaluate@nb201"  # the stage at the end of torch-cpu's NB201 chain
TRAIN_STAGE = "train@nb201"
STATISTIC = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["nb201"]["statistic"]  # what train@nb201 learns


def measured_cells(folder: Path) -> pl.DataFrame:
    """A campaign's cell rows as the readers see them: sentinel timings left out, a chunk measured
    again (its sentinel moved) by its latest attempt."""
    rows = tables.read(folder, tables.LATENCY).filter(pl.col("role").is_null())
    return rows.sort("measured_at").unique(["arch", "config_id"], keep="last")


def lock_hashes(root: Path, stage: str | None = None) -> dict[str, str]:
    """Path -> md5 of every out and dep that ``dvc.lock`` under ``root`` records for the stages of its
    dvc.yaml (a lock keeps the entries of stages dvc.yaml no longer has), or for ``stage`` alone. An
    out's hash is the one its producing stage recorded: after a partial `dvc repro`, stages
    downstream that did not run still record the old hash as a dep."""
    names = set(subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=root, check=True,
                               capture_output=True, text=True).stdout.split())
    stages = [entry for name, entry in yaml.safe_load((root / "dvc.lock").read_text())["stages"].items()
              if name in names and stage in (None, name)]
    deps = {entry["path"]: entry["md5"] for entry_stage in stages for entry in entry_stage.get("deps", [])}
    return {**deps, **{entry["path"]: entry["md5"] for entry_stage in stages for entry in entry_stage.get("outs", [])}}


def client(repo: Path) -> Any:
    """The MLflow client of a project's own store (runs and registry in its mlflow.db)."""
    import mlflow

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def dvc_status_clean(repo: Path, home: Path, targets: list[str] | None = None) -> None:
    """`dvc status` of ``targets`` and their upstream stages (every stage run here by default)."""
    result = run(["dvc", "status", *(["--with-deps", *targets] if targets else repro_targets())], repo, home)
    assert "up to date" in result.stdout, result.stdout


def http_json(url: str, body: dict | None = None) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())

