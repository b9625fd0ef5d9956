"""A new device from a few measurements: pretrain on many devices, then adapt to the new one.

1. **Pretrain** (:func:`pretrain`): one GCN over each cell's *network graph* (every op the network
   runs, dead ops and skips included: ``leti.features.graph.network_dense``), a trunk shared by all
   source devices and one linear head per device, trained at once with an L1 loss on each device's
   standardised log latency. One forward pass serves every device, so 28 devices cost what one does.
2. **Choose the cells to measure** (:func:`design_shots`): from the pretrained trunk alone, cells that
   cover its embedding: k-means cluster centres below 10 shots, farthest points from 10 on.
3. **Adapt** (:func:`adapt`, milliseconds): the target's log latency ≈ a + c · (a prior device: the
   sources' mean or one source) + a ridge-penalised combination of the source heads' predictions,
   averaged over priors and ridge penalties weighted by how well each predicts the shots left out one
   at a time. A target like one source leans on it; one like none stays near the consensus and moves
   toward the sources the shots favour as they grow. Every term is linear in the
   trunk's embedding, so this part is one new linear head on the trunk.
   That head works on the log scale, but a network's latency is close to a *sum* over the ops it runs;
   so the head is blended (:func:`blend`) with an additive cost model of the cell's live and dead ops
   (:func:`cost_model`, its prior the cost models of the source devices), at the share that minimises
   the pair's leave-one-out error on the shots.
   From ``FINETUNE_SHOTS`` shots on, the trunk itself is also fine-tuned from the pretrained weights
   (:func:`finetune`), and held-out cells decide which of the two the device keeps: a device with
   plenty of data is no longer limited to what the sources' embedding can express.
4. **Predict**: the trunk, then that head, blended with the cost model (a fine-tuned trunk's head
   predicts alone). The trunk's output for every cell the model was pretrained
   on is saved with it (``embeddings.npz``), so predicting those cells is a lookup and one product.

:class:`TransferPredictor` is the ``transfer`` family: ``fit`` adapts a pretrained model (a folder
written by :meth:`Pretrained.save`) to the measured cells it is given, and its saved state carries the
trunk and the head (a torch state dict and JSON; nothing is pickled), so a registered model predicts
anywhere. The defaults and every design choice were measured on validation devices, never on the
reported ones (``benchmarks/results/transfer/``, README).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leti.features import graph as graphs
from leti.predictors.base import Predictor
from leti.predictors.gcn import GraphConvolution
from leti.threads import torch_threads

STATE = "transfer-gcn.pt"
RECORD = "transfer-gcn.json"
EMBEDDINGS = "embeddings.npz"
HEAD = "head.json"


class Trunk(nn.Module):
    """leti's GCN body (graph convolutions, LayerNorm, ReLU), returning the global node's final state."""

    def __init__(self, in_size: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        sizes = [in_size] + [hidden] * layers
        self.convs = nn.ModuleList(GraphConvolution(a, b) for a, b in zip(sizes, sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, reads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        *inner, (last_conv, last_norm) = zip(self.convs, self.norms)
        for conv, norm in inner:
            x = self.dropout(torch.relu(norm(conv(reads, x))))
        return self.dropout(torch.relu(last_norm(last_conv.global_only(reads, x))))[:, 0]


class MultiDeviceGCN(nn.Module):
    """A shared trunk and one linear head per source device (row ``d`` of ``head`` predicts device ``d``)."""

    def __init__(self, in_size: int, hidden: int, layers: int, dropout: float, devices: int) -> None:
        super().__init__()
        self.trunk = Trunk(in_size, hidden, layers, dropout)
        self.head = nn.Linear(hidden, devices)

    def forward(self, reads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(reads, x))


@dataclass(frozen=True)
class PretrainConfig:
    """``transfer.pretrain`` in params.yaml."""

    hidden: int = 300
    layers: int = 4
    dropout: float = 0.002
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 64
    epochs: int = 40
    max_cells: int | None = None  # pretrain on a random subset of the cells (None: every cell any source measured)
    seed: int = 0
    threads: int = 1

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> PretrainConfig:
        section = dict(section or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"transfer.pretrain: unknown keys {sorted(unknown)} (known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**section)


@dataclass
class Pretrained:
    """The pretrained model and what adaptation needs to know of its sources."""

    model: MultiDeviceGCN
    space: str
    devices: list[str]
    shift: list[float]  # each source's mean and spread of log latency, to read its head in ms
    scale: list[float]
    config: PretrainConfig
    data: str = ""  # the digest of the latencies it learned (:func:`data_digest`)
    train_seconds: float = 0.0
    finetuned_on: int = 0  # cells of one device the trunk was fine-tuned on (0: as pretrained)
    known: dict[str, int] = field(default_factory=dict, repr=False)  # arch -> row of known_rows
    known_rows: np.ndarray | None = field(default=None, repr=False)  # the trunk's output for those cells (float32)
    costs: np.ndarray | None = field(default=None, repr=False)  # the sources' cost models, once asked for

    def remember(self, archs: Sequence[str]) -> None:
        """Keep the trunk's output for ``archs`` (the cells it learned), so predicting them later is a lookup."""
        archs = list(dict.fromkeys(archs))
        self.known, self.known_rows, self.costs = {}, None, None  # the sources' cost models are refitted on these cells
        self.known_rows = self.embed(archs).astype(np.float32)
        self.known = {arch: row for row, arch in enumerate(archs)}

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / STATE)
        record = {"space": self.space, "devices": self.devices, "shift": self.shift, "scale": self.scale,
                  "config": asdict(self.config), "data": self.data, "train_seconds": self.train_seconds,
                  "finetuned_on": self.finetuned_on}
        (folder / RECORD).write_text(json.dumps(record, indent=1))
        if self.known_rows is not None:
            np.savez(folder / EMBEDDINGS, archs=np.char.encode(np.asarray(list(self.known)), "utf-8"), rows=self.known_rows)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Pretrained:
        folder = Path(folder)
        if not (folder / RECORD).is_file():
            raise FileNotFoundError(f"{folder}: no pretrained transfer model ({RECORD} missing; `dvc repro pretrain` writes one)")
        record = json.loads((folder / RECORD).read_text())
        config = PretrainConfig(**record["config"])
        model = MultiDeviceGCN(graphs.network_feature_size(record["space"]), config.hidden, config.layers, config.dropout,
                               len(record["devices"]))
        model.load_state_dict(torch.load(folder / STATE, weights_only=True))
        model.eval()
        pretrained = cls(model, record["space"], record["devices"], record["shift"], record["scale"], config, record["data"],
                         record["train_seconds"], record.get("finetuned_on", 0))
        if (folder / EMBEDDINGS).is_file():
            with np.load(folder / EMBEDDINGS, allow_pickle=False) as table:
                pretrained.known_rows = table["rows"]
                pretrained.known = {arch.decode(): row for row, arch in enumerate(table["archs"].tolist())}
        return pretrained

    def embed(self, archs: Sequence[str], chunk: int = 4096) -> np.ndarray:
        """The trunk's output for each cell, ``(cells, hidden)``; the same for every device. Cells the
        model remembers are looked up; only the others go through the trunk."""
        archs = list(archs)
        where = np.fromiter((self.known.get(arch, -1) for arch in archs), dtype=np.int64, count=len(archs))
        hit = where >= 0
        rows = np.empty((len(archs), self.config.hidden), dtype=np.float64)
        if hit.any():
            rows[hit] = self.known_rows[where[hit]]
        if not hit.all():
            rows[~hit] = self._trunk([arch for arch, found in zip(archs, hit) if not found], chunk)
        return rows

    @torch.inference_mode()
    def _trunk(self, archs: list[str], chunk: int) -> np.ndarray:
        with torch_threads(self.config.threads):
            parts = []
            for begin in range(0, len(archs), chunk):
                reads, x = graphs.network_dense(archs[begin : begin + chunk], self.space)
                parts.append(self.model.trunk(reads, x))
            return torch.cat(parts).numpy().astype(np.float64)

    def heads(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)``: source ``d``'s standardised log latency is ``h @ W[d] + b[d]``."""
        with torch.no_grad():
            return self.model.head.weight.numpy().astype(np.float64), self.model.head.bias.numpy().astype(np.float64)

    def cost_models(self) -> np.ndarray:
        """Each source's additive cost model (:func:`source_costs`), fitted to its head's predictions over
        every cell the model remembers (the cells it was pretrained on; else ``COST_CELLS`` sampled from
        its space): the prior of a target's own."""
        if self.costs is None:
            from leti import spaces

            archs = list(self.known) or spaces.get(self.space).sample_valid(COST_CELLS, seed=0)
            self.costs = source_costs(self.predict_sources(archs), cost_features(archs, self.space))
        return self.costs

    def predict_sources(self, archs: Sequence[str], embedding: np.ndarray | None = None) -> np.ndarray:
        """Every source device's predicted latency (ms) of ``archs``: ``(devices, cells)`` (``embedding``:
        ``embed(archs)``, when the caller has it already)."""
        weight, bias = self.heads()
        standard = ((self.embed(archs) if embedding is None else embedding) @ weight.T + bias).T
        return np.exp(standard * np.asarray(self.scale)[:, None] + np.asarray(self.shift)[:, None])


