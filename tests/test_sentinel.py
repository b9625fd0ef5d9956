"""Measurements you can trust on a drifting device: the sentinel, drift detection and correction,
seeded order, concurrent campaigns, and stores written before any of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml
from measure_helpers import FAST_PROTOCOL, TINY_NETWORK, tiny_device_config  # noqa: F401 (fixture)

from leti import spaces
from leti.cli import main
from leti.devices import BACKENDS
from leti.devices.base import HOST_CPU, Backend, Protocol, Timing
from leti.measure import campaign, sentinel
from leti.measure.session import resource_lock
from leti.measure.sentinel import SentinelPolicy
from leti.reports.investigation import analysis, data
from leti.spaces import nb201
from leti.store import parts, quality, reader, tables

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_moved_and_interpolated_on_known_values() -> None:
    assert sentinel.moved(10.0, 10.3) == pytest.approx(0.03) and sentinel.moved(10.0, 9.0) == pytest.approx(0.1)
    before, after = {"min_ms": 10.0, "measured_at": T0}, {"min_ms": 12.0, "measured_at": T0 + timedelta(seconds=40)}
    assert sentinel.interpolated(before, after, T0 + timedelta(seconds=10)) == pytest.approx(10.5)
    assert sentinel.interpolated(before, after, T0 - timedelta(seconds=5)) == 10.0  # clamped to the chunk
    rows = [{"arch": "a", "error": None, "min_ms": 6.0, "measured_at": T0 + timedelta(seconds=20)},
            {"arch": "b", "error": "RuntimeError: no", "min_ms": None, "measured_at": T0}]
    [good, bad] = sentinel.annotate(rows, before, after, 8.0, "c1", 2, True)
    assert good["min_ms_corrected"] == pytest.approx(6.0 * 8.0 / 11.0)  # the sentinel was at 11 ms when "a" ran
    assert (good["sentinel_before_ms"], good["sentinel_after_ms"], good["attempt"], good["drifted"]) == (10.0, 12.0, 2, True)
    assert "min_ms_corrected" not in bad
    [lost] = sentinel.annotate(rows[:1], before, None, 8.0, "c2", 1, False)  # no closing sentinel: the device was lost
    assert lost["sentinel_after_ms"] is None and "min_ms_corrected" not in lost


def test_a_threshold_that_is_not_positive_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="measure.sentinel.threshold must be > 0"):
        SentinelPolicy(threshold=0)
    with pytest.raises(ValueError, match=r"measure.sentinel: unknown keys \['treshold'\]"):
        SentinelPolicy.from_params({"treshold": 0.05})


def test_the_measuring_order_is_a_seeded_permutation() -> None:
    archs = nb201.sample_valid(50, seed=3)
    order = campaign.measuring_order([*archs, archs[0]], seed=0)
    assert sorted(order) == sorted(archs) and order != archs  # every cell once, not in the sample's order
    assert order == campaign.measuring_order(archs, seed=0) != campaign.measuring_order(archs, seed=1)
    assert campaign.measuring_order(archs, seed=None) == archs


class Drifting(Backend):
    """A device whose cells take a fixed time (set by the cell's parameter count) times its speed:
    normal for the first ``normal`` runs, then ``factor`` times slower. Exact figures, so detection and
    correction can be checked to the last digit."""

    name = "drifting"
    normal = 10**9
    factor = 1.2
    runs = 0
    blips: frozenset[int] = frozenset()  # runs that alone take twice as long (a hypervisor pause)

    def prepare(self, network, example, workdir):
        return sum(p.numel() for p in network.parameters()) / 1e4  # the cell's time in ms at normal speed

    def run(self, artifact, example, protocol: Protocol) -> Timing:
        Drifting.runs += 1
        speed = (self.factor if Drifting.runs > self.normal else 1.0) * (2.0 if Drifting.runs in self.blips else 1.0)
        return Timing(samples_ms=[artifact * speed] * protocol.runs)

    def parse(self, raw: Timing) -> Timing:
        return raw


@pytest.fixture
def drifting(monkeypatch):
    monkeypatch.setitem(BACKENDS, Drifting.name, Drifting)
    Drifting.runs, Drifting.normal, Drifting.blips = 0, 10**9, frozenset()
    return Drifting


def test_a_slowdown_mid_campaign_is_detected_measured_again_and_corrected(drifting, tiny_device_config, tmp_path) -> None:
    archs = nb201.sample_valid(6, seed=2)
    device = tiny_device_config(Drifting.name)
    policy = SentinelPolicy(threshold=0.03, max_attempts=3)
    undisturbed = campaign.run_campaign(archs, device, tmp_path / "calm", part_size=2, progress=False, policy=policy, order_seed=None)
    drifting.runs, drifting.normal = 0, 5  # sentinel, 2 cells, sentinel, 1 cell: the 2nd chunk's 2nd cell runs slow
    slowed = campaign.run_campaign(archs, device, tmp_path / "slow", part_size=2, progress=False, policy=policy, order_seed=None)
    assert undisturbed.quality().remeasured_chunks == 0 and slowed.quality().remeasured_chunks == 1
    calm = reader.read_cells(tmp_path / "calm", device.name, "nb201", reader.ReadPolicy("min_ms"))
    raw = reader.read_cells(tmp_path / "slow", device.name, "nb201", reader.ReadPolicy("min_ms"))
    corrected = reader.read_cells(tmp_path / "slow", device.name, "nb201", reader.ReadPolicy("min_ms_corrected"))
    assert raw.archs == calm.archs == corrected.archs == sorted(archs)  # nothing lost, nothing twice (latest attempt)
    assert corrected.latency_ms == pytest.approx(calm.latency_ms, rel=1e-9)
    assert sorted(raw.latency_ms / calm.latency_ms) == pytest.approx([1.0, 1.0, 1.2, 1.2, 1.2, 1.2])
    rows = tables.read(tmp_path / "slow", tables.LATENCY).filter(pl.col("role").is_null())
    assert rows.height == 8 and rows.filter(pl.col("drifted"))["attempt"].to_list() == [1, 1]  # the drifted attempt is kept
    assert slowed.quality().line().startswith("drift +0.0 % .. +20.0 %; 1 of 3 chunks re-measured")


def test_a_sentinel_slow_once_is_timed_again_and_not_believed(drifting, tiny_device_config, tmp_path) -> None:
    archs = nb201.sample_valid(6, seed=2)
    device = tiny_device_config(Drifting.name)
    calm = campaign.run_campaign(archs, device, tmp_path / "calm", part_size=2, progress=False, order_seed=None,
                                 policy=SentinelPolicy(threshold=0.03))
    drifting.runs, drifting.blips = 0, frozenset({4})  # sentinel, 2 cells, then the closing sentinel alone runs slow
    blip = campaign.run_campaign(archs, device, tmp_path / "blip", part_size=2, progress=False, order_seed=None,
                                 policy=SentinelPolicy(threshold=0.03))
    assert blip.quality().remeasured_chunks == 0 and drifting.runs == 11  # 6 cells, 4 sentinels, the slow one again
    assert blip.quality().line() == calm.quality().line()  # the pause is not drift
    expected = reader.read_cells(tmp_path / "calm", device.name, "nb201", reader.ReadPolicy("min_ms_corrected"))
    got = reader.read_cells(tmp_path / "blip", device.name, "nb201", reader.ReadPolicy("min_ms_corrected"))
    assert got.archs == expected.archs and got.latency_ms == pytest.approx(expected.latency_ms, rel=1e-9)
    sentinels = reader.sentinel_rows(tmp_path / "blip", device.name, "nb201")
    assert sentinels.height == reader.sentinel_rows(tmp_path / "calm", device.name, "nb201").height + 1  # the blip is kept
    assert sorted(sentinels["min_ms"] / sentinels["min_ms"].min()) == pytest.approx([1.0, 1.0, 1.0, 1.0, 2.0])
    # The investigation reads which timing was not believed, and leaves it out of the drift range.
    drift = analysis.sentinel_drift(data.load_sentinels([tmp_path / "blip"], spaces.get("nb201")))
    assert drift["believed"].to_list().count(False) == 1
    assert drift.filter(~pl.col("believed"))["drift_pct"].item() == pytest.approx(100.0)
    assert drift.filter(pl.col("believed"))["drift_pct"].abs().max() == pytest.approx(0.0, abs=1e-9)
    # Without re-timing, the same pause re-measures the chunk and its rows are corrected by the paused sentinel.
    drifting.runs = 0
    believed = campaign.run_campaign(archs, device, tmp_path / "believed", part_size=2, progress=False, order_seed=None,
                                     policy=SentinelPolicy(threshold=0.03, retime=False))
    assert believed.quality().remeasured_chunks == 1 and calm.quality().remeasured_chunks == 0


def old_part(store: Path, archs: list[str], device) -> None:
    """A part as leti wrote it before the sentinel: none of its columns."""
    rows = [{"space": "nb201", "arch": arch, "device": device.name, "backend": device.backend, "source": "leti",
             "config_id": device.config_id, "runs": 3, "samples_ms": [1.0 + i] * 3, "median_ms": 1.0 + i, "iqm_ms": 1.0 + i,
             "mean_ms": 1.0 + i, "min_ms": 1.0 + i, "error": None, "measured_at": T0} for i, arch in enumerate(archs)]
    path = parts.write_part(rows, store, device.name)
    pl.read_parquet(path).drop([field.name for field in tables.LATENCY if tables.is_added(field)]).write_parquet(path)


def test_a_store_written_before_the_sentinel_reads_resumes_and_evaluates(tiny_device_config, tmp_path, capsys) -> None:
    device = tiny_device_config("torch-cpu")
    archs = nb201.sample_valid(6, seed=4)
    old_part(tmp_path / "store", archs[:5], device)
    assert "role" not in pl.read_parquet(next((tmp_path / "store").rglob("*.parquet"))).columns
    assert campaign.pending(archs, device, tmp_path / "store") == archs[5:]
    cells = reader.read_cells(tmp_path / "store", device.name, "nb201", reader.ReadPolicy("min_ms_corrected", fallback="min_ms"))
    assert cells.statistic == "min_ms" and len(cells.archs) == 5  # no corrected values: the raw statistic, said so
    assert reader.sentinel_rows(tmp_path / "store", device.name, "nb201").is_empty()
    assert quality.summarize(cells.rows, reader.sentinel_rows(tmp_path / "store", device.name, "nb201")).line() == (
        "drift not tracked (no sentinel); 0 of 0 chunks re-measured; CV median n/a")
    assert main(["evaluate", "--latency", str(tmp_path / "store"), "--device", device.name, "--predictor", "linear",
                 "--train-size", "2", "--val-size", "1", "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n_test"] == 2
    before = {path: path.stat().st_mtime_ns for path in (tmp_path / "store").rglob("*.parquet")}
    campaign.run_campaign(archs, device, tmp_path / "store", progress=False, policy=SentinelPolicy(threshold=10.0))
    assert {path: path.stat().st_mtime_ns for path in before} == before  # nothing already measured is rewritten
    assert len(reader.read_cells(tmp_path / "store", device.name, "nb201", reader.ReadPolicy("min_ms")).archs) == 6


def write_params(path: Path, **measure) -> Path:
    path.write_text(yaml.safe_dump({"measure": {"defaults": {**FAST_PROTOCOL, **TINY_NETWORK}, **measure},
                                    "devices": {"cpu": {"backend": "torch-cpu"}, "broken": {"backend": "onnxruntime-cpu",
                                                                                            "options": {"opset": 1}}}}))
    return path


def test_bad_sentinel_settings_and_a_sentinel_that_fails_are_one_line_each(tmp_path, capsys) -> None:
    arch = nb201.sample_valid(1, seed=6)[0]
    for measure, device, expected in (
        ({"sentinel": {"threshold": 0}}, "cpu", "measure.sentinel.threshold must be > 0"),
        ({"sentinel": {"threshold": -0.1}}, "cpu", "measure.sentinel.threshold must be > 0"),
        ({}, "broken", "the sentinel cell |nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2| "
                       "of nb201 failed on device 'broken'"),
    ):
        params = write_params(tmp_path / "params.yaml", **measure)
        code = main(["measure", "--device", device, "--arch", arch, "--params", str(params), "--store", str(tmp_path / "store"),
                     "--no-progress"])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(error) == 1 and expected in error[0], error
    assert not list((tmp_path / "store").rglob("*.parquet"))  # nothing was written


def waiting_on_locks(process: subprocess.Popen, folder: Path) -> bool:
    """Whether ``process`` has a lock file of ``folder`` open: it opens one only to take it, so it is
    waiting for the store's lock or holding it while it waits for the CPU's."""
    try:
        return any(Path(os.readlink(fd)).parent == folder for fd in Path(f"/proc/{process.pid}/fd").iterdir())
    except OSError:  # a descriptor closed while we looked
        return False


def test_two_campaigns_at_once_share_the_cells_and_never_time_together(tmp_path, monkeypatch) -> None:
    params = write_params(tmp_path / "params.yaml", part_size=5, sentinel={"threshold": 10.0})
    archs = nb201.sample_valid(30, seed=8)
    command = [sys.executable, "-m", "leti", "measure", "--device", "cpu", "--params", str(params), "--store",
               str(tmp_path / "store"), "--no-progress", *[f"--arch={arch}" for arch in archs]]
    monkeypatch.setenv("LETI_LOCK_DIR", str(tmp_path))  # this test's own locks, inherited by both campaigns
    # Both start while the test holds this host's CPU: neither can time a cell before the other is
    # waiting too (on a busy machine one campaign's imports could otherwise outlast the other's run).
    both: list[subprocess.Popen] = []
    try:
        with resource_lock(HOST_CPU):
            both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            deadline = time.monotonic() + 300
            while not all(waiting_on_locks(process, tmp_path / "leti-locks") for process in both):
                assert time.monotonic() < deadline and all(process.poll() is None for process in both), "a campaign never reached the locks"
                time.sleep(0.1)
        outputs = [process.communicate(timeout=600) for process in both]
    finally:
        for process in both:
            if process.poll() is None:  # a failed assertion leaves no campaign behind
                process.kill()
    assert [process.returncode for process in both] == [0, 0], outputs
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(s["measured"] for s in summaries) == 30 and all(s["measured"] > 0 for s in summaries)  # the work was shared
    assert all(err.strip().startswith("leti measure: cpu: drift") for _, err in outputs)  # the one-line quality summary
    rows = tables.read(tmp_path / "store", tables.LATENCY)
    cells = rows.filter(pl.col("role").is_null())
    assert cells.height == 30 and sorted(cells["arch"]) == sorted(archs)  # no cell measured twice
    spans = sorted(rows.group_by("chunk").agg(pl.col("measured_at").min().alias("start"), pl.col("measured_at").max().alias("end"))
                   .select("start", "end").rows())
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, "two campaigns timed on this CPU at once"


def test_measure_takes_the_cells_file_plan_shots_writes_and_names_a_bad_line(tmp_path, capsys) -> None:
    """`leti measure --cells FILE` measures the file's cells (one arch per line, comments skipped, as
    `leti plan-shots` writes them); a malformed line is one error naming the file and line, before anything is timed."""
    params = write_params(tmp_path / "params.yaml", sentinel={"threshold": 10.0})
    archs = nb201.sample_valid(3, seed=11)
    cells = tmp_path / "cells.txt"
    cells.write_text("# planned shots\n" + "\n".join(archs) + "\n\n")
    assert main(["measure", "--device", "cpu", "--cells", str(cells), "--params", str(params), "--store", str(tmp_path / "store"),
                 "--no-progress"]) == 0
    rows = reader.device_rows(tmp_path / "store", "cpu", "nb201")
    assert sorted(rows.filter(pl.col("role").is_null())["arch"]) == sorted(archs)
    capsys.readouterr()
    cells.write_text(archs[0] + "\n|nor_conv_3x3~0|+|oops~0|\n")
    assert main(["measure", "--device", "cpu", "--cells", str(cells), "--params", str(params), "--store", str(tmp_path / "other"),
                 "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{cells}:2:" in error[0], error
    assert not (tmp_path / "other").exists() or not list((tmp_path / "other").rglob("*.parquet"))
