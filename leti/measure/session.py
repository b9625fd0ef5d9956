"""The measurement core: a session on one device and one store folder, and ``measure_one``.

Everything leti times (a search-space cell, an operator for the layer-wise lookup, a named network,
a kernel, the sentinel) goes through here, so all of them get the same guarantees:

- **one writer per folder**: a session holds the lock of the folder its parts go to, and removes the
  half-written parts a killed writer left there;
- **no two benchmarks on one device**: a host-wide file lock per physical resource (this CPU, a GPU,
  a phone serial). A backend that times on this machine's CPU holds it for the whole session, since
  any work of this process would disturb its timings (the *host turn*); a phone's or GPU's lock is
  taken for each run only (the *device turn*), so converting the next network and writing rows never
  keep another campaign off the device;
- **a lost device is retried, a bad model is recorded**: ``DeviceError`` is retried with backoff
  and then raised; any other failure of a model becomes an error row and the campaign goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leti.devices import Timing, make_backend
from leti.devices.base import Backend, pinned
from leti.devices.config import DeviceConfig
from leti.errors import DeviceError
from leti.store.parts import remove_stale_temp_files

log = logging.getLogger(__name__)


@contextlib.contextmanager
def resource_lock(resource: str) -> Iterator[None]:
    """Hold the host-wide lock file of ``resource`` for the block.

    Two benchmarks on one device would time each other, so every session, from any process (a
    Prefect worker, a Dask worker, ``leti measure``), takes this ``flock``. The lock is per physical
    resource, not per device name: ``torch-cpu`` and ``onnxruntime-cpu`` share this host's CPU and
    take turns. The files live in ``$LETI_LOCK_DIR`` (default: the system temp folder); the kernel
    drops a lock when its holder dies, so ``kill -9`` never leaves one held.
    """
    folder = Path(os.environ.get("LETI_LOCK_DIR") or tempfile.gettempdir()) / "leti-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{resource}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def folder_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """The lock of one store folder: whoever holds it is the folder's only writer."""
    return resource_lock(f"store-{hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]}")


