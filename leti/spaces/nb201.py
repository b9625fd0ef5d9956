"""NAS-Bench-201: arch strings, enumeration, validity, isomorphism classes, PyTorch networks.

A cell is a 4-node DAG; node i sums ``op(node j)`` over j < i and node 3 is the output. A cell is
stored as a tuple of six op names in arch-string order: edges (1,0), (2,0), (2,1), (3,0), (3,1),
(3,2). The network follows the benchmark's own definition (xautodl's ``TinyNetwork`` and
``InferCell``) so that timings here are comparable with published NAS-Bench-201 latencies.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from leti.spaces.base import CellGraph, count_flops, count_params  # noqa: F401 (count_* re-exported)

if TYPE_CHECKING:
    import torch

    from leti.spaces.nb201_network import TinyNetwork

NAME = "nb201"
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
SENTINEL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
"""A cell at the median FLOPs of the space (102 MFLOPs in the CIFAR-10 network), every op kind in it."""
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""(to_node, from_node) for each position of a cell tuple."""
NUM_NODES = 4

Cell = tuple[str, ...]

_TOKEN = re.compile(r"^(?P<op>[a-z0-9_]+)~(?P<src>\d+)$")


class ArchStringError(ValueError):
    """A NAS-Bench-201 arch string that cannot be parsed; the message quotes it."""


def parse(arch: str) -> Cell:
    """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` strictly into a cell tuple."""
    if not isinstance(arch, str):
        raise ArchStringError(f"arch string must be a str, got {type(arch).__name__}: {arch!r}")
    groups = arch.split("+")
    if len(groups) != NUM_NODES - 1:
        raise ArchStringError(
            f"malformed NAS-Bench-201 arch string {arch!r}: expected 3 '+'-separated node groups, "
            f"found {len(groups)}"
        )
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise ArchStringError(
                f"malformed NAS-Bench-201 arch string {arch!r}: node group {node} {group!r} "
                "must start and end with '|'"
            )
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise ArchStringError(
                f"malformed NAS-Bench-201 arch string {arch!r}: node group {node} {group!r} "
                f"must have {node} edge(s), found {len(tokens)}"
            )
        for expected_src, token in enumerate(tokens):
            match = _TOKEN.match(token)
            if match is None:
                raise ArchStringError(
                    f"malformed NAS-Bench-201 arch string {arch!r}: edge {token!r} is not 'op~input'"
                )
            op, src = match["op"], int(match["src"])
            if op not in OPS:
                raise ArchStringError(
                    f"malformed NAS-Bench-201 arch string {arch!r}: unknown op {op!r} "
                    f"(known: {', '.join(OPS)})"
                )
            if src != expected_src:
                raise ArchStringError(
                    f"malformed NAS-Bench-201 arch string {arch!r}: edge {token!r} in node group "
                    f"{node} must read from node {expected_src}, not {src}"
                )
            ops.append(op)
    return tuple(ops)


def format_cell(cell: Sequence[str]) -> str:
    """The canonical arch string of a cell tuple (inverse of :func:`parse`)."""
    if len(cell) != len(EDGES) or any(op not in OPS for op in cell):
        raise ArchStringError(f"not a NAS-Bench-201 cell (6 ops from {OPS}): {tuple(cell)!r}")
    groups, position = [], 0
    for node in range(1, NUM_NODES):
        tokens = [f"{cell[position + src]}~{src}" for src in range(node)]
        groups.append("|" + "|".join(tokens) + "|")
        position += node
    return "+".join(groups)


