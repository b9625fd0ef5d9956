"""The investigation: its numbers on published data and on stand-ins whose answer is known, and the
`investigate` stage of the tiny reproduced pipeline (report, figures, DVC metrics and plots, MLflow)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import yaml
from pipeline_helpers import HAS_PUBLISHED

from leti.predictors import evaluation
from leti.predictors.layerwise import LayerwisePredictor, predict_from_lookup
from leti.reports.investigation import analysis, data
from leti.reports.investigation.data import CellDevice
from leti.spaces import nb201, nb201_ops


def device(name: str, archs: list[str], latency: np.ndarray, kind: str = "CPU (server)", rows: pl.DataFrame | None = None) -> CellDevice:
    return CellDevice(name, "help", "published", kind, "c", archs, np.asarray(latency, dtype=float),
                      rows if rows is not None else pl.DataFrame())


@pytest.mark.parametrize(("name", "category"), [
    ("aten::mkldnn_convolution", "convolution"), ("DEPTHWISE_CONV_2D", "depthwise convolution"), ("aten::addmm", "matrix multiply"),
    ("aten::_native_batch_norm_legit_no_training", "normalisation"), ("aten::hardswish_", "activation"),
    ("aten::add", "elementwise"), ("aten::adaptive_avg_pool2d", "pooling"), ("CONCATENATION", "data movement"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("TfLiteGpuDelegateV2", "delegate (GPU/NPU)"),
])
def test_profiler_operators_fall_into_the_categories_a_reader_asks_about(name, category) -> None:
    assert analysis.op_category(name) == category


def test_flops_and_layerwise_fits_on_a_published_device(help_cells) -> None:
    archs, latency = help_cells
    fit = analysis.fit_device(device("1080ti_1", archs, latency), nb201, train_size=150, val_size=20, seed=0)
    assert (fit.n_train, fit.n_test) == (150, 80)
    assert fit.flops_spearman == pytest.approx(analysis.spearman(analysis.cell_flops(archs, nb201), latency))
    parts = evaluation.split(len(archs), 150, 20, 0)
    reference = LayerwisePredictor().fit([archs[i] for i in parts.train], latency[parts.train])
    assert fit.test_layerwise == pytest.approx(reference.predict([archs[i] for i in parts.test]))
    assert analysis.relative(fit.marginal_ms, "nor_conv_3x3")["nor_conv_3x3"] == 1.0
    marginal = analysis.flops_marginal(archs, nb201)  # fitted on op counts: exact, FLOPs add up per op
    assert analysis.reference_op(marginal) == "nor_conv_3x3"
    flops = analysis.relative(marginal, "nor_conv_3x3")
    assert flops["skip_connect"] == pytest.approx(0, abs=1e-9) and flops["avg_pool_3x3"] == pytest.approx(0, abs=1e-9)
    assert flops["nor_conv_1x1"] == pytest.approx(1 / 9, rel=1e-6)  # c·c against 9·c·c multiply-adds


def test_a_measured_lookup_that_adds_up_predicts_every_cell_and_says_where_time_goes() -> None:
    """Latencies built as exact sums of a lookup table: the check must find 100 % within 10 % and shares summing to 1."""
    rng = np.random.default_rng(0)
    instances = nb201_ops.distinct_ops()
    lookup = pl.DataFrame({"op_key": [op.key for op in instances], "op": [op.op for op in instances],
                           "latency_ms": rng.uniform(0.01, 0.5, len(instances))})
    archs = nb201.sample_valid(40, seed=3)
    measured = predict_from_lookup(archs, lookup.select("op_key", "latency_ms"), nb201.NetworkConfig())
    check = analysis.check_lookup(device("torch-cpu", sorted(archs), measured[np.argsort(archs)]), lookup, nb201)
    assert check is not None and check.metrics["acc_10pct"] == 100.0 and check.coverage == pytest.approx(1.0)
    assert sum(check.time_shares.values()) == pytest.approx(1.0) and sum(check.flops_shares.values()) == pytest.approx(1.0)
    assert set(check.time_shares) >= {analysis.FIXED_BLOCKS, analysis.ADDITIONS}
    # the marginal costs recovered from the summed cells are the table's own: an edge's op in every cell, minus none
    per_op = dict(zip(lookup["op_key"].to_list(), lookup["latency_ms"].to_list()))
    edge = {op: sum(per_op[i.key] for i in instances if i.op == op) * nb201.NetworkConfig().cells_per_stage for op in nb201.OPS}
    assert check.marginal_ms["nor_conv_3x3"] == pytest.approx(edge["nor_conv_3x3"] - edge["none"], rel=1e-6)
    assert analysis.check_lookup(device("other", archs[:5], measured[:5]), lookup.head(3), nb201) is None  # a table for other shapes


def test_the_decomposition_counts_the_flops_the_space_counts() -> None:
    """FLOPs shares come from the operator instances; their sum must be the network's FLOPs."""
    for arch in nb201.sample_valid(5, seed=4):
        ops = nb201_ops.network_ops(arch, nb201.NetworkConfig())
        assert sum(n * analysis.instance_flops(i, nb201) for i, n in ops.items()) == nb201.flops_params(arch)[0]


