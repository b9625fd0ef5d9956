"""Campaigns lose nothing: kill -9 and restart, failing cells, failing devices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from measure_helpers import NO_SENTINEL, FAST_PROTOCOL, TINY_NETWORK, tiny_device_config  # noqa: F401 (fixture)

from leti.devices import BACKENDS
from leti.devices.torch_cpu import TorchCPU
from leti.errors import DeviceError
from leti.measure import campaign
from leti.spaces import nb201
from leti.store import reader, tables

REPO = Path(__file__).resolve().parents[1]


def write_params(path: Path, devices: dict) -> Path:
    measure = {"part_size": 3, "retry_errors": False, "defaults": {**FAST_PROTOCOL, **TINY_NETWORK},
               "sentinel": {"enabled": False}}  # the resume test counts chunks; tests/test_sentinel.py has the sentinel
    params = {"measure": measure, "devices": devices}
    path.write_text(yaml.safe_dump(params))
    return path


def leti_measure(params: Path, store: Path, archs: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-c", "import sys; from leti.cli import main; sys.exit(main())", "measure", "--device", "slow-cpu", "--params", str(params),
               "--store", str(store), "--part-size", "3", "--no-progress"]
    for arch in archs:
        command += ["--arch", arch]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_campaign_then_resume_loses_and_duplicates_nothing(tmp_path) -> None:
    archs = nb201.sample_valid(30, seed=3)
    # a cool-down keeps the run long enough to be killed mid-way
    params = write_params(tmp_path / "params.yaml", {"slow-cpu": {"backend": "torch-cpu", "cooldown_seconds": 0.1}})
    store = tmp_path / "latency"
    process = leti_measure(params, store, archs)
    deadline = time.monotonic() + 60
    while len(list((store / "slow-cpu" / "nb201").glob("part-*.parquet"))) < 2:
        assert process.poll() is None, f"campaign ended before it could be killed: {process.communicate()}"
        assert time.monotonic() < deadline, "no parts appeared within 60 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {part.name: part.read_bytes() for part in (store / "slow-cpu" / "nb201").glob("part-*.parquet")}
    rows_before = tables.read(store / "slow-cpu", tables.LATENCY)
    assert 0 < rows_before.height < len(archs)

    resumed = leti_measure(params, store, archs)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f'"skipped": {rows_before.height}' in out

    final = tables.read(store / "slow-cpu", tables.LATENCY)
    assert final["arch"].n_unique() == final.height  # no duplicate
    assert set(final["arch"]) == set(archs)  # none missing
    assert final["error"].null_count() == final.height
    for name, content in before.items():  # rows from before the kill are untouched
        assert (store / "slow-cpu" / "nb201" / name).read_bytes() == content


def test_a_failing_cell_gets_an_error_row_and_the_campaign_goes_on(tiny_device_config, tmp_path) -> None:
    archs = nb201.sample_valid(2, seed=4)
    device = tiny_device_config("onnxruntime-cpu", options={"opset": 1})  # no exporter supports opset 1
    result = campaign.run_campaign(archs, device, tmp_path, progress=False, policy=NO_SENTINEL)
    assert (result.measured, result.failed) == (2, 2)
    rows = tables.read(tmp_path, tables.LATENCY)
    assert rows.height == 2 and all("INVALID_GRAPH" in message for message in rows["error"])
    # error rows count as done unless retry_errors is set
    assert campaign.pending(archs, device, tmp_path) == []
    assert campaign.pending(archs, device, tmp_path, retry_errors=True) == archs


class FlakyCPU(TorchCPU):
    """torch-cpu whose device drops out: ``failures`` DeviceErrors, then it works."""

    name = "flaky-cpu"
    failures = 0

    def run(self, artifact, example, protocol):
        if FlakyCPU.failures > 0:
            FlakyCPU.failures -= 1
            raise DeviceError("error: device 'flaky' not found")
        return super().run(artifact, example, protocol)


@pytest.fixture
def flaky_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, FlakyCPU.name, FlakyCPU)
    return FlakyCPU


def test_a_device_that_drops_out_is_retried_with_backoff(flaky_backend, tiny_device_config, tmp_path) -> None:
    flaky_backend.failures = 2
    device = tiny_device_config("flaky-cpu")
    rows = campaign.measure_next_chunk(nb201.sample_valid(2, seed=5), device, tmp_path, retries=3, backoff_seconds=0.01, policy=NO_SENTINEL).rows
    assert [row["error"] for row in rows] == [None, None]


def test_a_device_that_stays_gone_is_reported_and_measured_rows_are_kept(flaky_backend, tiny_device_config, tmp_path) -> None:
    archs = nb201.sample_valid(3, seed=6)
    device = tiny_device_config("flaky-cpu")
    flaky_backend.failures = 0
    original_run = FlakyCPU.run
    calls = {"n": 0}

    def run_then_vanish(self, artifact, example, protocol):
        calls["n"] += 1
        if calls["n"] > 1:
            raise DeviceError("error: device 'flaky' not found")
        return original_run(self, artifact, example, protocol)

    FlakyCPU.run = run_then_vanish
    try:
        with pytest.raises(DeviceError, match="device 'flaky-cpu' failed 3 times, giving up"):
            campaign.measure_next_chunk(archs, device, tmp_path, retries=2, backoff_seconds=0.01, policy=NO_SENTINEL)
    finally:
        FlakyCPU.run = original_run
    kept = tables.read(tmp_path, tables.LATENCY)
    assert kept["arch"].to_list() == archs[:1]  # the cell measured before the drop-out is on disk
    assert campaign.pending(archs, device, tmp_path) == archs[1:]


def test_restart_skips_only_the_same_configuration(tiny_device_config, tmp_path) -> None:
    archs = nb201.sample_valid(2, seed=7)
    first = tiny_device_config("torch-cpu")
    campaign.run_campaign(archs, first, tmp_path, progress=False, policy=NO_SENTINEL)
    assert campaign.run_campaign(archs, first, tmp_path, progress=False, policy=NO_SENTINEL).skipped == 2
    more_runs = tiny_device_config("torch-cpu", runs=6)
    assert more_runs.config_id != first.config_id
    assert campaign.pending(archs, more_runs, tmp_path) == archs
    table = reader.device_rows(tmp_path, "torch-cpu")
    assert table.group_by("arch", "config_id").len()["len"].max() == 1
    assert isinstance(table, pl.DataFrame)
