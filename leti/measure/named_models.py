"""Named networks outside any search space, measured with the campaign's protocol and store.

A named model is a torchvision classifier by builder name (``resnet18``, ``mobilenet_v3_large``,
randomly initialised: latency does not depend on the weights' values, and nothing is downloaded),
an ONNX file or a ``.tflite`` file. It is timed on a device of ``params.yaml`` exactly as a cell
is (the device's backend, timing protocol, locks and retries), and its rows go to a latency store
(``<store>/<device>/model/part-*.parquet``, the ``LATENCY`` table) with ``space = "model"``, the model's
name as ``arch``, its digest, FLOPs and parameters. A torchvision network runs on every backend
(converted to ONNX or TFLite when the backend runs files); an ONNX file runs on backends that run
ONNX (``onnxruntime-cpu``), a ``.tflite`` file on those that run TFLite (``tflite-cpu``,
``android-adb``).

Each model is measured ``passes`` times, the passes interleaved across models, so the store shows
how much a model's latency moves between two measurements minutes apart (the pass-to-pass
difference). The store is the resume point: a rerun measures only the passes still missing, and a
row is written as soon as it is measured, so a stop loses at most the model in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from leti.devices.base import Backend, Timing
from leti.devices.config import DeviceConfig
from leti.measure import preparation
from leti.measure.session import Session, measure_one, measuring_session, op_profile_rows
from leti.networks import SPACE, Model, ModelError, ModelSource, load, portable
from leti.project import cache_dir
from leti.store import tables
from leti.store.parts import default_op_profile_store, space_dir, write_part
from leti.threads import torch_threads


def check_backend(source: ModelSource, backend: Backend, device: str) -> None:
    """A file runs only on a backend that runs its format; say which do."""
    if source.kind in ("torchvision", "variant") or backend.artifact_format == source.kind:
        return
    from leti.devices import BACKENDS

    runners = sorted(name for name, cls in BACKENDS.items() if cls.artifact_format == source.kind)
    raise ModelError(
        f"{source.location}: a {source.kind} file cannot run on device {device!r} (backend {backend.name}); "
        f"use a device whose backend runs {source.kind} files: {', '.join(runners)}"
    )



# --- the run ------------------------------------------------------------------------------------


def with_batch(device: DeviceConfig, batch: int) -> DeviceConfig:
    """``device`` with another batch size in its protocol."""
    return dataclasses.replace(device, protocol=dataclasses.replace(device.protocol, batch=batch))


def config_id(device: DeviceConfig, backend: Backend, example: torch.Tensor) -> str:
    """Hash of what shapes a named model's timing besides the model itself: backend and options,
    protocol, input shape and type (a cell's ``config_id`` hashes its network settings instead)."""
    payload = {"space": SPACE, "backend": device.backend, "options": backend.config_options(), "protocol": device.protocol.identity(),
               "input_shape": list(example.shape), "input_dtype": str(example.dtype)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def artifact_path(backend: Backend, model: Model) -> Path:
    """Where the converted file of a torchvision network lives in leti's artifact cache."""
    payload = {"format": backend.artifact_format, "options": backend.artifact_options(), "model": model.digest,
               "input_shape": list(model.example.shape), "versions": backend.artifact_versions()}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "artifacts" / str(backend.artifact_format) / "models" / f"{model.source.name}-{key}.{backend.artifact_format}"


def artifact(backend: Backend, model: Model, workdir: Path) -> Any:
    """What the device runs: the file itself, the module, or the module converted (and cached)."""
    if model.file is not None:
        return model.file
    assert model.network is not None
    if backend.artifact_format is None:
        return backend.prepare(model.network, model.example, workdir)
    path = artifact_path(backend, model)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}")
    network = portable(model.network) if backend.artifact_format == "tflite" else model.network
    try:
        with preparation.one_thread():
            backend.write_artifact(network, model.example, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def profile_ops(network: torch.nn.Module, example: torch.Tensor, threads: int, runs: int = 5) -> list[dict[str, Any]]:
    """Per-operator self time of an eager PyTorch network, averaged over ``runs`` forward passes
    under ``torch.profiler`` (after the timed runs, never during them), in the shape the op-profile
    table takes: one row per ATen operator type, largest first."""
    from torch.profiler import ProfilerActivity, profile

    with torch_threads(threads), torch.inference_mode(), quiet_stderr():
        network(example)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(runs):
                network(example)
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {"name": e.key, "node_type": e.key, "avg_ms": e.self_cpu_time_total / 1000 / runs, "first_ms": None,
         "percent": 100 * e.self_cpu_time_total / total, "times_called": round(e.count / runs)}
        for e in events
    ]
    return sorted(rows, key=lambda row: -row["avg_ms"])


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: torch's profiler (Kineto) writes
    ``USDT: profiler_start`` lines straight to it, whatever ``KINETO_LOG_LEVEL`` says."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class ModelResult:
    """One measurement of one model, as ``leti measure-model`` prints it."""

    model: str
    device: str
    pass_number: int
    row: dict[str, Any] | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        row = self.row or {}
        return {"model": self.model, "device": self.device, "pass": self.pass_number, "median_ms": row.get("median_ms"),
                "min_ms": row.get("min_ms"), "cv": row.get("cv"), "flops": row.get("flops"), "params": row.get("params"),
                "error": self.error}


def existing_rows(store: Path, device: str) -> pl.DataFrame:
    folder = space_dir(store, device, SPACE)
    return tables.read(folder, tables.LATENCY) if folder.exists() else tables.empty(tables.LATENCY)


def passes_done(rows: pl.DataFrame, name: str, config: str, digest: str) -> tuple[int, bool]:
    """Successful rows of this model under this configuration, and whether it failed before."""
    mine = rows.filter((pl.col("arch") == name) & (pl.col("config_id") == config) & (pl.col("model_digest") == digest))
    return mine.filter(pl.col("error").is_null()).height, mine.filter(pl.col("error").is_not_null()).height > 0


def measure_models(
    sources: Sequence[ModelSource],
    device: DeviceConfig,
    store: Path,
    input_shape: Sequence[int] | None = None,
    passes: int = 1,
    retry_errors: bool = False,
    op_profile: bool = False,
    op_profile_store: Path | None = None,
    retries: int = 3,
    backoff_seconds: float = 2.0,
    progress: bool = True,
    on_result: Callable[[ModelResult], None] | None = None,
) -> list[ModelResult]:
    """Measure every model ``passes`` times on ``device`` (the passes that the store lacks).

    ``op_profile`` adds, for eager PyTorch backends, a ``torch.profiler`` pass after each model's
    timed runs; a phone's ``op_profiling`` option gives ``benchmark_model``'s per-op table instead.
    Per-op rows go to ``op_profile_store`` (default: ``op_profiles`` beside the store).
    """
    from tqdm import tqdm

    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    store = Path(store)
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ModelError(f"two models are both named {next(n for n in names if names.count(n) > 1)!r}; rename one")
    results: list[ModelResult] = []
    with measuring_session(device, space_dir(store, device.name, SPACE), retries, backoff_seconds) as session:
        for source in sources:
            check_backend(source, session.backend, device.name)
        models = [load(source, device.protocol.batch, input_shape) for source in sources]
        configs = {model.source.name: config_id(device, session.backend, model.example) for model in models}
        rows = existing_rows(store, device.name)
        plan = []
        for index in range(passes):
            for model in models:
                done, failed = passes_done(rows, model.source.name, configs[model.source.name], model.digest)
                if done <= index and (retry_errors or not failed):
                    plan.append((index, model))
        with session.pinned(), tqdm(total=len(plan), desc=f"measure-model {device.name}", unit="model", disable=not progress) as bar:
            for index, model in plan:
                bar.set_postfix_str(model.source.name)
                row, profile = session.retry(lambda model=model: measure_model(session, model, configs[model.source.name], op_profile))
                write_part([row], store, device.name)
                if profile:
                    write_part(profile, op_profile_store or default_op_profile_store(store), device.name, tables.OP_PROFILE)
                result = ModelResult(model.source.name, device.name, index + 1, row, row["error"])
                results.append(result)
                if on_result:
                    on_result(result)
                bar.update()
    return results


def measure_model(session: Session, model: Model, config: str, op_profile: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One latency row (an error row when the model fails to convert or run) and its per-op rows."""
    threads = session.device.protocol.threads

    def profiled(prepared: Any, timing: Timing) -> Timing:
        if op_profile and timing.op_profile is None and isinstance(prepared, torch.nn.Module):
            return dataclasses.replace(timing, op_profile=profile_ops(prepared, model.example, threads))
        return timing

    row = session.row(space=SPACE, arch=model.source.name, config_id=config, batch=int(model.example.shape[0]),
                      input_shape=list(model.example.shape), model_digest=model.digest, flops=model.flops, params=model.params)
    measured = measure_one(session, row, lambda: artifact(session.backend, model, session.workdir), model.example,
                           {**session.environment, "model": model.details}, profiled)
    return measured.row, op_profile_rows(measured.row, measured.timing)
