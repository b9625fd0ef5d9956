"""The BRP-NAS latency GCN (Dudziak et al., NeurIPS 2020) on DGL graphs of the cells.

Defaults are the paper's: 4 graph convolutions of 600 units, each followed by LayerNorm, ReLU and
dropout 0.002; the prediction is read from the global node; L1 loss; AdamW (lr 4e-4, weight decay
5e-4), batch 1, up to 250 epochs, early stop after 35 epochs without validation improvement and the
learning rate halved after 10. ``batch_size > 1`` trains on batched graphs, which is much faster
on a CPU (see the report's batch-size study).

Torch runs on ``threads`` threads (default 1): graphs this small gain nothing from more, and on a
shared 2-core machine oversubscribed threads made a training step 25x slower.

The target is the latency divided by the training mean (``target="scaled"``), or its standardised
log (``target="log"``), whose L1 loss weighs relative errors, as acc@k does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leti.dgl_compat import dgl
from leti.features import graph as graphs
from leti.predictors.base import Predictor
from leti.spaces import nb201


class GCN(nn.Module):
    def __init__(self, in_size: int, hidden: int, layers: int, dropout: float, readout: str) -> None:
        super().__init__()
        dgl()  # imports DGL with the GraphBolt workaround before its nn module is touched
        from dgl.nn.pytorch import GraphConv

        sizes = [in_size] + [hidden] * layers
        self.convs = nn.ModuleList(GraphConv(a, b, norm="both") for a, b in zip(sizes, sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        self.readout = readout

    def forward(self, batch) -> torch.Tensor:
        h = batch.ndata["x"]
        for conv, norm in zip(self.convs, self.norms):
            h = self.dropout(torch.relu(norm(conv(batch, h))))
        if self.readout == "global":
            last = torch.cumsum(batch.batch_num_nodes(), 0) - 1  # the global node ends each graph
            pooled = h[last]
        else:
            batch.ndata["h"] = h
            pooled = dgl().mean_nodes(batch, "h")
        return self.head(pooled).squeeze(-1)


class GCNPredictor(Predictor):
    family = "gcn"

    def __init__(
        self,
        hidden: int = 600,
        layers: int = 4,
        dropout: float = 0.002,
        lr: float = 4e-4,
        weight_decay: float = 5e-4,
        batch_size: int = 1,
        epochs: int = 250,
        patience: int = 35,
        lr_patience: int = 10,
        node_features: str = "onehot",
        adjacency: str = "brp",
        target: str = "scaled",
        seed: int = 0,
        threads: int = 1,
        progress: bool = False,
    ) -> None:
        if target not in ("scaled", "log"):
            raise ValueError(f"unknown gcn target {target!r} (known: scaled, log)")
        super().__init__(
            hidden=hidden, layers=layers, dropout=dropout, lr=lr, weight_decay=weight_decay,
            batch_size=batch_size, epochs=epochs, patience=patience, lr_patience=lr_patience,
            node_features=node_features, adjacency=adjacency, target=target, seed=seed, threads=threads,
            progress=progress,
        )
        self.model: GCN | None = None
        self.scale: tuple[float, float] = (0.0, 1.0)  # target = (transform(y) - shift) / scale
        self.epochs_run = 0

    # --- target transform ---------------------------------------------------------------------
    def _to_target(self, latency_ms: np.ndarray) -> torch.Tensor:
        y = np.log(latency_ms) if self.params["target"] == "log" else np.asarray(latency_ms, dtype=np.float64)
        shift, scale = self.scale
        return torch.tensor((y - shift) / scale, dtype=torch.float32)

    def _from_target(self, output: np.ndarray) -> np.ndarray:
        shift, scale = self.scale
        y = output.astype(np.float64) * scale + shift
        return np.exp(y) if self.params["target"] == "log" else y

    def _batch(self, archs: Sequence[str]):
        p = self.params
        return graphs.batch_graphs(archs, p["node_features"], p["adjacency"])

    def _new_model(self) -> GCN:
        p = self.params
        readout = "global" if p["adjacency"] == "brp" else "mean"  # identity: the global node sees nothing
        return GCN(graphs.feature_size(p["node_features"]), p["hidden"], p["layers"], p["dropout"], readout)

    # --- training -----------------------------------------------------------------------------
    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> GCNPredictor:
        from tqdm import tqdm

        p = self.params
        torch.set_num_threads(p["threads"])
        torch.manual_seed(p["seed"])
        dgl().seed(p["seed"])
        rng = np.random.default_rng(p["seed"])
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        y_raw = np.log(latency_ms) if p["target"] == "log" else latency_ms
        self.scale = (float(y_raw.mean()), float(y_raw.std() or 1.0)) if p["target"] == "log" else (0.0, float(y_raw.mean()))
        archs = [nb201.format_cell(nb201.parse(arch)) for arch in archs]
        y = self._to_target(latency_ms)
        has_val = len(val_archs) > 0
        val_batch = self._batch(val_archs) if has_val else None
        val_y = self._to_target(np.asarray(val_latency_ms, dtype=np.float64)) if has_val else None

        self.model = self._new_model()
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=p["lr_patience"])
        loss_fn = nn.L1Loss()
        best, best_state, stale = float("inf"), None, 0
        singles = [self._batch([arch]) for arch in archs] if p["batch_size"] == 1 else None
        bar = tqdm(range(p["epochs"]), desc="gcn", unit="epoch", disable=not p["progress"], leave=False)
        for epoch in bar:
            self.model.train()
            order = rng.permutation(len(archs))
            if singles is not None:  # batch 1, as in BRP-NAS: one graph per step
                steps = ((singles[i], y[i : i + 1]) for i in order)
            else:  # minibatches reshuffled every epoch
                chunks = [order[i : i + p["batch_size"]] for i in range(0, len(order), p["batch_size"])]
                steps = ((self._batch([archs[i] for i in chunk]), y[chunk]) for chunk in chunks)
            total = 0.0
            for batch, target in steps:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self.model(batch), target)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(target)
            monitored = self._val_loss(val_batch, val_y) if has_val else total / len(archs)
            scheduler.step(monitored)
            self.epochs_run = epoch + 1
            bar.set_postfix(loss=f"{total / len(archs):.4f}", val=f"{monitored:.4f}")
            if monitored < best - 1e-7:
                best, best_state, stale = monitored, copy.deepcopy(self.model.state_dict()), 0
            else:
                stale += 1
                if stale >= p["patience"]:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self

    def _val_loss(self, val_batch, val_y: torch.Tensor) -> float:
        self.model.eval()
        with torch.inference_mode():
            return float(torch.mean(torch.abs(self.model(val_batch) - val_y)))

    def predict(self, archs: Sequence[str], chunk: int = 4096) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("gcn predictor is not fitted")
        torch.set_num_threads(self.params["threads"])
        self.model.eval()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(archs), chunk):
                outputs.append(self.model(self._batch(archs[start : start + chunk])).numpy())
        return self._from_target(np.concatenate(outputs) if outputs else np.zeros(0))

    def save_state(self, folder: Path) -> None:
        torch.save(self.model.state_dict(), folder / "gcn.pt")
        (folder / "gcn.json").write_text(json.dumps({"scale": self.scale, "epochs_run": self.epochs_run}))

    def load_state(self, folder: Path) -> None:
        state = json.loads((folder / "gcn.json").read_text())
        self.scale, self.epochs_run = tuple(state["scale"]), state["epochs_run"]
        self.model = self._new_model()
        self.model.load_state_dict(torch.load(folder / "gcn.pt", weights_only=True))
        self.model.eval()