def standardise(latency_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-device log latency, centred and scaled over the device's measured cells (NaN = missing).

    Log because latency errors are relative and devices differ by orders of magnitude; per device so
    every device weighs the same in the shared trunk's loss."""
    y = np.log(latency_ms)
    shift, scale = np.nanmean(y, axis=1), np.nanstd(y, axis=1)
    return (y - shift[:, None]) / scale[:, None], shift, scale


def data_digest(space: str, devices: Sequence[str], archs: Sequence[str], latency_ms: np.ndarray, config: PretrainConfig) -> str:
    """What a pretrained model depends on: the sources' latencies, the settings and the code that shapes
    it (the model, its training, the featurisation, the space). Equal digests mean an equal model, so a
    sweep over targets and shots pretrains once (:func:`cached`); adaptation code is left out, so
    changing it keeps the cache."""
    from leti import spaces

    shaping = (standardise, pretrain, Trunk, MultiDeviceGCN, PretrainConfig, GraphConvolution)
    code = "".join([inspect.getsource(item) for item in shaping] +
                   [Path(module).read_text() for module in (graphs.__file__, spaces.get(space).__file__)])
    digest = hashlib.sha256(json.dumps([space, list(devices), list(archs), asdict(config)]).encode())
    digest.update(np.ascontiguousarray(np.nan_to_num(latency_ms, nan=-1.0), dtype=np.float64).tobytes())
    digest.update(code.encode())
    return digest.hexdigest()[:24]


def pretrain(space: str, archs: Sequence[str], latency_ms: np.ndarray, devices: Sequence[str],
             config: PretrainConfig = PretrainConfig()) -> Pretrained:
    """Fit the multi-device GCN on ``latency_ms`` (``(devices, cells)``, NaN where a device lacks a cell).

    The caller leaves out cells the space calls invalid: they are not scored and carry device-specific,
    near-constant latencies (the store's reader does)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    if len(devices) != len(latency_ms) or latency_ms.shape[1] != len(archs):
        raise ValueError(f"latencies of shape {latency_ms.shape} do not match {len(devices)} devices x {len(archs)} cells")
    cells = np.arange(len(archs))
    if config.max_cells and config.max_cells < len(cells):
        cells = np.sort(rng.choice(cells, config.max_cells, replace=False))
    y, shift, scale = standardise(latency_ms[:, cells])
    reads, x = graphs.network_dense([archs[i] for i in cells], space)
    target = torch.tensor(y.T, dtype=torch.float32)
    mask = torch.isfinite(target)
    target = torch.nan_to_num(target)
    model = MultiDeviceGCN(x.shape[-1], config.hidden, config.layers, config.dropout, len(devices))
    start = time.time()
    with torch_threads(config.threads):
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
        steps = config.epochs * math.ceil(len(cells) / config.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.05)
        model.train()
        for _ in range(config.epochs):
            order = torch.from_numpy(rng.permutation(len(cells)))
            for begin in range(0, len(order), config.batch_size):
                batch = order[begin : begin + config.batch_size]
                error = (model(reads[batch], x[batch]) - target[batch]).abs() * mask[batch]
                loss = error.sum() / mask[batch].sum() * len(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()
    pretrained = Pretrained(model, space, list(devices), shift.tolist(), scale.tolist(), config,
                            data_digest(space, devices, archs, latency_ms, config), time.time() - start)
    pretrained.remember(archs)
    return pretrained


def cached(cache: Path, space: str, archs: Sequence[str], latency_ms: np.ndarray, devices: Sequence[str],
           config: PretrainConfig = PretrainConfig()) -> tuple[Pretrained, bool]:
    """The pretrained model of these sources from ``cache/<digest>/``, pretraining only on a miss;
    returns it and whether it came from the cache."""
    folder = Path(cache) / data_digest(space, devices, archs, latency_ms, config)
    if (folder / RECORD).is_file():
        return Pretrained.load(folder), True
    pretrained = pretrain(space, archs, latency_ms, devices, config)
    scratch = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    pretrained.save(scratch)
    scratch.replace(folder) if not folder.exists() else shutil.rmtree(scratch)
    return pretrained, False


# --- which cells to measure -----------------------------------------------------------------------------

SHOT_DESIGNS = ("auto", "kmeans", "fps", "random")


def design_shots(embedding: np.ndarray, k: int, seed: int = 0, method: str = "auto", dims: int = 32) -> np.ndarray:
    """Indices (into ``embedding``'s rows) of ``k`` cells to measure on a new device, from the trunk alone.

    The embedding (standardised per unit, PCA to ``dims``) is covered by farthest-point sampling from a
    seeded random start (``fps``) or split into ``k`` k-means clusters whose nearest cells are measured
    (``kmeans``); ``auto`` takes k-means below 10 shots and farthest points from 10 on; ``random`` is a
    seeded uniform choice. The adapted head is linear in the embedding, so shots that span it pin the
    head down; with very few shots spanning picks extremes, and cluster centres (typical cells) are safer.
    """
    if method not in SHOT_DESIGNS:
        raise ValueError(f"unknown shot design {method!r} (known: {', '.join(SHOT_DESIGNS)})")
    if not 0 < k <= len(embedding):
        raise ValueError(f"cannot choose {k} shots among {len(embedding)} cells")
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(len(embedding), k, replace=False))
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    spread = embedding.std(0)
    keep = spread > 1e-6
    z = (embedding[:, keep] - embedding[:, keep].mean(0)) / spread[keep]
    z = PCA(min(dims, z.shape[1], len(z)), random_state=0).fit_transform(z)
    if method == "auto":
        method = "kmeans" if k < 10 else "fps"
    if method == "fps":
        chosen = [int(rng.integers(len(z)))]
        distance = ((z - z[chosen[0]]) ** 2).sum(1)
        for _ in range(k - 1):
            j = int(np.argmax(distance))
            chosen.append(j)
            distance = np.minimum(distance, ((z - z[j]) ** 2).sum(1))
        return np.sort(np.asarray(chosen))
    centres = KMeans(k, n_init=1, random_state=seed).fit(z).cluster_centers_
    picked: list[int] = []
    for centre in centres:
        distance = ((z - centre) ** 2).sum(1)
        distance[picked] = np.inf
        picked.append(int(np.argmin(distance)))
    return np.sort(np.asarray(picked))


# --- adaptation ----------------------------------------------------------------------------------------

PENALTIES = tuple(float(v) for v in np.logspace(-3, 3, 13))
EMBEDDING_SCALES = (0.0, 0.01, 0.03, 0.1, 0.3)  # prior variance off the heads' span, relative to theirs


@dataclass
class Head:
    """A new device's head on the trunk, log latency (ms) = ``h @ weight + bias``, blended with an
    additive cost model of the cell's ops: latency (ms) = ``mix`` · exp(head) + (1 − ``mix``) ·
    ``costs`` · (1, live_counts) (:func:`blend`; ``mix`` 1 and no ``costs``: the head alone)."""

    weight: list[float]
    bias: float
    penalty: float
    shots: int
    info: dict[str, Any] = field(default_factory=dict)
    costs: list[float] = field(default_factory=list)  # intercept, then ms per op of each live_counts column
    mix: float = 1.0
    floor_ms: float = 0.0  # the cost model's least prediction (a quarter of the fastest shot)

    def predict_ms(self, embedding: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
        """Latency (ms) of cells with this trunk ``embedding`` and ``live_counts`` rows ``counts``."""
        trunk = np.exp(embedding @ np.asarray(self.weight) + self.bias)
        if self.mix >= 1.0 or not self.costs:
            return trunk
        additive = np.maximum(np.c_[np.ones(len(counts)), counts] @ np.asarray(self.costs), self.floor_ms)
        return self.mix * trunk + (1.0 - self.mix) * additive


def _kernel_ridge(inverse: np.ndarray, penalty: float, Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """min ||y - Z b - f||² + penalty · f' K⁺ f with f = K α: ridge with the columns Z left free, given
    ``inverse`` = (K + penalty · I)⁻¹ (shared by every Z). Returns ``(b, α, leave-one-out residuals)``.

    The hat matrix is I - penalty · A (I - Z m Z'A) with A the inverse and m = (Z'AZ)⁻¹, so the residual
    is penalty · α and the exact leave-one-out residual is α over the diagonal of A (I - Z m Z'A)."""
    az = inverse @ Z
    m = np.linalg.pinv(Z.T @ az)
    b = m @ (az.T @ y)
    alpha = inverse @ (y - Z @ b)
    gap = np.diag(inverse) - np.einsum("ij,ij->i", az @ m, az)
    return b, alpha, alpha / np.clip(gap, 1e-6 / penalty, None)


def adapt(embedding: np.ndarray, latency_ms: np.ndarray, weight: np.ndarray, bias: np.ndarray,
          penalties: Sequence[float] = PENALTIES, scales: Sequence[float] = EMBEDDING_SCALES,
          counts: np.ndarray | None = None, sources: np.ndarray | None = None) -> Head:
    """A new device's head from ``k`` measured cells: their trunk embeddings and latencies.

    ``log t = a + c · q(h) + Σ_d w_d p_d(h) + v · h`` where ``p_d`` is source ``d``'s pretrained head
    and the prior ``q`` is the sources' mean or any one source. ``a`` and ``c`` are free (the target's
    own offset and scale of the prior device); ``w`` is ridge-penalised, and so is ``v``, a direction in
    the trunk's embedding outside the heads' span, its prior variance ``scale`` times the heads'. The
    heads alone cannot follow some devices (LatBench's GPU: ±10 % on 46 % of its cells by least
    squares on every cell through the heads, 72 % through the embedding), and with a handful of shots
    neither the prior, the penalty nor the scale is clearly right; so the head averages the fits over
    every (scale, penalty, prior), each weighted by the likelihood of its exact leave-one-out residuals
    (Gaussian: ``(least error / error)^(k/2)``): a target much like one source leans on it, one like
    none stays near the consensus, and the embedding is used as far as the shots support it. On the
    validation devices, averaging the penalties beat taking the best one at k = 5, letting one source
    be the prior beat the mean alone at every k (5: +0.02 Spearman), and the scales 0–30 % were better
    than or equal to the heads alone in 9 of 10 (group, k) means from k = 5 to 100. Every fit is
    linear in ``h``, so the average is one linear head.

    Given the shots' ``counts`` (:func:`cost_features`) and the sources' cost models ``sources``
    (:meth:`Pretrained.cost_models`), that head is then blended with the shots' additive cost model
    (:func:`blend`); without them it is returned alone."""
    y = np.log(np.asarray(latency_ms, dtype=np.float64))
    if len(y) < 3:
        raise ValueError(f"adapting to a device needs at least 3 measured cells, got {len(y)}")
    prior_weight = np.vstack([weight.mean(0), weight])  # row 0: the mean, row 1 + d: source d
    prior_bias = np.r_[bias.mean(), bias]
    Q = embedding @ prior_weight.T + prior_bias  # shots x priors
    P = Q[:, 1:]  # shots x sources
    K_heads = P @ P.T / P.shape[1]
    centre = embedding.mean(0)
    E = embedding - centre
    K_embedding = E @ E.T
    size = float(np.trace(K_heads) / max(np.trace(K_embedding), 1e-12))  # scale 1: the heads' kernel's size
    one = np.ones(len(y))
    fits, errors, loos = [], [], []  # per scale, per penalty, per prior
    for scale in scales:
        for penalty in penalties:
            inverse = np.linalg.inv(K_heads + scale * size * K_embedding + penalty * np.eye(len(y)))
            for prior in range(len(prior_bias)):
                coef, alpha, loo = _kernel_ridge(inverse, penalty, np.c_[one, Q[:, prior]], y)
                errors.append(max(float(np.mean(loo**2)), 1e-12))
                loos.append(loo)
                per_source = P.T @ alpha / P.shape[1]
                direction = scale * size * (E.T @ alpha)
                fits.append((coef[1] * prior_weight[prior] + weight.T @ per_source + direction,
                             coef[0] + coef[1] * prior_bias[prior] + float(bias @ per_source) - float(centre @ direction),
                             coef[1], per_source))
    log_likelihood = (-len(y) / 2 * np.log(np.asarray(errors))).reshape(len(scales), len(penalties), len(prior_bias))
    share = np.exp(log_likelihood - log_likelihood.max())
    share /= share.sum()
    flat = share.ravel()
    head_weight = sum(w * fit[0] for w, fit in zip(flat, fits))
    head_bias = float(sum(w * fit[1] for w, fit in zip(flat, fits)))
    info = {"loo_mse": float(min(errors)), "penalty_shares": share.sum((0, 2)).round(6).tolist(),
            "prior_shares": share.sum((0, 1)).round(6).tolist(),  # the sources' mean first, then each source
            "scale_shares": share.sum((1, 2)).round(6).tolist(),
            "log_evidence": np.logaddexp.reduce(log_likelihood, axis=(0, 2)).tolist(),  # per penalty, up to a constant
            "prior_scale": float(sum(w * fit[2] for w, fit in zip(flat, fits))),
            "source_weights": sum(w * fit[3] for w, fit in zip(flat, fits)).tolist()}
    penalty = float(np.exp(share.sum((0, 2)) @ np.log(np.asarray(penalties, dtype=np.float64))))  # the shares' geometric mean
    head = Head(head_weight.tolist(), head_bias, penalty, len(y), info)
    if counts is None or sources is None:
        return head
    trunk_loo = 1.0 - np.exp(-(flat @ np.asarray(loos)))  # the averaged head's relative leave-one-out residuals
    return blend(head, trunk_loo, np.asarray(counts, dtype=np.float64), np.exp(y), sources)


def cost_features(archs: Sequence[str], space: str) -> np.ndarray:
    """The columns of the additive cost model: each cell's ``live_counts`` (ops run on and off an
    input->output path, per kind)."""
    from leti import features

    return features.matrix(list(archs), "live_counts", space).astype(np.float64)


def source_costs(predicted_ms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each source's additive cost model, ``(sources, 1 + columns)``: least squares on the relative error
    of its predicted latencies ``predicted_ms`` ``(sources, cells)`` over cells with these ``counts``,
    in units of the source's geometric-mean latency (so sources of any speed compare)."""
    X = np.c_[np.ones(len(counts)), counts]
    rows = []
    for latency in predicted_ms:
        y = latency / np.exp(np.mean(np.log(latency)))
        rows.append(np.linalg.lstsq(X / y[:, None], np.ones(len(y)), rcond=None)[0])
    return np.asarray(rows)


COST_CELLS = 2000  # cells to fit the sources' cost models on when the pretrained model remembers none
COST_FREEDOM = 0.1  # prior variance off the sources' cost models, as a share of their mean variance


def cost_model(counts: np.ndarray, latency_ms: np.ndarray, sources: np.ndarray,
               penalties: Sequence[float] = PENALTIES) -> tuple[np.ndarray, np.ndarray]:
    """The target's additive cost model from its shots, latency (ms) ≈ c0 + Σ_j c_j · counts_j.

    Fitted on the relative error (each shot weighted by 1 / its latency), in units of the shots'
    geometric-mean latency. The intercept and a scale of the sources' mean cost model are free; the
    rest is a ridge combination whose prior covariance is that of the sources' cost models
    (``sources``, :func:`source_costs`) plus ``COST_FREEDOM`` of their mean variance on the diagonal: with
    few shots the target's costs stay near the shapes the sources' costs take, with many they follow the
    shots. Every penalty's fit is weighted by the likelihood of its exact leave-one-out residuals, as
    in :func:`adapt`. Returns the coefficients (ms) and the relative leave-one-out residuals."""
    unit = float(np.exp(np.mean(np.log(latency_ms))))
    y = np.asarray(latency_ms, dtype=np.float64) / unit
    X = np.c_[np.ones(len(y)), counts]
    mean = sources.mean(0)
    spread = sources[:, 1:] - mean[1:]
    covariance = spread.T @ spread / len(spread)
    covariance += COST_FREEDOM * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    weighted = X[:, 1:] / y[:, None]  # weighted, the target is 1 for every shot
    free = np.c_[1.0 / y, X @ mean / y]
    kernel = weighted @ covariance @ weighted.T
    fits, errors, loos = [], [], []
    for penalty in penalties:
        coef, alpha, loo = _kernel_ridge(np.linalg.inv(kernel + penalty * np.eye(len(y))), penalty, free, np.ones(len(y)))
        fits.append((np.r_[coef[0], np.zeros(len(mean) - 1)] + coef[1] * mean + np.r_[0.0, covariance @ weighted.T @ alpha]) * unit)
        errors.append(max(float(np.mean(loo**2)), 1e-12))
        loos.append(loo)
    log_likelihood = -len(y) / 2 * np.log(np.asarray(errors))
    share = np.exp(log_likelihood - log_likelihood.max())
    share /= share.sum()
    return share @ np.asarray(fits), share @ np.asarray(loos)


def blend(head: Head, trunk_loo: np.ndarray, counts: np.ndarray, latency_ms: np.ndarray, sources: np.ndarray) -> Head:
    """``head`` blended with the :func:`cost_model` of the same shots: the share that minimises the
    blend's relative leave-one-out error (stacking; both models' leave-one-out residuals, ``trunk_loo``
    for the head). Latency is close to a sum over the ops a network runs, which a head on the log scale
    cannot express: LatBench's Snapdragon 450 CPU is ±10 % on 96 % of its cells by a cost model fitted
    to every cell, on 55 % by a log-scale fit of the live ops' one-hot encoding."""
    costs, cost_loo = cost_model(counts, latency_ms, sources)
    gap = trunk_loo - cost_loo
    mix = float(np.clip(-(cost_loo @ gap) / max(float(gap @ gap), 1e-12), 0.0, 1.0))
    info = {**head.info, "trunk_loo_mse": float(np.mean(trunk_loo**2)), "cost_loo_mse": float(np.mean(cost_loo**2)), "mix": mix}
    return Head(head.weight, head.bias, head.penalty, head.shots, info, costs.tolist(), mix, 0.25 * float(np.min(latency_ms)))


FINETUNE_SHOTS = 200  # from this many measured cells on, the trunk is fine-tuned too where held-out cells favour it


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning the trunk on one device: leti's single-device GCN recipe (batch, weight decay,
    epochs, patience) at a tenth of its learning rate, since it starts from trained weights. The rate
    was chosen on HELP's validation device gold_6240 (900 cells; validation error 0.00644 at 1e-4,
    0.00666 at 3e-4, 0.00672 at 1e-3), never on a reported target."""

    lr: float = 1e-4
    weight_decay: float = 5e-4
    batch_size: int = 32
    epochs: int = 250
    patience: int = 35
    holdout: float = 0.1  # of the shots, held out to stop and to choose when no validation cells are given
    seed: int = 0


def finetune(pretrained: Pretrained, archs: Sequence[str], latency_ms: np.ndarray, head: Head,
             val_archs: Sequence[str], val_latency_ms: np.ndarray, config: FinetuneConfig = FinetuneConfig()) -> tuple[Trunk, Head, float]:
    """Train a copy of the trunk and the adapted head on one device's cells (L1 on log latency, as
    pretraining), starting from the pretrained weights and ``head``; stop on the validation cells.
    Returns the trunk and head of the epoch with the least validation error, and that error (mean
    squared log error, comparable with :func:`log_error`)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    trunk = copy.deepcopy(pretrained.model.trunk)
    linear = nn.Linear(len(head.weight), 1).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([head.weight], dtype=torch.float64))
        linear.bias.fill_(head.bias)
    linear = linear.float()
    reads, x = graphs.network_dense(list(archs), pretrained.space)
    val_reads, val_x = graphs.network_dense(list(val_archs), pretrained.space)
    target = torch.tensor(np.log(latency_ms), dtype=torch.float32)
    val_target = torch.tensor(np.log(val_latency_ms), dtype=torch.float32)
    parameters = [*trunk.parameters(), *linear.parameters()]
    best = (math.inf, None, None)
    stale = 0
    with torch_threads(pretrained.config.threads):
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        for _ in range(config.epochs):
            trunk.train()
            order = torch.from_numpy(rng.permutation(len(target)))
            for begin in range(0, len(order), config.batch_size):
                batch = order[begin : begin + config.batch_size]
                loss = (linear(trunk(reads[batch], x[batch]))[:, 0] - target[batch]).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            trunk.eval()
            with torch.inference_mode():
                error = float(((linear(trunk(val_reads, val_x))[:, 0] - val_target) ** 2).mean())
            if error < best[0]:
                best, stale = (error, copy.deepcopy(trunk.state_dict()), copy.deepcopy(linear.state_dict())), 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    trunk.load_state_dict(best[1])
    linear.load_state_dict(best[2])
    trunk.eval()
    weight = linear.weight.detach().double().numpy()[0]
    blend_keys = ("mix", "trunk_loo_mse", "cost_loo_mse")  # the fine-tuned head predicts alone, unblended
    info = {key: value for key, value in head.info.items() if key not in blend_keys}
    tuned = Head(weight.tolist(), float(linear.bias.detach()), head.penalty, len(target), {**info, "finetuned": True})
    return trunk, tuned, best[0]


