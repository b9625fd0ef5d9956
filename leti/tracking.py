"""MLflow tracking, with tags that tie each run to the exact data it was trained on.

The store defaults to SQLite inside the project (``mlflow.db``, artifacts in ``mlartifacts/``);
``MLFLOW_TRACKING_URI`` points runs at a team server instead. The project is the current directory,
which is the repository root whenever DVC runs a stage.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

def tracking_uri(root: Path | None = None) -> str:
    root = root or Path.cwd()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project store and create ``experiment`` with a project-local artifact root."""
    import mlflow

    root = root or Path.cwd()
    mlflow.set_tracking_uri(tracking_uri(root))
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if "MLFLOW_TRACKING_URI" not in os.environ:
            location = (root / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return experiment


def git_commit(root: Path | None = None) -> str:
    """HEAD's commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    root = root or Path.cwd()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def dvc_hash(path: str, root: Path | None = None) -> str:
    """The md5 that ``dvc.lock`` records for the out ``path`` (``unknown`` before its first repro)."""
    lock = (root or Path.cwd()) / "dvc.lock"
    if not lock.exists():
        return "unknown"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return str(out.get("md5", "unknown"))
    return "unknown"


def data_tags(data_paths: dict[str, str], root: Path | None = None) -> dict[str, Any]:
    """Tags for a run: the git commit and the DVC hash of every named data path."""
    tags: dict[str, Any] = {"git_commit": git_commit(root)}
    for name, path in data_paths.items():
        tags[f"data.{name}.path"] = path
        tags[f"data.{name}.dvc_md5"] = dvc_hash(path, root)
    return tags


def log_predictor(folder: Path, family: str, example_archs: list[str]) -> None:
    """Log a saved predictor as an MLflow pyfunc model, loadable with ``mlflow.pyfunc.load_model``."""
    import mlflow
    import pandas as pd

    from leti.mlflow_model import PredictorModel

    mlflow.pyfunc.log_model(
        name=family,
        python_model=PredictorModel(),
        artifacts={"predictor": str(folder)},
        pip_requirements=["leti"],
        input_example=pd.DataFrame({"arch": example_archs}),
    )
