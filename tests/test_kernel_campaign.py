"""Kernel campaigns on real backends: one-kernel modules run what they claim, a campaign appends and
resumes, replicated kernels are divided back, fusion decisions follow the measured savings, and the
stand-in phone runs the same campaign (tests/fakes: no phone was reachable)."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from measure_helpers import FAST_PROTOCOL, phone, tiny_device_config  # noqa: F401 (fixtures)

from leti.features import kernels as K
from leti.measure import kernels as M
from leti.store import reader, tables


@pytest.mark.parametrize("kernel_type", M.campaign_types({pair: True for pair in M.fusion_pairs()}) + M.campaign_types({}))
def test_every_sampled_kernel_builds_and_runs_at_its_configuration(kernel_type: str) -> None:
    for kernel in M.Sampler(3).sample(kernel_type, 2):
        module, example = M.build(kernel)
        inputs = example if isinstance(example, tuple) else (example,)
        with torch.inference_mode():
            out = module(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        c = kernel.config
        if kernel.kinds[0] in (*K.CONV_KINDS, "maxpool", "avgpool"):
            assert tuple(out.shape[2:]) == (c["hout"], c["wout"]), kernel.key
        if kernel.kinds[0] in K.CONV_KINDS:
            assert out.shape[1] == c["cout"]
        if "add" in kernel.kinds[1:]:
            assert len(inputs) == 2  # the residual is an input, not a constant a runtime could fold


def test_an_adaptive_rounds_neighbours_of_a_grouped_conv_build() -> None:
    """Neighbours scale channels in and out apart; a grouped conv's must still split into whole groups
    (a full campaign's adaptive round once stopped on one that did not)."""
    grouped = K.make_kernel("conv+bn", batch=1, cin=96, hin=28, win=28, cout=192, hout=28, wout=28, kernel=3, kernel_w=3,
                            stride=1, groups=12)
    neighbours = [n for seed in range(40) for n in M.nearby(grouped, 4, seed)]
    assert neighbours and {n.config["groups"] for n in neighbours} == {12}
    assert {n.config["cout"] for n in neighbours} != {192}  # channels did move
    for kernel in neighbours:
        M.build(kernel)  # raises on channels that are not whole groups


def test_chains_split_by_the_rules_give_the_campaigns_kernel_types() -> None:
    assert M.chain_types(("conv", "bn", "add", "relu"), {}) == ["conv", "bn", "add", "relu"]
    ort_like = {("conv", "bn"): True, ("conv", "relu"): True}
    assert M.chain_types(("conv", "bn", "add", "relu"), ort_like) == ["conv+bn", "add", "relu"]
    assert M.chain_types(("conv", "bn", "relu"), ort_like) == ["conv+bn+relu"]
    assert "conv+bn+relu" in M.campaign_types(ort_like) and "conv+bn+relu" not in M.campaign_types({})


def test_the_rule_is_the_median_saving_over_the_cases() -> None:
    rows = pl.DataFrame({"first": ["conv"] * 3 + ["fc"] * 2, "second": ["bn"] * 3 + ["relu"] * 2,
                         "saving": [0.9, 0.2, 0.8, 0.1, 0.3], "threshold": [0.5] * 5})
    assert M.rules_from_rows(rows) == {("conv", "bn"): True, ("fc", "relu"): False}


def test_a_campaign_appends_resumes_and_divides_replicas_back(tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("torch-cpu", runs=5)
    campaign = M.Campaign(per_type=3, adaptive_rounds=1, adaptive_share=0.7, fusion_cases=1, fusion_repeats=2,
                          types=("pwconv", "relu"), pairs=(("pwconv", "relu"),), replica_bytes=4_000_000, chunk_size=5)
    first = M.run_campaign(device, tmp_path / "kernels", tmp_path / "rules", campaign)
    rows = tables.read(tmp_path / "kernels", tables.KERNEL_LATENCY)
    assert rows["error"].null_count() == rows.height and set(first["types"]) == {"pwconv", "relu"}
    assert set(rows["campaign"]) == {"fusion", "sample", "adaptive", "empty"}
    parts = list((tmp_path / "kernels" / "torch-cpu").glob("part-*.parquet"))
    assert len(parts) == rows.filter(pl.col("campaign") == "empty").height  # each chunk: one part, one overhead row
    fusion = rows.filter(pl.col("campaign") == "fusion")
    assert fusion.height == 2 * 3 and fusion["kernel_key"].str.ends_with("#1").sum() == 3  # three test models, two passes
    assert rows.filter(pl.col("campaign") == "sample").height == 6 and first["measured"] == rows.height - len(parts)
    assert rows.filter(pl.col("campaign") == "empty")["replicas"].to_list() == [1] * len(parts)
    assert rows.filter(pl.col("kernel_type") == "relu")["replicas"].max() > 1  # small kernels run side by side

    data = reader.read_kernels(tmp_path / "kernels" / "torch-cpu", configuration=first["config_id"])
    expected = (data.table["latency_ms"] - data.overhead_ms) / data.table["replicas"]
    assert data.table["own_ms"].to_list() == pytest.approx(expected.to_list())
    assert data.repeats == 3 and data.table.height == rows.height - len(parts) - 3

    again = M.run_campaign(device, tmp_path / "kernels", tmp_path / "rules", campaign)
    assert again["measured"] == 0 and tables.read(tmp_path / "kernels", tables.KERNEL_LATENCY).height == rows.height
    assert tables.read(tmp_path / "rules", tables.FUSION_RULES).height == 1  # decided once


def test_another_replication_is_another_configuration(tiny_device_config) -> None:
    device = tiny_device_config("onnxruntime-cpu")
    assert M.config_id(device) != M.config_id(device, M.Replication(1_000_000))
    assert M.config_id(device) == M.config_id(tiny_device_config("onnxruntime-cpu", **{"input_size": 16}))  # no network in it


def test_kernels_timed_with_their_edge_conversions_known_are_another_configuration(tiny_device_config, monkeypatch) -> None:
    from leti.devices.base import Backend
    from leti.devices.onnxruntime_cpu import OnnxRuntimeCPU

    with_edges = M.config_id(tiny_device_config("onnxruntime-cpu"))
    monkeypatch.setattr(OnnxRuntimeCPU, "edge_ms", Backend.edge_ms)  # as before ONNX Runtime reported them
    assert M.config_id(tiny_device_config("onnxruntime-cpu")) != with_edges


def test_the_stand_in_phone_runs_the_kernel_campaign(phone, tiny_device_config, tmp_path) -> None:
    """The android-adb path end to end: each kernel converted to .tflite (a two-input add too), pushed
    and timed by the stand-in's benchmark_model; its rows describe the phone."""
    device = tiny_device_config("android-adb", options=phone["options"], runs=4)
    campaign = M.Campaign(per_type=1, adaptive_rounds=0, types=("add",), pairs=())
    summary = M.run_campaign(device, tmp_path / "kernels", tmp_path / "rules", campaign)
    rows = tables.read(tmp_path / "kernels", tables.KERNEL_LATENCY)
    assert (summary["measured"], summary["failed"]) == (1, 0)
    assert set(rows["kernel_type"]) == {"add", "empty"} and rows["error"].null_count() == 2
    assert all(value > 0 for value in rows["mean_ms"]) and rows["samples_ms"].list.len().to_list() == [0, 0]  # the tool's aggregates
    assert '"model": "Pixel 7"' in rows["environment"][0]
    assert list((phone["root"] / "data/local/tmp/leti").iterdir()) == []


def test_the_thread_clock_counts_the_threads_cpu_time_not_its_waits() -> None:
    import time

    from leti.devices.base import Protocol, time_callable

    wall = time_callable(lambda: time.sleep(0.02), Protocol(runs=3, warmup_runs=0))
    thread = time_callable(lambda: time.sleep(0.02), Protocol(runs=3, warmup_runs=0, clock="thread"))
    assert min(wall.samples_ms) >= 19 and max(thread.samples_ms) < 5  # a sleeping thread uses no CPU
    with pytest.raises(ValueError, match="needs threads: 1"):
        Protocol(threads=2, clock="thread")
    with pytest.raises(ValueError, match="clock 'gpu' is not one of"):
        Protocol(clock="gpu")
    assert "clock" not in Protocol().identity() and Protocol(clock="thread").identity()["clock"] == "thread"


def test_a_phone_cannot_be_timed_by_this_hosts_clock(phone) -> None:
    from leti.devices.config import DeviceConfig

    with pytest.raises(ValueError, match="clock 'thread' times this host's CPU"):
        DeviceConfig.from_params("pixel", {"backend": "android-adb", "options": phone["options"], "clock": "thread"}, FAST_PROTOCOL)


def test_leti_measure_kernels_names_a_bad_device_or_campaign_in_one_line(tmp_path, capsys) -> None:
    import yaml

    from leti.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"devices": {"cpu": {"backend": "torch-cpu"}}, "kernels": {"campaign": "small", "campaigns": {"small": {}}}}))
    for arguments, expected in ((["--device", "gpu"], "unknown device 'gpu'"), (["--device", "cpu", "--campaign", "huge"],
                                                                                 "unknown kernel campaign 'huge'")):
        code = main(["measure-kernels", *arguments, "--params", str(params), "--kernels", str(tmp_path / "k"), "--rules", str(tmp_path / "r")])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(error) == 1 and expected in error[0]
    assert not (tmp_path / "k").exists()


