"""Sharing as a team does it: results committed to git and pushed to a DVC remote (a local folder
here), a teammate's clone pulling them back, another leti repository importing a latency table."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import commit_all, copy_project, declared_outputs, repro_targets, run

from leti.store import tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory, e2e_home: Path) -> Path:
    """A copy of the reproduced project whose results are committed and pushed to a folder remote."""
    repo = tmp_path_factory.mktemp("published") / "leti"
    shutil.copytree(tiny_repo, repo, symlinks=True)
    remote = tmp_path_factory.mktemp("remote")
    run(["dvc", "remote", "add", "-d", "team", str(remote)], repo, e2e_home)
    commit_all(repo, e2e_home, "results of the tiny pipeline")
    run(["dvc", "push"], repo, e2e_home)
    return repo


@pytest.fixture(scope="module")
def clone(published: Path, tmp_path_factory: pytest.TempPathFactory, e2e_home: Path) -> Path:
    """A teammate's `git clone` of the published repository, before `dvc pull`."""
    target = tmp_path_factory.mktemp("teammate") / "leti"
    run(["git", "clone", "-q", str(published), str(target)], target.parent, e2e_home)
    return target


def digests(path: Path) -> dict[str, str]:
    """md5 of every file under ``path`` (or of ``path`` itself), by path relative to it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(f.relative_to(path)) if path.is_dir() else f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in files}


def test_a_fresh_clone_has_the_whole_layout_and_the_committed_results(clone: Path) -> None:
    for folder in ("data", "models", "flows", "stages", "leti", "tests"):
        assert (clone / folder).is_dir(), folder
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", "prefect.yaml", "metrics/nb201.json", "plots/nb101/error_cdf.png"):
        assert (clone / name).is_file(), name  # metrics and plots travel by git
    assert not (clone / "models" / "nb201" / "torch-cpu").exists()  # models and tables travel by the DVC remote


def test_dvc_pull_brings_back_every_output_and_status_is_clean(published: Path, clone: Path, e2e_home: Path) -> None:
    run(["dvc", "pull", *repro_targets()], clone, e2e_home)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    outputs = declared_outputs(yaml.safe_load((clone / "dvc.yaml").read_text()), params)
    assert "models/nb201/torch-cpu" in outputs and "data/latency/torch-cpu" in outputs and "metrics/nb101.json" in outputs
    for path in outputs:
        assert digests(clone / path) == digests(published / path), path
    assert "Data and pipelines are up to date." in run(["dvc", "status", *repro_targets()], clone, e2e_home).stdout
    assert run(["git", "status", "--porcelain"], clone, e2e_home).stdout == ""


def test_parts_are_readable_by_teammates(published: Path) -> None:
    parts = list((published / "data" / "latency" / "torch-cpu").rglob("part-*.parquet"))
    assert parts and all(part.stat().st_mode & 0o044 == 0o044 for part in parts)  # group and others may read


def test_another_leti_repository_imports_a_latency_table(published: Path, tmp_path_factory: pytest.TempPathFactory,
                                                         e2e_home: Path) -> None:
    other = copy_project(tmp_path_factory.mktemp("other") / "leti")
    run(["git", "init", "-q"], other, e2e_home)
    commit_all(other, e2e_home, "another team's leti")
    (other / "data" / "imported").mkdir()
    run(["dvc", "import", str(published), "data/latency/torch-cpu", "-o", "data/imported/torch-cpu"], other, e2e_home)
    imported = tables.read(other / "data" / "imported" / "torch-cpu", tables.LATENCY)
    assert imported.sort("arch").equals(tables.read(published / "data" / "latency" / "torch-cpu", tables.LATENCY).sort("arch"))
    record = yaml.safe_load((other / "data" / "imported" / "torch-cpu.dvc").read_text())
    head = run(["git", "rev-parse", "HEAD"], published, e2e_home).stdout.strip()
    assert record["deps"][0]["repo"] == {"url": str(published), "rev_lock": head}
    # The import record is committed like any source file; the data stays git-ignored.
    staged = run(["git", "status", "--porcelain"], other, e2e_home).stdout
    assert "data/imported/torch-cpu.dvc" in staged and "part-" not in staged
