"""NAS-Bench-101: specs, pruning, the benchmark's hash, sampling, arch strings, the network."""

import itertools
import random
from collections import Counter

import numpy as np
import pytest
import torch

from leti.spaces import nb101

C3, C1, MP = nb101.OPS
IN, OUT = nb101.INPUT, nb101.OUTPUT

# The Inception-like cell of the nasbench README and its Colab (NASBench.ipynb), which prints
# trainable_parameters: 2694282 for it.
INCEPTION = (
    [[0, 1, 1, 1, 0, 1, 0],
     [0, 0, 0, 0, 0, 0, 1],
     [0, 0, 0, 0, 0, 0, 1],
     [0, 0, 0, 0, 1, 0, 0],
     [0, 0, 0, 0, 0, 0, 1],
     [0, 0, 0, 0, 0, 0, 1],
     [0, 0, 0, 0, 0, 0, 0]],
    [IN, C1, C3, C3, C3, MP, OUT],
)


def nni_example() -> tuple[list[list[int]], list[str]]:
    """The cell of NNI's NAS-Bench-101 query example (docs/en_US/NAS/BenchmarksExample.ipynb), given
    there as the inputs of each vertex; NNI prints hash 00005c142e6f48ac74fdcf73e3439874 and
    parameters 8.55553 (millions) from the benchmark's own records."""
    inputs = {1: [0], 2: [1], 3: [2], 4: [0], 5: [0, 3, 4], 6: [2, 5]}
    matrix = [[0] * 7 for _ in range(7)]
    for dst, sources in inputs.items():
        for src in sources:
            matrix[src][dst] = 1
    return matrix, [IN, C3, MP, C3, C3, C1, OUT]


def naslib_example() -> tuple[list[list[int]], list[str]]:
    """automl/NASLib tests/test_nb101_search_space.py: the spec its NB101 data stores for hash
    ff940d27cbe9ed0a639a68a9c3f87283 (FIXED_ARCH, flat matrix then op indices into
    [input, output, maxpool3x3, conv1x1, conv3x3])."""
    flat = (0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0,
            0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 3, 3, 4, 1)
    names = [IN, OUT, MP, C1, C3]
    return [list(flat[7 * r : 7 * r + 7]) for r in range(7)], [names[i] for i in flat[49:]]


# --- Published facts --------------------------------------------------------------------------------


def test_hash_matches_published_nas_bench_101_records() -> None:
    assert nb101.spec_hash(nb101.from_spec(*nni_example())) == "00005c142e6f48ac74fdcf73e3439874"
    matrix, ops = nni_example()  # the benchmark's API hands out numpy matrices
    assert nb101.from_spec(np.array(matrix, dtype=np.int8), ops) == nb101.from_spec(matrix, ops)
    assert nb101.spec_hash(nb101.from_spec(*naslib_example())) == "ff940d27cbe9ed0a639a68a9c3f87283"


def test_parameters_match_published_nas_bench_101_records() -> None:
    for spec, published in ((INCEPTION, 2_694_282), (nni_example(), 8_555_530)):
        arch = nb101.format_cell(nb101.from_spec(*spec))
        assert nb101.flops_params(arch)[1] == published
        assert nb101.count_params(nb101.build_network(arch)) == published


def test_full_size_flops_are_those_counted_on_the_network() -> None:
    arch = nb101.format_cell(nb101.from_spec(*INCEPTION))
    network = nb101.build_network(arch)
    assert nb101.flops_params(arch)[0] == nb101.count_flops(network, nb101.example_input())