def from_op_indices(indices: Sequence[object]) -> Cell:
    """The cell of a vector of six op indices in :data:`OPS` order (BRP-NAS's ``arch_vector``)."""
    if not isinstance(indices, (tuple, list)) or len(indices) != len(EDGES):
        raise ArchStringError(f"not a NAS-Bench-201 op-index vector (6 indices into {OPS}): {indices!r}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(OPS) for i in indices):
        raise ArchStringError(f"op indices must be integers 0..{len(OPS) - 1} (order {', '.join(OPS)}): {tuple(indices)!r}")
    return tuple(OPS[i] for i in indices)


def enumerate_cells() -> Iterator[Cell]:
    """All 5^6 = 15625 cells, in base-5 order of :data:`OPS` (not the benchmark's index order)."""
    return itertools.product(OPS, repeat=len(EDGES))


def all_arch_strings() -> list[str]:
    return [format_cell(cell) for cell in enumerate_cells()]


def has_path(cell: Sequence[str]) -> bool:
    """Whether data can flow from input to output through non-``none`` edges (341 cells cannot)."""
    reachable = {0}
    for (dst, src), op in zip(EDGES, cell):
        if op != "none" and src in reachable:
            reachable.add(dst)
    return NUM_NODES - 1 in reachable


def canonical_form(cell: Sequence[str]) -> str:
    """A string equal for two cells iff they compute the same function up to isomorphism.

    Follows the benchmark's own rule (``Structure.to_unique_str(consider_zero=True)``): a zero edge,
    or an edge from an all-zero node, contributes nothing; ``skip_connect`` passes its input
    expression through; other ops wrap it; a node is the sorted sum of its terms. This yields the
    6466 classes the NAS-Bench-201 paper reports.
    """
    nodes = ["0"]
    for node in range(1, NUM_NODES):
        terms = []
        for (dst, src), op in zip(EDGES, cell):
            if dst != node:
                continue
            if op == "none" or nodes[src] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[src])
            else:
                terms.append(f"({nodes[src]})@{op}")
        nodes.append("+".join(sorted(terms)))
    return nodes[-1]


def sample_valid(n: int, seed: int) -> list[str]:
    """``n`` distinct cells with an input→output path, drawn uniformly without replacement."""
    valid = [format_cell(c) for c in enumerate_cells() if has_path(c)]
    if n > len(valid):
        raise ValueError(f"cannot sample {n} cells: NAS-Bench-201 has only {len(valid)} valid cells")
    return random.Random(seed).sample(valid, n)


# --- PyTorch network, as NAS-Bench-201 defines it (modules in ``nb201_network``) ----------------

NETWORK_MODULES = ("ReLUConvBN", "Zero", "make_op", "InferCell", "ResNetBasicBlock", "TinyNetwork")


def __getattr__(name: str):  # noqa: ANN202 - the torch modules, imported on first use
    """``nb201.TinyNetwork`` and the other torch modules live in ``nb201_network`` and are imported
    when first asked for: parsing arch strings (``leti predict``) need not import torch."""
    if name in NETWORK_MODULES:
        from leti.spaces import nb201_network

        return getattr(nb201_network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class NetworkConfig:
    """Macro settings; the defaults are the CIFAR-10 network of the benchmark."""

    input_size: int = 32
    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10


SMALL_NETWORK = NetworkConfig(input_size=16, channels=8, cells_per_stage=1)
"""One cell per stage at 8 channels on 16x16 inputs: builds and runs in milliseconds, for tests."""


def build_network(arch: str, config: NetworkConfig = NetworkConfig()) -> TinyNetwork:
    """The benchmark's network for ``arch``, in eval mode."""
    from leti.spaces.nb201_network import TinyNetwork

    network = TinyNetwork(parse(arch), config.channels, config.cells_per_stage, config.num_classes)
    return network.eval()


def example_input(config: NetworkConfig = NetworkConfig(), batch: int = 1) -> torch.Tensor:
    import torch

    return torch.randn(batch, 3, config.input_size, config.input_size)


@lru_cache(maxsize=1)
def canonical_ids() -> dict[str, int]:
    """Canonical form -> a stable class id (order of first appearance in :func:`enumerate_cells`)."""
    ids: dict[str, int] = {}
    for cell in enumerate_cells():
        ids.setdefault(canonical_form(cell), len(ids))
    return ids


# --- The search-space interface (leti.spaces.base.SearchSpace) ------------------------------------


def canonical_id(arch: str) -> str:
    """The isomorphism class of ``arch``: its :func:`canonical_form`, the benchmark's unique string."""
    return canonical_form(parse(arch))


def is_valid(arch: str) -> bool:
    """A cell is worth measuring iff data reaches the output (BRP-NAS drops the 341 others)."""
    return has_path(parse(arch))


def describe(arch: str) -> dict[str, object]:
    """What ``leti arch`` prints for a cell: canonical string, path, isomorphism class (its number
    among the 6466 and the benchmark's unique string)."""
    cell = parse(arch)
    form = canonical_form(cell)
    return {"arch": format_cell(cell), "has_path": has_path(cell), "canonical_id": canonical_ids()[form], "canonical_form": form}


def flops_params(arch: str, config: NetworkConfig = NetworkConfig()) -> tuple[int, int]:
    """FLOPs and parameters summed from per-op costs, equal to counting the built network."""
    from leti.spaces import nb201_costs  # counted on torch modules: imported when first needed

    cost = nb201_costs.network_cost(arch, config)
    return cost.flops, cost.params


# --- Features for tabular predictors (leti.features composes them) -------------------------------

ENCODING_NAMES: tuple[str, ...] = tuple(f"edge{dst}{src}_{op}" for dst, src in EDGES for op in OPS)
"""One-hot op per edge: 6 edges x 5 ops."""
COST_NAMES: tuple[str, ...] = ("mflops", "kparams", "memory_mb")


def encoding(arch: str) -> np.ndarray:
    """The cell as a fixed-length vector: one-hot op per edge, in :data:`ENCODING_NAMES` order."""
    vector = np.zeros((len(EDGES), len(OPS)), dtype=np.float32)
    for edge, op in enumerate(parse(arch)):
        vector[edge, OPS.index(op)] = 1.0
    return vector.ravel()


def op_counts(arch: str) -> tuple[int, ...]:
    """How many of the six edges carry each op, in :data:`OPS` order."""
    cell = parse(arch)
    return tuple(cell.count(op) for op in OPS)


def costs(arch: str) -> tuple[float, ...]:
    """MFLOPs, thousands of params and MB of memory traffic of the benchmark's network (per-op sums)."""
    from leti.spaces import nb201_costs

    cost = nb201_costs.network_cost(arch)
    return cost.flops / 1e6, cost.params / 1e3, cost.memory_bytes / 1e6


GRAPH_NODE_TYPES: tuple[str, ...] = ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "input", "output")
"""Labels a graph node can carry: ``none`` and ``skip_connect`` slots are empty (``None``)."""
GRAPH_SLOTS = len(EDGES) + 2
"""Input, one slot per edge op in cell order, output: BRP-NAS's 8 nodes (``keep_dims=True``)."""


