"""The search-space interface: the registry, what every space provides, and NB201's BRP-NAS graph."""

import pytest
import torch

from leti import spaces
from leti.spaces import CellGraph, SearchSpace, nb101, nb201
from leti.spaces.base import count_flops, count_params

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_registry_gives_each_space_by_name() -> None:
    assert spaces.get("nb201") is nb201 and spaces.get("nb101") is nb101
    assert spaces.DEFAULT == "nb201"
    with pytest.raises(spaces.UnknownSpaceError) as raised:
        spaces.get("nb301")
    assert isinstance(raised.value, ValueError)
    assert str(raised.value) == "unknown search space 'nb301' (known: nb101, nb201)"


@pytest.mark.parametrize("space", list(spaces.SPACES.values()), ids=list(spaces.SPACES))
def test_every_space_implements_the_interface(space: SearchSpace) -> None:
    assert isinstance(space, SearchSpace)
    assert spaces.get(space.NAME) is space
    config = space.SMALL_NETWORK
    archs = space.sample_valid(4, seed=7)
    assert len(set(archs)) == 4 and archs == space.sample_valid(4, seed=7)
    slots = {len(space.graph(arch).nodes) for arch in archs}
    assert len(slots) == 1  # a fixed number of node slots per space
    for arch in archs:
        assert space.is_valid(arch)
        assert space.format_cell(space.parse(arch)) == arch
        assert isinstance(space.canonical_id(arch), str)
        graph = space.graph(arch)
        assert isinstance(graph, CellGraph)
        assert {label for label in graph.nodes if label is not None} <= set(space.GRAPH_NODE_TYPES)
        network = space.build_network(arch, config)
        assert not network.training
        with torch.inference_mode():
            assert network(space.example_input(config, batch=2)).shape[0] == 2
        counted = (count_flops(network, space.example_input(config)), count_params(network))
        assert space.flops_params(arch, config) == counted
    with pytest.raises(space.ArchStringError) as raised:
        space.parse("not-an-arch")
    assert isinstance(raised.value, ValueError) and "'not-an-arch'" in str(raised.value)


# Per space: two cells with the same two ops on parallel paths, swapped (isomorphic: one class),
# and the same two ops in series, in either order (different functions: two classes).
SWAPS = {
    # NB201: node 3 = avg_pool(input) + skip(node 1) where node 1 = conv3x3(input), and the other way round.
    "nb201": (
        ("|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|skip_connect~1|none~2|",
         "|avg_pool_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|"),
        ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|avg_pool_3x3~1|none~2|",
         "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"),
    ),
    # NB101: input -> {conv3x3, maxpool} -> output, vertices listed in either order; then input ->
    # conv3x3 -> maxpool -> output against input -> maxpool -> conv3x3 -> output.
    "nb101": (("3m|110.01.1", "m3|110.01.1"), ("3m|100.10.1", "m3|100.10.1")),
}


@pytest.mark.parametrize("space", list(spaces.SPACES.values()), ids=list(spaces.SPACES))
def test_canonical_id_is_one_per_isomorphism_class(space: SearchSpace) -> None:
    (parallel, swapped), (series, reversed_series) = SWAPS[space.NAME]
    assert parallel != swapped and space.is_valid(parallel) and space.is_valid(swapped)
    assert space.canonical_id(parallel) == space.canonical_id(swapped)
    assert space.canonical_id(series) != space.canonical_id(reversed_series)
    assert space.canonical_id(parallel) != space.canonical_id(series)


def test_nb201_canonical_id_is_the_benchmark_unique_string() -> None:
    # Node 3 sums avg_pool(input) and conv3x3(input) (through node 1's skip); its edge from node 2 is none.
    assert nb201.canonical_id(SWAPS["nb201"][0][0]) == "#+(0)@avg_pool_3x3+(0)@nor_conv_3x3"
    assert nb201.canonical_id(SWAPS["nb201"][1][0]) == "#+#+((0)@nor_conv_3x3)@avg_pool_3x3"


def test_cell_graph_rejects_edges_outside_its_nodes() -> None:
    with pytest.raises(ValueError, match="touches an empty slot"):
        CellGraph(("input", None, "output"), ((0, 1),))
    with pytest.raises(ValueError, match="leaves the 2 node slots"):
        CellGraph(("input", "output"), ((0, 2),))


# --- NB201's graph: BRP-NAS's get_matrix_and_ops(prune=True, keep_dims=True), worked by hand ------
# Slots: 0 input, 1..6 the ops in arch-string order, 7 output.


def test_nb201_base_wiring_before_any_op() -> None:
    assert nb201.graph(BEST) == CellGraph(
        ("input", *["nor_conv_3x3"] * 6, "output"),
        ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)),
    )


def test_nb201_all_skip_cell_is_input_to_output() -> None:
    assert nb201.graph(ALL_SKIP) == CellGraph(("input", *[None] * 6, "output"), ((0, 7),))


def test_nb201_none_disconnects_a_branch() -> None:
    # none on 2<-0 and 3<-2 cuts node 2's branch; the skip 2<-1 then leads nowhere.
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert nb201.graph(arch) == CellGraph(
        ("input", "nor_conv_3x3", None, None, "avg_pool_3x3", "nor_conv_1x1", None, "output"),
        ((0, 1), (0, 4), (1, 5), (4, 7), (5, 7)),
    )


def test_nb201_skip_chain_is_bypassed() -> None:
    # input -skip-> node 1 -skip-> node 2 -conv3x3-> output: the conv reads the input directly.
    arch = "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|"
    assert nb201.graph(arch) == CellGraph(("input", *[None] * 5, "nor_conv_3x3", "output"), ((0, 6), (6, 7)))


def test_nb201_dead_end_op_is_pruned() -> None:
    # The 1x1 conv on 1<-0 feeds node 1, which reaches the output only through none edges.
    arch = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"
    assert nb201.graph(arch) == CellGraph(("input", *[None] * 5, "avg_pool_3x3", "output"), ((0, 6), (6, 7)))


def test_nb201_graph_has_nodes_iff_the_cell_has_a_path() -> None:
    for cell in nb201.enumerate_cells():
        graph = nb201.graph(nb201.format_cell(cell))
        assert (graph.nodes[-1] == "output") is nb201.has_path(cell)
        if not nb201.has_path(cell):
            assert graph == CellGraph((None,) * 8, ())
        assert {op for op in graph.nodes[1:-1] if op} <= set(cell) - {"none", "skip_connect"}