def test_onnx_runtimes_layout_conversions_at_a_models_edges_are_not_the_kernels_own_time(tiny_device_config, tmp_path) -> None:
    """A one-kernel ONNX Runtime model converts into and out of NCHWc in every run; a network does it
    once. The conversions are profiled (``edge_ms``) exactly when the runtime's optimised graph has
    them, and left out of the kernel's own time."""
    import onnx
    import onnxruntime as ort

    from leti.devices.onnxruntime_cpu import LAYOUT_NODES, export_onnx

    dwconv = K.make_kernel("dwconv+bn", batch=1, cin=256, hin=28, win=28, cout=256, hout=28, wout=28, kernel=3, kernel_w=3,
                           stride=1, groups=256)
    relu = K.make_kernel("relu", batch=1, cin=64, hin=28, win=28)
    device = tiny_device_config("onnxruntime-cpu", runs=5)
    M.measure([dwconv, relu], device, tmp_path / "kernels", "sample")
    data = reader.read_kernels(tmp_path / "kernels" / "onnxruntime-cpu")
    edge = dict(zip(data.table["kernel_type"], data.table["edge_ms"]))

    def reorders(kernel: K.Kernel) -> int:
        module, example = M.build(kernel)
        export_onnx(module.eval(), example, tmp_path / "k.onnx", 17, "fx")
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(tmp_path / "k.onnx"), options, providers=["CPUExecutionProvider"])
        return sum(node.op_type in LAYOUT_NODES for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)

    assert (edge["dwconv+bn"] > 0) == (reorders(dwconv) > 0)
    assert edge["relu"] == 0 and reorders(relu) == 0
    expected = data.table["latency_ms"] - data.overhead_ms - data.table["edge_ms"]
    assert data.table["own_ms"].to_list() == pytest.approx(expected.to_list())


