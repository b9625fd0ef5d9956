"""The torch-cpu backend times a real network; summaries follow their definitions."""

import math
import os

import pytest
import torch

from leti.devices import Protocol, UnknownBackendError, make_backend
from leti.devices.base import host_environment, interquartile_mean, summarize
from leti.spaces import nb201

SMALL = nb201.NetworkConfig(input_size=16, channels=8, cells_per_stage=1)


def test_torch_cpu_times_a_real_network(tmp_path) -> None:
    backend = make_backend("torch-cpu")
    network = nb201.build_network("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|", SMALL)
    protocol = Protocol(threads=1, warmup_runs=2, warmup_seconds=0.01, runs=7)
    threads_before = torch.get_num_threads()
    samples = backend.measure(network, nb201.example_input(SMALL), protocol, tmp_path)
    assert len(samples) == 7
    assert all(isinstance(s, float) and s > 0 for s in samples)
    assert torch.get_num_threads() == threads_before  # the backend restores the thread count
    summary = summarize(samples, protocol.cv_threshold)
    assert summary.min_ms <= summary.median_ms <= max(samples)
    assert summary.min_ms <= summary.iqm_ms <= max(samples)


def test_summary_statistics() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 100.0]
    summary = summarize(samples, cv_threshold=0.5)
    assert summary.median_ms == 3.0
    assert summary.min_ms == 1.0
    assert summary.mean_ms == 22.0
    assert summary.iqm_ms == 3.0  # 2, 3, 4 lie between the quartiles; the outlier is ignored
    assert math.isclose(summary.std_ms, 43.6176, rel_tol=1e-4)
    assert math.isclose(summary.cv, summary.std_ms / 22.0)
    assert summary.unstable
    assert not summarize([2.0, 2.0, 2.0], cv_threshold=0.01).unstable
    assert interquartile_mean([5.0]) == 5.0


def test_unknown_backend_is_named() -> None:
    with pytest.raises(UnknownBackendError, match="unknown backend 'tpu-v9'"):
        make_backend("tpu-v9")


def test_invalid_protocol_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid timing protocol"):
        Protocol(runs=0)


def test_environment_names_the_processor_and_libraries() -> None:
    env = host_environment()
    assert env["torch"] == torch.__version__
    assert env["cpu_count"] == os.cpu_count()
    assert env["cpu_model"]
