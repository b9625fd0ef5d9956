"""An Android phone over adb, timed by TFLite's ``benchmark_model`` (nn-Meter's phone protocol).

``prepare`` converts the network to ``.tflite`` here; ``run`` pushes it to the phone, runs
``benchmark_model`` and removes the file again (also on failure); ``parse`` reads the tool's
stdout. ``benchmark_model`` prints only aggregates (count, first, min, max, avg, std; newer
builds add p5/median/p95), never the single runs, so rows from this backend keep an empty
``samples_ms`` and take their statistics from the tool.

The adb CLI is driven with ``subprocess`` (``options.adb`` names the executable), which is what
lets the tests substitute a stand-in ``adb`` that runs the local TFLite interpreter.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import torch

from leti.devices.base import Backend, DeviceError, Protocol, Timing
from leti.devices.tflite_cpu import convert_tflite, require_tflite

DEVICE_GONE = re.compile(
    r"device '.*' not found|device offline|device unauthorized|no devices/emulators found|"
    r"device still authorizing|cannot connect to daemon|error: closed"
)
STATS = re.compile(
    r"count=(?P<count>\d+) first=(?P<first>[\d.e+]+) curr=(?P<curr>[\d.e+]+) min=(?P<min>[\d.e+]+) "
    r"max=(?P<max>[\d.e+]+) avg=(?P<avg>[\d.e+]+) std=(?P<std>[\d.e+]+)"
    r"(?: p5=(?P<p5>[\d.e+]+) median=(?P<median>[\d.e+]+) p95=(?P<p95>[\d.e+]+))?"
)
SUMMARY = re.compile(
    r"Inference timings in us: Init: (?P<init>[\d.e+]+), First inference: (?P<first>[\d.e+]+), "
    r"Warmup \(avg\): (?P<warmup>[\d.e+]+), Inference \(avg\): (?P<avg>[\d.e+]+)"
)
LOG_PREFIX = re.compile(r"^(?:[A-Z]+: |[VDIWEF] tflite\s*: )")
OP_TABLE = "Operator-wise Profiling Info for Regular Benchmark Runs:"


class BenchmarkOutputError(ValueError):
    """``benchmark_model`` output without the statistics line; the message quotes its tail."""


def strip_prefix(line: str) -> str:
    """Drop a log prefix (``INFO: `` on recent builds, ``I tflite  : `` in logcat)."""
    return LOG_PREFIX.sub("", line.strip())


def parse_stats(output: str) -> dict[str, float]:
    """The timed runs' statistics in milliseconds.

    The timed-run line is the last line that *starts* with ``count=``: the warm-up line comes
    before it, and the op-profiling footer (``Timings (microseconds): count=...``) does not
    start with ``count=``.
    """
    lines = [strip_prefix(line) for line in output.splitlines()]
    stat_lines = [line for line in lines if line.startswith("count=") and STATS.match(line)]
    if not stat_lines:
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise BenchmarkOutputError(f"benchmark_model printed no 'count=... avg=... std=...' line; output ends:\n{tail}")
    match = STATS.match(stat_lines[-1])
    assert match is not None
    stats = {
        "count": float(match["count"]),
        "first_ms": float(match["first"]) / 1000,
        "min_ms": float(match["min"]) / 1000,
        "max_ms": float(match["max"]) / 1000,
        "avg_ms": float(match["avg"]) / 1000,
        "std_ms": float(match["std"]) / 1000,
    }
    if match["median"] is not None:
        stats["median_ms"] = float(match["median"]) / 1000
    for line in lines:
        summary = SUMMARY.search(line)
        if summary:
            stats["init_ms"] = float(summary["init"]) / 1000
            stats["first_inference_ms"] = float(summary["first"]) / 1000
            stats["warmup_avg_ms"] = float(summary["warmup"]) / 1000
    return stats


def parse_op_profile(output: str) -> list[dict[str, Any]] | None:
    """Rows of the 'Run Order' table of the regular runs' operator profile, or None if absent."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if OP_TABLE in line]
    if not starts:
        return None
    rows = []
    for line in lines[starts[0] + 3 :]:
        fields = [field.strip() for field in strip_prefix(line).split("\t") if field.strip()]
        if len(fields) < 9:
            break
        node_type, _start, first, avg, _pct, _cdf, _mem, times_called, name = fields[:9]
        rows.append(
            {"node_type": node_type, "name": name, "first_ms": float(first), "avg_ms": float(avg),
             "times_called": int(times_called)}
        )
    return rows


