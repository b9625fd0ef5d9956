"""The stand-in phone, set up in a folder: shared by the tests (``measure_helpers.phone``) and
``benchmarks/measurement.py``. The folder's ``phone/`` plays the device's filesystem and its ``adb``
runs the stand-in ``tests/fakes/adb`` with this interpreter; the stand-in finds them through
``$FAKE_ADB_ROOT`` and ``$FAKE_ADB_SERIAL``, which the caller sets (a fixture through monkeypatch)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

FAKE_ADB = Path(__file__).with_name("adb")
SERIAL = "emulator-5554"


def install(folder: Path) -> tuple[Path, Path]:
    """A phone root with benchmark_model installed, and an executable ``adb`` that reaches it: (root, adb)."""
    root = folder / "phone"
    (root / "data/local/tmp").mkdir(parents=True)
    (root / "data/local/tmp/benchmark_model").write_text("stand-in benchmark_model build")
    adb = folder / "adb"
    adb.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(FAKE_ADB))} \"$@\"\n")
    adb.chmod(0o755)
    return root, adb
