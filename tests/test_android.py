"""android-adb: the parser against real benchmark_model output, and the backend against a
stand-in adb (tests/fakes/adb) that answers like a phone and runs the local TFLite interpreter in
its place. Conversion runs in the converter environment that `make install` creates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from measure_helpers import FAST_PROTOCOL, NO_SENTINEL, SERIAL, TINY_NETWORK, phone, tiny_device_config  # noqa: F401 (fixtures)

from leti.devices import Protocol, make_backend
from leti.devices.android_adb import BenchmarkOutputError, parse_delegate, parse_op_profile, parse_stats
from leti.devices.config import DeviceConfig
from leti.errors import BackendUnavailableError, DeviceError
from leti.measure import campaign
from leti.measure.sentinel import SentinelPolicy
from leti.spaces import nb201
from leti.store import reader, tables

FIXTURES = Path(__file__).parent / "fixtures"


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
    assert stats["warmup_count"] == 2 and stats["warmup_total_ms"] == pytest.approx(2 * 304.586)


def test_parses_scientific_notation_and_skips_the_profiler_footer() -> None:
    output = fixture("benchmark_model_op_profiling.txt")
    stats = parse_stats(output)
    assert stats["count"] == 50 and stats["avg_ms"] == pytest.approx(2950.34)  # not the footer's 2949.9
    ops = parse_op_profile(output)
    assert [op["node_type"] for op in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX"]
    assert ops[0] == {"node_type": "CONV_2D", "name": "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0",
                      "first_ms": 87.754, "avg_ms": 60.957, "percent": 2.066, "times_called": 1}
    assert stats["warmup_total_ms"] == pytest.approx(3512.39)  # one warm-up run: 'count=1 curr=...' and the summary


def test_parses_a_gpu_run_the_delegate_and_its_single_profiled_node() -> None:
    output = fixture("benchmark_model_gpu.txt")
    stats = parse_stats(output)
    assert stats["count"] == 600 and stats["warmup_count"] == 20
    assert stats["warmup_total_ms"] == pytest.approx(20 * 28.473)
    assert parse_delegate(output) == {"delegate": "GPU", "delegated": "all", "gpu_api": "OpenCL"}
    (node,) = parse_op_profile(output)
    assert node["node_type"] == "TfLiteGpuDelegateV2" and node["percent"] == 100.0
    assert parse_delegate(fixture("benchmark_model_cpu.txt")) == {"delegate": "XNNPACK"}
    assert parse_delegate(fixture("benchmark_model_logcat_percentiles.txt")) == {"delegate": None}


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
    assert timing.warmup_ms == pytest.approx(3 * 211.669)
    assert timing.device_seconds == pytest.approx((25 * 145.528 + 3 * 211.669) / 1000)


def test_benchmark_command_maps_the_protocol_and_options() -> None:
    backend = make_backend("android-adb", {"serial": SERIAL, "use_gpu": True, "op_profiling": True, "taskset": "f0"})
    command = backend.benchmark_command("/data/local/tmp/leti/m.tflite", Protocol(threads=2, warmup_runs=5, runs=40))
    assert command[:3] == ["taskset", "f0", "/data/local/tmp/benchmark_model"]
    for flag in ("--graph=/data/local/tmp/leti/m.tflite", "--num_threads=2", "--warmup_runs=5", "--num_runs=40",
                 "--min_secs=0", "--use_gpu=true", "--gpu_precision_loss_allowed=true", "--enable_op_profiling=true"):
        assert flag in command
    assert not any(flag.startswith("--gpu_backend") for flag in command)  # auto: the delegate picks
    fp32_gl = make_backend("android-adb", {"serial": SERIAL, "use_gpu": True, "gpu_precision": "fp32", "gpu_backend": "gl"})
    command = fp32_gl.benchmark_command("/m.tflite", Protocol())
    assert "--gpu_precision_loss_allowed=false" in command and "--gpu_backend=gl" in command
    assert not any("gpu" in flag for flag in make_backend("android-adb", {"serial": SERIAL}).benchmark_command("/m.tflite", Protocol()))


def test_gpu_options_and_threads_are_part_of_the_config_id() -> None:
    def config_id(threads: int = 1, **options) -> str:
        return DeviceConfig.from_params("pixel", {"backend": "android-adb", "options": {"serial": SERIAL, **options}, "threads": threads},
                                        FAST_PROTOCOL).config_id

    assert config_id() == config_id(use_gpu=False) == config_id(gpu_precision="fp32")  # GPU settings matter only on the GPU
    assert config_id() == config_id(adb="/opt/android/platform-tools/adb", timeout_seconds=60)  # how to reach it does not
    gpu = config_id(use_gpu=True)
    assert gpu != config_id() and gpu == config_id(use_gpu=True, gpu_precision="fp16", gpu_backend="auto")
    assert len({gpu, config_id(use_gpu=True, gpu_precision="fp32"), config_id(use_gpu=True, gpu_backend="cl"),
                config_id(use_gpu=True, gpu_backend="gl"), config_id(threads=4)}) == 5


def test_an_unknown_gpu_setting_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="gpu_backend 'vulkan' is not one of"):
        make_backend("android-adb", {"serial": SERIAL, "use_gpu": True, "gpu_backend": "vulkan"}).check()


def test_a_missing_phone_is_a_device_error_that_is_retried_then_reported(phone, tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("android-adb", options={**phone["options"], "serial": "R58M123ABC"})
    with pytest.raises(DeviceError, match=r"device 'android-adb' failed 2 times.*device 'R58M123ABC' not found"):
        campaign.measure_next_chunk(nb201.sample_valid(1, seed=8), device, tmp_path / "store", retries=1, backoff_seconds=0.01)


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


def test_a_missing_converter_fails_leti_measure_in_one_line(phone, tmp_path, capsys, monkeypatch) -> None:
    from leti.cli import main

    monkeypatch.setenv("LETI_TFLITE_VENV", str(tmp_path / "no-such-venv"))
    with pytest.raises(BackendUnavailableError, match="make install"):
        make_backend("android-adb", phone["options"]).check()
    params = {"devices": {"pixel": {"backend": "android-adb", "options": phone["options"]}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = main(["measure", "--device", "pixel", "--arch", nb201.sample_valid(1, seed=8)[0], "--params",
                 str(tmp_path / "params.yaml"), "--store", str(tmp_path / "store"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "litert-torch" in error and "make install" in error


ARCHS = nb201.sample_valid(2, seed=9)
"""The cells every stand-in campaign measures: converted once per session (the artifact cache)."""


def test_campaign_on_the_stand_in_phone_stores_phone_described_rows_and_op_profiles(phone, tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("android-adb", options={**phone["options"], "op_profiling": True, "taskset": "c0"}, runs=8)
    result = campaign.run_campaign(ARCHS, device, tmp_path / "latency", progress=False, policy=NO_SENTINEL)
    assert (result.measured, result.failed) == (2, 0)
    assert 0 < result.device_seconds < result.seconds
    rows = tables.read(tmp_path / "latency", tables.LATENCY)
    assert rows["error"].null_count() == 2 and rows["samples_ms"].list.len().to_list() == [0, 0]
    assert all(value > 0 for value in rows["mean_ms"]) and rows["iqm_ms"].null_count() == 2
    assert rows["cpu_affinity"].to_list() == [[6, 7], [6, 7]]  # the phone's cores from taskset c0, not the host's
    assert list((phone["root"] / "data/local/tmp/leti").iterdir()) == []  # the model was removed

    environment = json.loads(rows["environment"][0])
    phone_facts = environment["device"]
    assert (phone_facts["model"], phone_facts["soc"], phone_facts["android_version"]) == ("Pixel 7", "Google GS201", "14")
    assert (phone_facts["gpu_vendor"], phone_facts["gpu_renderer"]) == ("ARM", "Mali-G710")
    assert phone_facts["gl_version"].startswith("OpenGL ES 3.2") and phone_facts["opencl_version"].startswith("OpenCL 3.0")
    binary = (phone["root"] / "data/local/tmp/benchmark_model").read_bytes()
    assert phone_facts["benchmark_model_md5"] == hashlib.md5(binary).hexdigest()
    assert "cpu_model" not in environment and environment["host"]["cpu_model"]  # host facts are labelled as such
    assert environment["converter"]["litert-torch"]
    run = environment["run"]
    assert run["delegate"] == "XNNPACK" and run["delegated"] == "all"
    assert run["before"]["cpus"] == {"cpu6": {"governor": "sched_pixel", "mhz": 2850.0}, "cpu7": {"governor": "sched_pixel", "mhz": 2850.0}}
    assert set(run["before"]["thermal_c"]) >= {"BIG", "G3D", "battery"} and run["before"]["devfreq_mhz"]
    assert all(run["after"]["thermal_c"][zone] > run["before"]["thermal_c"][zone] for zone in run["before"]["thermal_c"])

    profiles = tables.read(tmp_path / "op_profiles", tables.OP_PROFILE)
    linked = profiles.join(rows, on=["arch", "device", "config_id", "measured_at"], how="inner")
    assert linked.height == profiles.height > 0 and set(linked["arch"]) == set(ARCHS)
    assert {"CONV_2D", "ADD"} <= set(profiles["op_type"])
    shares = profiles.group_by("arch").agg(pl.col("share").sum())["share"].to_list()
    assert shares == [pytest.approx(1.0, abs=0.01)] * 2

    rerun = campaign.run_campaign(ARCHS, device, tmp_path / "latency", progress=False, policy=NO_SENTINEL)
    assert rerun.skipped == 2 and tables.read(tmp_path / "op_profiles", tables.OP_PROFILE).height == profiles.height


def test_a_gpu_campaign_records_the_delegate_and_its_profile(phone, tiny_device_config, tmp_path) -> None:
    options = {**phone["options"], "use_gpu": True, "gpu_backend": "gl", "op_profiling": True}
    device = tiny_device_config("android-adb", name="pixel-gpu", options=options, runs=4)
    result = campaign.run_campaign(ARCHS[:1], device, tmp_path / "latency", progress=False, policy=NO_SENTINEL)
    assert (result.measured, result.failed) == (1, 0)
    run = json.loads(tables.read(tmp_path / "latency", tables.LATENCY)["environment"][0])["run"]
    assert (run["delegate"], run["gpu_api"], run["delegated"]) == ("GPU", "OpenGL", "all")
    profile = tables.read(tmp_path / "op_profiles", tables.OP_PROFILE)
    assert profile["op_type"].to_list() == ["TfLiteGpuDelegateV2"] and profile["share"].to_list() == [1.0]
    assert list((phone["root"] / "data/local/tmp/leti").iterdir()) == []  # pushed with the chunk, removed after its run


def test_a_phone_that_vanishes_mid_campaign_keeps_what_was_measured(phone, tiny_device_config, tmp_path, monkeypatch) -> None:
    # get-state, mkdir, describe, the push (of the chunk, or of the first cell), the first cell's shell:
    # the phone is gone after 5 commands
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "5")
    device = tiny_device_config("android-adb", options=phone["options"])
    with pytest.raises(DeviceError, match="not found"):
        campaign.measure_next_chunk(ARCHS, device, tmp_path / "store", retries=1, backoff_seconds=0.01, policy=NO_SENTINEL)
    kept = tables.read(tmp_path / "store", tables.LATENCY)
    assert kept["arch"].to_list() == ARCHS[:1]
    assert campaign.pending(ARCHS, device, tmp_path / "store") == ARCHS[1:]


def test_the_stand_in_phones_scripted_slowdown_is_detected_and_corrected(phone, tiny_device_config, tmp_path) -> None:
    """Benchmark calls: sentinel, cell, sentinel, sentinel timed again, (again) cell, sentinel. From the 3rd on, the
    phone reports every timing five times as long and thermal status 2 (throttling): the first chunk's sentinel jumps
    fivefold and stays there when timed again, so that chunk is measured again, and the corrected rows come back near the undisturbed run's. The stand-in's
    timings are this shared CPU's, so the test uses a slowdown far above their noise; the 20 % / 2 %
    figures are `benchmarks/drift.py`'s, on a quiet machine."""
    # A network big enough that benchmark_model's whole-microsecond timings resolve it (the tiny one runs in 12 us)
    device = tiny_device_config("android-adb", options=phone["options"], runs=30, input_size=16, channels=16)
    policy = SentinelPolicy(threshold=0.5, max_attempts=2)
    campaign.run_campaign(ARCHS[:1], device, tmp_path / "calm", part_size=1, progress=False, policy=policy, order_seed=None)
    (phone["root"] / ".slowdown").write_text(json.dumps({"after": 2, "runs": 100, "factor": 5.0}))
    campaign.run_campaign(ARCHS[:1], device, tmp_path / "slow", part_size=1, progress=False, policy=policy, order_seed=None)
    rows = tables.read(tmp_path / "slow", tables.LATENCY).filter(pl.col("role").is_null()).sort("measured_at")
    assert rows["attempt"].to_list() == [1, 2] and rows["drifted"].to_list() == [True, False]  # detected, measured again
    calm = reader.read_cells(tmp_path / "calm", device.name, "nb201", reader.ReadPolicy("min_ms"))
    raw = reader.read_cells(tmp_path / "slow", device.name, "nb201", reader.ReadPolicy("min_ms"))
    corrected = reader.read_cells(tmp_path / "slow", device.name, "nb201", reader.ReadPolicy("min_ms_corrected"))
    assert raw.archs == calm.archs == corrected.archs == ARCHS[:1]  # nothing lost, nothing twice
    assert all(raw.latency_ms > 2 * calm.latency_ms)  # the cell ran throttled in the end
    assert all((0.5 < corrected.latency_ms / calm.latency_ms) & (corrected.latency_ms / calm.latency_ms < 2))  # and back
    states = [json.loads(row)["state"] for row in reader.sentinel_rows(tmp_path / "slow", device.name, "nb201")["environment"]]
    assert [state["thermal_status"] for state in states] == [0, 0, 2, 2] and all(state["thermal_c"] for state in states)
