"""Cell graphs for the GCN: the space's graph plus a global node, one-hot node types.

The space gives each cell as a :class:`~leti.spaces.base.CellGraph` (a fixed number of node slots,
data-flow edges). This module adds what BRP-NAS's reference (SamsungLabs/eagle,
``get_adjacency_and_features``) adds, and builds the same graph in two forms:

- the stored featurisation: the ``featurize`` stage's graphs table (:func:`graph_table`, node
  labels and data-flow edges per cell) and DGL graphs (:func:`to_dgl`) for anyone who wants them;
- the dense form the GCN trains on (:func:`dense`): every cell of a space has the same number of
  slots, so a batch is one ``(B, N, N)`` adjacency and one ``(B, N, F)`` feature tensor and a graph
  convolution is one batched matmul, as in the reference. DGL's per-graph kernels cost far more
  than the arithmetic on graphs this small (``benchmarks/gcn_speed.py``).

BRP-NAS's wiring, which :func:`reads` encodes and the GCN's adjacency multiplies from the left:

- the global node is node 0; it reads every node, and no node reads it;
- an op node reads the nodes it *feeds* (``direction="successors"``): the reference multiplies the
  data-flow matrix ``A[src][dst]`` from the left, so information flows from the output back to the
  input, and the global node summarises the whole cell;
- every node reads itself, and the adjacency is not normalised: a convolution sums;
- an empty slot (a pruned op, a skip or a none) keeps its self-loop and an all-zero feature row,
  and the global node still reads it, so it sees how many slots are empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import polars as pl
import torch

from leti import spaces
from leti.dgl_compat import dgl
from leti.spaces.base import CellGraph

GLOBAL = "global"
NODE_FEATURES = ("onehot", "onehot+duplicates", "random")
ADJACENCIES = ("brp", "identity")
DIRECTIONS = ("successors", "predecessors")


def node_types(space: str) -> tuple[str, ...]:
    """One-hot columns: the space's node labels, then the global node."""
    return (*spaces.get(space).GRAPH_NODE_TYPES, GLOBAL)


def feature_size(space: str, node_feature_kind: str = "onehot") -> int:
    return len(node_types(space)) + (node_feature_kind == "onehot+duplicates")


def reads(graph: CellGraph, adjacency: str = "brp", direction: str = "successors") -> np.ndarray:
    """``R[i, j] = 1`` when node ``i`` sums node ``j`` in a convolution; node 0 is the global node.

    ``adjacency="identity"`` keeps only the self-loops (BRP-NAS's ablation: nothing is passed).
    """
    if adjacency not in ADJACENCIES:
        raise ValueError(f"unknown adjacency {adjacency!r} (known: {', '.join(ADJACENCIES)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r} (known: {', '.join(DIRECTIONS)})")
    n = len(graph.nodes) + 1
    matrix = np.eye(n, dtype=np.float32)
    if adjacency == "brp":
        matrix[0, 1:] = 1.0
        for src, dst in graph.edges:
            reader, read = (src, dst) if direction == "successors" else (dst, src)
            matrix[reader + 1, read + 1] = 1.0
    return matrix


