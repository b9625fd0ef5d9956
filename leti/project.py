"""Keep the tools' state inside the project, never in the user's home directory.

Left alone, the tools leti drives write outside the project: Prefect its database (PREFECT_HOME,
default ~/.prefect), DVC its site cache (/var/tmp/dvc), ONNX Runtime a telemetry database and
torch its caches (~/.cache), matplotlib its font cache (~/.config, ~/.cache) and MLflow an
installation id (~/.config/mlflow). Importing ``leti`` from anywhere inside a project points them
at the project's git-ignored ``.prefect/`` and ``.cache/``. Every entry point imports leti before
these libraries (DVC stages, flows, the ``leti`` command, Prefect and Dask workers), and the
subprocesses they start inherit the variables, so this holds whether or not ``make`` started
them. A variable already set wins: a team can still send runs to a shared Prefect server or MLflow
tracking server. The MLflow store itself defaults to the project's ``mlflow.db``
(``leti.tracking``).

The tools' own command lines read the same locations from the project's files when run from its
root: ``[tool.prefect]`` in pyproject.toml (``prefect server start``, ``prefect worker start``) and
``core.site_cache_dir`` in .dvc/config (``dvc``).
"""

from __future__ import annotations

import os
from pathlib import Path


def find_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) holding ``.dvc/``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def local_environment(root: Path) -> dict[str, str]:
    """Environment variables that keep each tool's state under ``root``."""
    cache = root / ".cache"
    return {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # offline machines log telemetry errors otherwise
        # A flow run without a server starts a temporary one; Prefect gives it 20 s, which a busy
        # 2-core machine (a campaign or training beside it) overran: the stage then failed outright.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "DVC_SITE_CACHE_DIR": str(cache / "dvc"),
        "XDG_CACHE_HOME": str(cache),  # ONNX Runtime (Microsoft/DeveloperTools), torch hub
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "MLFLOW_DISABLE_TELEMETRY": "true",  # else an installation id lands in ~/.config/mlflow
    }


def use_local_state(start: Path | None = None) -> Path | None:
    """Set every variable of ``local_environment`` that is not already set; returns the root used."""
    root = find_root(start)
    if root is not None:
        for name, value in local_environment(root).items():
            os.environ.setdefault(name, value)
    return root


def cache_dir() -> Path:
    """leti's own cache (converted models, pretrained transfer models): ``$LETI_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/leti``, which :func:`use_local_state` points inside the project."""
    return Path(os.environ.get("LETI_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "leti")
