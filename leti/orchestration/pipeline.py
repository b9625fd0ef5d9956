"""Prefect flow over the DVC pipeline: one task per DVC stage, with DVC deciding what is stale.

DVC owns the DAG. Each run asks DVC for the stages and their order (the plan ``dvc repro`` follows,
``dvc.repo.reproduce.plan_repro``), so a stage added to dvc.yaml becomes a task without a change
here, and each task's upstream tasks are the stage's upstream stages. A stage that DVC finds up to
date, and whose upstream stages did not run, finishes without starting anything; every other stage
runs as ``dvc repro --single-item STAGE``, so DVC decides again and dvc.lock records the stage
exactly as a plain ``dvc repro`` would. ``dvc repro`` stays the plain way to run everything.

What Prefect adds: retries of a stage whose device dropped out (the measurement commands exit with
75, EX_TEMPFAIL, for a lost device and with other codes for bad input), the stage's output in the
run's logs, per-stage timings, and a Markdown artifact with the timings and the final metrics. The
stage processes report to this flow's Prefect server (``PREFECT_API_URL``), so the measure flows
inside them do not each start a temporary server of their own (7-12 s each).

Parameters become params.yaml values through DVC's own ``--set-param`` code (Hydra overrides, as in
``dvc exp run --set-param train.seed=1``), and a run with parameters or an experiment name is saved
as a DVC experiment (``dvc exp save``): ``dvc exp show`` lists it, ``dvc exp apply`` restores it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client

from leti.errors import DEVICE_LOST
from leti.orchestration.retries import retry_only_on

METRICS_ARTIFACT = "pipeline-metrics"
"""Exit status of a stage command whose device dropped out: worth retrying, unlike any other."""


class StageFailed(RuntimeError):
    """A stage command failed; the message names the stage and ends with its last output lines."""


class StageDeviceLost(StageFailed):
    """A stage failed because its device dropped out (``DEVICE_LOST``); Prefect retries it."""


@dataclass(frozen=True)
class Step:
    """One stage of the plan: its DVC address, its upstream stages, whether DVC finds it stale, and
    its outputs that git carries (``cache: false``: metrics, plots, reports)."""

    stage: str
    upstream: tuple[str, ...]
    stale: bool
    git_outs: tuple[str, ...] = ()


def plan(root: Path, targets: Iterable[str] | None = None) -> list[Step]:
    """The stages ``dvc repro TARGETS`` would consider, in its order, each with DVC's staleness."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    # DVC resolves targets against the working directory, as `dvc repro TARGETS` run in ``root`` would.
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        stages = collect_stages(repo, list(targets or ["dvc.yaml"]))
        graph = get_active_graph(repo.index.graph)
        return [
            Step(
                stage.addressing,
                tuple(up.addressing for up in graph.successors(stage)),
                stage.changed(),
                tuple(out.def_path for out in stage.outs if not out.use_cache),
            )
            for stage in plan_repro(graph, stages)
        ]


def check_arguments(root: Path, targets: Iterable[str] | None, overrides: list[str]) -> None:
    """Fail in one line, before a flow run starts, on a stage DVC does not know or an override that
    does not apply (tried on a copy of each params file)."""
    with tempfile.TemporaryDirectory() as scratch:
        for path in to_path_overrides(overrides):
            if not (root / path).is_file():
                raise ValueError(f"--set-param: no params file {path!r} in {root}")
            shutil.copy(root / path, Path(scratch) / Path(path).name)
        apply_params(Path(scratch), [f"{Path(path).name}:{value}" for path, values in to_path_overrides(overrides).items()
                                     for value in values])
    plan(root, targets)


def dvc(*args: str) -> list[str]:
    """A DVC command line run with this interpreter's DVC."""
    return [sys.executable, "-m", "dvc", *args]


def run_logged(command: list[str], root: Path, env: dict[str, str], logger: Any) -> tuple[int, list[str]]:
    """Run ``command`` in ``root``, sending each output line to ``logger``; returns status and lines."""
    lines: list[str] = []
    with subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        for line in process.stdout:  # universal newlines: each progress-bar refresh is a line
            line = line.rstrip()
            if line:
                lines.append(line)
                logger.info(line)
    return process.returncode, lines


