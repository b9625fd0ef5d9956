"""The MLflow pyfunc of a leti predictor: a frame with an ``arch`` column in, ``predicted_ms`` out.

No package index has leti, so the logged model carries leti's own code (``code_paths``) and pins
the packages that code imports to predict, at the versions leti declares (``pyproject.toml``).
``mlflow models serve --env-manager local`` and ``pip install -r requirements.txt`` then work from
the model alone. The model's metadata says what it answers: space, device, measurement
configuration, latency statistic and feature schema. The model is logged from code
(``leti/tracking/pyfunc_code.py``), not pickled, so loading it runs leti's code rather than unpickling bytes.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

RUNTIME_PACKAGES = (
    "numpy", "scipy", "scikit-learn", "polars", "pyarrow", "pyyaml", "tqdm",
    "torch", "torchdata", "dgl", "xgboost-cpu",
)
"""Distributions leti's predictors import when they load and predict (all families)."""


class PredictorModel(mlflow.pyfunc.PythonModel):
    """A device's predictor (artifact ``predictor``: ``predicted_ms`` per arch), or a pretrained
    transfer model (artifact ``pretrained``: one column of predicted ms per source device)."""

    def load_context(self, context) -> None:  # noqa: ANN001
        from leti import predictors
        from leti.predictors import transfer

        if "pretrained" in context.artifacts:
            self.folder = Path(context.artifacts["pretrained"])
            self.pretrained, self.predictor = transfer.Pretrained.load(self.folder), None
        else:
            self.predictor = predictors.load(context.artifacts["predictor"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.Series | pd.DataFrame:  # noqa: ANN001
        archs = list(model_input["arch"])
        if self.predictor is None:
            return pd.DataFrame(self.pretrained.predict_sources(archs).T, columns=self.pretrained.devices, dtype="float64")
        return pd.Series(self.predictor.predict(archs), name="predicted_ms", dtype="float64")


def pip_requirements(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> list[str]:
    """``packages`` as leti's installed metadata declares them (``torch==2.13.0``, ...).

    Without an installed leti (a checkout on ``PYTHONPATH``), the versions installed here, less any
    local build tag such as ``+cpu`` that no public index serves.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = {canonicalize_name(name) for name in packages}
    try:
        declared = [Requirement(spec) for spec in importlib.metadata.requires("leti") or []]
    except importlib.metadata.PackageNotFoundError:
        declared = []
    pinned = {canonicalize_name(r.name): str(r) for r in declared if r.marker is None and canonicalize_name(r.name) in wanted}
    for name in sorted(wanted - set(pinned)):
        pinned[name] = f"{name}=={importlib.metadata.version(name).split('+')[0]}"
    return [pinned[name] for name in sorted(pinned)]


def leti_code(destination: Path) -> Path:
    """A copy of the ``leti`` package without bytecode caches, for ``code_paths``."""
    source = Path(__file__).resolve().parents[1]
    return Path(shutil.copytree(source, destination / "leti", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))


def log_predictor(folder: Path, name: str, example_archs: list[str], metadata: dict[str, Any]) -> Any:
    """Log a saved predictor in the active run as a pyfunc model; returns MLflow's ``ModelInfo``."""
    from leti import predictors

    predicted = pd.Series(predictors.load(folder).predict(example_archs), name="predicted_ms", dtype="float64")
    return log_folder("predictor", folder, name, example_archs, predicted, metadata)


def log_pretrained(folder: Path, name: str, example_archs: list[str], metadata: dict[str, Any]) -> Any:
    """Log a pretrained transfer model (``leti.predictors.transfer.Pretrained``) as a pyfunc that
    predicts every source device; ``leti adapt`` starts from its folder."""
    from leti.predictors import transfer

    pretrained = transfer.Pretrained.load(folder)
    predicted = pd.DataFrame(pretrained.predict_sources(example_archs).T, columns=pretrained.devices, dtype="float64")
    return log_folder("pretrained", folder, name, example_archs, predicted, metadata)


def log_folder(kind: str, folder: Path, name: str, example_archs: list[str], predicted: Any, metadata: dict[str, Any]) -> Any:
    from mlflow.models import infer_signature

    example = pd.DataFrame({"arch": example_archs})
    with tempfile.TemporaryDirectory(prefix="leti-code-") as scratch:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("pyfunc_code.py")),
            artifacts={kind: str(folder)},
            code_paths=[str(leti_code(Path(scratch)))],
            pip_requirements=pip_requirements(),
            signature=infer_signature(example, predicted),
            input_example=example,
            metadata=metadata,
        )