class AndroidADB(Backend):
    """Options: ``serial`` (required), ``adb`` (executable, default ``adb``), ``benchmark_binary``
    (default ``/data/local/tmp/benchmark_model``), ``remote_dir`` (default ``/data/local/tmp/leti``),
    ``use_gpu`` and ``op_profiling`` (default false), ``timeout_seconds`` (default 300, as nn-Meter),
    ``taskset`` (a CPU mask such as ``f0`` to pin to the big cores; default none)."""

    name = "android-adb"
    libraries = ("litert-torch", "ai-edge-litert", "torch")

    def resource(self) -> str:
        return f"adb-{self.serial}"

    @property
    def serial(self) -> str:
        if not self.options.get("serial"):
            raise ValueError(f"backend {self.name!r} needs options.serial (see `adb devices`)")
        return str(self.options["serial"])

    def adb(self, *args: str, timeout: float | None = None) -> str:
        """Run one adb command for this phone; adb-side failures become ``DeviceError``."""
        command = [str(self.options.get("adb", "adb")), "-s", self.serial, *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True,
                timeout=timeout or float(self.options.get("timeout_seconds", 300)),
            )
        except FileNotFoundError as error:
            raise DeviceError(f"adb executable {command[0]!r} not found") from error
        except subprocess.TimeoutExpired as error:
            raise DeviceError(f"device {self.serial!r}: '{' '.join(args[:2])}' timed out after {error.timeout:.0f} s") from error
        if done.returncode and DEVICE_GONE.search(done.stderr + done.stdout):
            raise DeviceError(f"device {self.serial!r}: {(done.stderr or done.stdout).strip()}")
        if done.returncode:
            raise RuntimeError(
                f"'adb {' '.join(args)}' exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-500:]}"
            )
        return done.stdout

    def check(self) -> None:
        state = self.adb("get-state", timeout=30).strip()
        if state != "device":
            raise DeviceError(f"device {self.serial!r} is {state!r}, not ready")
        require_tflite(self.name)

    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> Path:
        return convert_tflite(network, example, Path(workdir) / f"leti-{self.serial}-{id(network):x}.tflite")

    def benchmark_command(self, remote_model: str, protocol: Protocol) -> list[str]:
        """The ``benchmark_model`` call: exactly ``runs`` timed runs (``--min_secs=0``)."""
        command = [
            str(self.options.get("benchmark_binary", "/data/local/tmp/benchmark_model")),
            f"--graph={remote_model}",
            f"--num_threads={protocol.threads}",
            f"--warmup_runs={protocol.warmup_runs}",
            f"--warmup_min_secs={protocol.warmup_seconds}",
            f"--num_runs={protocol.runs}",
            "--min_secs=0",
        ]
        if self.options.get("use_gpu"):
            command.append("--use_gpu=true")
        if self.options.get("op_profiling"):
            command.append("--enable_op_profiling=true")
        if self.options.get("taskset"):
            command = ["taskset", str(self.options["taskset"]), *command]
        return command

    def run(self, artifact: Path, example: torch.Tensor, protocol: Protocol) -> str:
        remote_dir = str(self.options.get("remote_dir", "/data/local/tmp/leti"))
        remote = f"{remote_dir}/{artifact.name}"
        try:
            self.adb("shell", f"mkdir -p {shlex.quote(remote_dir)}")
            self.adb("push", str(artifact), remote)
            return self.adb("shell", shlex.join(self.benchmark_command(remote, protocol)))
        finally:
            artifact.unlink(missing_ok=True)
            try:
                self.adb("shell", f"rm -f {shlex.quote(remote)}", timeout=30)
            except (DeviceError, RuntimeError):
                pass  # the phone is gone or the file never arrived; the next check() reports it

    def parse(self, raw: str) -> Timing:
        return Timing(samples_ms=[], reported=parse_stats(raw), op_profile=parse_op_profile(raw))

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "serial": self.options.get("serial")}