def test_devices_that_rank_alike_cluster_and_the_odd_one_stays_out(help_cells) -> None:
    archs, latency = help_cells
    noise = np.random.default_rng(1).normal(1, 0.01, len(latency))
    devices = [device("a", archs, latency), device("b", archs, 2 * latency * noise), device("c", archs, -latency),
               device("d", archs[:30], latency[:30])]
    cross = analysis.cross_device(devices, min_common=50, threshold=0.9)
    position = {name: i for i, name in enumerate(cross.names)}
    assert cross.rho[position["HELP a"], position["HELP b"]] > 0.99
    assert cross.rho[position["HELP a"], position["HELP c"]] == pytest.approx(-1.0)
    assert np.isnan(cross.rho[position["HELP a"], position["HELP d"]])  # 30 common cells < 50
    assert cross.common[position["HELP a"], position["HELP d"]] == 30
    assert sorted(cross.clusters[0]) == ["HELP a", "HELP b"] and ["HELP c"] in cross.clusters
    assert analysis.nearest(cross)["HELP a"][0] == "HELP b"


def test_pass_to_pass_and_noise_summary_from_rows() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = pl.DataFrame({
        "what": ["popular networks"] * 5, "device": ["cpu"] * 5, "arch": ["a", "a", "b", "b", "c"], "config_id": ["x"] * 5,
        "model_digest": ["d"] * 5, "measured_at": [start + timedelta(seconds=s) for s in range(5)],
        "median_ms": [10.0, 12.0, 5.0, 5.0, 7.0], "min_ms": [10.0, 11.0, 5.0, 5.0, 7.0], "cv": [0.01, 0.2, 0.03, 0.04, 0.05],
        "unstable": [False, True, False, False, False], "samples_ms": [[1.0, 2.0]] * 5,
    })
    differences = analysis.pass_to_pass(rows, "min_ms").sort("arch")
    assert differences["difference"].to_list() == [pytest.approx(1 / 10.5), 0.0]
    summary = analysis.noise_summary(rows).row(0, named=True)
    assert (summary["rows"], summary["pairs"], summary["unstable_share"]) == (5, 2, 0.2)
    assert summary["pass_diff_median_ms"] == pytest.approx(np.median([2 / 11, 0.0]))


def test_device_kinds_and_labels_from_names() -> None:
    assert data.device_kind("mobile-gpu-snapdragon-675-adreno-612-int8", "published") == "GPU (mobile)"
    assert data.short_name("mobile-gpu-snapdragon-675-adreno-612-int8", "latbench") == "LatBench adreno-612 int8"
    assert data.device_kind("titanxp_256", "published") == "GPU (desktop)"
    assert data.device_kind("onnxruntime-cpu", "onnxruntime-cpu") == "CPU (this machine)"
    assert data.device_kind("pixel-gpu", "android-adb", json.dumps({"options": {"use_gpu": True}})) == "GPU (leti)"


# --- the stage in the tiny reproduced pipeline ----------------------------------------------------

pipeline = pytest.mark.skipif(not HAS_PUBLISHED, reason="the investigate stage runs with the published data (../shared/datasets)")


@pipeline
@pytest.mark.slow
def test_investigate_stage_writes_the_report_figures_metrics_and_an_mlflow_run(tiny_repo: Path) -> None:
    out = tiny_repo / "investigation"
    report = (out / "report.md").read_text()
    for heading in ("## Findings", "## 1. Latency against FLOPs", "## 2. The layer-wise lookup", "## 3. Where time goes",
                    "## 4. Cross-device rank correlation", "## 5. Popular networks", "## 6. Measurement noise"):
        assert heading in report
    linked = [line.split("](")[1].rstrip(")\n") for line in report.splitlines() if line.startswith("![")]
    assert len(linked) >= 8 and all((out / path).is_file() for path in linked)
    metrics = json.loads((out / "summary.json").read_text())
    assert set(metrics["flops_spearman"]) >= {"torch-cpu", "onnxruntime-cpu", "gold_6240", "desktop-gpu-gtx-1080ti-fp32"}
    assert set(metrics["lookup_acc_10pct"]) == {"torch-cpu", "onnxruntime-cpu"}  # measure_ops' tables (both measure NB201), summed as measured
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())["models"]
    assert set(metrics["popular_networks_ms"]["torch-cpu"]) == set(params["names"])
    networks = pl.read_csv(out / "popular_networks.csv")
    assert set(networks["device"]) == set(params["devices"]) and (networks["passes"] == params["passes"]).all()
    assert "pass_diff_min" in metrics["noise"]["torch-cpu popular networks"]
    for plot in ("flops_spearman.csv", "layerwise_acc.csv", "popular_networks.csv"):
        assert pl.read_csv(out / "plots" / plot).height > 0

    uri = f"sqlite:///{tiny_repo / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("leti-investigation").experiment_id])
    assert run.data.metrics["flops_spearman.gold_6240"] == pytest.approx(metrics["flops_spearman"]["gold_6240"])
    assert run.data.tags["data.latency.dvc_md5"].endswith(".dir")
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "investigation")}
    assert "investigation/report.md" in logged and "investigation/figures" in logged
