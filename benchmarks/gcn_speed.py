"""Where the GCN's time goes, and the figures the issue sets targets for, on this machine.

    python benchmarks/gcn_speed.py --latency data/latbench --device desktop-gpu-gtx-1080ti-fp32

Prints (and writes ``--output``):
1. one training epoch of the BRP-NAS model (900 cells, one thread) with DGL's ``GraphConv`` on
   graphs batched once, against the dense batched adjacency leti trains on, at batch 1 and 32;
2. one AdamW step of the 1.1 M-weight model, plain against ``fused=True``;
3. ``gcn`` with its default parameters: fit on 900 cells (validation 100) on one thread, and
   prediction of all 15625 NB201 cells;
4. the reference protocol (batch 1, float64, up to 250 epochs) extrapolated from its epoch time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from leti import predictors
from leti.dgl_compat import dgl
from leti.features import graph as graphs
from leti.metrics import regression_metrics
from leti.predictors import evaluation
from leti.predictors.gcn import GCN, GCNPredictor, torch_threads
from leti.spaces import nb201
from leti.store import reader


class DGLGCN(nn.Module):
    """The same model with DGL's GraphConv (sum aggregation, no normalisation) on batched DGL graphs."""

    def __init__(self, in_size: int, hidden: int = 600, layers: int = 4) -> None:
        super().__init__()
        dgl()
        from dgl.nn.pytorch import GraphConv

        sizes = [in_size] + [hidden] * layers
        self.convs = nn.ModuleList(GraphConv(a, b, norm="none", allow_zero_in_degree=True) for a, b in zip(sizes, sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, 1)

    def forward(self, batch) -> torch.Tensor:
        h = batch.ndata["x"]
        for conv, norm in zip(self.convs, self.norms):
            h = torch.relu(norm(conv(batch, h)))
        first = torch.cumsum(batch.batch_num_nodes(), 0) - batch.batch_num_nodes()  # the global node leads each graph
        return self.head(h[first]).squeeze(-1)


def epoch_seconds(step, batches: list, optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    for inputs, target in batches:
        optimizer.zero_grad(set_to_none=True)
        torch.abs(step(inputs) - target).sum().backward()
        optimizer.step()
    return time.perf_counter() - start


def epoch_comparison(archs: list[str], y: torch.Tensor) -> list[str]:
    lines = ["| batch | DGL GraphConv, batched once (s/epoch) | dense bmm (s/epoch) |", "|---|---|---|"]
    size = graphs.feature_size("nb201")
    for batch in (1, 32):
        chunks = [list(range(i, min(i + batch, len(archs)))) for i in range(0, len(archs), batch)]
        dgl_batches = [(graphs.to_dgl([archs[i] for i in chunk], "nb201"), y[chunk]) for chunk in chunks]
        dense_batches = [(graphs.dense([archs[i] for i in chunk], "nb201"), y[chunk]) for chunk in chunks]
        sparse, dense = DGLGCN(size), GCN(size, 600, 4, 0.0)
        sparse_opt = torch.optim.AdamW(sparse.parameters(), lr=4e-4, fused=True)
        dense_opt = torch.optim.AdamW(dense.parameters(), lr=4e-4, fused=True)
        sparse_s = epoch_seconds(sparse, dgl_batches, sparse_opt)
        dense_s = epoch_seconds(lambda inputs: dense(*inputs), dense_batches, dense_opt)
        lines.append(f"| {batch} | {sparse_s:.2f} | {dense_s:.2f} |")
    return lines


def optimizer_comparison() -> list[str]:
    lines = ["| precision | AdamW (ms/step) | AdamW fused (ms/step) |", "|---|---|---|"]
    for dtype in (torch.float64, torch.float32):
        times = []
        for options in ({"foreach": True}, {"fused": True}):
            model = GCN(graphs.feature_size("nb201"), 600, 4, 0.0).to(dtype)
            optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=5e-4, **options)
            reads, x = graphs.dense(nb201.sample_valid(1, 0), "nb201")
            model(reads.to(dtype), x.to(dtype)).sum().backward()
            optimizer.step()
            start = time.perf_counter()
            for _ in range(50):
                optimizer.step()
            times.append(1000 * (time.perf_counter() - start) / 50)
        lines.append(f"| {str(dtype).removeprefix('torch.')} | {times[0]:.2f} | {times[1]:.2f} |")
    return lines


def reference_settings() -> dict:
    """The reference implementation's settings, as ``params.yaml`` pins them (``gcn_reference``)."""
    return yaml.safe_load(Path("params.yaml").read_text())["gcn_reference"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=Path, default=Path("data/latbench"))
    parser.add_argument("--device", default="desktop-gpu-gtx-1080ti-fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gcn_speed.md"))
    args = parser.parse_args()
    data = reader.read_cells(args.latency, args.device, "nb201", reader.ReadPolicy(duplicates="mean"))
    parts = evaluation.split(len(data.archs), 900, 100, args.seed)
    archs = [data.archs[i] for i in parts.train]
    y = torch.tensor(data.latency_ms[parts.train] / 1000.0, dtype=torch.float32)
    out = [f"# GCN speed on this machine ({torch.get_num_threads()} threads available, training on 1)", ""]
    with torch_threads(1):
        out += ["## One training epoch, 900 cells, float32", "", *epoch_comparison(archs, y), ""]
        out += ["## One optimizer step, 1.1 M weights", "", *optimizer_comparison(), ""]
        settings = {k: v for k, v in reference_settings().items() if k != "family"}
        reference = predictors.make_predictor("gcn", **{**settings, "epochs": 1})
        start = time.perf_counter()
        reference.fit(archs, data.latency_ms[parts.train])
        reference_epoch = time.perf_counter() - start
    gcn = GCNPredictor(seed=args.seed)
    start = time.perf_counter()
    gcn.fit(archs, data.latency_ms[parts.train], [data.archs[i] for i in parts.val], data.latency_ms[parts.val])
    fit = time.perf_counter() - start
    everything = nb201.all_arch_strings()
    start = time.perf_counter()
    gcn.predict(everything)  # first call: also parses the 14.6 k cells the fit never saw into graphs
    predict_cold = time.perf_counter() - start
    start = time.perf_counter()
    gcn.predict(everything)  # graphs cached (the second prediction of a process)
    predict_all = time.perf_counter() - start
    test = [data.archs[i] for i in parts.test]
    metrics = regression_metrics(data.latency_ms[parts.test], gcn.predict(test))
    out += [
        "## `gcn` with its default parameters",
        "",
        f"- fit on 900 cells (+100 validation), one thread: **{fit:.1f} s** ({sum(gcn.epochs_run)} epochs over "
        f"{len(gcn.epochs_run)} model(s)); test acc@1/5/10 {metrics['acc_1pct']:.1f} / {metrics['acc_5pct']:.1f} / "
        f"{metrics['acc_10pct']:.1f} % on {len(test)} cells",
        f"- predict all 15625 NB201 cells: **{predict_all:.2f} s** with their graphs cached, {predict_cold:.2f} s "
        f"when each cell is first parsed into its graph ({gcn.params['threads']} thread(s))",
        f"- the reference protocol (`gcn_reference` in params.yaml: batch 1, float64, 600 units): {reference_epoch:.1f} s per epoch, so up to "
        f"{250 * reference_epoch / 60:.0f} min for its 250 epochs",
        "",
        f"Parameters: `{json.dumps(gcn.params)}`",
    ]
    text = "\n".join(out) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
