"""The Prefect pipeline flow for real: deployed from prefect.yaml to a `prefect server` started here
on 127.0.0.1, run by a process worker, one task per DVC stage, parameters kept as a DVC experiment;
and, on a pipeline of its own, retries for a lost device only."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from pipeline_helpers import (HANG_SECONDS, HAS_PUBLISHED, ROOT, commit_all, environment, free_port, repro_targets, run, serving,
                              stages_run)

from leti import params

pytestmark = pytest.mark.slow

PREFECT = [sys.executable, "-m", "prefect"]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory, e2e_home: Path):
    """A `prefect server` on 127.0.0.1 with its own database, stopped by its PID at the end."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    command = [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, home, e2e_home, f"{url}/health", home / "server.log", PREFECT_HOME=str(home)):
        yield url


def api(url: str, path: str, body: dict) -> list[dict]:
    response = httpx.post(f"{url}{path}", json={"limit": 200, "offset": 0, **body}, timeout=30)
    response.raise_for_status()
    return response.json()


def flow_runs(url: str, flow_name: str) -> list[dict]:
    return api(url, "/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}})


def task_runs(url: str, flow_run_id: str) -> dict[str, dict]:
    return {run["name"]: run for run in api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})}


@pytest.fixture(scope="module")
def project(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory, e2e_home: Path) -> Path:
    """A copy of the reproduced project with its results committed: up to date."""
    repo = tmp_path_factory.mktemp("flow") / "leti"
    shutil.copytree(tiny_repo, repo, symlinks=True)
    commit_all(repo, e2e_home, "results of the tiny pipeline")
    return repo


@pytest.fixture(scope="module")
def deployed_run(project: Path, prefect_api: str, e2e_home: Path) -> dict:
    """prefect.yaml deployed as is; the `pipeline` deployment run by a `leti-cpu` worker with two
    params changed: the measure stages rerun (resuming: nothing new to time) and train/evaluate rerun."""
    server = {"PREFECT_API_URL": prefect_api}
    deployments = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"]
    for pool in sorted({deployment["work_pool"]["name"] for deployment in deployments}):
        run([*PREFECT, "work-pool", "create", pool, "--type", "process"], project, e2e_home, **server)
    run([*PREFECT, "--no-prompt", "deploy", "--all"], project, e2e_home, **server)
    targets = ["--param", f"targets={json.dumps(repro_targets())}"] if repro_targets() else []  # without the published data
    run([*PREFECT, "deployment", "run", "leti-pipeline/pipeline", "--param", 'set_params=["measure.part_size=4", "train.nb201.seed=1"]',
         "--param", "experiment=seed-1", *targets], project, e2e_home, **server)
    worker = run([*PREFECT, "worker", "start", "--pool", "leti-cpu", "--run-once"], project, e2e_home, **server)
    (pipeline_run,) = flow_runs(prefect_api, "leti-pipeline")
    return {"flow_run": pipeline_run, "log": worker.stdout + worker.stderr}


def test_the_deployment_runs_every_dvc_stage_as_a_task(deployed_run: dict, project: Path, prefect_api: str,
                                                       e2e_home: Path) -> None:
    assert deployed_run["flow_run"]["state_type"] == "COMPLETED", deployed_run["log"][-3000:]
    stages = [stage for stage in run(["dvc", "stage", "list", "--name-only"], project, e2e_home).stdout.split()
              if stage.split("@")[0] in stages_run()]
    tasks = task_runs(prefect_api, deployed_run["flow_run"]["id"])
    assert set(tasks) == set(stages) and "measure@torch-cpu" in tasks
    assert all(task["state_type"] == "COMPLETED" for task in tasks.values())
    (artifact,) = api(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["pipeline-metrics"]}}})
    markdown = artifact["data"]
    for stage in ("measure@torch-cpu", "measure_ops@torch-cpu", "train@nb201", "evaluate@nb201"):
        assert f"| {stage} | ran |" in markdown
    assert "| sample@nb201 | up to date |" in markdown and "| featurize@nb101 | up to date |" in markdown
    assert "| train@nb101 | up to date |" in markdown  # its rows did not change: the measurement resumed
    assert "`metrics/nb201.json`" in markdown and "`metrics/nb101.json`" in markdown and "| xgboost |" in markdown


def test_stage_processes_report_to_the_flows_server(deployed_run: dict, project: Path, prefect_api: str) -> None:
    """The measure stages' own Prefect flows ran against this server: no temporary server of their own.
    Each measure@<device> runs one flow per space the device measures."""
    config = project / "params.yaml"
    expected = sum(len(params.device_spaces(device, config)) for device in params.load(config)["devices"])
    measure_runs = flow_runs(prefect_api, "leti-measure")
    assert expected == 4 and len(measure_runs) == expected  # torch-cpu and onnxruntime-cpu: nb201, nb101
    assert all(run["state_type"] == "COMPLETED" for run in measure_runs)
    assert "Starting temporary server" not in deployed_run["log"]


@pytest.mark.skipif(not HAS_PUBLISHED, reason="dvc exp apply checks out every stage's outputs; without the published "
                                              "HELP and LatBench data the ingest stages have none")
