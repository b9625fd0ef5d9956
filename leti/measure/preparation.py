"""Host work ahead of the device: build and convert upcoming cells in a worker process, cached.

Timing a cell is device work; building its network and converting it (ONNX export, TFLite
conversion) is host work. A campaign hands the cells of a chunk, and of the chunk after it, to
one worker process as soon as the chunk starts, so the host converts cell i+1 while the device
times cell i. The worker runs on the CPUs the timing does not use (everything but ``pin_cpus``)
with one thread. It is a plain subprocess speaking JSON lines, not ``multiprocessing``, so it also
works inside Dask's daemonic worker processes.

Converted files are cached by everything that shapes them (format, artifact options, network
shape, batch, arch, converter versions) under ``$LETI_CACHE_DIR/artifacts`` (default
``$XDG_CACHE_HOME/leti``, which ``leti.project`` points inside the project): the same cell is never converted twice, whichever device, pass or campaign
asks for it. A TFLite file serves every phone and every GPU/CPU setting alike.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from leti import spaces
from leti.devices import Backend, make_backend
from leti.project import cache_dir
from leti.threads import torch_threads

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def artifact_path(backend: Backend, network: Any, batch: int, arch: str) -> Path:
    """Where the cached file artifact of ``arch`` lives (it may not exist yet); ``network`` is the
    space's ``NetworkConfig``, which names the space."""
    payload = {
        "format": backend.artifact_format, "options": backend.artifact_options(), "network": asdict(network),
        "batch": batch, "space": spaces.of_network(network).NAME, "arch": arch, "versions": backend.artifact_versions(),
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "artifacts" / str(backend.artifact_format) / key[:2] / f"{key}.{backend.artifact_format}"


def one_thread() -> contextlib.AbstractContextManager[None]:
    """Host work on one thread: two OpenMP threads on a busy 2-core machine wait on each other for
    whole scheduler slices (a NAS-Bench-201 forward pass took 1.3 s instead of 10 ms)."""
    return torch_threads(1)


def prepare_artifact(backend: Backend, network: Any, batch: int, arch: str) -> Path:
    """The cached artifact of ``arch``, converting it first if needed (written atomically)."""
    path = artifact_path(backend, network, batch, arch)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}.{backend.artifact_format}")
    try:
        with one_thread():
            space = spaces.of_network(network)
            backend.write_artifact(space.build_network(arch, network), space.example_input(network, batch), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class PrepareError(RuntimeError):
    """A cell could not be built or converted (the worker's message); the cell gets an error row."""


class Preparer:
    """One worker process preparing cells in submission order; ``submit`` returns a future path."""

    def __init__(self, backend: Backend, network: Any, batch: int, cpus: list[int] | None) -> None:
        self.backend, self.network, self.batch = backend, network, batch
        self.lock = threading.Lock()
        self.waiting: deque[tuple[str, Future[Path]]] = deque()
        self.futures: dict[str, Future[Path]] = {}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "leti.measure.preparation"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        config = {"backend": backend.name, "options": backend.options, "space": spaces.of_network(network).NAME,
                  "network": asdict(network), "batch": batch, "cpus": cpus}
        self.send(config)
        self.reader = threading.Thread(target=self.read_replies, name="leti-preparer", daemon=True)
        self.reader.start()

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, arch: str) -> Future[Path]:
        """The future artifact of ``arch``: already cached, already asked for, or asked for now."""
        with self.lock:
            if arch in self.futures:
                return self.futures[arch]
            future: Future[Path] = Future()
            cached = artifact_path(self.backend, self.network, self.batch, arch)
            if cached.exists():
                future.set_result(cached)
                return future
            if not self.alive():
                future.set_exception(PrepareError(f"the preparation worker exited with {self.process.poll()}"))
                return future
            self.futures[arch] = future
            self.waiting.append((arch, future))
            self.send({"arch": arch})
            return future

    def read_replies(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            reply = json.loads(line)
            with self.lock:
                arch, future = self.waiting.popleft()
                self.futures.pop(arch, None)
            if "error" in reply:
                future.set_exception(PrepareError(reply["error"]))
            else:
                future.set_result(Path(reply["path"]))
        with self.lock:  # the worker is gone: nothing more will come
            while self.waiting:
                arch, future = self.waiting.popleft()
                self.futures.pop(arch, None)
                future.set_exception(PrepareError(f"the preparation worker exited with {self.process.wait()}"))

    def close(self) -> None:
        if self.alive() and self.process.stdin:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


_preparers: dict[str, Preparer] = {}
_preparers_lock = threading.Lock()


def preparer(backend: Backend, network: Any, batch: int, cpus: list[int] | None) -> Preparer:
    """This process's worker for this kind of artifact, started on first use and kept for the next
    chunks (starting one costs seconds: torch's import, a converter's)."""
    key = json.dumps([backend.name, backend.artifact_options(), spaces.of_network(network).NAME, asdict(network), batch, cpus,
                      str(cache_dir())], sort_keys=True)
    with _preparers_lock:
        worker = _preparers.get(key)
        if worker is None or not worker.alive():
            worker = _preparers[key] = Preparer(backend, network, batch, cpus)
            atexit.register(worker.close)
        return worker


def other_cpus(pin_cpus: tuple[int, ...]) -> list[int] | None:
    """The CPUs the timing does not use, for the worker (None: no pinning, share them all)."""
    if not pin_cpus or not hasattr(os, "sched_getaffinity"):
        return None
    rest = sorted(os.sched_getaffinity(0) - set(pin_cpus))
    return rest or None


def ahead(backend: Backend, pin_cpus: tuple[int, ...]) -> bool:
    """Whether to prepare cells in the worker, ahead of the device.

    Always for a phone or GPU: the host is free while they run. For a backend that times on this
    CPU only when its timing is pinned (``pin_cpus``) and another CPU is left for the worker:
    measured on the 2-core machine, an unpinned worker converting beside ONNX Runtime slowed the
    timed runs 2x (pass-to-pass difference of the mean 84 % instead of 14 %).
    """
    return not backend.times_on_host or other_cpus(pin_cpus) is not None


def worker() -> None:
    """The worker's loop: a config line, then one arch per line; one reply line per arch."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints must not reach the replies
    config = json.loads(sys.stdin.readline())
    if config.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, config["cpus"])
    torch.set_num_threads(1)
    backend = make_backend(config["backend"], config["options"])
    network = spaces.get(config["space"]).NetworkConfig(**config["network"])
    for line in sys.stdin:
        arch = json.loads(line)["arch"]
        start = time.perf_counter()
        try:
            path = prepare_artifact(backend, network, config["batch"], arch)
            reply = {"path": str(path), "seconds": time.perf_counter() - start}
        except Exception as error:  # noqa: BLE001 - reported as the cell's error
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    worker()
