"""`leti measure-model`: real torchvision classifiers, ONNX and .tflite files timed on real backends
(small inputs so each run takes milliseconds), their rows, costs, passes and resume, and bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from measure_helpers import FAST_PROTOCOL, TINY_NETWORK, phone, tiny_device_config  # noqa: F401 (fixtures)

from leti import networks
from leti.cli import main
from leti.devices import make_backend
from leti.measure import named_models, preparation
from leti.spaces import nb201
from leti.spaces.base import count_flops, count_params
from leti.store import tables
from leti.torchvision_compat import import_torchvision

SMALL = (3, 32, 32)


def test_torchvision_classifiers_import_on_this_torch_and_build_without_downloads() -> None:
    torchvision = import_torchvision()
    names = networks.torchvision_names()
    assert {"resnet18", "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0", "squeezenet1_1", "regnet_y_400mf"} <= set(names)
    model = networks.load(networks.resolve("mobilenet_v3_small"), batch=2, input_shape=SMALL)
    assert model.network is not None and tuple(model.example.shape) == (2, *SMALL)
    assert model.flops == count_flops(model.network, model.example) > 0 and model.params == count_params(model.network)
    assert model.details["torchvision"] == torchvision.__version__.split("+")[0]
    again = networks.load(networks.resolve("mobilenet_v3_small"), batch=1, input_shape=SMALL)
    assert again.digest == model.digest  # the definition, not the input or the random weights
    assert networks.load(networks.resolve("mobilenet_v3_large"), 1, SMALL).digest != model.digest


def test_passes_are_appended_resumed_and_profiled(tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("torch-cpu")
    sources = [networks.resolve("squeezenet1_1"), networks.resolve("mobilenet_v3_small")]
    first = named_models.measure_models(sources, device, tmp_path / "store", SMALL, passes=2, op_profile=True, progress=False)
    assert [(r.model, r.pass_number) for r in first] == [("squeezenet1_1", 1), ("mobilenet_v3_small", 1),
                                                         ("squeezenet1_1", 2), ("mobilenet_v3_small", 2)]
    rows = tables.read(tmp_path / "store", tables.LATENCY)
    assert rows.height == 4 and rows["error"].null_count() == 4 and set(rows["space"]) == {networks.SPACE}
    assert rows["input_shape"].to_list()[0] == [1, *SMALL]
    assert all(len(samples) == FAST_PROTOCOL["runs"] for samples in rows["samples_ms"])
    assert rows["model_digest"].str.len_chars().to_list() == [64] * 4 and rows["flops"].min() > 0
    profiles = tables.read(tmp_path / "op_profiles", tables.OP_PROFILE)
    linked = profiles.join(rows, on=["arch", "device", "config_id", "measured_at"], how="inner")
    assert linked.height == profiles.height > 0
    assert profiles.filter(pl.col("op_type").str.contains("conv")).height
    shares = profiles.group_by("arch", "measured_at").agg(pl.col("share").sum())["share"].to_list()
    assert shares == [pytest.approx(1.0, abs=1e-6)] * 4

    assert named_models.measure_models(sources, device, tmp_path / "store", SMALL, passes=2, progress=False) == []
    third = named_models.measure_models(sources[:1], device, tmp_path / "store", SMALL, passes=3, progress=False)
    assert [(r.model, r.pass_number) for r in third] == [("squeezenet1_1", 3)]
    bigger = named_models.measure_models(sources[:1], device, tmp_path / "store", (3, 48, 48), passes=1, progress=False)
    assert len(bigger) == 1  # another input shape is another configuration


def test_onnx_and_tflite_files_run_on_their_backends_with_the_flops_torch_counts(tiny_device_config, tmp_path) -> None:
    model = networks.load(networks.resolve("squeezenet1_1"), 1, SMALL)
    onnx_file = make_backend("onnxruntime-cpu").write_artifact(model.network, model.example, tmp_path / "squeeze.onnx")
    from_onnx = networks.load(networks.resolve(str(onnx_file)), 1)
    assert from_onnx.source.name == "squeeze" and from_onnx.flops == model.flops
    assert list(from_onnx.example.shape) == [1, *SMALL]

    tflite_backend = make_backend("tflite-cpu")
    tflite_backend.check()
    config = nb201.NetworkConfig(**TINY_NETWORK)
    arch = nb201.sample_valid(2, seed=9)[0]  # converted by the android tests too: the session's cache has it
    tflite_file = preparation.prepare_artifact(tflite_backend, config, 1, arch)
    from_tflite = networks.load(networks.resolve(str(tflite_file), name="nb201-cell"), 1)
    assert from_tflite.flops == nb201.count_flops(nb201.build_network(arch, config), nb201.example_input(config))

    store = tmp_path / "store"
    [onnx_row] = named_models.measure_models([from_onnx.source], tiny_device_config("onnxruntime-cpu"), store, progress=False)
    [tflite_row] = named_models.measure_models([from_tflite.source], tiny_device_config("tflite-cpu"), store, progress=False)
    assert onnx_row.error is None and tflite_row.error is None
    rows = tables.read(store, tables.LATENCY)
    assert set(rows["arch"]) == {"squeeze", "nb201-cell"}
    assert set(rows["model_digest"]) == {networks.sha256_file(onnx_file), networks.sha256_file(tflite_file)}
    environment = json.loads(rows.filter(pl.col("arch") == "squeeze")["environment"][0])
    assert environment["model"]["source"] == "onnx" and environment["libraries"]["onnxruntime"]


def test_a_torchvision_network_converts_for_a_phone_and_runs_on_the_stand_in(phone, tiny_device_config, tmp_path) -> None:
    """The stand-in adb (tests/fakes/adb) plays the phone; the network goes through litert-torch as a
    torch.fx graph, since the converter's environment has no torchvision."""
    root = phone["root"]
    device = tiny_device_config("android-adb", options={**phone["options"], "op_profiling": True})
    [result] = named_models.measure_models([networks.resolve("squeezenet1_1")], device, tmp_path / "store", SMALL,
                                           progress=False)
    assert result.error is None and result.row["mean_ms"] > 0 and result.row["samples_ms"] == []
    profiles = tables.read(tmp_path / "op_profiles", tables.OP_PROFILE)
    assert {"CONV_2D", "MAX_POOL_2D", "CONCATENATION"} <= set(profiles["op_type"])
    assert list((root / "data/local/tmp/leti").iterdir()) == []  # the model was removed from the phone


