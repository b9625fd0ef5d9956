"""The one store reader: which configuration, which row of a repeated cell, valid cells, which statistic."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from leti.cli import main
from leti.spaces import nb201
from leti.store import parts, reader

CELLS = nb201.sample_valid(4, seed=11)
NO_PATH = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # no input->output path: invalid


def row(arch: str, config: str, median: float, minutes: int, minimum: float | None = None) -> dict:
    return {
        "space": "nb201", "arch": arch, "device": "board", "backend": "torch-cpu", "source": "leti", "config_id": config,
        "runs": 3, "samples_ms": [median] * 3, "median_ms": median, "iqm_ms": median, "mean_ms": median + 1,
        "min_ms": minimum if minimum is not None else median - 0.5, "error": None,
        "measured_at": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes),
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two configurations of one device: `old` (3 cells), `new` (4 cells, one measured twice, one invalid cell)."""
    parts.write_part([row(arch, "old", 9.0, 0) for arch in CELLS[:3]], tmp_path, "board")
    parts.write_part([row(arch, "new", 1.0 + i, 10) for i, arch in enumerate(CELLS)] + [row(NO_PATH, "new", 0.1, 10)], tmp_path, "board")
    parts.write_part([row(CELLS[0], "new", 3.0, 20)], tmp_path, "board")  # CELLS[0] again, later
    failed = {**row(CELLS[1], "new", 0.0, 30), "error": "RuntimeError: boom", "samples_ms": []}
    parts.write_part([failed], tmp_path, "board")
    return tmp_path


def test_a_store_with_several_configurations_is_an_error_that_names_them(store: Path) -> None:
    with pytest.raises(ValueError, match=r"holds 2 measurement configurations: new \(6 rows.*old \(3 rows.*choose one"):
        reader.read_cells(store, "board", "nb201")


def test_latest_row_of_the_named_configuration_valid_cells_only(store: Path) -> None:
    cells = reader.read_cells(store, "board", "nb201", reader.ReadPolicy(configuration="new"))
    expected = {CELLS[0]: 3.0, CELLS[1]: 2.0, CELLS[2]: 3.0, CELLS[3]: 4.0}  # CELLS[0]'s later row; the failed row ignored
    assert dict(zip(cells.archs, cells.latency_ms.tolist())) == expected and cells.archs == sorted(expected)
    assert (cells.rows_read, cells.other_config, cells.repeats, cells.excluded_invalid) == (9, 3, 1, 1)
    assert cells.config_id == "new" and cells.rows.height == 5  # both rows of CELLS[0], before folding


def test_mean_of_repeats_newest_configuration_and_statistic(store: Path) -> None:
    mean = reader.read_cells(store, "board", "nb201", reader.ReadPolicy(configuration=reader.NEWEST, duplicates="mean"))
    assert mean.config_id == "new" and mean.latency_ms[mean.archs.index(CELLS[0])] == pytest.approx(2.0)  # (1 + 3) / 2
    minimum = reader.read_cells(store, "board", "nb201", reader.ReadPolicy("min_ms", configuration="old"))
    assert minimum.latency_ms.tolist() == [8.5, 8.5, 8.5] and minimum.statistic == "min_ms"
    every = reader.read_cells(store, "board", "nb201", reader.ReadPolicy(configuration="new", valid_only=False))
    assert NO_PATH in every.archs and every.excluded_invalid == 0


def test_fallback_statistic_for_a_tool_without_it(tmp_path: Path) -> None:
    parts.write_part([{**row(arch, "phone", 2.0, 0), "median_ms": None} for arch in CELLS], tmp_path, "board")
    cells = reader.read_cells(tmp_path, "board", "nb201", reader.ReadPolicy(fallback="mean_ms"))
    assert cells.statistic == "mean_ms" and cells.latency_ms.tolist() == [3.0] * 4


def test_unknown_names_are_one_clear_error(store: Path) -> None:
    with pytest.raises(KeyError, match="unknown device 'nope' in store .* \\(known: board\\)"):
        reader.read_cells(store, "nope", "nb201")
    with pytest.raises(KeyError, match="no rows of space 'nb101' for device 'board'"):
        reader.read_cells(store, "board", "nb101")
    with pytest.raises(ValueError, match="has no rows of configuration 'other' \\(configurations there: new, old\\)"):
        reader.read_cells(store, "board", "nb201", reader.ReadPolicy(configuration="other"))
    with pytest.raises(ValueError, match="unknown duplicates rule 'median'"):
        reader.ReadPolicy(duplicates="median")


def test_leti_evaluate_refuses_to_mix_configurations_in_one_line(store: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "m.json"
    command = ["evaluate", "--latency", str(store), "--device", "board", "--predictor", "linear", "--train-size", "1",
               "--val-size", "1", "--output", str(output)]
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("leti evaluate: error: ") and "2 measurement configurations" in err[0]
    assert not output.exists()
    assert main([*command, "--config", "new"]) == 0
    capsys.readouterr()
    assert output.exists()
