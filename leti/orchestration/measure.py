"""Prefect flow: a measurement campaign over several devices, one task per (device, chunk).

Each task claims the next chunk of cells its device still lacks (``campaign.measure_next_chunk``),
so the flow's tasks, and another campaign on the same store, share the work without measuring a
cell twice. Chunks of devices on different hardware run side by side; chunks of one device (or of
two devices sharing hardware, such as torch-cpu and onnxruntime-cpu on this CPU) never overlap
because each takes the resource's file lock (``leti.measure.session``), which holds across threads,
processes and Dask workers alike and needs no Prefect server (a tag concurrency limit would). A chunk that
hits a ``DeviceError`` after its in-chunk retries is retried by Prefect with a delay; a device
that stays gone is reported in the summary artifact and in the flow's final error, after every
other device has finished. The flow lives in the ``leti`` package so Dask workers can import it;
``flows/measure.py`` is its command line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import task_run as current_task_run

from leti import params, spaces
from leti.devices.config import DeviceConfig, device_from_params
from leti.errors import DeviceError
from leti.measure import campaign
from leti.measure.sentinel import SentinelPolicy
from leti.orchestration.retries import retry_only_on
from leti.store import tables

SUMMARY_ARTIFACT = "measure-summary"


@task(retry_condition_fn=retry_only_on(DeviceError))  # a bad model already became an error row
def measure_chunk_task(
    archs: list[str], device: DeviceConfig, store: str, index: int, chunks: int, part_size: int, retry_errors: bool,
    device_retries: int, backoff_seconds: float, op_profile_store: str | None = None, policy: SentinelPolicy = SentinelPolicy(),
) -> dict[str, Any]:
    """Claim the next chunk of ``archs`` (in their order) the store lacks, measure it under the device
    lock, bracketed by the sentinel, and write it as one Parquet part (the chunk after it is converted
    ahead while it is timed)."""
    result = campaign.measure_next_chunk(
        archs, device, Path(store), part_size, retry_errors, device_retries, backoff_seconds,
        op_profile_store=Path(op_profile_store) if op_profile_store else None, policy=policy,
    )
    if result is None:  # another task or campaign measured the rest
        get_run_logger().info("%s: chunk %d/%d: nothing left to claim", device.name, index + 1, chunks)
        return {"device": device.name, "cells": 0, "failed": 0, "timed_seconds": 0.0, "device_seconds": 0.0, "op_profiles": 0,
                "started": None, "finished": None, "attempt": current_task_run.run_count, "rows": [], "sentinels": []}
    get_run_logger().info(
        "%s: chunk %d/%d done: %d cells, %d failed, %.1f s", device.name, index + 1, chunks,
        len(result.rows), result.failed, result.finished - result.started,
    )
    return {
        "device": device.name,
        "cells": len(result.rows),
        "failed": result.failed,
        "timed_seconds": result.timed_seconds,
        "device_seconds": result.device_seconds,
        "op_profiles": result.op_profiles,
        "started": result.started,
        "finished": result.finished,
        "attempt": current_task_run.run_count,
        "rows": result.rows,
        "sentinels": result.sentinels,
    }


def summary_rows(devices: list[DeviceConfig], todo: dict[str, list[str]], requested: int,
                 chunks: list[dict[str, Any]], failures: dict[str, str], wall_seconds: float) -> list[dict[str, Any]]:
    """One row per device: what was asked, skipped, measured, failed, and the time overhead (the
    device's chunks' wall time over the time it spent running networks, warm-up included)."""
    rows = []
    for device in devices:
        mine = [chunk for chunk in chunks if chunk["device"] == device.name]
        space = device.space.NAME
        timed = sum(chunk["timed_seconds"] for chunk in mine)
        running = sum(chunk["device_seconds"] for chunk in mine)
        busy = sum(chunk["finished"] - chunk["started"] for chunk in mine if chunk["started"] is not None)
        quality = campaign.chunk_quality([campaign.ChunkResult(c["rows"], 0.0, 0.0, sentinels=c["sentinels"]) for c in mine])
        rows.append({
            "device": device.name,
            "space": space,
            "backend": device.backend,
            "requested": requested,
            "skipped": requested - len(todo[device.name]),
            "measured": sum(chunk["cells"] for chunk in mine),
            "failed_cells": sum(chunk["failed"] for chunk in mine),
            "op_profile_rows": sum(chunk["op_profiles"] for chunk in mine),
            "chunk_seconds": round(busy, 2),
            "device_seconds": round(running, 2),
            "timed_seconds": round(timed, 2),
            "overhead": round(busy / running, 2) if running else None,
            "quality": quality.line(),
            "status": f"FAILED: {failures[device.name]}" if device.name in failures else "ok",
        })
    rows.append({"device": "(campaign wall time)", "chunk_seconds": round(wall_seconds, 2)})
    return rows


@flow(name="leti-measure")
def measure_devices(
    devices: list[str],
    archs: list[str],
    params_path: str = "params.yaml",
    store: str = "data/latency",
    chunk_size: int = 10,
    retry_errors: bool = False,
    device_retries: int = 3,
    backoff_seconds: float = 2.0,
    task_retries: int = 2,
    retry_delay_seconds: float = 30.0,
    op_profile_store: str | None = None,
    space: str = spaces.DEFAULT,
) -> dict[str, Any]:
    """Measure ``archs`` (cells of ``space``) on every named device, in the seeded order of
    ``measure.order_seed``, each chunk bracketed by the sentinel (``measure.sentinel``); returns the
    summary rows and per-chunk records. Per-operator profiles go to ``op_profile_store`` (default:
    ``op_profiles`` beside ``store``)."""
    logger = get_run_logger()
    start = time.monotonic()
    options = campaign.options_from_params(params.load(params_path).get("measure") or {})
    policy = options["policy"]
    configs = [device_from_params(name, params_path, space) for name in devices]
    archs = campaign.measuring_order(archs, options["order_seed"])
    todo = {device.name: campaign.pending(archs, device, Path(store), retry_errors) for device in configs}
    futures = []
    for device in configs:
        chunks = -(-len(todo[device.name]) // chunk_size)
        logger.info("%s: %d of %d %s cells to measure in %d chunks", device.name, len(todo[device.name]), len(set(archs)),
                    space, chunks)
        for index in range(chunks):
            chunk_task = measure_chunk_task.with_options(
                task_run_name=f"{device.name}-chunk-{index + 1}", retries=task_retries, retry_delay_seconds=retry_delay_seconds
            )
            futures.append(
                (device.name, chunk_task.submit(archs, device, store, index, chunks, chunk_size, retry_errors, device_retries,
                                                backoff_seconds, op_profile_store, policy))
            )
    records, failures = [], {}
    for name, future in futures:
        future.wait()
        state = future.state
        if state.is_completed():
            records.append(future.result())
        else:
            failures.setdefault(name, str(state.result(raise_on_failure=False)))
    rows = summary_rows(configs, todo, len(set(archs)), records, failures, time.monotonic() - start)
    create_table_artifact(key=SUMMARY_ARTIFACT, table=rows, description="Measurement campaign: one row per device")
    create_markdown_artifact(key=f"{SUMMARY_ARTIFACT}-text", markdown=summary_markdown(rows))
    if failures:
        raise DeviceError("; ".join(f"device {name!r}: {message}" for name, message in failures.items()))
    return {"summary": rows, "chunks": records}


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| device | space | measured | skipped | failed cells | overhead | quality | status |", "|---|---|---|---|---|---|---|---|"]
    for row in rows[:-1]:
        lines.append(f"| {row['device']} | {row['space']} | {row['measured']} | {row['skipped']} | {row['failed_cells']} | "
                     f"{row['overhead']} | {row['quality']} | {row['status']} |")
    lines.append(f"\nWall time: {rows[-1]['chunk_seconds']} s")
    return "\n".join(lines)


def task_runner(name: str, workers: int = 2, address: str | None = None) -> Any:
    """Prefect's default thread-pool runner, or Dask: the running cluster whose scheduler is at
    ``address`` (``tcp://host:8786``), else a local cluster of ``workers`` processes."""
    if name == "default":
        return None
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    raise ValueError(f"unknown task runner {name!r} (known: default, dask)")


def run_measure(devices: list[str], archs: list[str], runner: str = "default", workers: int = 2,
                address: str | None = None, **options: Any) -> dict[str, Any]:
    """Run the flow with the chosen task runner, after checking every device name and backend
    (so a typo fails in a second with the name, not after a Prefect server start)."""
    for name in devices:
        device_from_params(name, options.get("params_path", "params.yaml"), options.get("space", spaces.DEFAULT))
    chosen = task_runner(runner, workers, address)
    measure = measure_devices.with_options(task_runner=chosen) if chosen else measure_devices
    return measure(devices=devices, archs=archs, **options)


def architectures(path: str | Path, space: str) -> list[str]:
    """The sampled cells of ``space``: ``<path>/<space>.parquet`` of an architectures folder (the
    pipeline's ``data/architectures``), or the rows of ``space`` in one architectures table."""
    path = Path(path)
    if path.is_dir():
        table_path = path / f"{space}.parquet"
        if not table_path.exists():
            raise FileNotFoundError(f"{table_path}: no sampled {space} cells (is {space} under `spaces:` in params.yaml?)")
        return tables.read(table_path, tables.ARCHITECTURES)["arch"].to_list()
    table = tables.read(path, tables.ARCHITECTURES)
    return table.filter(table["space"] == space)["arch"].to_list()


def run_from_params(
    devices: list[str] | None = None,
    params_path: str = "params.yaml",
    architectures_path: str | Path = "data/architectures",
    store: str = "data/latency",
    runner: str | None = None,
    workers: int | None = None,
    op_profile_store: str | None = None,
) -> list[dict[str, Any]]:
    """Run the flow as ``params.yaml``'s ``measure:`` section says (runner, chunk size, retries),
    over ``devices`` (default: every entry of ``devices:``): one flow run per space (and per cap on its
    cells), each over the devices that measure it (``params.device_spaces``, ``params.device_cells``).
    Returns each run's result."""
    config = params.section("measure", params_path)
    names = devices or list(params.load(params_path).get("devices") or {})
    by_space: dict[tuple[str, int | None], list[str]] = {}
    for name in names:
        for space in params.device_spaces(name, params_path):
            by_space.setdefault((space, params.device_cells(name, space, params_path)), []).append(name)
    return [
        run_measure(
            chosen,
            architectures(architectures_path, space)[:cap],
            runner=runner or config.get("runner", "default"),
            workers=workers or config.get("dask_workers", 2),
            address=config.get("dask_address"),
            params_path=params_path,
            store=store,
            chunk_size=config["part_size"],
            retry_errors=config["retry_errors"],
            op_profile_store=op_profile_store,
            space=space,
        )
        for (space, cap), chosen in by_space.items()
    ]