def held_out(cells: int, config: FinetuneConfig = FinetuneConfig()) -> np.ndarray:
    """Indices of the ``config.holdout`` share of ``cells`` measured cells (seeded, at least 2) held out
    to stop fine-tuning and to choose between it and the closed form when no validation cells are given."""
    return np.sort(np.random.default_rng(config.seed).permutation(cells)[: max(2, int(config.holdout * cells))])


def log_error(embedding: np.ndarray, head: Head, latency_ms: np.ndarray, counts: np.ndarray) -> float:
    """Mean squared error of ``head``'s log latency on cells with this trunk ``embedding`` (and these
    :func:`cost_features`, when the head blends in a cost model)."""
    return float(np.mean((np.log(head.predict_ms(embedding, counts)) - np.log(latency_ms)) ** 2))


class TransferPredictor(Predictor):
    """The ``transfer`` family: a pretrained multi-device GCN adapted to one device from its measured cells.

    ``pretrained`` is the folder of a :class:`Pretrained` model (the ``pretrain`` stage's
    ``models/transfer/<space>``, or a cached one). ``fit`` uses only the cells it is given: k shots give
    a k-shot predictor; the validation cells are not needed (the penalties are weighed by leave-one-out).
    From ``FINETUNE_SHOTS`` cells on, ``fit`` also fine-tunes the trunk (:func:`finetune`) and keeps
    it when it beats the closed-form head on the validation cells (or, without them, on a tenth of
    the shots held out)."""

    family = "transfer"

    def __init__(self, pretrained: str | None = None, space: str = "nb201") -> None:
        super().__init__(pretrained=pretrained, space=space)
        self.pretrained: Pretrained | None = None
        self.head: Head | None = None

    def model(self) -> Pretrained:
        """The pretrained model this predictor adapts (loaded from ``pretrained`` on first use)."""
        if self.pretrained is None:
            if not self.params["pretrained"]:
                raise ValueError("transfer: no pretrained model (pass pretrained=FOLDER; `dvc repro pretrain` writes one)")
            self.pretrained = Pretrained.load(self.params["pretrained"])
            if self.pretrained.space != self.space:
                raise ValueError(f"transfer: the pretrained model in {self.params['pretrained']} learned {self.pretrained.space} "
                                 f"cells, not {self.space}")
        return self.pretrained

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> TransferPredictor:
        model = self.model()
        weight, bias = model.heads()
        archs, latency_ms = list(archs), np.asarray(latency_ms, dtype=np.float64)
        self.head = adapt(model.embed(archs), latency_ms, weight, bias, counts=cost_features(archs, self.space),
                          sources=model.cost_models())
        if len(archs) >= FINETUNE_SHOTS:
            self._finetune(archs, latency_ms, list(val_archs), val_latency_ms)
        return self

    def _finetune(self, archs: list[str], latency_ms: np.ndarray, val_archs: list[str], val_latency_ms: Any) -> None:
        """Fine-tune the trunk; keep it only where it beats the closed-form head on held-out cells."""
        model = self.model()
        weight, bias = model.heads()
        config = FinetuneConfig()
        if val_archs:
            train, train_ms, val, val_ms = archs, latency_ms, val_archs, np.asarray(val_latency_ms, dtype=np.float64)
            closed = self.head
        else:
            held = held_out(len(archs), config)
            keep = np.setdiff1d(np.arange(len(archs)), held)
            train, train_ms = [archs[i] for i in keep], latency_ms[keep]
            val, val_ms = [archs[i] for i in held], latency_ms[held]
            closed = adapt(model.embed(train), train_ms, weight, bias, counts=cost_features(train, self.space),
                           sources=model.cost_models())
        trunk, head, error = finetune(model, train, train_ms, closed, val, val_ms, config)
        closed_error = log_error(model.embed(val), closed, val_ms, cost_features(val, self.space))
        if error < closed_error:
            tuned = copy.deepcopy(model)
            tuned.model.trunk = trunk
            tuned.finetuned_on = len(train)
            if model.known:
                tuned.remember(list(model.known))
            self.pretrained, self.head = tuned, head
        self.head.info.update(finetune_val_mse=error, closed_form_val_mse=closed_error)

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("transfer predictor is not fitted")
        archs = list(archs)
        return self.head.predict_ms(self.model().embed(archs), cost_features(archs, self.space) if self.head.costs else None)

    def feature_schema(self) -> dict[str, Any]:
        from leti import features

        schema = {"input": "arch", "features": "the network graph of each cell (leti.features.graph.network_dense)",
                  "node_features": list(graphs.network_node_types(self.space)) + list(graphs.NETWORK_FLAGS)}
        if self.head is None or self.head.costs:
            schema["cost_features"] = features.names("live_counts", self.space)
        return schema

    def save_state(self, folder: Path) -> None:
        """The trunk travels with the head: the saved folder predicts on its own."""
        if self.head is None:
            raise RuntimeError("transfer predictor is not fitted")
        self.model().save(folder / "pretrained")
        (folder / HEAD).write_text(json.dumps(asdict(self.head)))

    def load_state(self, folder: Path) -> None:
        self.pretrained = Pretrained.load(folder / "pretrained")
        self.head = Head(**json.loads((folder / HEAD).read_text()))


