"""Shared fixtures for tests that read the published HELP and LatBench latencies (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HELP_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "help"
HELP_TEST_DEVICE = "1080ti_1"
LATBENCH_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "latbench"
LATBENCH_TEST_DEVICE = "desktop-gpu-gtx-1080ti-fp32"


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
def latbench_dir() -> Path:
    if not (LATBENCH_DIR / f"{LATBENCH_TEST_DEVICE}.pickle").exists():
        pytest.skip(f"published LatBench data not found at {LATBENCH_DIR}")
    return LATBENCH_DIR.resolve()


@pytest.fixture(scope="session")
def latbench_store(latbench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency store holding LatBench's GTX 1080 Ti, ingested once per session."""
    from leti import ingest

    store = tmp_path_factory.mktemp("latbench_store")
    ingest.ingest_latbench([latbench_dir / f"{LATBENCH_TEST_DEVICE}.pickle"], store)
    return store
