"""Every backend follows one protocol; the ones that run here are timed for real."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from measure_helpers import NO_SENTINEL, FAST_PROTOCOL, TINY_NETWORK, tiny_device_config  # noqa: F401 (fixture)

from leti.devices import BACKENDS, Protocol, UnknownBackendError, make_backend
from leti.devices.base import Timing, pinned, time_callable
from leti.devices.config import DeviceConfig
from leti.devices.onnxruntime_cpu import OnnxRuntimeCPU
from leti.errors import BackendUnavailableError, DeviceError
from leti.measure import campaign
from leti.spaces import nb201

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
SMALL = nb201.NetworkConfig(**TINY_NETWORK)


def test_registry_has_every_backend() -> None:
    assert set(BACKENDS) == {"torch-cpu", "onnxruntime-cpu", "tflite-cpu", "torch-cuda", "android-adb"}


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime-cpu"])
def test_cpu_backends_time_a_real_network(backend: str, tmp_path) -> None:
    protocol = Protocol(threads=1, warmup_runs=2, warmup_seconds=0.01, runs=6)
    timing = make_backend(backend).benchmark(nb201.build_network(ARCH, SMALL), nb201.example_input(SMALL), protocol, tmp_path)
    assert len(timing.samples_ms) == 6 and all(s > 0 for s in timing.samples_ms)
    assert not list(tmp_path.iterdir())  # the exported model file is removed after the run


def test_onnxruntime_sets_the_thread_count_explicitly(tmp_path) -> None:
    backend = OnnxRuntimeCPU()
    model = backend.prepare(nb201.build_network(ARCH, SMALL), nb201.example_input(SMALL), tmp_path)
    options = backend.session(model, threads=2).get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def test_onnxruntime_rejects_an_unknown_optimization_level() -> None:
    with pytest.raises(ValueError, match="optimization 'max'"):
        make_backend("onnxruntime-cpu", {"optimization": "max"}).check()


def test_timing_protocol_warms_up_by_count_and_time_and_synchronizes() -> None:
    calls = {"step": 0, "sync": 0}

    def step() -> None:
        calls["step"] += 1

    def sync() -> None:
        calls["sync"] += 1

    timing = time_callable(step, Protocol(warmup_runs=3, warmup_seconds=0.02, runs=4), synchronize=sync)
    assert len(timing.samples_ms) == 4
    assert calls["step"] > 3 + 4  # count warm-up, then time warm-up ran at least once more
    assert calls["sync"] == 2 * 4 + 1  # before and after each timed run, and once to end the warm-up
    assert timing.warmup_ms >= 20  # the time-based warm-up is part of the device's time
    assert timing.device_seconds == pytest.approx(timing.timed_seconds + timing.warmup_ms / 1000)


def test_timing_summarises_its_samples_or_the_reported_aggregates() -> None:
    # Samples 1 2 3 4 (in any order): median, mean and IQM (quartiles 1.75 and 3.25 keep 2 and 3)
    # are 2.5; sample std sqrt((1.5² + 0.5²) · 2 / 3) = sqrt(5 / 3); CV sqrt(5 / 3) / 2.5 = 0.516.
    timing = Timing([4.0, 1.0, 3.0, 2.0])
    summary = timing.summary(cv_threshold=0.5)
    assert (summary.median_ms, summary.iqm_ms, summary.mean_ms, summary.min_ms) == (2.5, 2.5, 2.5, 1.0)
    assert summary.std_ms == pytest.approx(math.sqrt(5 / 3)) and summary.cv == pytest.approx(math.sqrt(5 / 3) / 2.5)
    assert summary.unstable and not timing.summary(cv_threshold=0.52).unstable
    assert timing.timed_seconds == pytest.approx(0.010)
    # A tool's aggregates only: no IQM without samples, its median when it printed one, CV = std / avg.
    reported = {"count": 50, "avg_ms": 2.0, "std_ms": 0.1, "min_ms": 1.8, "max_ms": 2.5, "median_ms": 1.95}
    summary = Timing([], reported=reported).summary(cv_threshold=0.04)
    assert (summary.median_ms, summary.iqm_ms, summary.mean_ms, summary.min_ms, summary.std_ms) == (1.95, None, 2.0, 1.8, 0.1)
    assert summary.cv == pytest.approx(0.05) and summary.unstable
    assert Timing([], reported=reported).timed_seconds == pytest.approx(0.1)  # 50 runs of 2 ms
    assert Timing([], reported={k: v for k, v in reported.items() if k != "median_ms"}).summary(0.1).median_ms is None


def test_unstable_flag_follows_the_cv_threshold() -> None:
    assert Timing([1.0, 1.0, 3.0]).summary(cv_threshold=0.1).unstable
    assert not Timing([1.0, 1.0, 1.01]).summary(cv_threshold=0.1).unstable


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_pinning_sets_and_restores_affinity() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with pinned((cpu,)):
        assert os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="cannot use"), pinned((10_000,)):
        pass


def test_rows_record_threads_affinity_environment_and_versions(tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("onnxruntime-cpu", pin_cpus=[min(os.sched_getaffinity(0))])
    row = campaign.measure_next_chunk([ARCH], device, tmp_path, policy=NO_SENTINEL).rows[0]
    assert row["error"] is None and row["threads"] == 1
    assert row["cpu_affinity"] == [min(os.sched_getaffinity(0))]
    environment = json.loads(row["environment"])
    assert environment["libraries"]["onnxruntime"] and environment["cpu_model"]
    assert "governor" in environment and environment["backend"] == "onnxruntime-cpu"


def test_unknown_backend_in_params_is_named() -> None:
    with pytest.raises(UnknownBackendError, match="device 'phone' .* unknown backend 'tflite-gpu'"):
        DeviceConfig.from_params("phone", {"backend": "tflite-gpu"}, FAST_PROTOCOL)


def test_a_missing_converter_environment_is_one_clear_error(tmp_path, monkeypatch) -> None:
    make_backend("tflite-cpu").check()  # `make install` created it
    monkeypatch.setenv("LETI_TFLITE_VENV", str(tmp_path / "missing"))
    with pytest.raises(BackendUnavailableError, match=r"missing or outdated: run `make install`"):
        make_backend("tflite-cpu").check()


def test_tflite_cpu_times_a_real_network(tmp_path) -> None:
    protocol = Protocol(threads=1, warmup_runs=1, runs=5)
    timing = make_backend("tflite-cpu").benchmark(nb201.build_network(ARCH, SMALL), nb201.example_input(SMALL), protocol, tmp_path)
    assert len(timing.samples_ms) == 5 and min(timing.samples_ms) > 0


def test_torch_cuda_without_a_gpu_is_a_device_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no CUDA device"):
        make_backend("torch-cuda").check()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_torch_cuda_times_a_real_network(tmp_path) -> None:
    backend = make_backend("torch-cuda")
    backend.check()
    protocol = Protocol(warmup_runs=3, runs=10)
    timing = backend.benchmark(nb201.build_network(ARCH), nb201.example_input(), protocol, tmp_path)
    assert len(timing.samples_ms) == 10 and min(timing.samples_ms) > 0
    assert json.loads(json.dumps(backend.environment(), default=str))["gpu"]