@pytest.mark.parametrize(
    ("matrix", "c_in", "c_out", "expected"),
    [  # compute_vertex_channels cases of the benchmark's model_builder_test.py
        ([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], 8, 16, [8, 16, 16, 16]),
        ([[0, 1], [0, 0]], 5, 1, [5, 1]),
        ([[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], 16, 8, [16, 8, 8, 8, 8]),
        ([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], 8, 15, [8, 8, 7, 15]),
        ([[0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], 8, 8, [8, 3, 3, 2, 8]),
        ([[0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], 8, 9, [8, 5, 5, 4, 9]),
        ([[0, 1, 0, 1, 0], [0, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], 8, 15, [8, 8, 7, 7, 15]),
    ],
)
def test_vertex_channels_as_the_benchmark_computes_them(matrix, c_in, c_out, expected) -> None:
    assert nb101.vertex_channels(c_in, c_out, matrix) == expected


@pytest.mark.parametrize(
    ("same", "matrix_a", "labels_a", "matrix_b", "labels_b"),
    [  # hash_module cases of the benchmark's graph_util_test.py
        (True, [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [-1, 1, 2, -2],
         [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [-1, 2, 1, -2]),
        (True, [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], [-1, 1, 2, 3, -2],
         [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], [-1, 2, 3, 1, -2]),
        (False, [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], [-1, 1, 0, 0, -2],
         [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], [-1, 0, 0, 1, -2]),
        (False, [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [-1, 1, 0, -2],
         [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [-1, 0, 1, -2]),
    ],
)
def test_hash_module_cases_of_the_benchmark(same, matrix_a, labels_a, matrix_b, labels_b) -> None:
    assert (nb101.hash_module(matrix_a, labels_a) == nb101.hash_module(matrix_b, labels_b)) is same


# --- Hash properties --------------------------------------------------------------------------------


def brute_force_class(cell: nb101.Cell) -> tuple:
    """The smallest relabelling of the inner vertices: equal for two cells iff isomorphic."""
    n, forms = cell.num_vertices, []
    for order in itertools.permutations(range(1, n - 1)):
        new = [0, *order, n - 1]
        forms.append((tuple(sorted((new[s], new[d]) for s, d in cell.edges)),
                      tuple(cell.ops[new.index(v)] for v in range(n))))
    return min(forms)


def all_specs(max_vertices: int):
    """Every spec with nothing to prune, <= 9 edges, every labelling (generate_graphs.py's loop)."""
    for n in range(2, max_vertices + 1):
        positions = [(r, c) for r in range(n) for c in range(r + 1, n)]
        for bits in itertools.product((0, 1), repeat=len(positions)):
            matrix = [[0] * n for _ in range(n)]
            for (r, c), bit in zip(positions, bits):
                matrix[r][c] = bit
            nothing_to_prune = all(any(matrix[v]) for v in range(n - 1)) and all(any(row[v] for row in matrix) for v in range(1, n))
            if sum(bits) > nb101.MAX_EDGES or not nothing_to_prune:
                continue
            for labels in itertools.product(nb101.OPS, repeat=n - 2):
                yield nb101.from_spec(matrix, [IN, *labels, OUT])


def test_hash_is_exactly_isomorphism_on_small_cells() -> None:
    """All 3364 specs of up to 5 vertices: same hash iff isomorphic (brute force), and each
    class is drawn by as many specs as representation_count says (what makes sampling uniform)."""
    specs = list(all_specs(5))
    by_hash: dict[str, list[nb101.Cell]] = {}
    for cell in specs:
        by_hash.setdefault(nb101.spec_hash(cell), []).append(cell)
    classes = {key: {brute_force_class(cell) for cell in cells} for key, cells in by_hash.items()}
    assert all(len(forms) == 1 for forms in classes.values())  # no isomorphic pair split
    assert len({form for forms in classes.values() for form in forms}) == len(by_hash)  # no collision
    assert Counter(cells[0].num_vertices for cells in by_hash.values()) == {2: 1, 3: 6, 4: 84, 5: 2441}
    assert all(nb101.representation_count(cells[0]) == len(cells) for cells in by_hash.values())


def relabel(cell: nb101.Cell, rng: random.Random) -> nb101.Cell:
    """An isomorphic spec: the inner vertices renumbered in another topological order."""
    n, remaining, order = cell.num_vertices, set(range(1, cell.num_vertices - 1)), []
    while remaining:
        ready = [v for v in remaining if all(s in order or s == 0 for s, d in cell.edges if d == v)]
        order.append(rng.choice(sorted(ready)))
        remaining.remove(order[-1])
    new = {0: 0, n - 1: n - 1} | {old: position for position, old in enumerate(order, start=1)}
    matrix = [[0] * n for _ in range(n)]
    for s, d in cell.edges:
        matrix[new[s]][new[d]] = 1
    ops = [cell.ops[old] for old in sorted(new, key=new.get)]
    return nb101.from_spec(matrix, ops)


def test_isomorphic_cells_hash_equal_and_edits_change_the_hash() -> None:
    rng = random.Random(0)
    relabelled_differently = 0
    for arch in nb101.sample_valid(150, seed=11):
        cell = nb101.parse(arch)
        twin = relabel(cell, rng)
        relabelled_differently += twin != cell
        assert nb101.spec_hash(twin) == nb101.spec_hash(cell)
        if cell.num_vertices > 2:  # another op somewhere changes the op multiset: never isomorphic
            v = rng.randrange(1, cell.num_vertices - 1)
            other = rng.choice([op for op in nb101.OPS if op != cell.ops[v]])
            edited = nb101.Cell(cell.matrix, cell.ops[:v] + (other,) + cell.ops[v + 1 :])
            assert nb101.spec_hash(edited) != nb101.spec_hash(cell)
    assert relabelled_differently > 50  # the property was exercised on real relabellings


def test_pruning_comes_first() -> None:
    base_matrix, base_ops = [[0, 1, 0], [0, 0, 1], [0, 0, 0]], [IN, C3, OUT]
    # Vertex 2 reads the input but feeds nothing; vertex 3 feeds the output but reads nothing.
    dangling = [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    pruned = nb101.from_spec(dangling, [IN, C3, MP, C1, OUT])
    assert pruned == nb101.from_spec(base_matrix, base_ops)
    assert nb101.spec_hash(pruned) == nb101.spec_hash(nb101.from_spec(base_matrix, base_ops))
    assert nb101.format_cell(pruned) == "3|10.1"
    # 8 vertices and 10 edges before pruning, 7 and 9 after: in the space, as the benchmark's API says.
    big = [[0] * 8 for _ in range(8)]
    for s, d in [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (4, 5), (5, 7), (0, 7), (2, 7), (1, 6)]:
        big[s][d] = 1
    cell = nb101.from_spec(big, [IN, C3, C3, C1, MP, C3, C1, OUT])
    assert (cell.num_vertices, len(cell.edges)) == (7, 9)
    # An unpruned arch string is accepted and written back pruned (vertex 2, a pool, feeds nothing).
    assert nb101.format_cell(nb101.parse("3m|110.01.0")) == "3|10.1"


# --- Reading and writing cells ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matrix", "ops", "complaint"),
    [
        ([[0, 1], [0, 0], [0, 0]], [IN, OUT], "row 0 has 2 entries, not 3"),
        ([[0, 2], [0, 0]], [IN, OUT], "matrix[0][1] is 2; entries must be 0 or 1"),
        ([[0, 1], [1, 0]], [IN, OUT], "matrix[1][0] is 1 but the matrix must be upper-triangular"),
        ([[1, 1], [0, 0]], [IN, OUT], "matrix[0][0] is 1"),
        ([[0, 1], [0, 0]], [IN, C3, OUT], "3 ops for a 2-vertex matrix"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [IN, "conv5x5", OUT], "op 1 is 'conv5x5'"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [C3, C3, OUT], "the first op is 'conv3x3-bn-relu'; it must be 'input'"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [IN, C3, C3], "the last op is 'conv3x3-bn-relu'; it must be 'output'"),
        ([[0]], [IN], "a cell needs at least input and output"),
        ("[[0,1],[0,0]]", [IN, OUT], "the matrix must be a list of rows"),
    ],
)
def test_malformed_specs_are_quoted_and_explained(matrix, ops, complaint) -> None:
    with pytest.raises(nb101.ArchStringError) as raised:
        nb101.from_spec(matrix, ops)
    assert not isinstance(raised.value, nb101.InvalidCellError)
    assert complaint in str(raised.value)
    assert "matrix=" in str(raised.value) and "ops=" in str(raised.value)


def test_specs_invalid_after_pruning() -> None:
    with pytest.raises(nb101.InvalidCellError, match="no path from input to output"):
        nb101.from_spec([[0, 1, 0], [0, 0, 0], [0, 0, 0]], [IN, C3, OUT])
    eight = [[1 if d == s + 1 else 0 for d in range(8)] for s in range(8)]
    with pytest.raises(nb101.InvalidCellError, match="8 vertices after pruning; NAS-Bench-101 allows at most 7"):
        nb101.from_spec(eight, [IN, *[C3] * 6, OUT])
    dense = [[1 if d > s else 0 for d in range(5)] for s in range(5)]
    with pytest.raises(nb101.InvalidCellError, match="10 edges after pruning; NAS-Bench-101 allows at most 9"):
        nb101.from_spec(dense, [IN, C3, C3, C3, OUT])
    assert not nb101.is_valid("3|00.1") and nb101.is_valid("3|10.1")


def test_arch_strings_round_trip() -> None:
    assert nb101.format_cell(nb101.from_spec(*INCEPTION)) == "1333m|111010.00001.0001.100.01.1"
    assert nb101.format_cell(nb101.from_spec([[0, 1], [0, 0]], [IN, OUT])) == "|1"
    for arch in nb101.sample_valid(300, seed=5) + ["|1", "m|11.1"]:
        cell = nb101.parse(arch)
        assert nb101.format_cell(cell) == arch
        assert nb101.from_spec([list(row) for row in cell.matrix], list(cell.ops)) == cell


@pytest.mark.parametrize(
    ("arch", "complaint"),
    [
        ("3m|10.1", "ROWS needs 3 '.'-separated groups, found 2"),
        ("3x|100.01.1", "unknown op code 'x'"),
        ("3|1.01", "group 0 '1' must be 2 digits 0/1"),
        ("3|12.1", "group 0 '12' must be 2 digits 0/1"),
        ("3,10.1", "expected 'OPS|ROWS'"),
        ("", "expected 'OPS|ROWS'"),
    ],
)
def test_malformed_arch_strings_are_quoted_and_explained(arch: str, complaint: str) -> None:
    with pytest.raises(nb101.ArchStringError) as raised:
        nb101.parse(arch)
    assert repr(arch) in str(raised.value) and complaint in str(raised.value)


# --- Sampling -------------------------------------------------------------------------------------


def test_sample_is_seeded_distinct_valid_and_extends() -> None:
    first = nb101.sample_valid(100, seed=3)
    assert first == nb101.sample_valid(100, seed=3)
    assert first != nb101.sample_valid(100, seed=4)
    assert nb101.sample_valid(30, seed=3) == first[:30]
    assert len({nb101.canonical_id(arch) for arch in first}) == 100
    assert all(nb101.is_valid(arch) and nb101.format_cell(nb101.parse(arch)) == arch for arch in first)
    with pytest.raises(ValueError, match="only 423624 unique cells"):
        nb101.sample_valid(500_000, seed=0)


# --- Graph and network ---------------------------------------------------------------------------


def test_graph_pads_small_cells_with_none_before_the_output() -> None:
    inception = nb101.graph("1333m|111010.00001.0001.100.01.1")
    assert inception.nodes == (IN, C1, C3, C3, C3, MP, OUT)
    assert inception.edges == ((0, 1), (0, 2), (0, 3), (0, 5), (1, 6), (2, 6), (3, 4), (4, 6), (5, 6))
    small = nb101.graph("3m|110.10.1")  # input -> conv, input -> pool, conv -> pool -> output
    assert small.nodes == (IN, C3, MP, "none", "none", "none", OUT)
    assert small.edges == ((0, 1), (0, 2), (1, 2), (2, 6))
    assert nb101.graph("|1") == nb101.CellGraph((IN, *["none"] * 5, OUT), ((0, 6),))
    for arch in nb101.sample_valid(50, seed=1):
        assert len(nb101.graph(arch).nodes) == nb101.MAX_VERTICES
        assert set(nb101.graph(arch).nodes) <= set(nb101.GRAPH_NODE_TYPES)


def test_small_networks_run_and_their_costs_are_exact() -> None:
    config = nb101.SMALL_NETWORK
    for arch in nb101.sample_valid(12, seed=2) + ["|1", "m|11.1", "3|10.1"]:
        network = nb101.build_network(arch, config)
        with torch.inference_mode():
            assert network(nb101.example_input(config, batch=2)).shape == (2, config.num_classes)
        counted = (nb101.count_flops(network, nb101.example_input(config)), nb101.count_params(network))
        assert nb101.flops_params(arch, config) == counted


def test_network_follows_the_config_and_odd_sizes_pool_like_tensorflow() -> None:
    config = nb101.NetworkConfig(input_size=9, stem_channels=8, num_stacks=3, cells_per_stack=2, num_classes=7)
    network = nb101.build_network("1333m|111010.00001.0001.100.01.1", config)
    assert sum(isinstance(layer, nb101.CellModule) for layer in network.cells) == 6
    assert network.classifier.in_features == 32
    seen = []
    network.cells[-1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with torch.inference_mode():
        assert network(nb101.example_input(config)).shape == (1, 7)
    assert seen == [(1, 32, 3, 3)]  # 9 -> 5 -> 3, TF's 'same' max-pool
