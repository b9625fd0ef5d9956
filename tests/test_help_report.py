"""The report library on a small configuration of real published data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from leti.reports import published as report

TINY_GCN = {"hidden": 32, "layers": 2, "batch_size": 16, "epochs": 3, "lr": 2e-3}


def test_small_report_has_every_table_and_figure(help_store: Path, tmp_path: Path) -> None:
    config = {
        "devices": ["1080ti_1"],
        "seeds": [0, 1],
        "train_size": 200,
        "val_size": 50,
        "predictors": {"flops": {}, "linear": {}, "gcn": TINY_GCN},
        "ensemble_members": ["gcn", "linear"],
        "ablations": {"identity_adjacency": {"adjacency": "identity"}},
        "train_sizes": [100],
        "train_size_predictors": ["linear"],
        "batch_sizes": [8],
    }
    summary = report.run_report(help_store, config, tmp_path, log=lambda text: None)
    results = pl.read_csv(tmp_path / "results.csv")
    main = results.filter(pl.col("study") == "main")
    assert sorted(main["predictor"].unique()) == ["auto", "ensemble", "flops", "gcn", "linear"]
    assert main.height == 2 * 5
    # On this device op counts explain the latency: linear scores 100 % acc@10 on both seeds'
    # validation cells, flops and the 3-epoch GCN under 60 %. So auto chooses linear or the ensemble
    # built on it, and its row repeats the chosen row's test metrics.
    for row in main.filter(pl.col("predictor") == "auto").iter_rows(named=True):
        assert row["chosen"] in {"linear", "ensemble"}
        chosen = main.filter((pl.col("seed") == row["seed"]) & (pl.col("predictor") == row["chosen"])).row(0, named=True)
        assert [row[m] for m in ("acc_1pct", "acc_10pct", "mape")] == [chosen[m] for m in ("acc_1pct", "acc_10pct", "mape")]
    text = (tmp_path / "report.md").read_text()
    assert "341" in text and "identity_adjacency" in text and "| 1080ti_1 | 100 | linear |" in text
    assert "± " in text
    # The summary's figures are the main table's means over seeds, recomputed here from results.csv.
    means = dict(main.filter(pl.col("predictor") != "auto").group_by("predictor").agg(pl.col("acc_10pct").mean()).iter_rows())
    best = max(means, key=means.__getitem__)
    assert summary["1080ti_1"]["best_predictor"] == best
    assert summary["1080ti_1"]["best_acc_10pct"] == pytest.approx(means[best])
    assert summary["1080ti_1"]["linear_acc_10pct"] == pytest.approx(means["linear"]) and means["linear"] > 99
    for name in ("predicted_vs_measured.png", "error_cdf.png", "test_predictions.csv"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