def _base_wiring() -> set[tuple[int, int]]:
    """Data-flow edges between slots before any op is applied: each op slot reads the op slots
    that end at its source node (or the input slot) and feeds those that start at its target."""
    output = GRAPH_SLOTS - 1
    edges = set()
    for slot, (dst, src) in enumerate(EDGES, start=1):
        producers = [0] if src == 0 else [s for s, (d, _) in enumerate(EDGES, start=1) if d == src]
        edges.update((producer, slot) for producer in producers)
        if dst == NUM_NODES - 1:
            edges.add((slot, output))
    return edges


def graph(arch: str) -> CellGraph:
    """BRP-NAS's graph of a cell (eagle's ``get_matrix_and_ops(prune=True, keep_dims=True)``).

    Ops are applied in cell order: a ``none`` slot loses its edges; a ``skip_connect`` slot is
    bypassed (each predecessor linked to each successor) and left empty; other ops keep their
    label. Finally every slot on no input->output path is emptied, so a cell without a path has
    no nodes at all.
    """
    cell = parse(arch)
    edges = _base_wiring()
    labels: list[str | None] = ["input", *([None] * len(EDGES)), "output"]
    for slot, op in enumerate(cell, start=1):
        if op in ("none", "skip_connect"):
            before = {src for src, dst in edges if dst == slot}
            after = {dst for src, dst in edges if src == slot}
            edges = {(src, dst) for src, dst in edges if slot not in (src, dst)}
            if op == "skip_connect":
                edges.update((src, dst) for src in before for dst in after)
        else:
            labels[slot] = op
    on_path = _reachable(edges, 0) & _reachable({(d, s) for s, d in edges}, GRAPH_SLOTS - 1)
    nodes = tuple(label if slot in on_path else None for slot, label in enumerate(labels))
    kept = tuple(sorted((s, d) for s, d in edges if s in on_path and d in on_path))
    return CellGraph(nodes, kept)


def _reachable(edges: set[tuple[int, int]], start: int) -> set[int]:
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        for src, dst in edges:
            if src == node and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    return seen
