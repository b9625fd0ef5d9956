"""Parquet schemas: round trips, validation on write, clear rejection of bad files on read."""

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from leti.store import tables

ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"


def latency_row(**overrides: object) -> dict:
    row = {
        "space": "nb201", "arch": ARCH, "device": "torch-cpu", "backend": "torch-cpu", "source": "leti",
        "config_id": "abc", "batch": 1, "input_shape": [1, 3, 32, 32], "threads": 1, "cpu_affinity": [0, 1],
        "warmup_runs": 2, "warmup_seconds": 0.0, "runs": 3, "samples_ms": [1.5, 1.25, 1.75],
        "median_ms": 1.5, "iqm_ms": 1.5, "mean_ms": 1.5, "min_ms": 1.25, "std_ms": 0.25, "cv": 0.1667,
        "unstable": True, "error": None, "measured_at": datetime(2026, 11, 21, tzinfo=timezone.utc),
        "host": "here", "environment": "{}", "model_digest": None, "flops": None, "params": None, "role": None, "chunk": None,
        "attempt": None, "drifted": None, "sentinel_before_ms": None, "sentinel_after_ms": None, "sentinel_reference_ms": None,
        "min_ms_corrected": None,
    }
    return row | overrides


def test_a_part_written_before_the_added_columns_reads_them_as_nulls(tmp_path: Path) -> None:
    """Stores written before a named network's digest, FLOPs and params, or the sentinel's columns,
    existed stay readable as they are."""
    added = [field.name for field in tables.LATENCY if tables.is_added(field)]
    assert added == ["model_digest", "flops", "params", "role", "chunk", "attempt", "drifted", "sentinel_before_ms",
                     "sentinel_after_ms", "sentinel_reference_ms", "min_ms_corrected"]
    older = tables.write(pl.DataFrame([latency_row()]), tmp_path / "latency.parquet", tables.LATENCY).with_suffix(".old")
    pl.read_parquet(tmp_path / "latency.parquet").drop(added).write_parquet(older)
    back = tables.read(older, tables.LATENCY)
    assert back.columns == tables.LATENCY.names and back.row(0, named=True) == latency_row()
    pl.read_parquet(tmp_path / "latency.parquet").drop("median_ms").write_parquet(older)
    with pytest.raises(tables.TableError, match="missing column 'median_ms'"):  # a column that was always there
        tables.read(older, tables.LATENCY)


def test_latency_round_trip_is_lossless(tmp_path: Path) -> None:
    frame = pl.DataFrame([latency_row(), latency_row(arch="x", samples_ms=[], error="boom", median_ms=None)])
    path = tables.write(frame, tmp_path / "latency.parquet", tables.LATENCY)
    back = tables.read(path, tables.LATENCY)
    assert back.columns == tables.LATENCY.names
    assert back.to_dicts()[0] == latency_row()
    assert back["samples_ms"].to_list() == [[1.5, 1.25, 1.75], []]
    assert back["error"].to_list() == [None, "boom"]


def test_folder_reads_every_part(tmp_path: Path) -> None:
    tables.write(pl.DataFrame([latency_row(arch="a")]), tmp_path / "d" / "part-1.parquet", tables.LATENCY)
    tables.write(pl.DataFrame([latency_row(arch="b")]), tmp_path / "d" / "part-2.parquet", tables.LATENCY)
    assert sorted(tables.read(tmp_path / "d", tables.LATENCY)["arch"]) == ["a", "b"]


def test_write_rejects_a_frame_missing_a_column(tmp_path: Path) -> None:
    frame = pl.DataFrame([latency_row()]).drop("median_ms")
    with pytest.raises(tables.TableError, match="missing column 'median_ms'"):
        tables.write(frame, tmp_path / "bad.parquet", tables.LATENCY)
    assert not (tmp_path / "bad.parquet").exists()


def test_write_rejects_nulls_in_required_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame([latency_row(arch=None)])
    with pytest.raises(tables.TableError, match="'arch' has nulls"):
        tables.write(frame, tmp_path / "bad.parquet", tables.LATENCY)


def test_read_names_the_file_and_the_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "foreign.parquet"
    pl.DataFrame({"arch": [ARCH], "latency": [1.0]}).write_parquet(path)
    with pytest.raises(tables.TableError) as raised:
        tables.read(path, tables.LATENCY)
    assert str(path) in str(raised.value)
    assert "missing column 'space'" in str(raised.value)


def test_read_names_the_file_and_the_mistyped_column(tmp_path: Path) -> None:
    path = tmp_path / "mistyped.parquet"
    pl.DataFrame([latency_row()]).with_columns(pl.col("median_ms").cast(pl.String)).write_parquet(path)
    with pytest.raises(tables.TableError, match=r"mistyped.parquet: column 'median_ms' has type String, expected Float64"):
        tables.read(path, tables.LATENCY)


def test_read_rejects_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(tables.TableError, match="corrupt.parquet: not a readable Parquet file"):
        tables.read(path, tables.LATENCY)


def test_read_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(tables.TableError, match="nope.parquet: no such file"):
        tables.read(tmp_path / "nope.parquet", tables.ARCHITECTURES)


def test_lossless_widening_is_accepted(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"space": ["nb201"], "arch": [ARCH], "canonical_id": ["(0)@nor_conv_3x3"],
         "valid": [True], "flops": pl.Series([10], dtype=pl.Int16), "params": pl.Series([3], dtype=pl.Int32)}
    )
    back = tables.read(tables.write(frame, tmp_path / "a.parquet", tables.ARCHITECTURES), tables.ARCHITECTURES)
    assert back.schema["flops"] == back.schema["params"] == pl.Int64
    assert back.row(0) == ("nb201", ARCH, "(0)@nor_conv_3x3", True, 10, 3)


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = tables.write(pl.DataFrame([latency_row()]), tmp_path / "part-1.parquet", tables.LATENCY)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by teammates on a shared disk
    assert [p.name for p in tmp_path.iterdir()] == ["part-1.parquet"]  # no temp file left behind
