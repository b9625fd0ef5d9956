"""A search space by name through everything: NAS-Bench-101 cells measured for real (a tiny network),
stored under their space, featurized, learned by every predictor family, evaluated, ingested, and
reported beside the noise floor of a second pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from measure_helpers import FAST_PROTOCOL, NO_SENTINEL, TINY_NETWORK

from leti import features, params, predictors
from leti.cli import main
from leti.devices.config import DeviceConfig, device_from_params
from leti.measure import campaign
from leti.orchestration import measure as measure_flow
from leti.spaces import nb101, nb201
from leti.store import reader, tables

NB101_TINY = {"input_size": 8, "stem_channels": 8, "num_stacks": 2, "cells_per_stack": 1}
SMALL_GCN = {"hidden": 32, "layers": 2, "batch_size": 8, "epochs": 8, "patience": 4, "lr": 2e-3, "target": "log"}
FAMILY_PARAMS = {
    "linear": {"target": "log"},  # raw least squares (the published baseline) may extrapolate below zero on 60 noisy cells
    "xgboost": {"n_estimators": 40, "feature_set": "flat", "target": "log"},
    "layerwise": {},
    "flops": {},
    "gcn": SMALL_GCN,
    "ensemble": {"members": {"linear": {}, "gcn": SMALL_GCN}},
    "auto": {"candidates": {"flops": {}, "layerwise": {}, "linear": {}}},
}


def write_params(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "spaces": {"nb201": {"device": "torch-cpu"}, "nb101": {"device": "torch-cpu"}},
        "measure": {"part_size": 10, "retry_errors": False, "defaults": FAST_PROTOCOL, "sentinel": {"enabled": False},
                    "networks": {"nb201": TINY_NETWORK, "nb101": NB101_TINY}},
        "devices": {"torch-cpu": {"backend": "torch-cpu"}, "ort": {"backend": "onnxruntime-cpu", "spaces": ["nb101"]}},
    }, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """90 NB101 cells and 4 NB201 cells measured for real on torch-cpu into one store."""
    root = tmp_path_factory.mktemp("spaces")
    params_path = write_params(root / "params.yaml")
    archs = nb101.sample_valid(90, seed=5)
    campaign.run_campaign(archs, device_from_params("torch-cpu", params_path, "nb101"), root / "latency", progress=False, policy=NO_SENTINEL)
    campaign.run_campaign(nb201.sample_valid(4, seed=5), device_from_params("torch-cpu", params_path), root / "latency", progress=False,
                          policy=NO_SENTINEL)
    return params_path, root / "latency", archs


def test_a_device_config_per_space(tmp_path: Path) -> None:
    params_path = write_params(tmp_path / "params.yaml")
    cells, tiny = device_from_params("torch-cpu", params_path, "nb101"), device_from_params("torch-cpu", params_path)
    assert cells.network == nb101.NetworkConfig(**NB101_TINY) and cells.space is nb101
    assert tiny.network == nb201.NetworkConfig(**TINY_NETWORK) and tiny.space is nb201
    assert cells.config_id != tiny.config_id
    assert device_from_params("torch-cpu", params_path, "nb101", {}).network == nb101.NetworkConfig()  # {}: the benchmark's own
    assert params.device_spaces("ort", params_path) == ["nb101"] and params.device_spaces("torch-cpu", params_path) == ["nb201", "nb101"]
    with pytest.raises(ValueError, match="unknown keys: \\['channels'\\]"):
        DeviceConfig.from_params("x", {"backend": "torch-cpu"}, {}, "nb101", {"channels": 4})


def test_rows_are_stamped_and_stored_under_their_space(measured) -> None:
    params_path, store, archs = measured
    rows = tables.read(store / "torch-cpu" / "nb101", tables.LATENCY)
    assert sorted(rows["arch"]) == sorted(archs) and set(rows["space"]) == {"nb101"}
    assert rows["error"].null_count() == 90 and rows["input_shape"].to_list()[0] == [1, 3, 8, 8]
    assert set(tables.read(store / "torch-cpu" / "nb201", tables.LATENCY)["space"]) == {"nb201"}
    device = device_from_params("torch-cpu", params_path, "nb101")
    assert campaign.pending(archs, device, store) == []  # resumes per space
    assert len(campaign.pending(archs, device_from_params("torch-cpu", params_path), store)) == 90  # NB201's config is another
    training = reader.read_cells(store, "torch-cpu", "nb101", reader.ReadPolicy("min_ms", device.config_id), archs)
    assert training.archs == sorted(archs) and training.rows_read == 90


def test_flat_features_of_a_nb101_cell() -> None:
    arch = "1333m|111010.00001.0001.100.01.1"
    onehot = features.vector(arch, "onehot", "nb101")
    assert len(onehot) == len(features.names("onehot", "nb101")) == 21 + 5 * 3
    assert onehot[:21].sum() == 9 and onehot[21:].sum() == 5  # the README cell: 9 edges, 5 inner ops
    small = features.vector("3|11.1", "onehot", "nb101")  # input -> conv3x3 -> output, and input -> output
    names = features.names("onehot", "nb101")
    assert {names[i] for i in np.flatnonzero(small)} == {"edge01", "edge06", "edge16", "vertex1_conv3x3-bn-relu"}
    assert features.vector("3|11.1", "onehot", "nb101").tolist() == features.vector("3m|101.01.1", "onehot", "nb101").tolist()  # pruned first
    flat = features.vector(arch, "flat", "nb101")
    assert features.names("flat", "nb101")[-2:] == ["mflops", "kparams"]
    assert flat[-2:].tolist() == pytest.approx([v / s for v, s in zip(nb101.flops_params(arch), (1e6, 1e3))], rel=1e-6)
    assert features.vector(arch, "counts", "nb101").tolist() == [3, 1, 1]


def test_duplicate_node_features_mark_repeated_nb101_ops(measured) -> None:
    from leti.features import graph

    # The README cell: vertices 2 and 3 are both 3x3 convs on the input, so 3 repeats 2; vertex 4
    # is a 3x3 conv too, but on vertex 3. Global node first, then the 7 slots.
    rows = graph.node_features(nb101.graph("1333m|111010.00001.0001.100.01.1"), "nb101", "onehot+duplicates")
    assert rows.shape == (8, graph.feature_size("nb101", "onehot+duplicates"))
    assert rows[:, -1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert np.array_equal(rows[:, :-1], graph.node_features(nb101.graph("1333m|111010.00001.0001.100.01.1"), "nb101"))
    pools = graph.node_features(nb101.graph("mm|110.01.1"), "nb101", "onehot+duplicates")  # two pools on the input; padding repeats nothing
    assert pools[:, -1].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    _, store, _ = measured
    data = reader.read_cells(store, "torch-cpu", "nb101")
    gcn = predictors.make_predictor("gcn", **predictors.with_defaults("gcn", {**SMALL_GCN, "node_features": "onehot+duplicates"},
                                                                       {"space": "nb101"}))
    assert gcn.fit(data.archs[:60], data.latency_ms[:60]).predict(data.archs[60:70]).shape == (10,)


@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
def test_every_family_learns_nb101_cells(family: str, measured, tmp_path: Path) -> None:
    _, store, _ = measured
    data = reader.read_cells(store, "torch-cpu", "nb101")
    archs, latency = data.archs, data.latency_ms
    predictor = predictors.make_predictor(family, **predictors.with_defaults(family, FAMILY_PARAMS[family], {"space": "nb101"}))
    assert predictor.fit(archs[:60], latency[:60], archs[60:75], latency[60:75]) is predictor
    predicted = predictor.predict(archs[75:])
    assert predicted.shape == (15,) and np.all(np.isfinite(predicted)) and np.all(predicted > 0)
    saved = predictor.save(tmp_path / family, space="nb101")
    assert predictors.describe(saved)["space"] == "nb101"
    np.testing.assert_allclose(predictors.load(saved).predict(archs[75:]), predicted, rtol=1e-5)


def test_layerwise_lookup_is_nb201_only() -> None:
    with pytest.raises(ValueError, match="lookup tables exist for nb201 networks, not nb101"):
        predictors.make_predictor("layerwise", lookup="data/op_latency/torch-cpu", space="nb101")
    fitted = predictors.make_predictor("layerwise", space="nb101")
    assert list(fitted.fit(["3|11.1", "m|11.1", "1|11.1"], [1.0, 2.0, 3.0]).op_table()) == ["fixed", *nb101.OPS]


def test_evaluate_and_ingest_take_the_space(measured, tmp_path: Path, capsys) -> None:
    _, store, archs = measured
    output = tmp_path / "m.json"
    assert main(["evaluate", "--latency", str(store), "--device", "torch-cpu", "--space", "nb101", "--predictor", "linear",
                 "--train-size", "50", "--val-size", "10", "--output", str(output)]) == 0
    metrics = json.loads(output.read_text())
    assert metrics["n_test"] == 30 and metrics["space"] == "nb101" and metrics["excluded_no_path"] == 0
    table = tmp_path / "nb101.csv"
    pl.DataFrame({"cell": [archs[0], "3|1", archs[1]], "ms": [1.5, 2.0, 2.5]}).write_csv(table)
    assert main(["ingest", "table", str(table), "--space", "nb101", "--device", "board", "--arch-column", "cell",
                 "--latency-column", "ms", "--output", str(tmp_path / "published")]) == 1
    err = capsys.readouterr().err
    assert "bad row 1" in err and "'3|1'" in err  # a malformed NB101 string, named
    rows = tables.read(tmp_path / "published" / "board" / "nb101", tables.LATENCY)
    assert rows["arch"].to_list() == [archs[0], archs[1]] and set(rows["space"]) == {"nb101"}
    with pytest.raises(KeyError, match="no rows of space .nb201."):
        reader.read_cells(tmp_path / "published", "board", "nb201")


def test_the_measure_flow_reads_each_space_of_an_architectures_folder(tmp_path: Path) -> None:
    folder = tmp_path / "architectures"
    rows = [{"space": "nb101", "arch": arch, "canonical_id": nb101.canonical_id(arch), "valid": True, "flops": 1, "params": 1}
            for arch in nb101.sample_valid(3, seed=1)]
    tables.write(pl.DataFrame(rows), folder / "nb101.parquet", tables.ARCHITECTURES)
    assert measure_flow.architectures(folder, "nb101") == [row["arch"] for row in rows]
    with pytest.raises(FileNotFoundError, match="no sampled nb201 cells"):
        measure_flow.architectures(folder, "nb201")


def test_measured_report_puts_the_noise_floor_beside_the_predictors(measured, tmp_path: Path) -> None:
    from leti.reports import measured as measured_report

    params_path, _, _ = measured
    config = {"space": "nb101", "device": "torch-cpu", "n": 40, "seed": 3, "passes": 2, "statistic": "min_ms",
              "train_size": 20, "val_size": 5, "seeds": [0, 1], "predictors": {"linear": {}, "flops": {}}}
    summary = measured_report.run_report(config, params_path, tmp_path / "store", tmp_path / "out", progress=False, log=lambda _: None)
    for index in (1, 2):
        assert tables.read(tmp_path / "store" / f"pass{index}" / "torch-cpu" / "nb101", tables.LATENCY).height == 40
    results = pl.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(set(results["predictor"])) == sorted(["linear", "flops", measured_report.NOISE])
    assert results.height == 2 * 3 and (results["n_test"] == 15).all()
    assert summary["cells"] == 40 and 0 <= summary["predictors"][measured_report.NOISE]["acc_10pct"] <= 100
    report = (tmp_path / "out" / "report.md").read_text()
    assert "second pass (noise floor)" in report and "| linear | 2 |" in report
    assert (tmp_path / "out" / "plots" / "error_cdf.png").stat().st_size > 0
    again = measured_report.measure(config, params_path, tmp_path / "store", progress=False, log=lambda _: None)
    assert [result.measured for result in again] == [0, 0]  # both passes resume: nothing measured twice
