"""`leti predict` input handling that needs no trained model (the model path is in test_pipeline)."""

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from leti.cli.predict import read_file

ROOT = Path(__file__).resolve().parent.parent
GOOD = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"


def leti(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "leti", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_text_file_positions_are_line_numbers(tmp_path: Path) -> None:
    cells = tmp_path / "cells.txt"
    cells.write_text(f"{GOOD}\n\n  {GOOD}  \nbad\n")
    assert read_file(cells) == [(1, GOOD), (3, GOOD), (4, "bad")]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_give_row_positions(tmp_path: Path, suffix: str) -> None:
    table = pl.DataFrame({"arch": [GOOD, "bad"], "note": ["a", "b"]})
    path = tmp_path / f"cells{suffix}"
    table.write_csv(path) if suffix == ".csv" else table.write_parquet(path)
    assert read_file(path) == [(1, GOOD), (2, "bad")]
    table.rename({"arch": "cell"}).write_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="no 'arch' column"):
        read_file(tmp_path / "other.parquet")


def test_bad_output_format_and_missing_store_fail_in_one_line(tmp_path: Path) -> None:
    result = leti("predict", "--device", "torch-cpu", GOOD, "--output", "out.json", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "out.json" in result.stderr
    result = leti("predict", "--device", "torch-cpu", GOOD, "bad", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 2
    assert lines[0].startswith("leti predict: arch 2 is malformed: 'bad'")
    assert "models:/leti-nb201-torch-cpu@champion" in lines[1] and "make pipeline" in lines[1]
    assert not (tmp_path / "mlflow.db").exists()  # asking does not create an empty store


def test_only_malformed_archs_exit_1_without_a_model(tmp_path: Path) -> None:
    result = leti("predict", "--device", "torch-cpu", "nope", "--space", "nb201", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("leti predict: arch 1 is malformed: 'nope'")
    result = leti("predict", "--device", "torch-cpu", GOOD, "--space", "nb999", cwd=tmp_path)
    assert result.returncode == 2 and "unknown search space 'nb999'" in result.stderr


def test_predicting_imports_no_torch() -> None:
    """Parsing, featurising and a tabular model must not import torch: it is a second of every
    `leti predict` (the 15625-cell timing is in benchmarks/predict.py)."""
    script = ("import sys; import leti.cli.predict, leti.spaces, leti.features, leti.predictors, leti.tracking.pyfunc; "
              "from leti import spaces, predictors; spaces.get('nb201').parse(" + repr(GOOD) + "); "
              "predictors.FAMILIES['linear']; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
