"""android-adb: the parser against real benchmark_model output, and the backend against a
stand-in adb (tests/fakes/adb) that runs the local TFLite interpreter in the phone's place."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from measure_helpers import tiny_device_config  # noqa: F401 (fixture)

from leti import campaign, tables
from leti.devices import DeviceError, Protocol, make_backend
from leti.devices.android_adb import BenchmarkOutputError, parse_op_profile, parse_stats
from leti.spaces import nb201

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_ADB = Path(__file__).parent / "fakes" / "adb"
SERIAL = "emulator-5554"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parses_the_timed_runs_not_the_warmup() -> None:
    stats = parse_stats(fixture("benchmark_model_cpu.txt"))
    assert stats["count"] == 50
    assert stats["avg_ms"] == pytest.approx(249.684)
    assert stats["std_ms"] == pytest.approx(1.442)
    assert (stats["min_ms"], stats["max_ms"]) == (pytest.approx(247.067), pytest.approx(254.474))
    assert stats["init_ms"] == pytest.approx(16.242)
    assert stats["first_inference_ms"] == pytest.approx(360.262)
    assert "median_ms" not in stats


def test_parses_scientific_notation_and_skips_the_profiler_footer() -> None:
    output = fixture("benchmark_model_op_profiling.txt")
    stats = parse_stats(output)
    assert stats["count"] == 50 and stats["avg_ms"] == pytest.approx(2950.34)  # not the footer's 2949.9
    ops = parse_op_profile(output)
    assert [op["node_type"] for op in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX"]
    assert ops[0] == {"node_type": "CONV_2D", "name": "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0",
                      "first_ms": 87.754, "avg_ms": 60.957, "times_called": 1}


def test_parses_logcat_prefix_and_percentiles() -> None:
    stats = parse_stats(fixture("benchmark_model_logcat_percentiles.txt"))
    assert stats["count"] == 25
    assert stats["median_ms"] == pytest.approx(141.253)
    assert stats["avg_ms"] == pytest.approx(145.528)
    assert parse_op_profile(fixture("benchmark_model_logcat_percentiles.txt")) is None


def test_output_without_statistics_is_one_clear_error() -> None:
    with pytest.raises(BenchmarkOutputError, match="no 'count=... avg=... std=...' line"):
        parse_stats("ERROR: Could not load model: /data/local/tmp/x.tflite\n")


def test_parsed_timing_summarizes_from_the_tool() -> None:
    timing = make_backend("android-adb", {"serial": SERIAL}).parse(fixture("benchmark_model_logcat_percentiles.txt"))
    summary = timing.summary(cv_threshold=0.05)
    assert timing.samples_ms == [] and summary.iqm_ms is None
    assert summary.median_ms == pytest.approx(141.253)
    assert summary.cv == pytest.approx(13583 / 145528) and summary.unstable


def test_benchmark_command_maps_the_protocol_and_options() -> None:
    backend = make_backend("android-adb", {"serial": SERIAL, "use_gpu": True, "op_profiling": True, "taskset": "f0"})
    command = backend.benchmark_command("/data/local/tmp/leti/m.tflite", Protocol(threads=2, warmup_runs=5, runs=40))
    assert command[:3] == ["taskset", "f0", "/data/local/tmp/benchmark_model"]
    for flag in ("--graph=/data/local/tmp/leti/m.tflite", "--num_threads=2", "--warmup_runs=5", "--num_runs=40",
                 "--min_secs=0", "--use_gpu=true", "--enable_op_profiling=true"):
        assert flag in command


@pytest.fixture
def phone(tmp_path, monkeypatch) -> dict:
    """The stand-in adb, run by this interpreter, with benchmark_model installed on the 'phone'."""
    root = tmp_path / "phone"
    (root / "data/local/tmp").mkdir(parents=True)
    (root / "data/local/tmp/benchmark_model").write_text("stand-in")
    adb = tmp_path / "adb"
    adb.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_ADB))} \"$@\"\n")
    adb.chmod(0o755)
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIAL", SERIAL)
    return {"root": root, "options": {"serial": SERIAL, "adb": str(adb)}}


def test_a_missing_phone_is_a_device_error_that_is_retried_then_reported(phone, tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("android-adb", options={**phone["options"], "serial": "R58M123ABC"})
    with pytest.raises(DeviceError, match=r"device 'android-adb' failed 2 times.*device 'R58M123ABC' not found"):
        campaign.measure_chunk(nb201.sample_valid(1, seed=8), device, tmp_path / "store", retries=1, backoff_seconds=0.01)


def test_a_missing_phone_fails_leti_measure_in_one_line_naming_it(phone, tmp_path, capsys) -> None:
    import yaml

    from leti.cli import main

    params = {"devices": {"pixel": {"backend": "android-adb", "options": {**phone["options"], "serial": "R58M123ABC"}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = main(["measure", "--device", "pixel", "--arch", nb201.sample_valid(1, seed=8)[0], "--params",
                 str(tmp_path / "params.yaml"), "--store", str(tmp_path / "store"), "--retries", "1",
                 "--backoff", "0.01", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 75  # EX_TEMPFAIL: a lost device is worth retrying, unlike bad input (2)
    assert len(error.splitlines()) == 1 and "R58M123ABC" in error and "not found" in error


needs_tflite = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(name) for name in ("litert_torch", "ai_edge_litert")),
    reason="the tflite extra (litert-torch, ai-edge-litert) is not installed",
)


@needs_tflite
def test_campaign_on_the_stand_in_phone_pushes_runs_parses_and_cleans_up(phone, tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("android-adb", options={**phone["options"], "op_profiling": True}, runs=8)
    archs = nb201.sample_valid(2, seed=9)
    result = campaign.run_campaign(archs, device, tmp_path / "store", progress=False)
    assert (result.measured, result.failed) == (2, 0)
    rows = tables.read(tmp_path / "store", tables.LATENCY)
    assert rows["error"].null_count() == 2 and rows["samples_ms"].list.len().to_list() == [0, 0]
    assert all(value > 0 for value in rows["mean_ms"]) and rows["iqm_ms"].null_count() == 2
    assert list((phone["root"] / "data/local/tmp/leti").iterdir()) == []  # the model was removed
    backend = make_backend("android-adb", device.options)
    timing = backend.benchmark(nb201.build_network(archs[0], device.network), nb201.example_input(device.network),
                               device.protocol, tmp_path)
    assert timing.reported["count"] == 8 and timing.op_profile and timing.op_profile[0]["node_type"]


@needs_tflite
def test_a_phone_that_vanishes_mid_campaign_keeps_what_was_measured(phone, tiny_device_config, tmp_path, monkeypatch) -> None:
    # get-state, then mkdir, push, benchmark, rm for the first cell: the phone is gone after 5 commands
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "5")
    device = tiny_device_config("android-adb", options=phone["options"])
    archs = nb201.sample_valid(2, seed=10)
    with pytest.raises(DeviceError, match="not found"):
        campaign.measure_chunk(archs, device, tmp_path / "store", retries=1, backoff_seconds=0.01)
    kept = tables.read(tmp_path / "store", tables.LATENCY)
    assert kept["arch"].to_list() == archs[:1]
    assert campaign.pending(archs, device, tmp_path / "store") == archs[1:]
