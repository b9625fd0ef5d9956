"""Lineage: data hashes are DVC's own, and training reads one configuration, one row per arch."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from leti import tracking
from leti.devices.config import DeviceConfig
from leti.store import parts, reader

BIN = Path(sys.executable).parent


def test_dvc_md5_is_what_dvc_records(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache")}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True)
    (tmp_path / "store" / "dev" / "sub").mkdir(parents=True)
    (tmp_path / "store" / "dev" / "part-1.parquet").write_bytes(b"one")
    (tmp_path / "store" / "dev" / "sub" / "part-2.parquet").write_bytes(b"two\r\n")
    (tmp_path / "store" / "dev" / "scratch.tmp").write_bytes(b"ignored")
    (tmp_path / ".dvcignore").write_text("*.tmp\n")
    (tmp_path / "table.parquet").write_bytes(b"table")
    subprocess.run(["dvc", "add", "-q", "store/dev", "table.parquet"], cwd=tmp_path, env=env, check=True)
    for path in ("store/dev", "table.parquet"):
        recorded = yaml.safe_load((tmp_path / f"{path}.dvc").read_text())["outs"][0]["md5"]
        assert tracking.dvc_md5(path, tmp_path) == recorded
    (tmp_path / "store" / "dev" / "part-3.parquet").write_bytes(b"three")
    assert tracking.dvc_md5("store/dev", tmp_path) != recorded  # computed now, not read back
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tracking.dvc_md5("nowhere", tmp_path)


def row(arch: str, config_id: str, min_ms: float, minutes: int) -> dict:
    return {
        "space": "nb201", "arch": arch, "device": "torch-cpu", "backend": "torch-cpu", "source": "leti",
        "config_id": config_id, "runs": 3, "samples_ms": [min_ms] * 3, "median_ms": min_ms, "iqm_ms": min_ms,
        "mean_ms": min_ms, "min_ms": min_ms, "error": None,
        "measured_at": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes),
    }


def test_train_reads_the_current_configuration_once_per_sampled_arch(tmp_path: Path) -> None:
    device = DeviceConfig.from_params("torch-cpu", {"backend": "torch-cpu"}, {"runs": 3})
    current, old = device.config_id, "0ld0ld0ld0ld0ld0"
    parts.write_part([row("a", old, 9.0, 0), row("b", old, 9.0, 0), row("c", old, 9.0, 0)], tmp_path, "torch-cpu")
    parts.write_part([row("a", current, 1.0, 5), row("b", current, 2.0, 5), row("z", current, 5.0, 5)], tmp_path, "torch-cpu")
    failed = {**row("c", current, 0.0, 6), "error": "RuntimeError: boom", "samples_ms": []}
    parts.write_part([failed, row("a", current, 1.5, 9)], tmp_path, "torch-cpu")  # a measured again
    policy = reader.ReadPolicy("min_ms", configuration=device.config_id, valid_only=False)  # the way stages/train.py reads
    data = reader.read_cells(tmp_path, "torch-cpu", "nb201", policy, ["a", "b", "c"])
    assert data.archs == ["a", "b"] and data.latency_ms.tolist() == [1.5, 2.0]
    assert (data.rows_read, data.other_config, data.not_asked, data.repeats) == (7, 3, 1, 1)
    with pytest.raises(ValueError, match="unknown statistic"):
        reader.ReadPolicy("p99_ms")
    other = DeviceConfig.from_params("torch-cpu", {"backend": "torch-cpu"}, {"runs": 4})
    with pytest.raises(ValueError, match=f"no rows of configuration '{other.config_id}'"):
        reader.read_cells(tmp_path, "torch-cpu", "nb201", reader.ReadPolicy(configuration=other.config_id))
