"""Shared fixtures: the published HELP and LatBench latencies (skipped when absent), a private
artifact cache, and the end-to-end tests' tiny reproduced project with its empty home."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

HELP_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "help"
HELP_TEST_DEVICE = "1080ti_1"
LATBENCH_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "latbench"
LATBENCH_TEST_DEVICE = "desktop-gpu-gtx-1080ti-fp32"


END_TO_END_FIXTURES = {"tiny_repo", "e2e_home"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order files for xdist (`--dist loadfile --no-loadscope-reorder` sends each file to one worker,
    in this order): first the file with the fewest end-to-end tests, those tests first, so that one
    worker builds the tiny project while the other runs the unit tests; the other files with
    end-to-end tests (on the tiny project, or with commands in the shared empty home) come last,
    the biggest first, so that the two workers finish together."""
    def end_to_end(item: pytest.Item) -> bool:
        return bool(END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())))

    counts = Counter(item.path for item in items if end_to_end(item))
    if not counts:
        return
    heavy = sorted(counts, key=counts.__getitem__)  # fewest end-to-end tests first
    rank = {path: 2 + len(heavy) - index for index, path in enumerate(heavy)}  # after the unit tests, biggest first
    rank[heavy[0]] = 0
    items.sort(key=lambda item: (rank.get(item.path, 1), item.path == heavy[0] and not end_to_end(item)))  # stable


@pytest.fixture(scope="session", autouse=True)
def artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Converted models go to a cache of this session (shared by its tests, so a cell is converted
    once), never to the user's ``~/.cache/leti``; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("leti-cache")
    previous = os.environ.get("LETI_CACHE_DIR")
    os.environ["LETI_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("LETI_CACHE_DIR", None)
    else:
        os.environ["LETI_CACHE_DIR"] = previous


@pytest.fixture(scope="session", autouse=True)
def device_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The host-wide device locks of this test run: shared by its xdist workers (their benchmarks on
    this CPU take turns, as in production), apart from any campaign measuring on the machine meanwhile,
    which would otherwise hold the tests' CPU for minutes; subprocesses inherit it."""
    folder = run_root(tmp_path_factory) / "device-locks"
    folder.mkdir(exist_ok=True)
    previous = os.environ.get("LETI_LOCK_DIR")
    os.environ["LETI_LOCK_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("LETI_LOCK_DIR", None)
    else:
        os.environ["LETI_LOCK_DIR"] = previous


@pytest.fixture(scope="session")
def help_dir() -> Path:
    if not (HELP_DIR / "nasbench201" / "str_arch2idx.pt").exists():
        pytest.skip(f"published HELP data not found at {HELP_DIR}")
    return HELP_DIR.resolve()


@pytest.fixture(scope="session")
def help_store(help_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency store holding one HELP device, ingested once per session."""
    from leti.store import ingest

    store = tmp_path_factory.mktemp("help_store")
    ingest.ingest_help(help_dir, store, [HELP_TEST_DEVICE])
    return store


@pytest.fixture(scope="session")
def help_cells(help_store: Path) -> tuple[list[str], np.ndarray]:
    """250 random valid cells of the test device and their published latencies."""
    from leti.store import reader

    data = reader.read_cells(help_store, HELP_TEST_DEVICE, "nb201")
    pick = np.random.default_rng(0).choice(len(data.archs), 250, replace=False)
    return [data.archs[i] for i in pick], data.latency_ms[pick]


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's temporary root, shared by its xdist workers (each has a basetemp of its own in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def e2e_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The home directory of every end-to-end command, on every worker: it must still be empty at the end."""
    home = run_root(tmp_path_factory) / "e2e-home"
    home.mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory, e2e_home: Path) -> Path:
    """A fresh git + DVC copy of the project on tiny params, after a plain `dvc repro`. Built once per
    run, by the first worker that asks (the others wait on a file lock), and only read: tests that
    change a project work on a copy of it."""
    import yaml
    from filelock import FileLock
    from pipeline_helpers import copy_project, repro_targets, run, tiny_params

    root = run_root(tmp_path_factory)
    built, failed = root / "tiny-repo.built", root / "tiny-repo.failed"
    with FileLock(root / "tiny-repo.lock"):
        if failed.exists():
            pytest.fail(f"the tiny project failed to build on another worker:\n{failed.read_text()}")
        if built.exists():
            return Path(built.read_text())
        try:
            copy = copy_project(root / "tiny-repo")
            params = tiny_params(yaml.safe_load((copy / "params.yaml").read_text()))
            (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            run(["git", "init", "-q"], copy, e2e_home)
            run(["git", "add", "-A"], copy, e2e_home)
            run(["git", "commit", "-qm", "tiny"], copy, e2e_home)
            run(["dvc", "repro", *repro_targets()], copy, e2e_home)
        except BaseException as error:
            failed.write_text(str(error)[-5000:])
            raise
        built.write_text(str(copy))
        return copy


@pytest.fixture(scope="session")
def latbench_dir() -> Path:
    if not (LATBENCH_DIR / f"{LATBENCH_TEST_DEVICE}.pickle").exists():
        pytest.skip(f"published LatBench data not found at {LATBENCH_DIR}")
    return LATBENCH_DIR.resolve()


@pytest.fixture(scope="session")
def latbench_store(latbench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency store holding LatBench's GTX 1080 Ti, ingested once per session."""
    from leti.store import ingest

    store = tmp_path_factory.mktemp("latbench_store")
    ingest.ingest_latbench([latbench_dir / f"{LATBENCH_TEST_DEVICE}.pickle"], store)
    return store
