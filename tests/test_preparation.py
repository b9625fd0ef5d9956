"""Host work off the device's clock: the fx ONNX writer against torch, the artifact cache and the
preparation worker, and which lock covers what."""

from __future__ import annotations

import collections
import fcntl
import os
import tempfile
from pathlib import Path

import onnx
import pytest
import torch
from measure_helpers import NO_SENTINEL, TINY_NETWORK, tiny_device_config  # noqa: F401 (fixture)
from torch import nn

from leti.devices import BACKENDS, make_backend
from leti.devices.onnx_graph import UnsupportedGraph, verify, write_onnx
from leti.devices.onnxruntime_cpu import export_onnx
from leti.devices.torch_cpu import TorchCPU
from leti.measure import campaign, preparation
from leti.spaces import nb201
from leti.store import tables

SMALL = nb201.NetworkConfig(**TINY_NETWORK)


def random_statistics(network: nn.Module) -> nn.Module:
    """Batch norms with non-trivial statistics, so folding them into convolutions is tested."""
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(module.num_features, generator=generator))
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator))
    return network.eval()


def operators(path: Path) -> collections.Counter:
    """Operator counts of an ONNX file, without the bookkeeping nodes exporters add or drop."""
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node
                               if node.op_type not in ("Identity", "Constant"))


@pytest.mark.parametrize(("config", "cells"), [(SMALL, 4), (nb201.NetworkConfig(), 1)], ids=["tiny", "cifar10"])
def test_fx_writer_matches_the_module_and_the_torchscript_exporters_operators(config, cells, tmp_path) -> None:
    for arch in nb201.sample_valid(cells, seed=21):
        network, example = random_statistics(nb201.build_network(arch, config)), nb201.example_input(config)
        written = write_onnx(network, example, tmp_path / "fx.onnx")
        assert verify(network, example, written) < 1e-4
        export_onnx(network, example, tmp_path / "ts.onnx", 17, "torchscript")
        assert operators(written) == operators(tmp_path / "ts.onnx"), arch


def test_fx_writer_handles_nas_bench_101_cells_too(tmp_path) -> None:
    from leti.spaces import nb101

    config = nb101.NetworkConfig(input_size=8, stem_channels=8, num_stacks=2, cells_per_stack=1)
    for arch in nb101.sample_valid(3, seed=20):  # slicing, concatenation, max-pool, mean
        network, example = random_statistics(nb101.build_network(arch, config)), nb101.example_input(config)
        written = write_onnx(network, example, tmp_path / "fx.onnx")
        assert verify(network, example, written) < 1e-4
        export_onnx(network, example, tmp_path / "ts.onnx", 17, "torchscript")
        assert operators(written) == operators(tmp_path / "ts.onnx"), arch


def test_verify_catches_a_graph_that_differs_from_the_module(tmp_path) -> None:
    network = random_statistics(nb201.build_network(nb201.sample_valid(1, seed=22)[0], SMALL))
    example = nb201.example_input(SMALL)
    model = onnx.load(str(write_onnx(network, example, tmp_path / "m.onnx")))
    weight = next(init for init in model.graph.initializer if init.name.startswith("weight"))
    values = onnx.numpy_helper.to_array(weight).copy()
    weight.CopyFrom(onnx.numpy_helper.from_array(values * 1.5, weight.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ValueError, match="differs from the module"):
        verify(network, example, tmp_path / "bad.onnx")


class Unusual(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x).sum(dim=(2, 3))


def test_an_untranslatable_network_falls_back_to_torch_onnx(tmp_path) -> None:
    example = torch.randn(1, 3, 4, 4)
    with pytest.raises(UnsupportedGraph, match="sigmoid"):
        write_onnx(Unusual(), example, tmp_path / "fx.onnx")
    path = export_onnx(Unusual(), example, tmp_path / "fallback.onnx", 17, "fx")
    assert verify(Unusual(), example, path) < 1e-5 and "Sigmoid" in operators(path)


TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the worker needs a CPU the timing does not use")


@TWO_CPUS
def test_cells_are_converted_once_by_a_worker_process_and_reused(tiny_device_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "cache"))
    archs = nb201.sample_valid(3, seed=23)
    timing_cpu = max(os.sched_getaffinity(0))
    device = tiny_device_config("onnxruntime-cpu", pin_cpus=[timing_cpu])
    first = campaign.run_campaign(archs, device, tmp_path / "first", part_size=2, progress=False, policy=NO_SENTINEL)
    assert (first.measured, first.failed) == (3, 0) and 0 < first.device_seconds < first.seconds
    cached = sorted((tmp_path / "cache" / "artifacts" / "onnx").rglob("*.onnx"))
    assert len(cached) == 3
    backend = make_backend("onnxruntime-cpu")
    worker = preparation.preparer(backend, device.network, device.protocol.batch, preparation.other_cpus((timing_cpu,)))
    assert worker.alive() and worker.process.pid != os.getpid()  # the conversions ran in another process
    assert timing_cpu not in os.sched_getaffinity(worker.process.pid)  # ... on the other CPUs
    stamps = {path: path.stat().st_mtime_ns for path in cached}
    again = campaign.run_campaign(archs, device, tmp_path / "second", progress=False, prepare_ahead=False, policy=NO_SENTINEL)
    assert again.measured == 3
    assert {path: path.stat().st_mtime_ns for path in cached} == stamps  # nothing converted twice
    rows = tables.read(tmp_path / "second", tables.LATENCY)
    assert rows["error"].null_count() == 3


