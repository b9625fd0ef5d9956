"""A device's kernel predictors in MLflow: one run per regressor family, the champion registered.

``train_kernels`` splits the device's measured kernels (``leti.store.reader.read_kernels``) into a
training and a test share per kernel type, fits every regressor family on the training share and
scores it on the test share (acc@10, MAPE, and WAPE: absolute error over total time, which weighs a
kernel by its share of a network's sum), then refits it on every kernel and logs it as a child run
of the invocation with its pyfunc model (a ``model`` column in, ``predicted_ms`` out). The best by
``kernels.train.select`` becomes ``models:/leti-kernels-<device>@champion`` when it beats the
champion (``leti.tracking.registry``), which ``leti predict-model`` loads.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl

from leti import tracking
from leti.features import kernels as K
from leti.predictors.kernels import KernelPredictor, kernel_scores
from leti.store.reader import KernelRows
from leti.tracking import pyfunc, registry

PACKAGES = (*pyfunc.RUNTIME_PACKAGES, "torchvision", "onnx")
"""What a kernel predictor imports to read a network (torchvision builds it, onnx reads a file)."""
EXAMPLE_MODELS = ["mobilenet_v3_small", "resnet18"]


class KernelPredictorModel(mlflow.pyfunc.PythonModel):
    """A device's kernel predictors as a pyfunc: a ``model`` column in (what ``leti predict-model``
    takes: a torchvision builder name, a model-set variant, an ``.onnx`` path), ``predicted_ms`` out."""

    def load_context(self, context) -> None:  # noqa: ANN001
        self.predictor = KernelPredictor.load(context.artifacts["predictor"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.Series:  # noqa: ANN001
        from leti.api import NetworkPredictor

        networks = NetworkPredictor("", "", self.predictor)
        return pd.Series([networks.predict(spec) for spec in model_input["model"]], name="predicted_ms", dtype="float64")


def champion_family(client: Any, decision: registry.Decision) -> str | None:
    """The family of the champion after ``decision``: this run's candidate when it was registered,
    else the standing champion's (from its run's params), so the metrics file names what predicts."""
    if decision.register:
        return decision.candidate.name
    if decision.previous is None or not decision.previous.run_id:
        return None
    try:
        return client.get_run(decision.previous.run_id).data.params.get("family")
    except Exception:  # noqa: BLE001 - the champion's run was deleted: the metrics still get written
        return None


def log_kernel_predictor(folder: Path, name: str, metadata: dict[str, Any], example_models: list[str] = EXAMPLE_MODELS) -> Any:
    """Log a saved kernel predictor in the active run as a pyfunc; MLflow's ``ModelInfo``. Example
    networks whose kernel types the predictor lacks are left out of the input example."""
    from mlflow.models import infer_signature

    from leti.api import NetworkPredictor

    networks = NetworkPredictor("", "", KernelPredictor.load(folder))
    answered = {}
    for spec in example_models:
        try:
            answered[spec] = networks.predict(spec)
        except KeyError:
            continue
    example = pd.DataFrame({"model": list(answered) or example_models[:1]})
    predicted = pd.Series(list(answered.values()) or [0.0], name="predicted_ms", dtype="float64")
    with tempfile.TemporaryDirectory(prefix="leti-code-") as scratch:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("kernels_pyfunc_code.py")),
            artifacts={"predictor": str(folder)},
            code_paths=[str(pyfunc.leti_code(Path(scratch)))],
            pip_requirements=pyfunc.pip_requirements(PACKAGES),
            signature=infer_signature(example, predicted),
            input_example=example if answered else None,
            metadata=metadata,
        )


@dataclass(frozen=True)
class KernelTraining:
    data: KernelRows
    rules: dict[tuple[str, str], bool]
    regressors: dict[str, dict[str, Any]]  # family -> parameters
    test_share: float
    seed: int
    rule: registry.Rule
    inputs: dict[str, str]  # name -> path, tagged with its DVC md5
    experiment: str


def split(kernels: list[K.Kernel], test_share: float, seed: int) -> np.ndarray:
    """True for the test kernels: ``test_share`` of each type (at least one when it has three)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(kernels), dtype=bool)
    by_type: dict[str, list[int]] = {}
    for index, kernel in enumerate(kernels):
        by_type.setdefault(kernel.type, []).append(index)
    for indices in by_type.values():
        count = int(round(test_share * len(indices))) if len(indices) >= 3 else 0
        test[rng.permutation(indices)[:count]] = True
    return test