def test_the_run_is_a_dvc_experiment_that_exp_apply_restores(deployed_run: dict, project: Path, e2e_home: Path) -> None:
    shown = run(["dvc", "exp", "show", "--csv", "--no-pager"], project, e2e_home).stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown))}
    assert rows["seed-1"]["train.nb201.seed"] == "1" and rows["seed-1"]["measure.part_size"] == "4"
    metrics = (project / "metrics/nb201.json").read_text()
    run(["git", "checkout", "--", "."], project, e2e_home)
    run(["dvc", "checkout", "--force"], project, e2e_home)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["nb201"]["seed"] == 0
    run(["dvc", "exp", "apply", "seed-1"], project, e2e_home)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["nb201"]["seed"] == 1
    assert (project / "metrics/nb201.json").read_text() == metrics
    commit_all(project, e2e_home, "seed 1")
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], project, e2e_home).stdout)
    assert any(change.get("diff") for change in diff["metrics/nb201.json"].values())
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], project, e2e_home).stdout)
    (scatter,) = plots["data"]["plots/nb201/test_predictions.csv"]
    assert scatter["revisions"] == ["HEAD~1", "HEAD"]
    points = scatter["content"]["data"]["values"]
    assert sorted({point["rev"] for point in points}) == ["HEAD", "HEAD~1"] and len(points) == 2 * 4 * 3  # 4 predictors x 3 test cells
    assert "Data and pipelines are up to date." in run(["dvc", "status"], project, e2e_home).stdout


def test_on_an_up_to_date_repo_the_flow_runs_no_stage(deployed_run: dict, project: Path, prefect_api: str,
                                                      e2e_home: Path) -> None:
    targets = [f"--target={target}" for target in repro_targets()]
    result = run([sys.executable, "flows/pipeline.py", *targets], project, e2e_home, PREFECT_API_URL=prefect_api)
    statuses = {row["stage"]: row["status"] for row in json.loads(result.stdout)["stages"]}
    assert set(statuses.values()) == {"up to date"}
    assert "Running stage" not in result.stderr


def scratch_dvc_repo(path: Path, home: Path) -> None:
    """A git + DVC repository of the test's own, with DVC analytics off as in leti's .dvc/config."""
    run(["git", "init", "-q"], path, home)
    run(["dvc", "init", "-q"], path, home, DVC_NO_ANALYTICS="1")
    run(["dvc", "config", "core.analytics", "false"], path, home)


FLAKY = """import pathlib, sys
attempts = pathlib.Path("attempts")
attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
if attempts.read_text() == "x":  # the first attempt finds the device gone: EX_TEMPFAIL
    sys.stderr.write("device 'phone' not found\\n")
    sys.exit(75)
pathlib.Path("flaky.txt").write_text("measured")
"""

def test_a_lost_device_is_retried_and_bad_input_is_not(tmp_path: Path, prefect_api: str, e2e_home: Path) -> None:
    """A pipeline of stages DVC defines here, unknown to the flow's code: the stage exiting 75 is
    retried, the one exiting 2 fails once, its downstream stage does not run, the others do."""
    scratch_dvc_repo(tmp_path, e2e_home)
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "flaky": {"cmd": "python flaky.py", "deps": ["flaky.py"], "outs": ["flaky.txt"]},
        "after": {"cmd": "cp flaky.txt after.txt", "deps": ["flaky.txt"], "outs": ["after.txt"]},
        "broken": {"cmd": "python -c 'import sys; sys.exit(2)'", "outs": ["broken.txt"]},
        "downstream": {"cmd": "cp broken.txt downstream.txt", "deps": ["broken.txt"], "outs": ["downstream.txt"]},
    }}))
    result = subprocess.run([sys.executable, str(ROOT / "flows" / "pipeline.py"), "--retry-delay", "0"], cwd=tmp_path,
                            env=environment(e2e_home, tmp_path, PYTHONPATH=str(ROOT), PREFECT_API_URL=prefect_api),
                            capture_output=True, text=True, timeout=HANG_SECONDS)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("pipeline: error: pipeline failed: broken")
    (flow_run,) = [r for r in flow_runs(prefect_api, "leti-pipeline") if r["state_type"] == "FAILED"]
    tasks = task_runs(prefect_api, flow_run["id"])
    assert (tasks["flaky"]["state_type"], tasks["flaky"]["run_count"]) == ("COMPLETED", 2)
    assert (tasks["broken"]["state_type"], tasks["broken"]["run_count"]) == ("FAILED", 1)
    assert tasks["after"]["state_type"] == "COMPLETED" and "downstream" not in tasks
    assert (tmp_path / "after.txt").read_text() == "measured"


def test_bad_arguments_are_named_before_any_flow_run(tmp_path: Path, e2e_home: Path) -> None:
    from dvc.exceptions import DvcException

    from leti.orchestration.pipeline import check_arguments

    scratch_dvc_repo(tmp_path, e2e_home)
    (tmp_path / "params.yaml").write_text("train:\n  seed: 0\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"cmd": "true", "params": ["train"]}}}))
    check_arguments(tmp_path, ["train"], ["train.seed=1"])
    assert (tmp_path / "params.yaml").read_text() == "train:\n  seed: 0\n"  # checked on a copy
    with pytest.raises(DvcException, match="'nosuch'"):
        check_arguments(tmp_path, ["nosuch"], [])
    with pytest.raises(ValueError, match="nosuch.seed"):
        check_arguments(tmp_path, None, ["nosuch.seed=1"])
    with pytest.raises(ValueError, match="'other.yaml'"):
        check_arguments(tmp_path, None, ["other.yaml:seed=1"])


def test_nothing_lands_in_the_home_directory_here_either(deployed_run: dict, e2e_home: Path) -> None:
    """The server, `prefect deploy`, the worker, the flow runs and the scratch repositories above kept
    their state elsewhere (pytest runs a file's tests in order)."""
    assert not list(e2e_home.iterdir())