def with_device_retries(action: Callable[[], Any], device: str, retries: int, backoff_seconds: float) -> Any:
    """Run ``action``; on ``DeviceError`` wait ``backoff * 2**attempt`` and retry, then report."""
    for attempt in range(retries + 1):
        try:
            return action()
        except DeviceError as error:
            if attempt == retries:
                raise DeviceError(f"device {device!r} failed {retries + 1} times, giving up: {error}") from error
            delay = backoff_seconds * 2**attempt
            log.warning("device %s failed (%s); retrying in %.1f s", device, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@dataclass
class Session:
    """A device ready to time, the folder its rows go to, and what every row records about it."""

    device: DeviceConfig
    backend: Backend
    folder: Path
    workdir: Path
    environment: dict[str, Any]
    retries: int = 3
    backoff_seconds: float = 2.0

    def device_turn(self) -> contextlib.AbstractContextManager[None]:
        """Held while the device runs a network: the device's lock for a phone or GPU; nothing for a
        backend timing on this CPU, whose lock the session holds throughout."""
        return contextlib.nullcontext() if self.backend.times_on_host else resource_lock(self.backend.resource())

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        """The process pinned to the protocol's CPUs for the timing loop (after any helper process
        that converts ahead was started on the other CPUs)."""
        return pinned(self.device.protocol.pin_cpus)

    def retry(self, action: Callable[[], Any]) -> Any:
        return with_device_retries(action, self.device.name, self.retries, self.backoff_seconds)

    def row(self, **identity: Any) -> dict[str, Any]:
        """The columns every measured row shares (device, backend, protocol, host), plus ``identity``.

        Tables without some of them (the per-op lookup) drop them when the part is written."""
        protocol = self.device.protocol
        return {
            "device": self.device.name, "backend": self.device.backend, "source": "leti", "config_id": self.device.config_id,
            "batch": protocol.batch, "threads": protocol.threads, "cpu_affinity": self.backend.cpu_affinity(),
            "warmup_runs": protocol.warmup_runs, "warmup_seconds": protocol.warmup_seconds, "runs": protocol.runs,
            "measured_at": datetime.now(timezone.utc), "host": socket.gethostname(), **identity,
        }


@contextlib.contextmanager
def measuring_session(device: DeviceConfig, folder: Path, retries: int = 3, backoff_seconds: float = 2.0) -> Iterator[Session]:
    """Open ``device`` for measuring rows that go to ``folder``.

    Holds the folder's lock (and, for a backend timing on this CPU, the CPU's lock) for the block,
    checks the device once and reads its environment once.
    """
    backend = make_backend(device.backend, device.options)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    host_turn = resource_lock(backend.resource()) if backend.times_on_host else contextlib.nullcontext()
    with folder_lock(folder), tempfile.TemporaryDirectory(prefix=f"leti-{device.name}-") as workdir, host_turn:
        remove_stale_temp_files(folder)
        session = Session(device, backend, folder, Path(workdir), {}, retries, backoff_seconds)
        with session.device_turn():
            session.retry(backend.check)
            session.environment = session.retry(backend.environment)
        yield session


@dataclass
class Measured:
    """One timed thing: its row (an error row when the model failed), its timing and its device time."""

    row: dict[str, Any]
    timing: Timing | None
    device_seconds: float

    @property
    def failed(self) -> bool:
        return self.row["error"] is not None


def measure_one(
    session: Session, row: dict[str, Any], artifact: Callable[[], Any], example: Any,
    environment: dict[str, Any] | None = None, after: Callable[[Any, Timing], Timing] | None = None,
) -> Measured:
    """Time one artifact with the device's protocol and complete ``row`` with the result.

    ``artifact`` returns what the device runs (building or converting it, or waiting for the worker
    that did); the device's turn is held only while it runs. ``environment`` (default: the session's)
    is recorded as JSON, with what the device reported around the run. ``after`` may add to the timing
    once the timed runs are over (a profiler pass). A failure of the model becomes an error row; a
    ``DeviceError`` propagates for the caller's retries. A file the backend wrote into the session's
    scratch folder is removed after its run.
    """
    protocol = session.device.protocol
    environment = session.environment if environment is None else environment
    row = {**row, "environment": json.dumps(environment, sort_keys=True, default=str)}
    prepared = None
    try:
        prepared = artifact()
        with session.device_turn():
            row["measured_at"] = datetime.now(timezone.utc)
            raw = session.backend.run(prepared, example, protocol)
        timing = session.backend.parse(raw)
        if after is not None:
            timing = after(prepared, timing)
    except DeviceError:
        raise
    except Exception as error:  # noqa: BLE001 - any model-side failure is recorded, not fatal
        log.warning("%s on %s failed: %s", row.get("arch") or row.get("op_key"), session.device.name, error)
        return Measured({**row, "samples_ms": [], "error": f"{type(error).__name__}: {error}"}, None, 0.0)
    finally:
        if isinstance(prepared, Path) and prepared.parent == session.workdir:
            prepared.unlink(missing_ok=True)
    if timing.device_state:
        row["environment"] = json.dumps({**environment, "run": timing.device_state}, sort_keys=True, default=str)
    summary = asdict(timing.summary(protocol.cv_threshold))
    return Measured({**row, "samples_ms": timing.samples_ms, "error": None, **summary}, timing, timing.device_seconds)


def op_profile_rows(row: dict[str, Any], timing: Timing | None) -> list[dict[str, Any]]:
    """The tool's per-operator rows, keyed to their latency row; ``share`` is the operator's
    fraction of the profiled time."""
    ops = (timing.op_profile if timing is not None else None) or []
    total = sum(op["avg_ms"] for op in ops) or None
    return [
        {
            **{key: row[key] for key in ("space", "arch", "device", "backend", "config_id", "measured_at")},
            "node_index": index,
            "node_name": op["name"],
            "op_type": op["node_type"],
            "avg_ms": op["avg_ms"],
            "first_ms": op.get("first_ms"),
            "share": op["percent"] / 100 if op.get("percent") is not None else (op["avg_ms"] / total if total else None),
            "times_called": op.get("times_called"),
        }
        for index, op in enumerate(ops)
    ]


def timed_seconds(row: dict[str, Any]) -> float:
    """Seconds a row spent in timed runs (from the tool's mean when it kept no samples)."""
    if row["samples_ms"]:
        return sum(row["samples_ms"]) / 1000
    return (row.get("mean_ms") or 0.0) * row["runs"] / 1000