# --- the few-shot protocol --------------------------------------------------------------------------------


def ridge_baseline(source_log: np.ndarray, y_log: np.ndarray, penalties: Sequence[float] = PENALTIES) -> tuple[np.ndarray, float]:
    """The baseline the literature measures transfer against: ridge regression of the target's log
    latency on the sources' log latencies, fitted on the shots (intercept free, penalty by leave-one-out).
    ``source_log`` is ``(sources, shots)``; returns the coefficients (intercept first) and the penalty."""
    X = np.c_[np.ones(source_log.shape[1]), source_log.T]
    best: tuple[float, np.ndarray, float] | None = None
    scale = np.eye(X.shape[1])
    scale[0, 0] = 0.0  # the intercept is not penalised
    for penalty in penalties:
        inverse = np.linalg.pinv(X.T @ X + penalty * scale)
        coef = inverse @ X.T @ y_log
        hat = X @ inverse @ X.T
        loo = (y_log - X @ coef) / np.clip(1.0 - np.diag(hat), 1e-6, None)
        error = float(np.mean(loo**2))
        if best is None or error < best[0] - 1e-12:
            best = (error, coef, penalty)
    assert best is not None
    return best[1], best[2]


def evaluate(pretrained: Pretrained, archs: Sequence[str], latency_ms: np.ndarray, shots: int, seed: int,
             design: str = "auto", embedding: np.ndarray | None = None) -> dict[str, Any]:
    """Adapt ``pretrained`` to a target from ``shots`` of its cells and score every other cell.

    ``archs``/``latency_ms`` are the target's measured valid cells. The shots are chosen among them
    by ``design`` (seeded); the metrics are ``leti evaluate``'s on the cells outside the shots, plus
    ``spearman_all`` over every cell, shots included (NASFLAT's rule), and the timings. A sweep over k
    and seeds passes the cells' ``embedding`` (``pretrained.embed(archs)``) once instead of again per call."""
    from leti.metrics import regression_metrics

    archs, latency_ms = list(archs), np.asarray(latency_ms, dtype=np.float64)
    if shots > len(archs) - 2:
        raise ValueError(f"{shots} shots leave fewer than 2 of the target's {len(archs)} cells to score")
    embedding = pretrained.embed(archs) if embedding is None else embedding
    chosen = design_shots(embedding, shots, seed, design)
    rest = np.setdiff1d(np.arange(len(archs)), chosen)
    weight, bias = pretrained.heads()
    counts, sources = cost_features(archs, pretrained.space), pretrained.cost_models()  # once per model and cell: not timed
    start = time.perf_counter()
    if shots < FINETUNE_SHOTS:
        head = adapt(embedding[chosen], latency_ms[chosen], weight, bias, counts=counts[chosen], sources=sources)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        predicted = head.predict_ms(embedding, counts)
    else:  # as `leti adapt` would: the fine-tuned trunk where a tenth of the shots, held out, favours it
        model = TransferPredictor(space=pretrained.space)
        model.pretrained = pretrained
        head = model.fit([archs[i] for i in chosen], latency_ms[chosen]).head
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        predicted = model.predict(archs)
    predict_seconds = time.perf_counter() - start
    metrics = regression_metrics(latency_ms[rest], predicted[rest])
    return {
        **metrics, "spearman_all": regression_metrics(latency_ms, predicted)["spearman"],
        "n_train": int(shots), "n_val": 0, "n_test": int(len(rest)), "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds, "predictor": "transfer", "shots": int(shots), "design": design,
        "penalty": head.penalty, "shot_archs": [archs[i] for i in chosen],
    }