def node_features(graph: CellGraph, space: str, kind: str = "onehot", arch: str = "") -> np.ndarray:
    """One row per node (global first): one-hot type, all-zero for an empty slot.

    ``kind="onehot+duplicates"`` adds a column marking an op that repeats an earlier one: the same
    op on the same inputs. Compilers merge such ops when they carry no weights (TensorFlow's
    common-subexpression elimination does, for pooling); whether a device pays for the repeat is
    for the model to learn. ``kind="random"`` is BRP-NAS's ablation: the same shape filled with
    random values, fixed per arch.
    """
    if kind not in NODE_FEATURES:
        raise ValueError(f"unknown node features {kind!r} (known: {', '.join(NODE_FEATURES)})")
    types = node_types(space)
    rows = np.zeros((len(graph.nodes) + 1, feature_size(space, kind)), dtype=np.float32)
    if kind == "random":
        seed = int(hashlib.sha256(arch.encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).random(rows.shape, dtype=np.float32)
    rows[0, types.index(GLOBAL)] = 1.0
    for slot, label in enumerate(graph.nodes, start=1):
        if label is not None:
            rows[slot, types.index(label)] = 1.0
    if kind == "onehot+duplicates":
        rows[1:, -1] = repeats(graph)
    return rows


def repeats(graph: CellGraph) -> np.ndarray:
    """1 for each op slot whose op and inputs equal those of an earlier slot, else 0."""
    inputs: dict[int, set[int]] = {}
    for src, dst in graph.edges:
        inputs.setdefault(dst, set()).add(src)
    seen, marks = set(), np.zeros(len(graph.nodes), dtype=np.float32)
    for slot, label in enumerate(graph.nodes):
        if label is None or slot not in inputs:
            continue
        key = (label, frozenset(inputs[slot]))
        marks[slot] = key in seen
        seen.add(key)
    return marks


@lru_cache(maxsize=200_000)
def cell_graph(space: str, arch: str) -> CellGraph:
    """The space's graph of ``arch``, always from the live code (training and serving see the same)."""
    return spaces.get(space).graph(arch)


@lru_cache(maxsize=200_000)
def _dense_one(space: str, arch: str, node_feature_kind: str, adjacency: str, direction: str) -> tuple[np.ndarray, np.ndarray]:
    graph = cell_graph(space, arch)
    return reads(graph, adjacency, direction), node_features(graph, space, node_feature_kind, arch)


def dense(
    archs: Sequence[str], space: str, node_feature_kind: str = "onehot", adjacency: str = "brp", direction: str = "successors"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, N, N)`` reads-matrices and ``(B, N, F)`` node features of the cells, global node first."""
    parts = [_dense_one(space, arch, node_feature_kind, adjacency, direction) for arch in archs]
    if not parts:
        raise ValueError("no cells to featurize")
    return torch.from_numpy(np.stack([a for a, _ in parts])), torch.from_numpy(np.stack([x for _, x in parts]))


# --- the network graph (latency transfer) -----------------------------------------------------------

NETWORK_FLAGS = ("live", "duplicate")


def network_node_types(space: str) -> tuple[str, ...]:
    """One-hot columns of a network graph: every op the network can run, the input and output, the global node."""
    return (*spaces.get(space).NETWORK_NODE_TYPES, GLOBAL)


def network_feature_size(space: str) -> int:
    return len(network_node_types(space)) + len(NETWORK_FLAGS)


@lru_cache(maxsize=200_000)
def _network_one(space: str, arch: str) -> tuple[np.ndarray, np.ndarray]:
    network = spaces.get(space).network_graph(arch)
    types = network_node_types(space)
    rows = np.zeros((len(network.nodes) + 1, network_feature_size(space)), dtype=np.float32)
    rows[0, types.index(GLOBAL)] = 1.0
    for slot, label in enumerate(network.nodes, start=1):
        if label is not None:
            rows[slot, types.index(label)] = 1.0
    ops = set(spaces.get(space).OPS)
    live = network.live if network.live is not None else [True] * len(network.nodes)
    rows[1:, -2] = [flag and label in ops for flag, label in zip(live, network.nodes)]  # ops only: input and output are their own types
    pruned = cell_graph(space, arch)  # the same slots: a repeated op there is a repeat the network runs
    if any(label is not None for label in pruned.nodes):
        rows[1:, -1] = repeats(pruned)
    return reads(network), rows


def network_dense(archs: Sequence[str], space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The network graphs of the cells in the dense form the GCN reads: every op the network runs as a
    node (one-hot over all ops, ``none`` and ``skip_connect`` included), a ``live`` flag for ops on an
    input->output path and the ``duplicate`` flag of :func:`node_features`, BRP-NAS's wiring
    otherwise. Unlike BRP-NAS's graph nothing is pruned: cells that differ only in dead ops or in skip
    versus none stay distinct, as their latencies on an eager runtime do."""
    parts = [_network_one(space, arch) for arch in archs]
    if not parts:
        raise ValueError("no cells to featurize")
    return torch.from_numpy(np.stack([a for a, _ in parts])), torch.from_numpy(np.stack([x for _, x in parts]))


def to_dgl(archs: Sequence[str], space: str, node_feature_kind: str = "onehot", adjacency: str = "brp", direction: str = "successors"):
    """The cells as one batched DGL graph: an edge ``j -> i`` for each read, features in ``ndata['x']``.

    ``dgl.nn.GraphConv(norm="none")`` on it computes exactly the GCN's dense convolution (tested).
    """
    graphs = []
    for arch in archs:
        matrix, features = _dense_one(space, arch, node_feature_kind, adjacency, direction)
        readers, read = np.nonzero(matrix)
        graph = dgl().graph((torch.from_numpy(read), torch.from_numpy(readers)), num_nodes=len(matrix))
        graph.ndata["x"] = torch.from_numpy(features)
        graphs.append(graph)
    return dgl().batch(graphs)


# --- the graphs table (the ``featurize`` stage's out) ---------------------------------------------


def graph_table(archs: Sequence[str], space: str) -> pl.DataFrame:
    """Rows of ``leti.store.tables.GRAPHS``: each cell's node labels and data-flow edges."""
    rows = []
    for arch in archs:
        graph = spaces.get(space).graph(arch)
        rows.append(
            {
                "space": space,
                "arch": arch,
                "nodes": list(graph.nodes),
                "edge_src": [src for src, _ in graph.edges],
                "edge_dst": [dst for _, dst in graph.edges],
            }
        )
    schema = {"space": pl.String, "arch": pl.String, "nodes": pl.List(pl.String), "edge_src": pl.List(pl.Int32), "edge_dst": pl.List(pl.Int32)}
    return pl.DataFrame(rows, schema=schema)