def test_host_backends_prepare_ahead_only_with_a_cpu_to_spare() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert not preparation.ahead(make_backend("onnxruntime-cpu"), ())  # unpinned: no CPU is the worker's
    assert preparation.ahead(make_backend("onnxruntime-cpu"), (cpus[-1],)) == (len(cpus) > 1)
    assert not preparation.ahead(make_backend("onnxruntime-cpu"), tuple(cpus))
    assert preparation.ahead(make_backend("android-adb", {"serial": "x"}), ())  # the phone times, the host is free


@TWO_CPUS
def test_a_failed_conversion_is_the_cells_error_row(tiny_device_config, tmp_path) -> None:
    archs = nb201.sample_valid(2, seed=24)
    device = tiny_device_config("onnxruntime-cpu", options={"exporter": "torchscript", "opset": 99},
                                pin_cpus=[max(os.sched_getaffinity(0))])
    rows = campaign.measure_next_chunk(archs, device, tmp_path, policy=NO_SENTINEL).rows
    assert [row["arch"] for row in rows] == archs
    assert all(row["error"].startswith("PrepareError") and "99" in row["error"] for row in rows)
    with pytest.raises(ValueError, match="exporter 'no-such-exporter'"):
        campaign.measure_next_chunk(archs, tiny_device_config("onnxruntime-cpu", options={"exporter": "no-such-exporter"}), tmp_path)


def lock_is_free(resource: str) -> bool:
    folder = Path(os.environ.get("LETI_LOCK_DIR") or tempfile.gettempdir()) / "leti-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{resource}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


class RemoteDevice(TorchCPU):
    """torch-cpu posing as a device of its own (a GPU, a phone): records whether its lock was held
    while the network was being prepared on the host and while it ran."""

    name = "remote-device"
    seen: list[tuple[str, bool]] = []

    def resource(self) -> str:
        return "remote-device-0"

    def prepare(self, network, example, workdir):
        RemoteDevice.seen.append(("prepare", lock_is_free(self.resource())))
        return super().prepare(network, example, workdir)

    def run(self, artifact, example, protocol):
        RemoteDevice.seen.append(("run", lock_is_free(self.resource())))
        return super().run(artifact, example, protocol)


def test_a_remote_devices_lock_covers_its_runs_only(tiny_device_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(BACKENDS, RemoteDevice.name, RemoteDevice)
    monkeypatch.setenv("LETI_LOCK_DIR", str(tmp_path / "locks"))
    RemoteDevice.seen = []
    campaign.measure_next_chunk(nb201.sample_valid(2, seed=25), tiny_device_config(RemoteDevice.name), tmp_path / "store", policy=NO_SENTINEL)
    assert RemoteDevice.seen == [("prepare", True), ("run", False)] * 2  # free while the host works, held while it runs
    assert lock_is_free("host-cpu")  # a remote device never takes this machine's CPU lock


def test_a_host_backend_holds_the_cpu_lock_for_the_whole_chunk(tiny_device_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LETI_LOCK_DIR", str(tmp_path / "locks"))
    seen = []

    class Watched(TorchCPU):
        name = "watched-cpu"

        def prepare(self, network, example, workdir):
            seen.append(lock_is_free("host-cpu"))
            return super().prepare(network, example, workdir)

    monkeypatch.setitem(BACKENDS, Watched.name, Watched)
    campaign.measure_next_chunk(nb201.sample_valid(2, seed=26), tiny_device_config(Watched.name), tmp_path / "store", policy=NO_SENTINEL)
    assert seen == [False, False]  # any work of the timing process would disturb the host's timings


def test_prepared_artifacts_depend_on_what_shapes_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path))
    arch = nb201.sample_valid(1, seed=27)[0]
    onnx17 = make_backend("onnxruntime-cpu")
    paths = {
        preparation.artifact_path(onnx17, SMALL, 1, arch),
        preparation.artifact_path(make_backend("onnxruntime-cpu", {"opset": 18}), SMALL, 1, arch),
        preparation.artifact_path(onnx17, nb201.NetworkConfig(), 1, arch),
        preparation.artifact_path(onnx17, SMALL, 2, arch),
    }
    assert len(paths) == 4
    # the optimization level and the threads shape the timing, not the file
    assert preparation.artifact_path(make_backend("onnxruntime-cpu", {"optimization": "basic"}), SMALL, 1, arch) \
        == preparation.artifact_path(onnx17, SMALL, 1, arch)
    # every phone and GPU setting shares one .tflite per cell
    phone = make_backend("android-adb", {"serial": "a", "use_gpu": True})
    assert preparation.artifact_path(phone, SMALL, 1, arch) == preparation.artifact_path(make_backend("android-adb", {"serial": "b"}), SMALL, 1, arch)
