"""Orchestration overhead: the Prefect pipeline flow (flows/pipeline.py) against plain `dvc repro`.

Each case runs in a fresh `git clone` of this repository (its committed state) on tiny params
(8 cells, 3 timed runs, a 60-cell HELP report on one device), in a clean environment:
- a full run from nothing: every stage runs;
- an up-to-date repository: no stage runs, so all the time is overhead.
The flow runs twice: with no Prefect server configured (it starts a temporary one, as a first
`python flows/pipeline.py` does) and against a running `prefect server` (PREFECT_API_URL).
Plain `dvc repro` runs twice as well: as is (the measure stage's flow starts its own temporary
server) and with PREFECT_API_URL set (it reports to the running server instead).

    python benchmarks/orchestration.py --full-repeats 3 --output benchmarks/results/orchestration.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from leti import project
from leti.orchestration.pipeline import apply_params

ROOT = Path(__file__).resolve().parent.parent
HELP = (ROOT / ".." / "shared" / "datasets" / "help").resolve()
TINY = [
    "sample.n=8", "measure.defaults.runs=3", "measure.defaults.warmup_runs=1",
    "train.train_size=3", "train.val_size=2", "train.predictors.xgboost.n_estimators=20",
    f"ingest_help.source={HELP}", "ingest_help.devices=[gold_6240]",
    "report.devices=[gold_6240]", "report.train_size=60", "report.val_size=20", "report.study_device=gold_6240",
    "~report.predictors.layerwise", "~report.predictors.xgboost", "report.predictors.gcn.epochs=2",
    "report.predictors.gcn.batch_size=16", "+report.predictors.gcn.hidden=16", "+report.predictors.gcn.layers=2",
    "report.ensemble_members=[gcn,linear]", "~report.ablations.random_features",
    "report.train_sizes=[30]", "report.train_size_predictors=[linear]", "report.batch_sizes=[]",
]


def environment(home: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: leti's variables unset (the clone's own project sets them)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(home)}
    for name in (*project.local_environment(home), "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PYTHONPATH"):
        env.pop(name, None)
    return {**env, **extra}


def fresh_clone(where: Path, name: str) -> Path:
    clone = where / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / "dvc.lock").unlink(missing_ok=True)
    apply_params(clone, TINY)
    return clone


def cpu_seconds() -> float:
    """CPU time of every finished child process and its own children: far less sensitive than wall
    time to other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds(server: subprocess.Popen) -> float:
    """CPU time so far of the running Prefect server and its children (its work for the runs)."""
    import psutil

    processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:4]) for p in processes)


def idle_rate(server: subprocess.Popen, seconds: float = 30.0) -> float:
    """CPU seconds per second the running server spends on its own (its background services)."""
    before = server_cpu_seconds(server)
    time.sleep(seconds)
    return (server_cpu_seconds(server) - before) / seconds


def timed(command: list[str], cwd: Path, env: dict[str, str], server: subprocess.Popen, idle: float) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``, with the CPU the running server spent on it
    (beyond its idle rate) included."""
    start, cpu, served = time.perf_counter(), cpu_seconds(), server_cpu_seconds(server)
    result = subprocess.run(command, cwd=cwd, env={**env, "PYTHONPATH": str(cwd)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    seconds = wall, cpu_seconds() - cpu + max(0.0, server_cpu_seconds(server) - served - idle * wall)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{result.stderr[-2000:]}")
    return seconds


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=home, env=environment(home, PREFECT_HOME=str(home / "prefect")),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("prefect server did not start in 2 minutes")


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-repeats", type=int, default=1, help="full runs of each case (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="up-to-date runs after each full run (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="leti-orchestration-"))
    home = work / "home"
    home.mkdir()
    server, url = start_server(work)
    server_idle = idle_rate(server)
    flow = [sys.executable, "flows/pipeline.py"]
    cases = {
        "dvc repro": (["dvc", "repro"], {}),
        "dvc repro, PREFECT_API_URL set": (["dvc", "repro"], {"PREFECT_API_URL": url}),
        "pipeline flow, temporary server": (flow, {}),
        "pipeline flow, running server": (flow, {"PREFECT_API_URL": url}),
    }
    full: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    idle: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    try:
        # Cases take turns, so a change in the machine's load falls on all of them alike.
        for repeat in range(args.full_repeats):
            for number, (name, (command, extra)) in enumerate(cases.items()):
                clone = fresh_clone(work, f"clone-{repeat}-{number}")
                env = environment(home, **extra)
                full[name].append(timed(command, clone, env, server, server_idle))
                idle[name] += [timed(command, clone, env, server, server_idle) for _ in range(args.repeats)]
                print(f"{name}: full run {full[name][-1]}, up to date {idle[name][-args.repeats:]} (wall, CPU s)", flush=True)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    lines = [
        f"Orchestration overhead, {platform.node()} ({os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} "
        f"/ {load[2]:.1f} at the end), {time.strftime('%Y-%m-%d')}; tiny params; {args.full_repeats} full runs and "
        f"{args.full_repeats * args.repeats} up-to-date runs of each.",
        "",
        "Wall: median (min-max) seconds. CPU: median CPU seconds of the command's whole process tree and of the running",
        f"Prefect server meanwhile beyond its idle rate ({server_idle:.3f} CPU s/s): the figure a shared machine's",
        "load hardly moves.",
        "",
        "| how | full run: wall | full run: CPU | up to date: wall | up to date: CPU |",
        "|---|---|---|---|---|",
        *(f"| {name} | {spread([w for w, _ in full[name]], 1)} | {statistics.median(c for _, c in full[name]):.1f} "
          f"| {spread([w for w, _ in idle[name]], 2)} | {statistics.median(c for _, c in idle[name]):.2f} |" for name in cases),
    ]
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
