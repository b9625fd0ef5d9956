"""The PyTorch -> TFLite converter's own environment, which leti creates and calls as a subprocess.

Why a separate environment: ``litert-torch`` (0.9.4 and 0.10.0, the only releases that accept
torch 2.13) needs ``litert-converter``, which pins ``xdsl==0.28.0``, which requires
``typing-extensions<4.13``; Prefect 3.8.8 needs ``pydocket>=0.23.1`` -> ``py-key-value-aio>=0.3.0``
-> ``typing-extensions>=4.15``. No set of versions satisfies both, so installing the converter
next to Prefect downgrades pydantic and ``pip check`` fails. ``onnx2tf`` pins numpy 1.26 and
onnx 1.19. The TFLite *interpreter* (``ai-edge-litert``, without its ``model-utils`` extra) has no
such pins and is part of leti's own dependencies.

``ensure()`` (run by ``make install``) creates the environment and installs ``REQUIREMENTS``; it
does nothing when they are already installed. The environment lives
in ``.venv-tflite`` next to leti's source, or where ``$LETI_TFLITE_VENV`` says.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from leti.errors import BackendUnavailableError

REQUIREMENTS = ("torch==2.13.0", "litert-torch==0.10.0", "ai-edge-litert==2.3.0")
"""What the converter environment runs: the same torch as leti, the converter, its interpreter."""
STAMP = ".leti-requirements"


def venv_dir() -> Path:
    """``$LETI_TFLITE_VENV``, else ``.venv-tflite`` in leti's source checkout, else a user folder."""
    if os.environ.get("LETI_TFLITE_VENV"):
        return Path(os.environ["LETI_TFLITE_VENV"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".venv-tflite"
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "leti" / "venv-tflite"


def python() -> Path:
    return venv_dir() / "bin" / "python"


def installed() -> bool:
    stamp = venv_dir() / STAMP
    return python().exists() and stamp.exists() and stamp.read_text().split() == list(REQUIREMENTS)


def require(backend: str) -> None:
    """One clear error when the converter environment is missing."""
    if not installed():
        raise BackendUnavailableError(
            f"backend {backend!r} converts networks to .tflite with litert-torch in its own environment, "
            f"and {venv_dir()} is missing or outdated: run `make install` "
            f"(or python -c 'from leti.devices import litert_env; litert_env.ensure()')"
        )


def versions() -> dict[str, str | None]:
    """Versions installed in the converter environment (recorded with rows, part of cache keys)."""
    stamp = venv_dir() / STAMP
    return dict(_versions(str(venv_dir()), stamp.stat().st_mtime if stamp.exists() else 0.0))


@functools.lru_cache(maxsize=4)
def _versions(folder: str, stamp_time: float) -> tuple[tuple[str, str | None], ...]:
    sites = [str(site) for site in (Path(folder) / "lib").glob("python*/site-packages")]
    found = {dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions(path=sites)}
    return tuple((name, found.get(name)) for name in ("litert-torch", "ai-edge-litert", "torch"))


def ensure(quiet: bool = True) -> Path:
    """Create the environment and install ``REQUIREMENTS`` unless they are there already (then
    only touch the stamp, so ``make`` sees it is up to date)."""
    if installed():
        (venv_dir() / STAMP).touch()
        return venv_dir()
    venv_dir().parent.mkdir(parents=True, exist_ok=True)
    if not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True)
    pip = [str(python()), "-m", "pip", "install", *(["--quiet"] if quiet else []), *REQUIREMENTS]
    subprocess.run(pip, check=True)
    (venv_dir() / STAMP).write_text("\n".join(REQUIREMENTS) + "\n")
    return venv_dir()
