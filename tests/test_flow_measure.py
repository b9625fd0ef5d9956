"""The Prefect flow, for real: default runner with a device that drops out once, and a local
2-worker Dask cluster whose benchmarks on one piece of hardware must never overlap."""

from __future__ import annotations

import pytest
import yaml
from measure_helpers import FAST_PROTOCOL, TINY_NETWORK

from leti.devices import BACKENDS
from leti.devices.torch_cpu import TorchCPU
from leti.errors import DeviceError
from leti.orchestration.measure import SUMMARY_ARTIFACT, run_measure
from leti.spaces import nb201
from leti.store import reader, tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


def write_params(path, devices: dict):
    measure = {"defaults": {**FAST_PROTOCOL, **TINY_NETWORK}, "sentinel": {"enabled": False}}  # tests/test_sentinel.py has it
    path.write_text(yaml.safe_dump({"measure": measure, "devices": devices}))
    return str(path)


class DropsOutOnce(TorchCPU):
    """torch-cpu whose device is missing on the first check only."""

    name = "drops-out-once"
    checks = 0

    def check(self) -> None:
        DropsOutOnce.checks += 1
        if DropsOutOnce.checks == 1:
            raise DeviceError("error: device 'drops-out-once' not found")


def test_default_runner_retries_a_device_error_and_writes_a_summary(prefect_server, tmp_path, monkeypatch) -> None:
    from prefect import get_client

    monkeypatch.setitem(BACKENDS, DropsOutOnce.name, DropsOutOnce)
    params_path = write_params(tmp_path / "params.yaml", {"torch-cpu": {"backend": "torch-cpu"}, "phone": {"backend": DropsOutOnce.name}})
    archs = nb201.sample_valid(3, seed=11)
    result = run_measure(
        ["torch-cpu", "phone"], archs, params_path=params_path, store=str(tmp_path / "store"), chunk_size=3,
        device_retries=0, task_retries=1, retry_delay_seconds=0,
    )
    attempts = {chunk["device"]: chunk["attempt"] for chunk in result["chunks"]}
    assert attempts == {"torch-cpu": 1, "phone": 2}  # Prefect retried the chunk after the DeviceError
    by_device = {row["device"]: row for row in result["summary"]}
    assert by_device["phone"]["measured"] == by_device["torch-cpu"]["measured"] == 3
    assert by_device["phone"]["status"] == "ok"
    with get_client(sync_client=True) as client:  # the typed read_artifacts sends nulls this server rejects
        query = {"artifacts": {"key": {"any_": [SUMMARY_ARTIFACT]}}, "limit": 1, "offset": 0, "sort": "UPDATED_DESC"}
        artifacts = client.request("POST", "/artifacts/filter", json=query).json()
    assert artifacts and "phone" in artifacts[0]["data"] and artifacts[0]["type"] == "table"
    for device in ("torch-cpu", "phone"):
        assert set(tables.read(tmp_path / "store" / device, tables.LATENCY)["arch"]) == set(archs)


def test_dask_runner_never_overlaps_two_benchmarks_on_this_cpu(prefect_server, tmp_path) -> None:
    params_path = write_params(tmp_path / "params.yaml", {"torch-cpu": {"backend": "torch-cpu"}, "onnxruntime-cpu": {"backend": "onnxruntime-cpu"}})
    archs = nb201.sample_valid(4, seed=12)
    store = tmp_path / "store"
    result = run_measure(
        ["torch-cpu", "onnxruntime-cpu"], archs, runner="dask", workers=2, params_path=params_path,
        store=str(store), chunk_size=1,
    )
    # Both devices time on this host's CPU, so no two chunks may overlap, of one device or of both.
    spans = sorted((chunk["started"], chunk["finished"]) for chunk in result["chunks"])
    assert len(spans) == 8
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end <= next_start, "two benchmarks on this CPU overlapped"
    for device in ("torch-cpu", "onnxruntime-cpu"):
        table = reader.device_rows(store, device)
        assert sorted(table["arch"]) == sorted(archs)
    # resuming measures nothing more
    again = run_measure(["torch-cpu"], archs, params_path=params_path, store=str(store), chunk_size=1)
    assert again["chunks"] == [] and again["summary"][0]["skipped"] == 4


def test_an_unknown_device_is_named_before_any_flow_starts(tmp_path) -> None:
    params_path = write_params(tmp_path / "params.yaml", {"torch-cpu": {"backend": "torch-cpu"}})
    with pytest.raises(KeyError, match="unknown device 'pixel9'"):
        run_measure(["torch-cpu", "pixel9"], nb201.sample_valid(1, seed=14), params_path=params_path, store=str(tmp_path))
    assert not (tmp_path / "torch-cpu").exists()


def test_dask_runner_reaches_a_running_cluster_through_its_scheduler_address(prefect_server, tmp_path) -> None:
    """`measure.dask_address` sends the chunks to a cluster started elsewhere (here: in this test)."""
    from distributed import LocalCluster

    params_path = write_params(tmp_path / "params.yaml", {"torch-cpu": {"backend": "torch-cpu"}})
    archs = nb201.sample_valid(2, seed=13)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = run_measure(["torch-cpu"], archs, runner="dask", address=cluster.scheduler_address,
                             params_path=params_path, store=str(tmp_path / "store"), chunk_size=1)
        computed_there = {name: prefix.all_durations.get("compute", 0.0) for name, prefix in cluster.scheduler.task_prefixes.items()}
    assert len(result["chunks"]) == 2
    assert computed_there.get("measure_chunk_task", 0) > 0  # this cluster's workers ran the chunks, not the runner's own
    assert sorted(reader.device_rows(tmp_path / "store", "torch-cpu")["arch"]) == sorted(archs)


def test_a_device_measures_the_first_cells_its_params_cap(prefect_server, tmp_path) -> None:
    """`devices.<name>.cells.<space>`: the first N cells of the sample, in sample order; other devices
    and other spaces measure every cell; a cap that is no positive count is named in one line."""
    import polars as pl

    from leti import params
    from leti.orchestration.measure import run_from_params

    archs = nb201.sample_valid(4, seed=15)
    folder = tmp_path / "architectures"
    folder.mkdir()
    rows = [{"space": "nb201", "arch": arch, "canonical_id": nb201.canonical_id(arch), "valid": True, "flops": 0, "params": 0}
            for arch in archs]
    tables.write(pl.DataFrame(rows), folder / "nb201.parquet", tables.ARCHITECTURES)
    params_path = write_params(tmp_path / "params.yaml", {"torch-cpu": {"backend": "torch-cpu"},
                                                          "second": {"backend": "onnxruntime-cpu", "cells": {"nb201": 2}}})
    config = yaml.safe_load((tmp_path / "params.yaml").read_text())
    config["measure"].update(part_size=4, retry_errors=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
    results = run_from_params(None, params_path, folder, str(tmp_path / "store"))
    assert len(results) == 2  # one flow run per space and cap
    assert sorted(reader.device_rows(tmp_path / "store", "second")["arch"]) == sorted(archs[:2])
    assert sorted(reader.device_rows(tmp_path / "store", "torch-cpu")["arch"]) == sorted(archs)
    config["devices"]["second"]["cells"] = {"nb201": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="devices.second.cells.nb201 .* positive whole number of cells, got 0"):
        params.device_cells("second", "nb201", params_path)
    config["devices"]["second"]["cells"] = 300
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="devices.second.cells .* must map a space to a number of cells .* got 300"):
        params.device_cells("second", "nb201", params_path)
