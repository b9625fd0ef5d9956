"""NAS-Bench-101: cells, the benchmark's graph hash, uniform sampling, PyTorch networks.

A cell is a DAG given as an upper-triangular 0/1 adjacency matrix plus one op label per vertex:
vertex 0 is ``input``, the last is ``output``, the others are ``conv3x3-bn-relu``,
``conv1x1-bn-relu`` or ``maxpool3x3``. As in the benchmark's ``ModelSpec``, vertices on no
input->output path are pruned first; the pruned cell must have at most 7 vertices and 9 edges, and a
spec with no path at all is invalid. Everything here (arch string, hash, network) is of the pruned
cell, so two specs that differ only in dead vertices are the same cell.

Arch string (the compact form used in tables): ``OPS|ROWS``.

- ``OPS`` has one character per inner vertex, in vertex order: ``3`` conv3x3-bn-relu,
  ``1`` conv1x1-bn-relu, ``m`` maxpool3x3 (empty when input feeds output directly).
- ``ROWS`` has one group per vertex except the output, separated by ``.``: group ``r`` is the
  upper-triangle part of row ``r`` of the matrix, ``matrix[r][r+1:]`` as 0/1 digits.

The benchmark README's Inception-like cell (ops input, 1x1, 3x3, 3x3, 3x3, maxpool, output) is
``1333m|111010.00001.0001.100.01.1``; input wired straight to output is ``|1``.
``format_cell`` always writes the pruned cell; ``parse`` accepts any spec string and prunes it.

The canonical id is the benchmark's own graph hash (``graph_util.hash_module`` of
google-research/nasbench over the pruned spec), so rows join with the published NAS-Bench-101 by
hash. The network follows the benchmark's ``model_builder``: see :class:`Network`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from leti.spaces.base import CellGraph, count_flops, count_params  # noqa: F401 (count_* re-exported)

if TYPE_CHECKING:
    import torch

    from leti.spaces.nb101_network import Network

NAME = "nb101"
INPUT, OUTPUT = "input", "output"
OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
SENTINEL = "m111m|110000.11000.1100.010.10.1"
"""A cell at the median FLOPs of 300 uniformly sampled cells (1.45 GFLOPs in the benchmark's network), every op kind in it."""
"""Inner ops in the benchmark's ``available_ops`` order: the hash labels them by this index."""
MAX_VERTICES = 7
MAX_EDGES = 9
UNIQUE_CELLS = 423_624
"""Cells up to isomorphism, as the NAS-Bench-101 paper counts them (the size of its dataset)."""

OP_CODES: dict[str, str] = {"conv3x3-bn-relu": "3", "conv1x1-bn-relu": "1", "maxpool3x3": "m"}
_OP_OF_CODE = {code: op for op, code in OP_CODES.items()}

GRAPH_NODE_TYPES: tuple[str, ...] = ("none", "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3", INPUT, OUTPUT)
"""BRP-NAS's node labels for NAS-Bench-101: ``none`` marks the padding slots of a small cell."""


class ArchStringError(ValueError):
    """A NAS-Bench-101 cell or arch string that cannot be read; the message quotes it."""


class InvalidCellError(ArchStringError):
    """A well-formed spec that is outside the space once pruned (no path, too big)."""


@dataclass(frozen=True)
class Cell:
    """A pruned, valid cell. Build it with :func:`from_spec` or :func:`parse`, which check it."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    @property
    def edges(self) -> list[tuple[int, int]]:
        n = self.num_vertices
        return [(src, dst) for src in range(n) for dst in range(src + 1, n) if self.matrix[src][dst]]


# --- Reading specs ---------------------------------------------------------------------------------


def _quote_spec(matrix: object, ops: object) -> str:
    return f"matrix={json.dumps(matrix, separators=(',', ':'), default=str)} ops={json.dumps(ops, default=str)}"


def from_spec(matrix: object, ops: object, *, quoted: str | None = None) -> Cell:
    """Check a spec in the NAS-Bench-101 API's form (matrix, ops), prune it, and check the rest.

    Raises :class:`ArchStringError` for a malformed spec and :class:`InvalidCellError` for one the
    benchmark would reject after pruning (``OutOfDomainError`` there). Messages quote ``quoted``
    (the user's text) or the spec itself.
    """
    if isinstance(matrix, np.ndarray):  # the benchmark's own records hold numpy matrices
        matrix = matrix.tolist()
    where = quoted or _quote_spec(matrix, ops)

    def fail(problem: str, kind: type[ArchStringError] = ArchStringError) -> ArchStringError:
        return kind(f"invalid NAS-Bench-101 cell {where}: {problem}")

    if not isinstance(matrix, (list, tuple)) or not all(isinstance(row, (list, tuple)) for row in matrix):
        raise fail("the matrix must be a list of rows")
    n = len(matrix)
    if n < 2:
        raise fail(f"the matrix has {n} vertices; a cell needs at least input and output")
    for r, row in enumerate(matrix):
        if len(row) != n:
            raise fail(f"the matrix must be square: row {r} has {len(row)} entries, not {n}")
        for c, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in (0, 1):
                raise fail(f"matrix[{r}][{c}] is {value!r}; entries must be 0 or 1")
            if value and c <= r:
                raise fail(f"matrix[{r}][{c}] is 1 but the matrix must be upper-triangular (edges go from a lower to a higher vertex)")
    if not isinstance(ops, (list, tuple)) or not all(isinstance(op, str) for op in ops):
        raise fail("ops must be a list of op names")
    if len(ops) != n:
        raise fail(f"{len(ops)} ops for a {n}-vertex matrix; there must be one op per vertex")
    if ops[0] != INPUT:
        raise fail(f"the first op is {ops[0]!r}; it must be 'input'")
    if ops[-1] != OUTPUT:
        raise fail(f"the last op is {ops[-1]!r}; it must be 'output'")
    for v, op in enumerate(ops[1:-1], start=1):
        if op not in OPS:
            raise fail(f"op {v} is {op!r}; inner ops must be one of {', '.join(OPS)}")

    keep = _on_path([[int(x) for x in row] for row in matrix])
    if n - 1 not in keep:
        raise fail("no path from input to output, so pruning leaves nothing", InvalidCellError)
    pruned = tuple(tuple(int(matrix[r][c]) for c in keep) for r in keep)
    cell = Cell(pruned, tuple(ops[v] for v in keep))
    if cell.num_vertices > MAX_VERTICES:
        raise fail(f"{cell.num_vertices} vertices after pruning; NAS-Bench-101 allows at most {MAX_VERTICES}", InvalidCellError)
    if len(cell.edges) > MAX_EDGES:
        raise fail(f"{len(cell.edges)} edges after pruning; NAS-Bench-101 allows at most {MAX_EDGES}", InvalidCellError)
    return cell


def _on_path(matrix: list[list[int]]) -> list[int]:
    """Vertices reachable from the input and reaching the output (``ModelSpec._prune``), in order."""
    n = len(matrix)
    forward, backward = {0}, {n - 1}
    for v in range(1, n):
        if any(matrix[u][v] for u in forward if u < v):
            forward.add(v)
    for v in range(n - 2, -1, -1):
        if any(matrix[v][w] for w in backward if w > v):
            backward.add(v)
    both = forward & backward
    return sorted(both) if {0, n - 1} <= both else []


def parse(arch: str) -> Cell:
    """Read an arch string (see the module docstring), prune it and check it."""
    if not isinstance(arch, str):
        raise ArchStringError(f"arch string must be a str, got {type(arch).__name__}: {arch!r}")

    def fail(problem: str) -> ArchStringError:
        return ArchStringError(f"malformed NAS-Bench-101 arch string {arch!r}: {problem}")

    if arch.count("|") != 1:
        raise fail("expected 'OPS|ROWS', e.g. '1333m|111010.00001.0001.100.01.1'")
    codes, rows_text = arch.split("|")
    for code in codes:
        if code not in _OP_OF_CODE:
            raise fail(f"unknown op code {code!r} (known: 3 conv3x3-bn-relu, 1 conv1x1-bn-relu, m maxpool3x3)")
    n = len(codes) + 2
    rows = rows_text.split(".")
    if len(rows) != n - 1:
        raise fail(f"{len(codes)} ops make {n} vertices, so ROWS needs {n - 1} '.'-separated groups, found {len(rows)}")
    matrix = [[0] * n for _ in range(n)]
    for r, row in enumerate(rows):
        if len(row) != n - 1 - r or any(bit not in "01" for bit in row):
            raise fail(f"group {r} {row!r} must be {n - 1 - r} digits 0/1 (row {r} right of the diagonal)")
        for offset, bit in enumerate(row):
            matrix[r][r + 1 + offset] = int(bit)
    ops = [INPUT, *(_OP_OF_CODE[code] for code in codes), OUTPUT]
    return from_spec(matrix, ops, quoted=repr(arch))


def format_cell(cell: Cell) -> str:
    """The arch string of a pruned cell (inverse of :func:`parse` for pruned strings)."""
    n = cell.num_vertices
    codes = "".join(OP_CODES[op] for op in cell.ops[1:-1])
    rows = ".".join("".join(str(bit) for bit in cell.matrix[r][r + 1 :]) for r in range(n - 1))
    return f"{codes}|{rows}"


# --- Identity: the benchmark's hash --------------------------------------------------------------


def spec_hash(cell: Cell) -> str:
    """The benchmark's hash of a pruned cell: :func:`hash_module` with input labelled -1, output
    -2 and inner ops by their index in :data:`OPS` (``ModelSpec.hash_spec``)."""
    labels = [-1, *(OPS.index(op) for op in cell.ops[1:-1]), -2]
    return hash_module(cell.matrix, labels)


def hash_module(matrix: Sequence[Sequence[int]], labels: Sequence[int]) -> str:
    """The benchmark's isomorphism-invariant graph hash (``graph_util.hash_module``).

    Each vertex starts as md5 of ``str((out_degree, in_degree, label))``; then, once per vertex,
    it becomes md5 of its sorted in-neighbour hashes, ``|``, its sorted out-neighbour hashes,
    ``|``, its own hash. The fingerprint is md5 of ``str`` of the sorted vertex hashes. The strings
    must match the original byte for byte, hence Python's ``str`` of a tuple and of a list.
    """
    n = len(matrix)
    ins = [[u for u in range(n) if matrix[u][v]] for v in range(n)]
    outs = [[w for w in range(n) if matrix[v][w]] for v in range(n)]
    hashes = [_md5(str((len(outs[v]), len(ins[v]), int(labels[v])))) for v in range(n)]
    for _ in range(n):
        hashes = [
            _md5("".join(sorted(hashes[u] for u in ins[v])) + "|" + "".join(sorted(hashes[w] for w in outs[v])) + "|" + hashes[v])
            for v in range(n)
        ]
    return _md5(str(sorted(hashes)))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def canonical_id(arch: str) -> str:
    """The benchmark's hash of ``arch``: join key with the published NAS-Bench-101 data."""
    return spec_hash(parse(arch))


def describe(arch: str) -> dict[str, object]:
    """What ``leti arch`` prints for a cell: the pruned arch string, the benchmark's hash, valid."""
    cell = parse(arch)
    return {"arch": format_cell(cell), "hash": spec_hash(cell), "valid": True}


def describe_spec(matrix: object, ops: object) -> dict[str, object]:
    """:func:`describe` of a cell in the NAS-Bench-101 API's form (``{"matrix": ..., "ops": ...}``)."""
    return describe(format_cell(from_spec(matrix, ops)))


def is_valid(arch: str) -> bool:
    """Whether ``arch`` is in the space after pruning (a malformed string still raises)."""
    try:
        parse(arch)
    except InvalidCellError:
        return False
    return True


# --- Sampling ----------------------------------------------------------------------------------


def sample_valid(n: int, seed: int) -> list[str]:
    """``n`` distinct cells (distinct hashes), uniform over the benchmark's unique cells.

    Exact rejection sampling, no table of the 423,624 cells needed: draw a spec uniformly among
    all already-pruned specs of 2..7 vertices with at most 9 edges (the benchmark's own
    enumeration, ``generate_graphs.py``), keep it with probability 1 / (the number of such specs
    isomorphic to it), and drop hashes already drawn. Each unique cell is then equally likely.
    A longer sample with the same seed starts with the shorter one.
    """
    if n > UNIQUE_CELLS:
        raise ValueError(f"cannot sample {n} cells: NAS-Bench-101 has only {UNIQUE_CELLS} unique cells")
    rng = np.random.default_rng(seed)
    chosen: dict[str, str] = {}
    while len(chosen) < n:
        for cell in _draw_full_dags(rng, 4096):
            if rng.random() * representation_count(cell) >= 1.0:
                continue
            key = spec_hash(cell)
            if key not in chosen:
                chosen[key] = format_cell(cell)
                if len(chosen) == n:
                    break
    return list(chosen.values())


@lru_cache(maxsize=None)
def _size_weights() -> tuple[np.ndarray, np.ndarray]:
    """Vertex counts 2..7 and the share of (matrix with <= 9 edges, labelling) pairs of each."""
    sizes = np.arange(2, MAX_VERTICES + 1)
    counts = [sum(math.comb(v * (v - 1) // 2, k) for k in range(MAX_EDGES + 1)) * len(OPS) ** (v - 2) for v in sizes]
    return sizes, np.array(counts, dtype=float) / sum(counts)


def _draw_full_dags(rng: np.random.Generator, batch: int) -> list[Cell]:
    """``batch`` uniform draws of (matrix with <= 9 edges, labelling); those with nothing to prune."""
    sizes, weights = _size_weights()
    drawn = rng.choice(sizes, size=batch, p=weights)
    cells = []
    for v in sizes.tolist():
        count = int((drawn == v).sum())
        positions, edge_weights = _edge_slots(v)
        edges = rng.choice(len(edge_weights), size=count, p=edge_weights)
        ranks = rng.random((count, len(positions))).argsort(axis=1).argsort(axis=1)
        rows, cols = zip(*positions)
        matrices = np.zeros((count, v, v), dtype=np.int8)
        matrices[:, rows, cols] = ranks < edges[:, None]  # a uniform subset of `edges` positions
        full = matrices[:, :-1, :].any(axis=2).all(axis=1) & matrices[:, :, 1:].any(axis=1).all(axis=1)
        labels = rng.integers(len(OPS), size=(count, v - 2))
        for matrix, label in zip(matrices[full].tolist(), labels[full].tolist()):
            cells.append(Cell(tuple(map(tuple, matrix)), (INPUT, *(OPS[i] for i in label), OUTPUT)))
    return cells


@lru_cache(maxsize=None)
def _edge_slots(vertices: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Upper-triangle positions, and the share of <=9-edge matrices having 0, 1, ... 9 edges."""
    positions = [(r, c) for r in range(vertices) for c in range(r + 1, vertices)]
    counts = np.array([math.comb(len(positions), k) for k in range(min(MAX_EDGES, len(positions)) + 1)], dtype=float)
    return positions, counts / counts.sum()


def representation_count(cell: Cell) -> int:
    """How many distinct upper-triangular specs draw the same cell: relabellings of the inner
    vertices that keep every edge pointing forward, counted once each (automorphisms collapse)."""
    n = cell.num_vertices
    edges = cell.edges
    seen = set()
    for order in itertools.permutations(range(1, n - 1)):
        new = [0, *order, n - 1]  # old vertex i becomes vertex new[i]
        if all(new[src] < new[dst] for src, dst in edges):
            ops = [""] * n
            for old, position in enumerate(new):
                ops[position] = cell.ops[old]
            seen.add((frozenset((new[s], new[d]) for s, d in edges), tuple(ops)))
    return len(seen)


# --- Graph for the GCN -------------------------------------------------------------------------


def graph(arch: str) -> CellGraph:
    """BRP-NAS's NAS-Bench-101 graph: the pruned cell padded to 7 slots with ``none`` vertices
    inserted before the output, edges as in the pruned matrix (eagle's ``get_matrix_and_ops``)."""
    cell = parse(arch)
    n, padding = cell.num_vertices, MAX_VERTICES - cell.num_vertices
    nodes = (*cell.ops[:-1], *(["none"] * padding), OUTPUT)
    slot = {v: v for v in range(n - 1)} | {n - 1: MAX_VERTICES - 1}
    return CellGraph(nodes, tuple((slot[s], slot[d]) for s, d in cell.edges))


# --- Features for tabular predictors (leti.features composes them) -------------------------------

_SLOT_PAIRS = [(r, c) for r in range(MAX_VERTICES) for c in range(r + 1, MAX_VERTICES)]
ENCODING_NAMES: tuple[str, ...] = (
    *(f"edge{r}{c}" for r, c in _SLOT_PAIRS),
    *(f"vertex{v}_{op}" for v in range(1, MAX_VERTICES - 1) for op in OPS),
)
"""The 21 upper-triangle entries of the 7-slot matrix, then a one-hot op per inner slot (5 x 3)."""
COST_NAMES: tuple[str, ...] = ("mflops", "kparams")


def encoding(arch: str) -> np.ndarray:
    """The cell as a fixed-length vector, in the slots of :func:`graph` (a small cell is padded
    with empty vertices before the output, so vertex 6 is always the output): the upper triangle
    of the 7x7 adjacency matrix, then the one-hot op of each inner slot (all zero when padding)."""
    cell_graph = graph(arch)
    edges = set(cell_graph.edges)
    vector = np.zeros(len(ENCODING_NAMES), dtype=np.float32)
    for index, pair in enumerate(_SLOT_PAIRS):
        vector[index] = pair in edges
    for slot, label in enumerate(cell_graph.nodes[1:-1]):
        if label in OPS:
            vector[len(_SLOT_PAIRS) + slot * len(OPS) + OPS.index(label)] = 1.0
    return vector


def op_counts(arch: str) -> tuple[int, ...]:
    """How many inner vertices carry each op, in :data:`OPS` order."""
    ops = parse(arch).ops
    return tuple(ops.count(op) for op in OPS)


def costs(arch: str) -> tuple[float, ...]:
    """MFLOPs and thousands of params of the benchmark's own network (from layer shapes)."""
    flops, params = flops_params(arch)
    return flops / 1e6, params / 1e3


# --- PyTorch network, as NAS-Bench-101 defines it -----------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """Macro settings; the defaults are the network every NAS-Bench-101 cell was trained in."""

    input_size: int = 32
    stem_channels: int = 128
    num_stacks: int = 3
    cells_per_stack: int = 3
    num_classes: int = 10


SMALL_NETWORK = NetworkConfig(input_size=8, stem_channels=16, cells_per_stack=1)
"""One cell per stack, 16 stem channels, 8x8 inputs: builds and runs in milliseconds, for tests."""


def vertex_channels(c_in: int, c_out: int, matrix: Sequence[Sequence[int]]) -> list[int]:
    """Channels of each vertex (``model_builder.compute_vertex_channels``).

    The vertices feeding the output split its ``c_out`` channels (the remainder goes one each to
    the first of them) so their concatenation has ``c_out``; every other inner vertex takes the
    largest count among its successors, so vertex->vertex edges only ever truncate.
    """
    n = len(matrix)
    channels = [c_in, *([0] * (n - 2)), c_out]
    if n == 2:
        return channels
    feeders = [v for v in range(1, n - 1) if matrix[v][n - 1]]
    share, remainder = divmod(c_out, len(feeders))
    for rank, v in enumerate(feeders):
        channels[v] = share + (1 if rank < remainder else 0)
    for v in range(n - 3, 0, -1):
        if not matrix[v][n - 1]:
            channels[v] = max(channels[w] for w in range(v + 1, n - 1) if matrix[v][w])
    return channels


NETWORK_MODULES = ("ConvBnRelu", "make_op", "CellModule", "Network")


def __getattr__(name: str):  # noqa: ANN202 - the torch modules, imported on first use
    """``nb101.Network`` and the other torch modules live in ``nb101_network``, imported when first
    asked for, so that parsing arch strings need not import torch."""
    if name in NETWORK_MODULES:
        from leti.spaces import nb101_network

        return getattr(nb101_network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_network(arch: str, config: NetworkConfig = NetworkConfig()) -> Network:
    """The benchmark's network for ``arch``, in eval mode."""
    from leti.spaces.nb101_network import Network

    return Network(parse(arch), config).eval()


def example_input(config: NetworkConfig = NetworkConfig(), batch: int = 1) -> torch.Tensor:
    import torch

    return torch.randn(batch, 3, config.input_size, config.input_size)


def flops_params(arch: str, config: NetworkConfig = NetworkConfig()) -> tuple[int, int]:
    """FLOPs (convs and the dense layer, 2 per multiply-add, as :func:`count_flops` counts) and
    trainable parameters, from the layer shapes alone: microseconds instead of a forward pass."""
    cell = parse(arch)

    def conv(c_in: int, c_out: int, kernel: int, size: int) -> tuple[int, int]:
        return 2 * kernel * kernel * c_in * c_out * size * size, kernel * kernel * c_in * c_out + 2 * c_out

    n = cell.num_vertices
    size, c_in = config.input_size, config.stem_channels
    flops, params = conv(3, c_in, 3, size)
    channels = c_in
    for stack in range(config.num_stacks):
        if stack > 0:
            size, channels = -(-size // 2), channels * 2
        for _ in range(config.cells_per_stack):
            widths = vertex_channels(c_in, channels, cell.matrix)
            layers = [(c_in, widths[v], 1) for v in range(1, n) if cell.matrix[0][v]]
            kernels = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1}
            layers += [(widths[v], widths[v], kernels[op]) for v, op in enumerate(cell.ops[1:-1], start=1) if op in kernels]
            for a, b, k in layers:
                f, p = conv(a, b, k, size)
                flops, params = flops + f, params + p
            c_in = channels
    return flops + 2 * channels * config.num_classes, params + channels * config.num_classes + config.num_classes
