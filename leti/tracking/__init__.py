"""MLflow tracking, with tags that tie each run to the exact data it was trained on.

The package holds every MLflow call leti makes: this module the store, experiments, data tags and
the logging of a stage's run; ``training`` the runs of a ``train`` invocation; ``registry`` the
champion; ``pyfunc`` the logged model.

The store defaults to SQLite inside the project (``mlflow.db``, artifacts in ``mlartifacts/``);
``MLFLOW_TRACKING_URI`` points runs (and the model registry) at a team server instead. The project
is the current directory, which is the repository root whenever DVC runs a stage.

Data hashes are computed from the files a stage reads, with DVC's own hashing (``dvc_data``), so a
run's ``data.<name>.dvc_md5`` tag is the value ``dvc.lock`` records for that path once the stage has
run, whatever state the committed ``dvc.lock`` was in.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

EXPERIMENT_KIND = "custom_model_development"
"""Value of the ``mlflow.experimentKind`` tag: a model-training experiment, not a GenAI app."""


def tracking_uri(root: Path | None = None) -> str:
    root = root or Path.cwd()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def experiment_name(prefix: str, space: str, device: str) -> str:
    """One experiment per (space, device), so every run in it predicts the same thing."""
    return f"{prefix}-{space}-{device}"


def model_name(space: str, device: str) -> str:
    """The registered model of a (space, device); its ``champion`` alias is what `leti predict` loads."""
    return f"leti-{space}-{device}"


def champion_uri(space: str, device: str) -> str:
    return f"models:/{model_name(space, device)}@champion"


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project store and use ``experiment``, created as a model-training one.

    Returns the experiment id. A new experiment gets a project-local artifact root (unless a
    tracking server decides) and the ``mlflow.experimentKind`` tag that marks it as model training.
    """
    import mlflow

    root = root or Path.cwd()
    local = "MLFLOW_TRACKING_URI" not in os.environ  # read first: set_tracking_uri exports it
    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        location = (root / "mlartifacts").resolve().as_uri() if local else None
        experiment_id = mlflow.create_experiment(
            experiment, artifact_location=location, tags={"mlflow.experimentKind": EXPERIMENT_KIND}
        )
    else:
        experiment_id = found.experiment_id
        if found.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
            mlflow.MlflowClient().set_experiment_tag(experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def runs_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The UI page that lists an experiment's training runs.

    MLflow 3.17's UI opens experiments as GenAI apps unless its "Model training" switch is set;
    ``workflowType=machine_learning`` sets it (the browser remembers the choice).
    """
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


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


def dvc_md5(path: str | Path, root: Path | None = None) -> str:
    """DVC's md5 of a file or folder as it is now: what ``dvc.lock`` records for it after a stage.

    A folder hashes to ``<md5>.dir`` over every file in it (less what ``.dvcignore`` excludes), as
    ``dvc commit`` computes it; nothing is written to the DVC cache.
    """
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem, MemoryFileSystem

    root = (root or Path.cwd()).resolve()
    target = (root / path).resolve()
    if not target.exists():
        raise FileNotFoundError(f"{path}: no such file or folder to hash")
    staging = HashFileDB(MemoryFileSystem(), "memory://leti-hash")
    _, _, obj = build(staging, str(target), LocalFileSystem(), "md5", dry_run=True, ignore=_dvcignore(str(root)))
    return str(obj.hash_info.value)


@functools.lru_cache(maxsize=4)
def _dvcignore(root: str) -> Any:
    """The ``.dvcignore`` rules of the repository at ``root``, read once per process."""
    from dvc.ignore import DvcIgnoreFilter
    from dvc_objects.fs import LocalFileSystem

    return DvcIgnoreFilter(LocalFileSystem(), root)


def data_tags(data_paths: dict[str, str], root: Path | None = None) -> dict[str, Any]:
    """Tags for a run: the git commit and, for every named path, its path and DVC md5 now."""
    tags: dict[str, Any] = {"git_commit": git_commit(root)}
    for name, path in data_paths.items():
        tags[f"data.{name}.path"] = str(path)
        tags[f"data.{name}.dvc_md5"] = dvc_md5(path, root)
    return tags


def flat_params(values: dict[str, Any]) -> dict[str, str]:
    """MLflow params are strings: JSON for lists and dicts so they read back as written."""
    return {key: json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value) for key, value in values.items()}


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numbers as MLflow metric keys (``flops_spearman.gold_6240``); MLflow allows letters,
    digits, ``_-./`` and spaces, so ``@`` becomes ``_``. Strings and other values are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}".replace("@", "_")
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def log_stage_run(
    experiment: str, run_name: str, inputs: dict[str, str], params: dict[str, Any], metrics: dict[str, Any],
    artifacts: dict[Path, str],
) -> str:
    """One run of a report stage: its inputs' data tags, its params and metrics (flattened), and its
    files (local file or folder -> artifact folder). Returns the run id."""
    import mlflow

    setup(experiment)
    with mlflow.start_run(run_name=run_name, tags=data_tags(inputs)) as run:
        mlflow.log_params(flat_params(params))
        mlflow.log_metrics(flat_metrics(metrics))
        for path, folder in artifacts.items():
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), folder)
            else:
                mlflow.log_artifact(str(path), folder)
    return run.info.run_id
