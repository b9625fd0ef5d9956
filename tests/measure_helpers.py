"""Shared by the measurement tests: a tiny NAS-Bench-201 network shape so real backends run in milliseconds."""

from __future__ import annotations

import pytest
from fakes.phone import SERIAL, install

from leti.devices.config import DeviceConfig
from leti.measure.sentinel import SentinelPolicy

TINY_NETWORK = {"input_size": 8, "channels": 4, "cells_per_stage": 1, "num_classes": 10}
FAST_PROTOCOL = {"runs": 5, "warmup_runs": 1, "threads": 1}
NO_SENTINEL = SentinelPolicy(enabled=False)
"""For campaign tests about something else: a tiny network's timings vary by far more than the
sentinel's 3 % threshold, so with it on every chunk would be measured again (tests/test_sentinel.py
tests the sentinel itself)."""


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
    root, adb = install(tmp_path)
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIAL", SERIAL)
    return {"root": root, "options": {"serial": SERIAL, "adb": str(adb)}}
