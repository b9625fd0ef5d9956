"""Shared fixtures for tests that read the published HELP latencies (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HELP_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "help"
HELP_TEST_DEVICE = "1080ti_1"


@pytest.fixture(scope="session")
def help_dir() -> Path:
    if not (HELP_DIR / "nasbench201" / "str_arch2idx.pt").exists():
        pytest.skip(f"published HELP data not found at {HELP_DIR}")
    return HELP_DIR.resolve()


@pytest.fixture(scope="session")
def help_store(help_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency store holding one HELP device, ingested once per session."""
    from leti import ingest

    store = tmp_path_factory.mktemp("help_store")
    ingest.ingest_help(help_dir, store, [HELP_TEST_DEVICE])
    return store


@pytest.fixture(scope="session")
def help_cells(help_store: Path) -> tuple[list[str], np.ndarray]:
    """250 random valid cells of the test device and their published latencies."""
    from leti import evaluation

    data = evaluation.load_device(help_store, HELP_TEST_DEVICE)
    pick = np.random.default_rng(0).choice(len(data.archs), 250, replace=False)
    return [data.archs[i] for i in pick], data.latency_ms[pick]


@pytest.fixture(scope="session")
def e2e_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The home directory of every end-to-end command: it must still be empty at the end."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory, e2e_home: Path) -> Path:
    """A fresh git + DVC copy of the project on tiny params, after a plain `dvc repro`."""
    import yaml
    from pipeline_helpers import copy_project, repro_targets, run, tiny_params

    copy = copy_project(tmp_path_factory.mktemp("repo"))
    params = tiny_params(yaml.safe_load((copy / "params.yaml").read_text()))
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], copy, e2e_home)
    run(["git", "add", "-A"], copy, e2e_home)
    run(["git", "commit", "-qm", "tiny"], copy, e2e_home)
    run(["dvc", "repro", *repro_targets()], copy, e2e_home)
    return copy