def default_cache() -> Path:
    """Where pretrained models are kept by data digest: ``$LETI_CACHE_DIR/transfer`` (the project's ``.cache``)."""
    from leti.project import cache_dir

    return cache_dir() / "transfer"


def target_space(store: str | Path, device: str, space: str | None) -> str:
    """The space of a device's rows: the one it has, or ``space`` when it has several (then required)."""
    from leti import spaces
    from leti.store import reader

    found = reader.device_spaces(store, device)
    if space is not None:
        space = spaces.get(space).NAME
        if space not in found:
            raise KeyError(f"device {device!r} has no {space} cells in {store} (spaces there: {', '.join(found)})")
        return space
    if len(found) != 1:
        raise ValueError(f"device {device!r} has cells of {', '.join(found)} in {store}; name one with --space")
    return found[0]


def source_matrix(store: str | Path, sources: Sequence[str], space: str, policy: Any) -> Any:
    """The sources' latencies of ``space`` (``reader.DeviceMatrix``), each source required to have them."""
    from leti.store import reader

    for device in sources:
        try:
            found = reader.device_spaces(store, device)
        except KeyError as error:
            raise KeyError(f"source device {device!r} is not in {store}: {error.args[0]}") from None
        if space not in found:
            raise ValueError(f"source device {device!r} has no {space} cells in {store} (it has {', '.join(found)}): "
                             f"the sources must cover the target's space")
    return reader.read_devices([store], space, policy, sources)


