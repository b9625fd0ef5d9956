"""The Python API for NAS code: a device's latency predictor, in process, in one call.

NAS frameworks ask a predictor about batches of architectures from inside their search loop: NNI's
profilers and NASLib's ``query`` call a Python function, and nn-Meter users know
``load_latency_predictor(name).predict(model)``. ``leti.load_predictor(device)`` gives the same
habit: it loads ``models:/leti-<space>-<device>@champion`` (the model the pipeline registered) or the
model you name, with no MLflow code on the caller's side, and ``.predict(archs)`` returns
milliseconds. ``leti predict`` and the served pyfunc answer from the same model.

    import leti
    predictor = leti.load_predictor("torch-cpu")             # the champion of NB201 cells on torch-cpu
    milliseconds = predictor.predict(["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leti import spaces, tracking


class MissingModelError(FileNotFoundError):
    """No model at the URI; the message says which and how to make one."""


def missing_message(uri: str, device: str, space: str, why: str) -> str:
    if space == "kernels":
        return (f"no model {uri} ({why}): make one with `make pipeline` ({device} under kernels.devices in params.yaml, "
                f"then `dvc repro train_kernels@{device}`), or pass another model")
    return (
        f"no model {uri} ({why}): make one with `make pipeline` (spaces.{space}.device: {device} in params.yaml, "
        f"then `dvc repro train@{space}`), or pass another model"
    )


def load_pyfunc(uri: str, device: str, space: str) -> Any:
    """The MLflow pyfunc at ``uri``, checked to predict ``device`` and ``space``; one line naming the
    model and how to make one when it is missing."""
    default_store = "MLFLOW_TRACKING_URI" not in os.environ
    store = tracking.tracking_uri()
    if default_store and not Path("mlflow.db").exists() and uri.startswith("models:/"):
        raise MissingModelError(missing_message(uri, device, space, f"no MLflow store here ({Path.cwd() / 'mlflow.db'})"))
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(store)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        # suppress_warnings skips MLflow's scan of every installed distribution against the model's
        # requirements (about a second); leti runs the model in its own environment.
        model = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise MissingModelError(missing_message(uri, device, space, f"not found in {store}")) from None
        raise ValueError(f"cannot load model {uri} from {store}: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise MissingModelError(missing_message(uri, device, space, str(error))) from None
    metadata = model.metadata.metadata or {}
    for key, wanted in (("device", device), ("space", space)):
        if wanted and metadata.get(key) not in (None, wanted):
            raise ValueError(f"model {uri} predicts {key} {metadata[key]!r}, not {wanted!r}")
    return model


@dataclass
class LatencyPredictor:
    """A loaded latency model of one device and space: ``predict(archs)`` -> milliseconds."""

    device: str
    space: str
    source: str  # the model URI or folder it came from
    predictor: Any  # a leti Predictor (fit / predict / save / load)
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict(self, archs: Sequence[str] | str) -> np.ndarray:
        """Latency in ms of each arch (one arch string works too); a malformed arch is a ``ValueError``
        naming it and its position, before anything is predicted."""
        archs = [archs] if isinstance(archs, str) else list(archs)
        space = spaces.get(self.space)
        for position, arch in enumerate(archs, start=1):
            try:
                space.parse(arch)
            except ValueError as error:
                raise ValueError(f"arch {position} is malformed: {arch!r}: {error}") from None
        return np.asarray(self.predictor.predict(archs), dtype=float)

    __call__ = predict

    def query(self, archs: Sequence[str]) -> np.ndarray:
        """NASLib's name for :meth:`predict`."""
        return self.predict(archs)


def load_predictor(device: str, space: str = spaces.DEFAULT, model: str | os.PathLike | None = None) -> LatencyPredictor:
    """The latency predictor of ``device`` for cells of ``space``.

    ``model`` is an MLflow model URI (``models:/leti-nb201-torch-cpu/3``, ``runs:/RUN/model``) or a
    folder a predictor was saved to (``leti evaluate --save DIR``); without it, the registered
    champion ``models:/leti-<space>-<device>@champion`` from the MLflow store (``./mlflow.db`` unless
    ``MLFLOW_TRACKING_URI`` is set).
    """
    from leti import predictors

    space = spaces.get(space).NAME
    if model is not None and Path(model).is_dir():
        record = predictors.describe(model)
        if record.get("space") not in (None, space):
            raise ValueError(f"predictor in {model} predicts space {record['space']!r}, not {space!r}")
        return LatencyPredictor(device, space, str(model), predictors.load(model), record)
    uri = str(model) if model is not None else tracking.champion_uri(space, device)
    pyfunc = load_pyfunc(uri, device, space)
    return LatencyPredictor(device, space, uri, pyfunc.unwrap_python_model().predictor, dict(pyfunc.metadata.metadata or {}))


@dataclass
class NetworkPredictor:
    """A device's kernel predictors: ``predict(model)`` -> milliseconds for any network.

    ``model`` is what ``leti measure-model`` takes (a torchvision builder name, a model-set variant
    such as ``mobilenet_v2-w0.75-r160``, an ``.onnx`` path) or a PyTorch module; ``input_shape``
    (without the batch dim) overrides the network's default input. The network is split into the
    kernels the device's runtime executes (its measured fusion rules) and each kernel is predicted
    by its type's regressor (``leti.predictors.kernels``). nn-Meter users know this as
    ``load_latency_predictor(name).predict(model)``.
    """

    device: str
    source: str
    predictor: Any  # leti.predictors.kernels.KernelPredictor
    metadata: dict[str, Any] = field(default_factory=dict)

    def graph(self, model: Any, input_shape: Sequence[int] | None = None, batch: int = 1) -> Any:
        """The op graph of ``model`` (see the class docstring); ``ValueError`` naming it when unreadable."""
        from leti.features import kernels

        return kernels.model_graph(model, input_shape, batch)

    def explain(self, model: Any, input_shape: Sequence[int] | None = None) -> Any:
        """The prediction with its kernels (``leti.predictors.kernels.Breakdown``)."""
        return self.predictor.predict_graph(self.graph(model, input_shape))

    def predict(self, model: Any, input_shape: Sequence[int] | None = None) -> float:
        return float(self.explain(model, input_shape).predicted_ms)

    __call__ = predict


def kernel_model_name(device: str) -> str:
    """The registered model of a device's kernel predictors (``leti predict-model`` loads its ``champion``)."""
    return f"leti-kernels-{device}"


def load_kernel_predictor(device: str, model: str | os.PathLike | None = None) -> NetworkPredictor:
    """The kernel predictors of ``device``: ``models:/leti-kernels-<device>@champion`` from the MLflow
    store, another MLflow model URI, or a folder they were saved to (``models/kernels/<device>/<family>``)."""
    from leti.predictors.kernels import KernelPredictor

    if model is not None and Path(model).is_dir():
        predictor = KernelPredictor.load(model)
        return NetworkPredictor(device, str(model), predictor, {"device": predictor.info.get("device")})
    uri = str(model) if model is not None else f"models:/{kernel_model_name(device)}@champion"
    pyfunc = load_pyfunc(uri, device, "kernels")
    return NetworkPredictor(device, uri, pyfunc.unwrap_python_model().predictor, dict(pyfunc.metadata.metadata or {}))
