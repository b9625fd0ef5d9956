"""Kernel predictors: each family fits, saves without pickles and loads back; a network's prediction
is the overhead plus its kernels; a kernel type nobody measured is one error naming it; and
`leti predict-model` keeps its contract (one JSON line per model, one stderr line per bad one)."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from leti.features import kernels as K
from leti.predictors.kernels import REGRESSORS, KernelPredictor, KernelRegressor, MissingKernelPredictor, kernel_scores


def roofline_kernels(count: int = 60, seed: int = 0) -> tuple[list[K.Kernel], np.ndarray]:
    """Convolutions and ReLUs whose time is a known roofline: 0.01 ms + 1 ms per GFLOP + 0.2 ms per MB."""
    rng = np.random.default_rng(seed)
    kernels = []
    for _ in range(count):
        size, channels = int(rng.choice([7, 14, 28, 56])), int(rng.choice([16, 32, 64, 128]))
        kernels.append(K.make_kernel("conv", batch=1, cin=channels, hin=size, win=size, cout=channels, hout=size, wout=size,
                                     kernel=3, kernel_w=3, stride=1, groups=1))
        kernels.append(K.make_kernel("relu", batch=1, cin=channels, hin=size, win=size))
    cost = np.array([[K.costs(k)["flops"], K.costs(k)["bytes"]] for k in kernels])
    return kernels, 0.01 + cost[:, 0] / 1e9 + 0.2 * cost[:, 1] / 1e6


@pytest.mark.parametrize("family", REGRESSORS)
def test_each_family_learns_a_roofline_and_loads_back_from_json_only(family: str, tmp_path) -> None:
    kernels, own = roofline_kernels()
    predictor = KernelPredictor(family).fit(kernels[:80], own[:80], {("conv", "relu"): False}, overhead_ms=0.002)
    held_out = predictor.predict_kernels(kernels[80:])
    assert kernel_scores(own[80:], held_out)["wape"] < (1.0 if family == "linear" else 25.0)
    predictor.save(tmp_path / family)
    files = sorted(p.name for p in (tmp_path / family).rglob("*") if p.is_file())
    assert all(name.endswith(".json") for name in files)  # portable: no pickle anywhere
    loaded = KernelPredictor.load(tmp_path / family)
    assert np.allclose(loaded.predict_kernels(kernels[80:]), held_out)
    assert loaded.rules == {("conv", "relu"): False} and loaded.overhead_ms == 0.002


def test_a_network_is_the_overhead_plus_its_kernels_and_unknown_types_are_named() -> None:
    kernels, own = roofline_kernels()
    predictor = KernelPredictor("linear").fit(kernels, own, {}, overhead_ms=0.005)
    graph = K.torch_graph(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)),
                          torch.randn(1, 16, 28, 28), "two-convs")
    breakdown = predictor.predict_graph(graph)
    assert [k.type for k in breakdown.kernels] == ["conv", "relu", "conv"]
    assert breakdown.predicted_ms == pytest.approx(0.005 + breakdown.kernel_ms.sum())
    with_pool = K.torch_graph(nn.Sequential(nn.Conv2d(16, 16, 3), nn.MaxPool2d(2)), torch.randn(1, 16, 28, 28), "pooled")
    with pytest.raises(MissingKernelPredictor, match="no predictor for kernel type maxpool"):
        predictor.predict_graph(with_pool)


def test_predicting_before_fit_raises_and_an_unknown_family_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        KernelPredictor("xgboost").predict_kernels(roofline_kernels(2)[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        KernelRegressor("mlp").predict(np.zeros((1, len(K.FEATURE_NAMES))))
    with pytest.raises(KeyError, match="unknown kernel regressor 'forest'"):
        KernelPredictor("forest")


@pytest.fixture
def predictor_folder(tmp_path):
    """Linear kernel predictors for the kinds of a small CNN, fitted on a roofline (no device needed)."""
    rng = np.random.default_rng(1)
    kernels = []
    for kind in ("conv", "pwconv", "relu", "maxpool", "gap", "reshape", "fc", "concat"):
        for _ in range(6):
            size, channels = int(rng.choice([8, 16, 32])), int(rng.choice([16, 32, 64]))
            fields = {"batch": 1, "cin": channels, "hin": size, "win": size}
            if kind in ("conv", "pwconv", "maxpool"):
                fields.update(cout=channels if kind != "maxpool" else 0, hout=size // 2, wout=size // 2, kernel=3, kernel_w=3, stride=2, groups=1)
            if kind == "fc":
                fields = {"batch": 1, "hin": 1, "cin": channels, "cout": 10}
            kernels.append(K.make_kernel(kind, **fields))
    own = np.array([1e-4 + K.costs(k)["flops"] / 5e9 for k in kernels])
    return KernelPredictor("linear").fit(kernels, own, {}, overhead_ms=0.003).save(tmp_path / "predictor")


def test_predict_model_prints_a_line_per_model_and_names_each_bad_one(predictor_folder, tmp_path, capsys) -> None:
    from leti.cli import main

    network = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = tmp_path / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False)
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    code = main(["predict-model", "--device", "cpu", "--model", str(predictor_folder), "squeezenet1_1", str(path),
                 "nosuchnet", str(tmp_path / "broken.onnx"), "swin_t", "--input-shape", "3,32,32"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["model"] for line in lines] == ["squeezenet1_1", str(path)]
    assert all(set(line) == {"model", "device", "predicted_ms", "kernels"} and line["predicted_ms"] > 0.003 for line in lines)
    assert lines[1]["kernels"] == 5  # conv, relu, gap, reshape, fc
    errors = err.strip().splitlines()
    assert code == 1 and len(errors) == 3
    assert "nosuchnet" in errors[0] and "broken.onnx" in errors[1] and "not a readable ONNX file" in errors[1]
    assert "swin_t" in errors[2] and "no predictor for kernel types" in errors[2] and "shifted_window_attention" in errors[2]


def test_predict_model_explain_breaks_the_prediction_into_its_kernels(predictor_folder, capsys) -> None:
    from leti.cli import main

    assert main(["predict-model", "--device", "cpu", "--model", str(predictor_folder), "--explain", "squeezenet1_1",
                 "--input-shape", "3,32,32"]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert len(line["breakdown"]) == line["kernels"]
    assert line["predicted_ms"] == pytest.approx(line["overhead_ms"] + sum(k["predicted_ms"] for k in line["breakdown"]), rel=1e-4)
    assert {"kernel", "config", "ops", "predicted_ms"} == set(line["breakdown"][0])


def test_a_missing_champion_is_one_line_saying_how_to_make_one(tmp_path, monkeypatch, capsys) -> None:
    from leti.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["predict-model", "--device", "pixel9", "resnet18"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "leti-kernels-pixel9" in error and "train_kernels@pixel9" in error


def test_the_onnx_reader_reads_a_file_whose_weights_are_large(tmp_path) -> None:
    """Weights above the shape-only threshold are read as declared shapes, not data."""
    import onnx

    network = nn.Sequential(nn.Linear(512, 256), nn.ReLU()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.randn(1, 512),), buffer, opset_version=17, dynamo=False)
    graph = K.onnx_graph(onnx.load_from_string(buffer.getvalue()), [1, 512], "linear")
    (fc, relu) = K.split_kernels(graph, {})
    assert (fc.type, fc.config["cin"], fc.config["cout"], relu.type) == ("fc", 512, 256, "relu")


def test_the_investigation_compares_flops_layerwise_and_kernels_on_measured_networks(predictor_folder) -> None:
    import polars as pl

    from leti.reports.investigation import analysis, report

    networks = pl.DataFrame({"device": ["cpu"] * 3, "arch": ["squeezenet1_1", "squeezenet1_0", "alexnet"],
                             "input": ["1x3x32x32"] * 3, "flops": [20_000_000, 50_000_000, 60_000_000], "latency_ms": [1.0, 2.0, 4.0]})
    predictors = {"cpu": {"linear": KernelPredictor.load(predictor_folder)}, "gpu-without-networks": {}}
    predictions = analysis.network_predictions(networks, predictors)
    assert set(predictions["method"]) == {analysis.FLOPS_LINE, analysis.LAYERWISE, analysis.KERNELS}
    line = predictions.filter(pl.col("method") == analysis.FLOPS_LINE)["predicted_ms"].to_list()
    assert line[0] == pytest.approx(-4.0)  # the line through the two others: 2 ms at 50 MFLOPs, 4 ms at 60 MFLOPs
    kernels = predictions.filter(pl.col("method") == analysis.KERNELS)
    assert kernels["network"].to_list() == ["squeezenet1_1", "squeezenet1_0"]  # AlexNet cannot run at 32 x 32: the FLOPs line only
    scores = analysis.method_scores(predictions)
    assert set(scores["method"]) == {analysis.FLOPS_LINE, analysis.LAYERWISE, analysis.KERNELS}
    assert scores.filter(pl.col("method") == analysis.KERNELS)["networks"].to_list() == [2]
    text = report.kernels_section(report.Results(config={}, space=None, flops_marginal={}, devices=[], fits=[], lookups=[], cross=None,
                                                 networks=pl.DataFrame(), networks_spearman={}, shares=pl.DataFrame(),
                                                 noise=pl.DataFrame(), drift=pl.DataFrame(), network_predictions=predictions,
                                                 network_scores=scores))
    assert "kernels with fusion" in text and "| cpu | FLOPs line |" in text
