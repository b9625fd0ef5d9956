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


def test_summary_statistics_of_an_even_sample() -> None:
    # Sorted: 1 2 3 4 10 12 13 20. Median (4 + 10) / 2; mean 65 / 8. Quartiles by linear
    # interpolation: 25 % at position 1.75 (2.75), 75 % at 5.25 (12.25), so the IQM is the mean of
    # 3, 4, 10, 12. Squared deviations from 8.125 sum to 314.875: sample std sqrt(314.875 / 7).
    summary = summarize([13.0, 1.0, 20.0, 4.0, 12.0, 2.0, 10.0, 3.0], cv_threshold=0.8)
    assert summary.median_ms == 7.0
    assert summary.min_ms == 1.0
    assert summary.mean_ms == 8.125
    assert summary.iqm_ms == 7.25
    assert math.isclose(summary.std_ms, math.sqrt(314.875 / 7))  # 6.7069
    assert math.isclose(summary.cv, math.sqrt(314.875 / 7) / 8.125)  # 0.8255
    assert summary.unstable  # 0.8255 > 0.8
    assert not summarize([13.0, 1.0, 20.0, 4.0, 12.0, 2.0, 10.0, 3.0], cv_threshold=0.83).unstable
    assert interquartile_mean([1.0, 2.0, 3.0, 4.0]) == 2.5  # quartiles 1.75 and 3.25 keep 2 and 3
    assert summarize([3.0], cv_threshold=0.1).std_ms == 0.0  # one sample: no spread


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
