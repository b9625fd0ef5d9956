"""An Android phone over adb, timed by TFLite's ``benchmark_model`` (nn-Meter's phone protocol).

``prepare`` converts the network to ``.tflite`` on the host (in the converter environment, see
``leti.devices.litert_env``); ``run`` pushes it to the phone and, in one ``adb shell``, reads the
phone's temperatures and clocks, runs ``benchmark_model``, reads them again and removes the file;
``parse`` reads the tool's stdout. ``benchmark_model`` prints only aggregates (count, first, min,
max, avg, std; newer builds add p5/median/p95), never the single runs, so rows from this backend
keep an empty ``samples_ms`` and take their statistics from the tool.

What the phone is (model, SoC, Android version, GPU and its GL/OpenCL versions, the
``benchmark_model`` build) is asked once per chunk with ``getprop``, ``dumpsys SurfaceFlinger``,
``md5sum`` and ``grep``; the host's facts go under ``host``. TFLite prints no version of its own
(its source has a TODO for it), so the binary's md5 identifies the build.

The adb CLI is driven with ``subprocess`` (``options.adb`` names the executable), which is what
lets the tests substitute a stand-in ``adb`` (``tests/fakes/adb``) that plays a phone.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leti.devices import litert_env
from leti.devices.base import Backend, Protocol, Timing, host_environment, package_versions
from leti.devices.tflite_cpu import convert_tflite, require_tflite
from leti.errors import DeviceError

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
COUNT = re.compile(r"^count=(?P<count>\d+)")
GLES = re.compile(r"GLES: (?P<vendor>[^,]+), (?P<renderer>[^,]+), (?P<version>OpenGL ES [^\n]*)")
OPENCL_LIBRARIES = ("/vendor/lib64/libOpenCL.so", "/system/vendor/lib64/libOpenCL.so", "/vendor/lib64/egl/libGLES_mali.so")
THERMAL_FILES = ("/sys/class/thermal/thermal_zone*/type", "/sys/class/thermal/thermal_zone*/temp")
GPU_FREQUENCY_FILES = ("/sys/class/kgsl/kgsl-3d0/gpuclk", "/sys/class/devfreq/*/cur_freq")
MARK = "@@leti"
"""Separates the sections of one ``adb shell`` script's output."""
GPU_PRECISIONS = ("fp16", "fp32")
GPU_BACKENDS = ("auto", "cl", "gl")
PLUMBING_OPTIONS = ("adb", "remote_dir", "timeout_seconds")
"""Options that say how to reach the phone, not how a network is timed: not part of config_id."""


class BenchmarkOutputError(ValueError):
    """``benchmark_model`` output without the statistics line; the message quotes its tail."""


def strip_prefix(line: str) -> str:
    """Drop a log prefix (``INFO: `` on recent builds, ``I tflite  : `` in logcat)."""
    return LOG_PREFIX.sub("", line.strip())


def parse_stats(output: str) -> dict[str, float]:
    """The timed runs' statistics in milliseconds, and the warm-up's total (``warmup_total_ms``).

    The timed-run line is the last line that *starts* with ``count=``: the warm-up line comes
    before it (with one warm-up run it is only ``count=1 curr=...``), and the op-profiling footer
    (``Timings (microseconds): count=...``) does not start with ``count=``.
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
    counts = [line for line in lines if COUNT.match(line)]
    if len(counts) >= 2:  # the warm-up line precedes the timed one
        warmup = counts[-2]
        warmup_count = int(COUNT.match(warmup)["count"])
        full = STATS.match(warmup)
        average_ms = stats.get("warmup_avg_ms", float(full["avg"]) / 1000 if full else 0.0)
        stats["warmup_count"] = float(warmup_count)
        stats["warmup_total_ms"] = warmup_count * average_ms
    return stats


def parse_op_profile(output: str) -> list[dict[str, Any]] | None:
    """Rows of the 'Run Order' table of the regular runs' operator profile, or None if absent.

    With the GPU delegate the table has one row, the delegate node (``TfLiteGpuDelegateV2``):
    ``benchmark_model`` cannot see inside it.
    """
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if OP_TABLE in line]
    if not starts:
        return None
    rows = []
    for line in lines[starts[0] + 3 :]:
        fields = [field.strip() for field in strip_prefix(line).split("\t") if field.strip()]
        if len(fields) < 9:
            break
        node_type, _start, first, avg, percent, _cdf, _mem, times_called, name = fields[:9]
        rows.append(
            {"node_type": node_type, "name": name, "first_ms": float(first), "avg_ms": float(avg),
             "percent": float(percent.rstrip("%")), "times_called": int(times_called)}
        )
    return rows


def parse_delegate(output: str) -> dict[str, Any]:
    """Which delegate ran the graph and how much of it, from ``benchmark_model``'s log lines."""
    lines = [strip_prefix(line) for line in output.splitlines()]
    found: dict[str, Any] = {"delegate": None}
    for line in lines:
        created = re.match(r"Created TensorFlow Lite (?:(?P<xnn>XNNPACK) )?delegate for (?P<what>\w+)", line)
        if created:
            found["delegate"] = "XNNPACK" if created["xnn"] else created["what"]
        applied = re.match(r"(?:Explicitly applied|Though) (?P<name>\w+) delegate.*?(?P<how>completely|partially|will not)", line)
        if applied:
            found["delegate"] = found["delegate"] or applied["name"]
            found["delegated"] = {"completely": "all", "partially": "part", "will not": "none"}[applied["how"]]
        replaced = re.match(r"Replacing (?P<n>\d+) out of (?P<total>\d+) node\(s\) with delegate", line)
        if replaced:
            found["delegated_nodes"], found["total_nodes"] = int(replaced["n"]), int(replaced["total"])
        api = re.match(r"Initialized (?P<api>OpenCL|OpenGL)-based API", line)
        if api:
            found["gpu_api"] = api["api"]
    return found


