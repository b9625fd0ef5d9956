"""`leti ingest`: HELP's release layout and arbitrary tables into a latency store."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from leti.cli import main
from leti.spaces import nb201
from leti.store import ingest, reader, tables


def test_help_ingest_is_idempotent_and_adds_devices(help_dir: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    assert main(["ingest", "help", str(help_dir), "--device", "gold_6240", "--output", str(store)]) == 0
    first = reader.device_rows(store, "gold_6240")
    assert first.height == 15625
    assert set(first["source"].unique()) == {"help"} and set(first["backend"].unique()) == {"published"}
    assert (first["median_ms"] > 0).all()
    assert first["samples_ms"].list.len().unique().to_list() == [1]
    parts = sorted((store / "gold_6240").iterdir())

    assert main(["ingest", "help", str(help_dir), "--device", "gold_6240", "--output", str(store)]) == 0
    assert sorted((store / "gold_6240").iterdir()) == parts  # nothing rewritten, nothing added

    assert main(["ingest", "help", str(help_dir), "--device", "pixel3", "--output", str(store)]) == 0
    assert sorted((store / "gold_6240").iterdir()) == parts
    assert reader.device_rows(store, "pixel3").height == 15625
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["written"] is None for s in summaries] == [False, True, False]


def test_help_values_follow_the_benchmark_index(help_dir: Path, help_store: Path) -> None:
    import torch

    root = help_dir / "nasbench201"
    index = torch.load(root / "str_arch2idx.pt", weights_only=True)
    values = torch.load(root / "latency" / "1080ti_1.pt", weights_only=True)
    stored = dict(reader.device_rows(help_store, "1080ti_1").select("arch", "median_ms").iter_rows())
    for arch in list(index)[:50]:
        assert stored[arch] == pytest.approx(values[index[arch]])


def test_unknown_help_device_is_one_error_line(help_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["ingest", "help", str(help_dir), "--device", "no_such_phone", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_phone" in err[0]


def test_table_ingest_reports_bad_rows_by_number(tmp_path: Path, capsys) -> None:
    good = nb201.all_arch_strings()[100:104]
    frame = pl.DataFrame(
        {
            "cell": [good[0], "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", good[1], "not an arch", good[2], good[3]],
            "seconds": [0.002, 0.001, None, 0.001, -1.0, 0.004],
        }
    )
    source = tmp_path / "mine.csv"
    frame.write_csv(source)
    store = tmp_path / "store"
    code = main(
        ["ingest", "table", str(source), "--space", "nb201", "--device", "board", "--arch-column", "cell",
         "--latency-column", "seconds", "--unit", "s", "--output", str(store)]
    )
    assert code == 1
    err = capsys.readouterr().err
    bad_lines = [line for line in err.splitlines() if "bad row" in line]
    assert [int(line.split("bad row ")[1].split(":")[0]) for line in bad_lines] == [1, 2, 3, 4]
    assert "conv_5x5" in bad_lines[0] and "missing latency" in bad_lines[1] and "-1000.0 ms" in bad_lines[3]
    rows = reader.device_rows(store, "board").sort("arch")
    assert dict(rows.select("arch", "median_ms").iter_rows()) == pytest.approx({good[0]: 2.0, good[3]: 4.0})
    assert set(rows["source"]) == {"mine.csv"}


def test_table_ingest_rejects_missing_column_and_foreign_file(tmp_path: Path, capsys) -> None:
    source = tmp_path / "t.parquet"
    pl.DataFrame({"arch": nb201.all_arch_strings()[:2], "ms": [1.0, 2.0]}).write_parquet(source)
    args = ["--device", "d", "--arch-column", "arch", "--output", str(tmp_path / "s")]
    assert main(["ingest", "table", str(source), "--latency-column", "latency", *args]) == 2
    assert "'latency'" in capsys.readouterr().err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    assert main(["ingest", "table", str(broken), "--latency-column", "ms", *args]) == 2
    assert str(broken) in capsys.readouterr().err
    assert main(["ingest", "table", str(tmp_path / "missing.csv"), "--latency-column", "ms", *args]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_ingested_parts_validate_against_the_latency_schema(help_store: Path) -> None:
    for part in (help_store / "1080ti_1").glob("*.parquet"):
        assert tables.read(part, tables.LATENCY).height == 15625
    assert ingest.HELP_DEVICES.count("1080ti_1") == 1


def write_pickle(path: Path, data: object) -> Path:
    import pickle

    path.write_bytes(pickle.dumps(data))
    return path


def test_latbench_ingest_names_devices_by_file_converts_seconds_and_is_idempotent(tmp_path: Path, capsys) -> None:
    import numpy as np

    folder = tmp_path / "release"
    folder.mkdir()
    # LatBench keys: op indices (none, skip, conv1x1, conv3x3, avgpool) in edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
    write_pickle(folder / "mobile-gpu-some-soc.pickle", {(3, 0, 0, 2, 1, 1): np.float64(0.0025), (1, 1, 1, 1, 1, 1): 0.001})
    write_pickle(folder / "desktop-cpu.pickle", {(4, 4, 4, 4, 4, 4): 0.004})
    store = tmp_path / "store"
    assert main(["ingest", "latbench", str(folder), "--output", str(store)]) == 0
    assert sorted(p.name for p in store.iterdir()) == ["desktop-cpu", "mobile-gpu-some-soc"]
    rows = dict(reader.device_rows(store, "mobile-gpu-some-soc").select("arch", "median_ms").iter_rows())
    conv3_first = nb201.format_cell(("nor_conv_3x3", "none", "none", "nor_conv_1x1", "skip_connect", "skip_connect"))
    assert rows == pytest.approx({conv3_first: 2.5, nb201.format_cell(("skip_connect",) * 6): 1.0})
    parts = sorted(store.rglob("*.parquet"))
    assert main(["ingest", "latbench", str(folder / "desktop-cpu.pickle"), "--device", "desktop-cpu", "--output", str(store)]) == 0
    assert sorted(store.rglob("*.parquet")) == parts
    assert main(["ingest", "latbench", str(folder / "desktop-cpu.pickle"), "--device", "renamed", "--output", str(store)]) == 0
    assert reader.device_rows(store, "renamed")["median_ms"].to_list() == pytest.approx([4.0])
    written = [json.loads(line)["written"] for line in capsys.readouterr().out.splitlines()]
    assert [w is None for w in written] == [False, False, True, False]


def test_latbench_bad_rows_are_listed_by_position_and_good_rows_kept(tmp_path: Path, capsys) -> None:
    source = write_pickle(
        tmp_path / "board.pickle",
        {(0, 0, 0, 3, 0, 0): 0.002, (0, 0, 0, 9, 0, 0): 0.002, (1, 1): 0.001, (2, 2, 2, 2, 2, 2): -0.5, (3, 3, 3, 3, 3, 3): None},
    )
    assert main(["ingest", "latbench", str(source), "--output", str(tmp_path / "store")]) == 1
    bad_lines = [line for line in capsys.readouterr().err.splitlines() if "bad row" in line]
    assert [int(line.split("bad row ")[1].split(":")[0]) for line in bad_lines] == [1, 2, 3, 4]
    assert "(0, 0, 0, 9, 0, 0)" in bad_lines[0] and "(1, 1)" in bad_lines[1] and "missing latency" in bad_lines[3]
    assert reader.device_rows(tmp_path / "store", "board")["median_ms"].to_list() == pytest.approx([2.0])


def test_latbench_foreign_or_unsafe_pickle_is_one_error_line(tmp_path: Path, capsys) -> None:
    import os

    unsafe = write_pickle(tmp_path / "unsafe.pickle", os.getcwd)  # a pickle that names a global function
    not_a_dict = write_pickle(tmp_path / "list.pickle", [1, 2, 3])
    for path, expected in ((unsafe, "refusing to load"), (not_a_dict, "expected a dict"), (tmp_path / "absent.pickle", "no such file")):
        assert main(["ingest", "latbench", str(path), "--output", str(tmp_path / "store")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and expected in err[0]
    assert not (tmp_path / "store").exists()


def test_latbench_release_ingests_every_cell_with_a_path(latbench_dir: Path, latbench_store: Path) -> None:
    import pickle

    device = "desktop-gpu-gtx-1080ti-fp32"
    released = pickle.loads((latbench_dir / f"{device}.pickle").read_bytes())
    rows = dict(reader.device_rows(latbench_store, device).select("arch", "median_ms").iter_rows())
    assert len(rows) == len(released) == 15284
    assert all(nb201.has_path(nb201.parse(arch)) for arch in rows)
    for vector, seconds in list(released.items())[:50]:
        assert rows[nb201.format_cell(nb201.from_op_indices(vector))] == pytest.approx(1000 * seconds)