def ridge_scores(pretrained: Pretrained, matrix: Any, archs: Sequence[str], latency_ms: np.ndarray,
                 shot_archs: Sequence[str], embedding: np.ndarray | None = None) -> dict[str, float]:
    """The ridge baseline on the same shots and test cells (``ridge_*`` metrics): the sources' measured
    log latencies where they have the cell, the pretrained heads' predictions where they do not
    (``embedding``: ``pretrained.embed(archs)``, when the caller has it already)."""
    from leti.metrics import regression_metrics

    index = {arch: i for i, arch in enumerate(matrix.archs)}
    columns = [index.get(arch, -1) for arch in archs]
    measured = np.where(np.array(columns)[None, :] >= 0, matrix.latency_ms[:, np.maximum(columns, 0)], np.nan)
    predicted = pretrained.predict_sources(list(archs), embedding)
    sources = np.log(np.where(np.isfinite(measured), measured, predicted))
    shots = np.isin(np.asarray(archs), np.asarray(shot_archs))
    coef, _ = ridge_baseline(sources[:, shots], np.log(latency_ms[shots]))
    estimate = np.exp(coef[0] + coef[1:] @ sources)
    return {f"ridge_{key}": value for key, value in regression_metrics(latency_ms[~shots], estimate[~shots]).items()}


def leave_one_out(pretrained: Pretrained, archs: Sequence[str], latency_ms: np.ndarray) -> np.ndarray:
    """Each shot predicted by the head adapted to the other shots: an honest score from the shots alone."""
    embedding = pretrained.embed(list(archs))
    counts = cost_features(archs, pretrained.space)
    weight, bias = pretrained.heads()
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    predicted = np.empty(len(archs))
    for i in range(len(archs)):
        keep = np.arange(len(archs)) != i
        head = adapt(embedding[keep], latency_ms[keep], weight, bias, counts=counts[keep], sources=pretrained.cost_models())
        predicted[i] = head.predict_ms(embedding[i : i + 1], counts[i : i + 1])[0]
    return predicted
