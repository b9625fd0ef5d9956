"""Shared by the measurement tests: a tiny NAS-Bench-201 network shape so real backends run in milliseconds."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from leti.campaign import DeviceConfig

TINY_NETWORK = {"input_size": 8, "channels": 4, "cells_per_stage": 1, "num_classes": 10}
FAST_PROTOCOL = {"runs": 5, "warmup_runs": 1, "threads": 1}
FAKE_ADB = Path(__file__).parent / "fakes" / "adb"
SERIAL = "emulator-5554"


@pytest.fixture
def tiny_device_config():
    """A ``DeviceConfig`` factory for a backend with the tiny network and a short protocol."""

    def make(backend: str, name: str | None = None, **overrides) -> DeviceConfig:
        section = {"backend": backend, **overrides}
        return DeviceConfig.from_params(name or backend, section, {**FAST_PROTOCOL, **TINY_NETWORK})

    return make


@pytest.fixture
def phone(tmp_path, monkeypatch) -> dict:
    """The stand-in adb, run by this interpreter, with benchmark_model installed on the 'phone'."""
    root = tmp_path / "phone"
    (root / "data/local/tmp").mkdir(parents=True)
    (root / "data/local/tmp/benchmark_model").write_text("stand-in benchmark_model build")
    adb = tmp_path / "adb"
    adb.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(FAKE_ADB))} \"$@\"\n")
    adb.chmod(0o755)
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIAL", SERIAL)
    return {"root": root, "options": {"serial": SERIAL, "adb": str(adb)}}