def parse_properties(output: str) -> dict[str, str]:
    """``getprop``'s ``[key]: [value]`` lines."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[([^\]]*)\]", output, flags=re.MULTILINE))


def parse_files(output: str) -> dict[str, str]:
    """``grep -sH . FILE...``'s ``path:value`` lines (a file that is missing or unreadable is absent)."""
    found = {}
    for line in output.splitlines():
        path, sep, value = line.partition(":")
        if sep and path.startswith("/"):
            found[path] = value.strip()
    return found


def number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_state(output: str) -> dict[str, Any]:
    """Temperatures (°C, from millidegrees when the zone reports them so), each core's governor and
    clock (MHz), and the GPU's clock as sysfs reports them."""
    files = parse_files(output)
    thermal, cpus, clocks = {}, {}, {}
    for path, value in files.items():
        zone = re.match(r"/sys/class/thermal/(thermal_zone\d+)/temp$", path)
        if zone:
            name = files.get(f"/sys/class/thermal/{zone[1]}/type", zone[1])
            temp = number(value)
            if temp is not None:
                thermal[name] = temp / 1000 if abs(temp) >= 1000 else temp
        core = re.match(r"/sys/devices/system/cpu/(cpu\d+)/cpufreq/(scaling_governor|scaling_cur_freq)$", path)
        if core:
            entry = cpus.setdefault(core[1], {})
            if core[2] == "scaling_governor":
                entry["governor"] = value
            elif number(value) is not None:
                entry["mhz"] = number(value) / 1000
        if path == "/sys/class/kgsl/kgsl-3d0/gpuclk" and number(value) is not None:
            clocks["kgsl-3d0"] = number(value) / 1e6
        devfreq = re.match(r"/sys/class/devfreq/([^/]+)/cur_freq$", path)
        if devfreq and number(value) is not None:
            clocks[devfreq[1]] = number(value) / 1e6
    return {"thermal_c": thermal, "cpus": dict(sorted(cpus.items(), key=lambda item: int(item[0][3:]))),
            "devfreq_mhz": clocks}


def parse_description(output: str, binary: str) -> dict[str, Any]:
    """What the phone says it is, from the sections of ``AndroidADB.describe_script``."""
    sections = output.split(f"{MARK}\n")
    properties, surfaceflinger, md5, libraries, opencl, possible = (sections + [""] * 6)[:6]
    props = parse_properties(properties)
    gles = GLES.search(surfaceflinger)
    opencl_version = re.search(r"OpenCL \d+\.\d+[ -~]*", opencl)
    return {
        "model": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "device": props.get("ro.product.device"),
        "soc": " ".join(filter(None, [props.get("ro.soc.manufacturer"), props.get("ro.soc.model")])) or None,
        "board_platform": props.get("ro.board.platform") or props.get("ro.hardware"),
        "android_version": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "build": props.get("ro.build.fingerprint"),
        "abi": props.get("ro.product.cpu.abi"),
        "gpu_vendor": gles["vendor"].strip() if gles else None,
        "gpu_renderer": gles["renderer"].strip() if gles else None,
        "gl_version": gles["version"].strip() if gles else None,
        "opencl_library": next((line.strip() for line in libraries.splitlines() if line.strip().startswith("/")), None),
        "opencl_version": opencl_version[0].strip() if opencl_version else None,
        "cpus_possible": possible.strip() or None,
        "benchmark_model": binary,
        "benchmark_model_md5": md5.split()[0] if md5.split() else None,
    }


