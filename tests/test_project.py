"""Tool state goes inside the project: the root is found from any folder in it, and a variable the
user already set is left alone."""

import os
from pathlib import Path

from leti import project


def test_the_root_is_the_nearest_folder_with_a_dvc_directory(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "data" / "latency").mkdir(parents=True)
    assert project.find_root(tmp_path / "data" / "latency") == tmp_path.resolve()
    assert project.find_root(tmp_path.parent) != tmp_path.resolve()  # a folder above is not in this project


def test_every_location_is_inside_the_project_and_set_values_win(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".dvc").mkdir()
    for name in project.local_environment(tmp_path):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", "/srv/team-prefect")
    assert project.use_local_state(tmp_path) == tmp_path.resolve()
    assert os.environ["PREFECT_HOME"] == "/srv/team-prefect"
    for name in ("DVC_SITE_CACHE_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert Path(os.environ[name]).is_relative_to(tmp_path.resolve()), name