def train_kernels(training: KernelTraining, device: str, models: Path) -> dict[str, Any]:
    """Fit, score, log and register every family (see the module docstring); returns the summary
    ``metrics/kernels/<device>.json`` records."""
    import mlflow

    from leti.measure.kernels import campaign_types

    data = training.data
    # the kernel types the device runs: a fusion test's pair that its runtime does not fuse is no kernel of it
    table = data.table.filter(pl.col("kernel_type").is_in(campaign_types(training.rules)))
    kernels = [K.kernel_from_json(t, s) for t, s in zip(table["kernel_type"].to_list(), table["shape"].to_list())]
    own = table["own_ms"].to_numpy()
    test = split(kernels, training.test_share, training.seed)
    data_tags = tracking.data_tags(training.inputs)
    target = {"space": "kernels", "device": device, "config_id": data.config_id, "statistic": data.statistic}
    tags = {**data_tags, **target}
    experiment_id = tracking.setup(training.experiment)
    name = f"leti-kernels-{device}"
    families, candidates = {}, []
    with mlflow.start_run(run_name=f"train-kernels-{device}", tags={**tags, "leti.run": "train_kernels"}) as parent:
        mlflow.log_params(tracking.flat_params({
            "kernels.test_share": training.test_share, "kernels.seed": training.seed, "kernels.count": len(kernels),
            "kernels.types": len({k.type for k in kernels}), "kernels.overhead_ms": data.overhead_ms,
            "kernels.fused": sorted(f"{a}+{b}" for (a, b), fused in training.rules.items() if fused),
            **{f"{family}.{key}": value for family, params in training.regressors.items() for key, value in (params or {}).items()},
        }))
        for family, params in training.regressors.items():
            with mlflow.start_run(run_name=family, nested=True, tags={**tags, "family": family}) as child:
                fitted = KernelPredictor(family, params).fit([k for k, t in zip(kernels, test) if not t], own[~test], training.rules,
                                                             data.overhead_ms)
                held_out = [k for k, t in zip(kernels, test) if t and k.type in fitted.regressors]
                mask = np.array([t and k.type in fitted.regressors for k, t in zip(kernels, test)])
                scores = kernel_scores(own[mask], fitted.predict_kernels(held_out))
                per_type = {}
                for kernel_type in sorted({k.type for k in held_out}):
                    chosen = np.array([k.type == kernel_type for k in held_out])
                    per_type[kernel_type] = kernel_scores(own[mask][chosen], fitted.predict_kernels([k for k, c in zip(held_out, chosen) if c]))
                metrics = {f"test_{key}": value for key, value in scores.items()}
                mlflow.log_params(tracking.flat_params({"family": family, **(params or {})}))
                mlflow.log_metrics({**metrics, **{f"type.{t.replace('+', '_')}.test_wape": s["wape"] for t, s in per_type.items()}})
                final = KernelPredictor(family, params).fit(kernels, own, training.rules, data.overhead_ms,
                                                            info={**target, "family": family, "kernels": len(kernels)})
                folder = final.save(models / family)
                info = log_kernel_predictor(folder, "model", {**target, "family": family, "data": {k: v for k, v in tags.items() if k.startswith("data.")}})
                families[family] = {**metrics, "types": {t: {"test_wape": s["wape"], "test_acc_10pct": s["acc_10pct"], "n_test": s["n"]}
                                                         for t, s in per_type.items()}}
                candidates.append(registry.Candidate(child.info.run_id, info.model_uri, family, float(metrics.get(training.rule.metric, np.nan)), target))
        client = mlflow.MlflowClient()
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - missing: create it with what it is for
            client.create_registered_model(name, tags={"space": "kernels", "device": device},
                                           description=f"Kernel-level latency predictors of any network on {device}; "
                                           f"`{registry.ALIAS}` is the model `leti predict-model` uses.")
        decision = registry.select(client, name, candidates, training.rule,
                                   version_tags={**{k: str(v) for k, v in tags.items()}, "parent_run": parent.info.run_id})
        mlflow.set_tags({"selection.candidate": decision.candidate.name, "selection.registered": str(decision.register).lower(),
                         "selection.reason": decision.reason, "selection.champion_version": decision.version or ""})
    return {
        "device": device, "config_id": data.config_id, "statistic": data.statistic, "kernels": len(kernels),
        "kernel_types": len({k.type for k in kernels}), "overhead_ms": data.overhead_ms,
        "fused": sorted(f"{a}+{b}" for (a, b), fused in training.rules.items() if fused), "families": families,
        "model": name, "champion": champion_family(client, decision), "registered": decision.register,
        "champion_version": decision.version, "reason": decision.reason, "experiment": experiment_id, "parent_run": parent.info.run_id,
    }
