"""The transfer model in MLflow: the pretrained model registered as ``leti-pretrained-<space>``, and
found again by ``leti adapt`` and ``leti plan-shots``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from leti import api, spaces, tracking
from leti.predictors import transfer
from leti.tracking import pyfunc, registry


def registered_name(space: str) -> str:
    """The registered pretrained model of a space; its ``champion`` alias is what ``leti adapt`` starts from."""
    return f"leti-pretrained-{space}"


def resolve_pretrained(uri: str | None, space: str) -> Path:
    """The folder of a pretrained model: ``uri`` itself when it is one, else the MLflow model it names
    (default: ``models:/leti-pretrained-<space>@champion``), downloaded by MLflow."""
    if uri is not None and Path(uri).is_dir():
        return Path(uri)
    uri = uri or f"models:/{registered_name(space)}@champion"
    try:
        model = api.load_pyfunc(uri, device="", space=space)
    except api.MissingModelError:
        raise FileNotFoundError(f"no pretrained model {uri}: `dvc repro pretrain` registers one (or pass a folder)") from None
    python_model = model.unwrap_python_model()
    if getattr(python_model, "predictor", True) is not None:
        raise ValueError(f"{uri} is a device's predictor, not a pretrained transfer model")
    return python_model.folder


def register(pretrained: transfer.Pretrained, folder: Path, inputs: dict[str, str], experiment: str) -> dict[str, Any]:
    """Log the pretrained model as a run of ``<experiment>-<space>`` and register it as
    ``leti-pretrained-<space>``; the alias ``champion`` moves to it unless the champion learned the
    same data with the same code (then nothing is registered and a rerun adds no version)."""
    name = registered_name(pretrained.space)
    tracking.setup(f"{experiment}-{pretrained.space}")
    client = mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, registry.ALIAS)
        if champion.tags.get("transfer.data") == pretrained.data:
            return {"registered": False, "champion_version": champion.version, "reason": "the champion learned the same data"}
    except MlflowException:
        pass
    tags = {**tracking.data_tags(inputs), "space": pretrained.space, "transfer.data": pretrained.data,
            "transfer.sources": ",".join(pretrained.devices), "leti.run": "pretrain"}
    with mlflow.start_run(run_name=f"pretrain-{pretrained.space}", tags=tags):
        mlflow.log_params(tracking.flat_params({**dataclasses.asdict(pretrained.config), "sources": len(pretrained.devices)}))
        mlflow.log_metrics({"train_seconds": pretrained.train_seconds})
        examples = spaces.get(pretrained.space).sample_valid(3, seed=0)
        info = pyfunc.log_pretrained(folder, "model", examples, {"space": pretrained.space, "devices": pretrained.devices,
                                                                 "data": pretrained.data})
    version = mlflow.register_model(info.model_uri, name, tags={key: str(value) for key, value in tags.items()})
    client.set_registered_model_alias(name, registry.ALIAS, version.version)
    return {"registered": True, "champion_version": str(version.version), "model": f"models:/{name}@{registry.ALIAS}"}