def test_layout_time_is_each_reorder_nodes_median_run_summed() -> None:
    from leti.devices.onnxruntime_cpu import layout_ms

    def node(name: str, op: str, microseconds: float) -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": microseconds, "args": {"op_name": op}}

    events = [node("in", "ReorderInput", 900), node("conv", "Conv", 5000), node("out", "ReorderOutput", 50),  # a warm-up run
              *(node("in", "ReorderInput", us) for us in (10, 30, 20)), *(node("out", "ReorderOutput", us) for us in (5, 5, 8)),
              node("conv", "Conv", 4000), {"cat": "Session", "name": "model_run", "dur": 9000}]
    assert layout_ms(events, skip=1) == pytest.approx((20 + 5) / 1000)


def test_a_kernel_table_from_before_edge_times_reads_with_none(tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("torch-cpu", runs=3)
    M.measure([K.make_kernel("relu", batch=1, cin=16, hin=8, win=8)], device, tmp_path / "kernels", "sample")
    folder = tmp_path / "kernels" / "torch-cpu"
    for part in folder.glob("part-*.parquet"):  # as a store written before the column existed
        pl.read_parquet(part).drop("edge_ms").write_parquet(part)
    data = reader.read_kernels(folder)
    assert data.table["edge_ms"].to_list() == [0.0]
    assert data.table["own_ms"][0] == pytest.approx(data.table["latency_ms"][0] - data.overhead_ms)