@task(retry_condition_fn=retry_only_on(StageDeviceLost))
def run_stage(step: Step, root: str, api_url: str, upstream_ran: bool) -> dict[str, Any]:
    """Reproduce one stage if DVC says so; returns its status (ran, up to date) and wall time."""
    logger = get_run_logger()
    start = time.monotonic()
    if not step.stale and not upstream_ran:
        logger.info("%s: up to date", step.stage)
        return {"stage": step.stage, "status": "up to date", "seconds": round(time.monotonic() - start, 2)}
    status, lines = run_logged(dvc("repro", "--single-item", step.stage), Path(root), stage_environment(api_url), logger)
    seconds = round(time.monotonic() - start, 2)
    if status:
        error = StageDeviceLost if any(f"exited with {DEVICE_LOST}" in line for line in lines[-15:]) else StageFailed
        raise error(f"stage {step.stage!r} failed after {seconds} s: {failure(lines)}")
    ran = any(f"Running stage '{step.stage}'" in line for line in lines)
    logger.info("%s: %s in %.1f s", step.stage, "ran" if ran else "up to date", seconds)
    return {"stage": step.stage, "status": "ran" if ran else "up to date", "seconds": seconds}


def failure(lines: list[str]) -> str:
    """DVC's error line (the stage's own output is in the log), else the last line of output."""
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def to_path_overrides(overrides: list[str]) -> dict[str, list[str]]:
    """``[FILE:]KEY=VALUE`` overrides grouped by params file (params.yaml when none is named)."""
    from dvc.utils.cli_parse import to_path_overrides as group

    return group(overrides)


def apply_params(root: Path, overrides: list[str]) -> None:
    """Write ``overrides`` (``[FILE:]KEY=VALUE``) into the params files, as ``dvc exp run --set-param``."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    for path, values in to_path_overrides(overrides).items():
        try:
            apply_overrides(str(root / path), values)
        except DvcException as error:  # DVC's message is generic; Hydra's, its cause, names the key
            reason = str(error.__cause__ or error).splitlines()[0]
            raise ValueError(f"--set-param {' '.join(values)}: {reason}") from None


def stage_environment(api_url: str) -> dict[str, str]:
    """The environment of stage processes: this flow's Prefect server, this interpreter's ``python``
    for the stage commands (a worker need not run in an activated environment), and progress bars
    that refresh every 10 s in the log."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PREFECT_API_URL": api_url, "TQDM_MININTERVAL": "10"}


def current_api_url() -> str:
    """The Prefect API this flow run reports to (a temporary server's when none is configured)."""
    with get_client(sync_client=True) as client:
        return str(client.api_url)


def metrics(root: Path) -> dict[str, Any]:
    """The workspace's DVC metrics, file by file (``dvc metrics show``)."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        files = repo.metrics.show().get("", {}).get("data", {})
    return {path: entry.get("data", {}) for path, entry in files.items() if "data" in entry}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metrics_markdown(path: str, values: dict[str, Any]) -> list[str]:
    """One table per metrics file: a row per top-level key, a column per nested key."""
    nested = {key: value for key, value in values.items() if isinstance(value, dict)}
    flat = {key: value for key, value in values.items() if not isinstance(value, dict)}
    lines = [f"### `{path}`", ""]
    if nested:
        columns = list(dict.fromkeys(column for row in nested.values() for column in row))
        lines += ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for key, row in nested.items():
            lines.append(f"| {key} | " + " | ".join(format_value(row.get(column, "")) for column in columns) + " |")
    if flat:
        lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {format_value(v)} |" for k, v in flat.items()]
    return lines + [""]


def report_markdown(rows: list[dict[str, Any]], found: dict[str, Any], wall_seconds: float,
                    overrides: list[str], experiment: str | None) -> str:
    """The run's artifact: stage statuses and timings, then every metrics file."""
    lines = ["## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {row['stage']} | {row['status']} | {row.get('seconds', '')} |" for row in rows]
    staged = sum(row.get("seconds") or 0 for row in rows)
    lines += ["", f"Flow wall time {wall_seconds:.1f} s, of which stage tasks {staged:.1f} s."]
    if overrides or experiment:
        lines += ["", f"Parameters: `{' '.join(overrides) or 'as committed'}`; DVC experiment: `{experiment or '-'}`."]
    lines += ["", "## Metrics", ""]
    for path, values in found.items():
        lines += metrics_markdown(path, values)
    return "\n".join(lines)


