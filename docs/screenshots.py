"""Screenshots of the MLflow UI for the README: runs, one run, and the champion model.

    python docs/screenshots.py --device torch-cpu            # after `make pipeline`, from the repo root

Starts ``mlflow ui`` on the project's store (a free loopback port), drives headless Chromium over
the DevTools protocol (Debian's ``chromium``; ``apt-get install -y chromium``), writes
``docs/mlflow-runs.png``, ``docs/mlflow-compare.png``, ``docs/mlflow-run.png`` and
``docs/mlflow-champion.png``, and stops both processes by PID.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from leti import tracking  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshots: {url} did not answer in {seconds:.0f} s") from None
            time.sleep(0.5)


@contextlib.contextmanager
def process(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """Run ``command`` in its own process group and stop that group (by the leader's PID) after."""
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield child
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


class Page:
    """One Chromium tab over the DevTools protocol: navigate, run JavaScript, capture PNGs."""

    def __init__(self, websocket_url: str) -> None:
        self.socket = connect(websocket_url, max_size=64 * 2**20)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, script: str):  # noqa: ANN201 - whatever the script returns
        result = self.call("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, settle: float = 6.0) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(settle)

    def wait_text(self, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not self.evaluate(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshots: {text!r} never appeared")
            time.sleep(0.5)

    def click_text(self, text: str, selector: str = "button, [role=button], a, label, span") -> bool:
        return bool(self.evaluate(f"""(() => {{
            const hit = [...document.querySelectorAll({json.dumps(selector)})]
                .find(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
            if (hit) {{ hit.click(); return true; }} return false; }})()"""))

    def close_assistant(self) -> None:
        """Hide the MLflow Assistant side panel, which would take a third of the width."""
        self.evaluate("""(() => { const b = [...document.querySelectorAll('button[aria-label=Close]')].pop();
            if (b) b.click(); })()""")
        time.sleep(0.5)

    def choose_columns(self, titles: list[str]) -> None:
        """Tick ``titles`` (metric, param and tag names) in the runs table's column picker."""
        self.evaluate("""[...document.querySelectorAll('[data-testid=column-selection-dropdown]')]
            .find(e => e.innerText.includes('Columns')).click()""")
        time.sleep(1.5)
        for title in titles:
            self.evaluate(f"""(() => {{
                const node = [...document.querySelectorAll('.du-bois-light-tree-treenode')]
                    .find(e => e.innerText.trim() === {json.dumps(title)});
                if (node) node.querySelector('.du-bois-light-tree-checkbox').click(); }})()""")
            time.sleep(0.3)
        self.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        self.call("Input.dispatchKeyEvent", type="keyUp", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        time.sleep(1)

    def screenshot(self, path: Path, height: int | None = None) -> None:
        """A PNG of the page; ``height`` renders a taller page first, to show a long one whole."""
        if height:
            self.call("Emulation.setDeviceMetricsOverride", width=1920, height=height, deviceScaleFactor=1, mobile=False)
            time.sleep(2)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        if height:
            self.call("Emulation.clearDeviceMetricsOverride")
        print(f"screenshots: wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="torch-cpu")
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--experiment-prefix", default="leti")
    parser.add_argument("--store", type=Path, default=ROOT / "mlflow.db")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()

    import mlflow

    store = f"sqlite:///{args.store.resolve()}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.get_experiment_by_name(tracking.experiment_name(args.experiment_prefix, args.space, args.device))
    model = tracking.model_name(args.space, args.device)
    champion = client.get_model_version_by_alias(model, "champion")
    parent_id = client.get_run(champion.run_id).data.tags["mlflow.parentRunId"]
    children = [run.info.run_id for run in client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")]

    ui_port, debug_port = free_port(), free_port()
    base = f"http://127.0.0.1:{ui_port}"
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="leti-chromium-") as scratch, \
            process([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                     "--port", str(ui_port), "--workers", "1"], Path(scratch) / "ui.log"), \
            process([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={scratch}/profile", "--window-size=1920,1200",
                     f"--remote-debugging-port={debug_port}", "about:blank"], Path(scratch) / "chromium.log"):
        wait_for(f"{base}/health")
        wait_for(f"http://127.0.0.1:{debug_port}/json/version")
        with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list") as answer:
            tab = next(t for t in json.load(answer) if t["type"] == "page")
        page = Page(tab["webSocketDebuggerUrl"])
        page.call("Page.enable")

        # The runs of the experiment: the parent expanded, metric and data-tag columns, the datasets.
        page.goto(tracking.runs_url(experiment.experiment_id, base))
        page.wait_text("train-")
        page.close_assistant()
        for _ in range(page.evaluate("""document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]').length""")):
            page.evaluate("""[...document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')]
                .filter(b => !b.dataset.letiOpened).slice(-1).forEach(b => { b.dataset.letiOpened = 1; b.click(); })""")
            time.sleep(1)  # expand every parent run, last first, so each shows its children
        page.choose_columns(["Source", "val_acc_10pct", "test_acc_10pct", "test_mape", "data.latency.dvc_md5", "config_id"])
        page.screenshot(args.output / "mlflow-runs.png")

        # The children side by side: params, metrics and tags of each family.
        compare = f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(children))}" \
                  f"&experiments={urllib.parse.quote(json.dumps([experiment.experiment_id]))}&workflowType=machine_learning"
        page.goto(compare, settle=8)
        page.screenshot(args.output / "mlflow-compare.png", height=3000)

        # The champion's run: datasets, metrics, data tags, the registered model version.
        page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{champion.run_id}?workflowType=machine_learning")
        page.wait_text("dvc_md5")
        page.screenshot(args.output / "mlflow-run.png", height=1400)

        # The registered model and the version its `champion` alias points to.
        page.goto(f"{base}/#/models/{model}?workflowType=machine_learning")
        page.wait_text("champion")
        page.screenshot(args.output / "mlflow-champion.png")


if __name__ == "__main__":
    main()
