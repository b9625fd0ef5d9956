"""Layer-wise mode: operator instances of NAS-Bench-201, a resumable per-device lookup table,
and the sum-of-operators prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from measure_helpers import FAST_PROTOCOL, TINY_NETWORK, tiny_device_config  # noqa: F401 (fixture)

from leti.measure import operators
from leti.predictors.layerwise import predict_from_lookup
from leti.spaces import nb201
from leti.spaces.base import OpInstance
from leti.spaces.nb201_ops import build_op, distinct_ops, network_ops
from leti.store import reader, tables

REPO = Path(__file__).resolve().parents[1]
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


def test_distinct_operator_instances_of_the_benchmark_network() -> None:
    ops = distinct_ops()
    assert len(ops) == len({op.key for op in ops}) == 1 + 2 + 3 + 1 + 5 * 3  # stem, reductions, adds, head, cell ops
    assert OpInstance("nor_conv_3x3", 64, 64, 8) in ops
    assert OpInstance("reduction", 16, 32, 32, stride=2) in ops
    assert OpInstance("stem", 3, 16, 32) in ops and OpInstance("head", 64, 10, 8) in ops


def test_network_ops_count_every_use() -> None:
    counts = network_ops(ARCH)
    assert counts[OpInstance("nor_conv_3x3", 32, 32, 16)] == 5  # one edge x five cells of stage 2
    assert counts[OpInstance("skip_connect", 16, 16, 32)] == 10  # two edges x five cells
    assert counts[OpInstance("add", 64, 64, 8)] == 15
    assert sum(counts.values()) == 1 + 2 + 1 + 3 * 5 * (6 + 3)
    for arch in nb201.sample_valid(20, seed=13):
        assert set(network_ops(arch)) <= set(distinct_ops())


def test_every_operator_builds_with_the_shape_the_network_gives_it() -> None:
    for instance in distinct_ops(nb201.NetworkConfig(**TINY_NETWORK)):
        out = build_op(instance).eval()(__import__("torch").randn(instance.input_shape(1)))
        if instance.op != "head":
            assert out.shape[1] == instance.channels_out and out.shape[2] == instance.size // instance.stride


def test_lookup_table_is_resumable_and_predicts_the_sum(tiny_device_config, tmp_path) -> None:
    device = tiny_device_config("torch-cpu")
    rows = operators.measure_ops(device, tmp_path)
    assert rows.height == 22 and rows["error"].null_count() == 22
    parts = sorted((tmp_path / "torch-cpu").glob("part-*.parquet"))
    assert operators.measure_ops(device, tmp_path).height == 22  # a rerun measures nothing again
    assert sorted((tmp_path / "torch-cpu").glob("part-*.parquet")) == parts

    lookup = reader.read_op_lookup(tmp_path / "torch-cpu", configuration=device.config_id)
    latency = dict(zip(lookup["op_key"], lookup["latency_ms"]))
    config = nb201.NetworkConfig(**TINY_NETWORK)
    expected = sum(count * latency[op.key] for op, count in network_ops(ARCH, config).items())
    assert predict_from_lookup([ARCH], lookup, config)[0] == pytest.approx(expected)
    with pytest.raises(KeyError, match="operator 'nor_conv_3x3|"):
        predict_from_lookup([ARCH], lookup.filter(~pl.col("op_key").str.starts_with("nor_conv_3x3")), config)


def test_layerwise_predictor_sums_the_measured_lookup_table(tiny_device_config, tmp_path) -> None:
    from leti import predictors

    device = tiny_device_config("torch-cpu")
    operators.measure_ops(device, tmp_path)
    model = predictors.make_predictor("layerwise", lookup=str(tmp_path / "torch-cpu"), network=TINY_NETWORK)
    archs = nb201.sample_valid(5, seed=21)
    model.fit(archs[:2], [1.0, 2.0])  # nothing is fitted: the measured sums stand as they are
    expected = predict_from_lookup(archs, reader.read_op_lookup(tmp_path / "torch-cpu", configuration=device.config_id), nb201.NetworkConfig(**TINY_NETWORK))
    assert model.predict(archs) == pytest.approx(expected)
    loaded = predictors.load(model.save(tmp_path / "model"))
    assert loaded.predict(archs) == pytest.approx(expected)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no measured operators"):
        predictors.make_predictor("layerwise", lookup=str(tmp_path / "empty")).fit(archs[:2], [1.0, 2.0])


def test_measure_ops_command(tmp_path) -> None:
    params = {"measure": {"defaults": {**FAST_PROTOCOL, **TINY_NETWORK}}, "devices": {"ort": {"backend": "onnxruntime-cpu"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from leti.cli import main; sys.exit(main())", "measure-ops",
         "--device", "ort", "--params", str(tmp_path / "params.yaml"), "--store", str(tmp_path / "ops")],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LETI_LOCK_DIR": os.environ["LETI_LOCK_DIR"]}, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["operators"] == 22
    rows = tables.read(tmp_path / "ops" / "ort", tables.OP_LATENCY)
    assert summary["failed"] == rows["error"].is_not_null().sum()
    assert rows.filter(pl.col("op").is_in(["nor_conv_3x3", "stem", "head"]))["error"].null_count() == 5


def test_unknown_device_is_named(tmp_path) -> None:
    from leti.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"devices": {"torch-cpu": {"backend": "torch-cpu"}}}))
    assert main(["measure-ops", "--device", "pixel9", "--params", str(tmp_path / "params.yaml")]) == 2