@pytest.mark.parametrize(("args", "words"), [
    (["torch-cpu", "resnet"], ["unknown model 'resnet'", "resnet18"]),
    (["torch-cpu", "{file}"], ["tflite file cannot run on device 'torch-cpu'", "tflite-cpu"]),
    (["torch-cpu", "missing.onnx"], ["missing.onnx: no such onnx file"]),
    (["no-such-device", "resnet18"], ["unknown device 'no-such-device'"]),
])
def test_bad_input_fails_in_one_line_naming_it(args, words, tmp_path, capsys) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"devices": {"torch-cpu": {"backend": "torch-cpu"}}}))
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer")
    model = args[1].format(file=tmp_path / "model.tflite")
    code = main(["measure-model", "--device", args[0], model, "--params", str(tmp_path / "params.yaml"),
                 "--store", str(tmp_path / "store"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert all(word in error for word in words), error


def test_a_network_that_cannot_run_at_the_input_is_refused_before_anything_is_timed(tmp_path, capsys) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"devices": {"torch-cpu": {"backend": "torch-cpu", **FAST_PROTOCOL}}}))
    code = main(["measure-model", "--device", "torch-cpu", "squeezenet1_1", "--input-shape", "3,8,8", "--params",
                 str(tmp_path / "params.yaml"), "--store", str(tmp_path / "store"), "--no-progress"])
    printed = capsys.readouterr()
    assert code == 2 and "squeezenet1_1: cannot run at input [1, 3, 8, 8]" in printed.err  # too small for its pooling
    assert tables.read(tmp_path / "store", tables.LATENCY).is_empty()