def cpu_list(mask: str | None) -> list[int]:
    """CPU numbers of a ``taskset`` hex mask (``f0`` -> 4, 5, 6, 7)."""
    if not mask:
        return []
    value = int(str(mask), 16)
    return [cpu for cpu in range(value.bit_length()) if value >> cpu & 1]


def cpu_range(text: str | None) -> list[int]:
    """``0-3,6`` -> 0, 1, 2, 3, 6 (the format of ``/sys/devices/system/cpu/possible``)."""
    cpus: list[int] = []
    for part in (text or "").split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit():
            cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


_descriptions: dict[tuple[str, ...], dict[str, Any]] = {}
_descriptions_lock = threading.Lock()


@dataclass
class AndroidADB(Backend):
    """Options: ``serial`` (required), ``adb`` (executable, default ``adb``), ``benchmark_binary``
    (default ``/data/local/tmp/benchmark_model``), ``remote_dir`` (default ``/data/local/tmp/leti``),
    ``use_gpu`` (default false), ``gpu_precision`` (``fp16``: half precision allowed, TFLite's
    default; ``fp32``), ``gpu_backend`` (``auto``, ``cl`` for OpenCL, ``gl`` for OpenGL ES),
    ``op_profiling`` (default false), ``timeout_seconds`` (default 300, as nn-Meter), ``taskset``
    (a CPU mask such as ``f0`` to pin to the big cores; default none). CPU threads are the
    protocol's ``threads``."""

    name = "android-adb"
    libraries = ("ai-edge-litert", "torch")
    artifact_format = "tflite"
    staged: set[str] = field(default_factory=set)
    """Names of models pushed by ``stage`` and not yet run."""

    def resource(self) -> str:
        return f"adb-{self.serial}"

    @property
    def serial(self) -> str:
        if not self.options.get("serial"):
            raise ValueError(f"backend {self.name!r} needs options.serial (see `adb devices`)")
        return str(self.options["serial"])

    @property
    def binary(self) -> str:
        return str(self.options.get("benchmark_binary", "/data/local/tmp/benchmark_model"))

    @property
    def remote_dir(self) -> str:
        return str(self.options.get("remote_dir", "/data/local/tmp/leti"))

    def config_options(self) -> dict[str, Any]:
        """Every timing option with its default filled in; GPU settings only when the GPU is used."""
        options = {key: value for key, value in self.options.items() if key not in PLUMBING_OPTIONS}
        options.setdefault("benchmark_binary", self.binary)
        options["use_gpu"] = bool(options.get("use_gpu", False))
        options["op_profiling"] = bool(options.get("op_profiling", False))
        options.setdefault("taskset", None)
        if options["use_gpu"]:
            options.setdefault("gpu_precision", "fp16")
            options.setdefault("gpu_backend", "auto")
        else:
            options.pop("gpu_precision", None)
            options.pop("gpu_backend", None)
        return options

    def artifact_versions(self) -> dict[str, str | None]:
        return litert_env.versions()

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
        if self.options.get("gpu_precision", "fp16") not in GPU_PRECISIONS:
            raise ValueError(f"backend {self.name!r}: gpu_precision {self.options['gpu_precision']!r} is not one of {GPU_PRECISIONS}")
        if self.options.get("gpu_backend", "auto") not in GPU_BACKENDS:
            raise ValueError(f"backend {self.name!r}: gpu_backend {self.options['gpu_backend']!r} is not one of {GPU_BACKENDS}")
        require_tflite(self.name)
        state = self.adb("get-state", timeout=30).strip()
        if state != "device":
            raise DeviceError(f"device {self.serial!r} is {state!r}, not ready")
        self.adb("shell", f"mkdir -p {shlex.quote(self.remote_dir)}", timeout=30)

    def write_artifact(self, network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
        return convert_tflite(network, example, path)

    def benchmark_command(self, remote_model: str, protocol: Protocol) -> list[str]:
        """The ``benchmark_model`` call: exactly ``runs`` timed runs (``--min_secs=0``)."""
        command = [
            self.binary,
            f"--graph={remote_model}",
            f"--num_threads={protocol.threads}",
            f"--warmup_runs={protocol.warmup_runs}",
            f"--warmup_min_secs={protocol.warmup_seconds}",
            f"--num_runs={protocol.runs}",
            "--min_secs=0",
        ]
        if self.options.get("use_gpu"):
            command.append("--use_gpu=true")
            precision = self.options.get("gpu_precision", "fp16")
            command.append(f"--gpu_precision_loss_allowed={'true' if precision == 'fp16' else 'false'}")
            if self.options.get("gpu_backend", "auto") != "auto":
                command.append(f"--gpu_backend={self.options['gpu_backend']}")
        if self.options.get("op_profiling"):
            command.append("--enable_op_profiling=true")
        if self.options.get("taskset"):
            command = ["taskset", str(self.options["taskset"]), *command]
        return command

    def cpu_affinity(self) -> list[int]:
        """The phone's cores the runs may use: the ``taskset`` mask, else every core it has."""
        return cpu_list(self.options.get("taskset")) or cpu_range(self.describe().get("cpus_possible"))

    def state_command(self) -> str:
        """One ``grep`` that prints temperatures, the used cores' governor and clock, GPU clocks."""
        cores = cpu_list(self.options.get("taskset"))
        cpu_files = [f"/sys/devices/system/cpu/cpu{core}/cpufreq/{name}" for core in cores
                     for name in ("scaling_governor", "scaling_cur_freq")] or [
            "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor",
            "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"]
        return "grep -sH . " + " ".join([*THERMAL_FILES, *cpu_files, *GPU_FREQUENCY_FILES])

    def stage(self, artifacts: list[Path]) -> None:
        """Push every model that is ready in one ``adb push``, before the chunk's runs."""
        if artifacts:
            self.adb("push", *(str(path) for path in artifacts), f"{self.remote_dir}/")
            self.staged.update(path.name for path in artifacts)

    def unstage(self) -> None:
        if self.staged:
            try:
                self.adb("shell", "rm -f " + " ".join(shlex.quote(f"{self.remote_dir}/{name}") for name in sorted(self.staged)),
                         timeout=30)
            except (DeviceError, RuntimeError):
                pass  # the phone is gone; the next check() reports it
            self.staged.clear()

    def run(self, artifact: Path, example: torch.Tensor, protocol: Protocol) -> str:
        """Push the model unless staged, then one shell: state, ``benchmark_model``, state, remove it."""
        remote = f"{self.remote_dir}/{artifact.name}"
        if artifact.name not in self.staged:
            self.adb("push", str(artifact), remote)
        self.staged.discard(artifact.name)
        script = "; ".join([
            self.state_command(), f"echo {MARK}", shlex.join(self.benchmark_command(remote, protocol)),
            f"echo {MARK}", self.state_command(), f"rm -f {shlex.quote(remote)}",
        ])
        try:
            return self.adb("shell", script)
        except (DeviceError, RuntimeError, subprocess.TimeoutExpired):
            try:
                self.adb("shell", f"rm -f {shlex.quote(remote)}", timeout=30)
            except (DeviceError, RuntimeError):
                pass  # the phone is gone; the next check() reports it
            raise

    def state(self) -> dict[str, Any]:
        """The phone's temperatures, governors and clocks (as around each run), plus Android's own
        thermal status (0 none ... 6 shutdown; 2 and above throttle) from ``dumpsys thermalservice``."""
        raw = self.adb("shell", f"{self.state_command()}; echo {MARK}; dumpsys thermalservice")
        files, _, thermal = raw.partition(f"{MARK}\n")
        found = re.search(r"^Thermal Status: (\d+)", thermal, re.MULTILINE)
        return {**parse_state(files), "thermal_status": int(found[1]) if found else None}

    def parse(self, raw: str) -> Timing:
        before, output, after = (raw.split(f"{MARK}\n") + ["", ""])[:3] if f"{MARK}\n" in raw else ("", raw, "")
        stats = parse_stats(output)
        state = {"before": parse_state(before), "after": parse_state(after), **parse_delegate(output)}
        return Timing(samples_ms=[], reported=stats, op_profile=parse_op_profile(output),
                      warmup_ms=stats.get("warmup_total_ms", 0.0), device_state=state)

    def describe_script(self) -> str:
        libraries = " ".join(OPENCL_LIBRARIES)
        return "; ".join([
            "getprop", f"echo {MARK}", "dumpsys SurfaceFlinger", f"echo {MARK}", f"md5sum {shlex.quote(self.binary)}",
            f"echo {MARK}", f"ls {libraries}", f"echo {MARK}",
            f"grep -a -h -o -m 1 -E 'OpenCL [0-9]+\\.[0-9]+[ -~]*' {libraries}", f"echo {MARK}",
            "cat /sys/devices/system/cpu/possible", f"echo {MARK}",
        ])

    def describe(self) -> dict[str, Any]:
        """What the phone reports about itself; asked once per phone and build in this process."""
        key = (str(self.options.get("adb", "adb")), self.serial, self.binary)
        with _descriptions_lock:
            if key not in _descriptions:
                _descriptions[key] = parse_description(self.adb("shell", self.describe_script()), self.binary)
            return _descriptions[key]

    def environment(self) -> dict[str, Any]:
        """The phone first; the host that converts and drives it under ``host``."""
        return {
            "device": self.describe(),
            "serial": self.serial,
            "host": host_environment(),
            "backend": self.name,
            "options": self.options,
            "libraries": package_versions(*self.libraries),
            "converter": litert_env.versions(),
        }
