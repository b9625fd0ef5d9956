"""The `leti evaluate` contract: options and metrics.json keys other tools script against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leti.cli import main
from leti.metrics import regression_metrics
from leti.predictors.evaluation import split
from leti.spaces import nb201
from leti.store import reader

CONTRACT_KEYS = {
    "acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall",
    "n_train", "n_val", "n_test", "fit_seconds", "predict_seconds", "predictor",
}


def test_contract_on_a_store_excludes_no_path_cells(help_store: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "metrics.json"
    code = main(
        ["evaluate", "--latency", str(help_store), "--device", "1080ti_1", "--predictor", "layerwise",
         "--train-size", "900", "--val-size", "100", "--seed", "3", "--output", str(output)]
    )
    assert code == 0
    metrics = json.loads(output.read_text())
    assert CONTRACT_KEYS <= set(metrics)
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (900, 100, 15625 - 341 - 1000)
    assert metrics["excluded_no_path"] == 341
    assert "excluded 341 cells" in capsys.readouterr().err
    # layerwise without a lookup table is least squares of latency on a fixed part and the op counts:
    # the same fit, done here on the same split, gives the same metrics.
    data = reader.read_cells(help_store, "1080ti_1", "nb201", reader.ReadPolicy(duplicates="mean"))
    parts = split(len(data.archs), 900, 100, seed=3)
    design = np.array([[1, *nb201.op_counts(arch)] for arch in data.archs], dtype=float)
    costs, *_ = np.linalg.lstsq(design[parts.train], data.latency_ms[parts.train], rcond=None)
    expected = regression_metrics(data.latency_ms[parts.test], design[parts.test] @ costs)
    assert {key: metrics[key] for key in expected} == pytest.approx(expected, rel=1e-6)
    assert metrics["predictor"] == "layerwise"


def test_contract_on_a_table_file_and_auto_names_its_choice(help_store: Path, tmp_path: Path) -> None:
    table = tmp_path / "latency.parquet"
    reader.device_rows(help_store, "1080ti_1").head(3000).write_parquet(table)
    output = tmp_path / "m.json"
    code = main(
        ["evaluate", "--latency", str(table), "--device", "1080ti_1", "--predictor", "auto",
         "--set", 'candidates={"linear": {}, "flops": {}}', "--train-size", "300", "--val-size", "100",
         "--seed", "0", "--output", str(output)]
    )
    assert code == 0
    metrics = json.loads(output.read_text())
    # Op counts explain this device's latency (linear: acc@10 over 99 %), FLOPs do not (about 40 %).
    assert CONTRACT_KEYS <= set(metrics) and metrics["predictor"] == "linear"


def test_same_seed_same_split_and_metrics(help_store: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        main(["evaluate", "--latency", str(help_store), "--device", "1080ti_1", "--predictor", "linear",
              "--train-size", "200", "--val-size", "50", "--seed", "7", "--output", str(out)])
        runs.append(json.loads(out.read_text()))
    assert runs[0]["acc_10pct"] == runs[1]["acc_10pct"] and runs[0]["rmse_ms"] == runs[1]["rmse_ms"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--device", "no_such_gpu", "--predictor", "linear"], "no_such_gpu"),
        (["--device", "1080ti_1", "--predictor", "oracle"], "oracle"),
    ],
)
def test_bad_input_is_one_error_line(help_store: Path, tmp_path: Path, capsys, args, named) -> None:
    code = main(["evaluate", "--latency", str(help_store), *args, "--output", str(tmp_path / "m.json")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and err[0].startswith("leti evaluate: error:")


def test_missing_latency_file_is_named(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.parquet"
    code = main(["evaluate", "--latency", str(missing), "--device", "x", "--predictor", "linear", "--output", str(tmp_path / "m.json")])
    assert code == 2 and str(missing) in capsys.readouterr().err