def save_experiment(root: Path, name: str | None, git_outs: list[str], env: dict[str, str], logger: Any,
                    stages: list[str] | None = None) -> str:
    """Record the workspace as a DVC experiment, with the outputs git carries even when they are not
    committed yet (a first run); ``stages``: only these stages' outputs are cached (a run of some
    targets: the other stages' outputs may not exist). Returns the experiment's name as ``dvc exp
    show`` lists it."""
    include = [arg for path in git_outs if (root / path).exists() for arg in ("--include-untracked", path)]
    args = ["exp", "save", "--force", *include, *(["--name", name] if name else []), *(stages or [])]
    status, lines = run_logged(dvc(*args), root, env, logger)
    if status:
        raise StageFailed(f"dvc exp save failed: {failure(lines)}")
    # "Experiment has been saved as: NAME"
    return next((line.rsplit(":", 1)[1].strip() for line in lines if "saved as" in line), name or "")


@flow(name="leti-pipeline")
def pipeline(
    targets: list[str] | None = None,
    set_params: list[str] | None = None,
    experiment: str | None = None,
    push: bool = False,
    retries: int = 2,
    retry_delay_seconds: float = 30.0,
    project: str = ".",
) -> dict[str, Any]:
    """Run the DVC pipeline (or the stages ``targets`` need) stage by stage.

    ``set_params``: params.yaml overrides such as ``["train.seed=1", "sample.n=100"]``, as for
    ``dvc exp run --set-param``; with them, or with an ``experiment`` name, the result is saved as a
    DVC experiment. ``push``: send the stages' outputs to the default DVC remote afterwards.
    ``retries``: attempts after a stage's device drops out (other failures are not retried).
    """
    logger = get_run_logger()
    start = time.monotonic()
    root = Path(project).resolve()
    overrides = list(set_params or [])
    if overrides:
        apply_params(root, overrides)
        logger.info("params: %s", " ".join(overrides))
    steps = plan(root, targets)
    logger.info("DVC plan: %s", ", ".join(f"{s.stage}{'*' if s.stale else ''}" for s in steps) + " (* stale)")
    api_url = current_api_url()

    rows: dict[str, dict[str, Any]] = {}
    futures: dict[str, Any] = {}
    for step in steps:
        blocked = [up for up in step.upstream if rows.get(up, {}).get("status") not in ("ran", "up to date")]
        if blocked:
            rows[step.stage] = {"stage": step.stage, "status": f"not run: upstream {blocked[0]} did not finish"}
            continue
        stage_task = run_stage.with_options(
            name=step.stage, task_run_name=step.stage, retries=retries, retry_delay_seconds=retry_delay_seconds
        )
        upstream_ran = any(rows[up]["status"] == "ran" for up in step.upstream)
        future = stage_task.submit(step, str(root), api_url, upstream_ran,
                                   wait_for=[futures[up] for up in step.upstream if up in futures])
        future.wait()
        futures[step.stage] = future
        if future.state.is_completed():
            rows[step.stage] = future.result()
        else:
            rows[step.stage] = {"stage": step.stage, "status": f"FAILED: {future.state.result(raise_on_failure=False)}"}

    failed = [row["stage"] for row in rows.values() if row["status"].startswith("FAILED")]
    name = None
    if not failed and (overrides or experiment):
        git_outs = [path for step in steps for path in step.git_outs]
        name = save_experiment(root, experiment, git_outs, stage_environment(api_url), logger,
                               [step.stage for step in steps] if targets else None)
    if not failed and push:
        status, _ = run_logged(dvc("push", *(step.stage for step in steps)), root, stage_environment(api_url), logger)
        if status:
            failed.append("dvc push")
    found = metrics(root)
    markdown = report_markdown(list(rows.values()), found, time.monotonic() - start, overrides, name)
    create_markdown_artifact(key=METRICS_ARTIFACT, markdown=markdown, description="leti pipeline: stages and metrics")
    if failed:
        raise StageFailed(f"pipeline failed: {', '.join(failed)}")
    return {"stages": list(rows.values()), "metrics": found, "experiment": name}
