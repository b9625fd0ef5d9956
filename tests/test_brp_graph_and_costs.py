"""BRP-NAS graphs of NAS-Bench-201 cells, and FLOPs/params summed from per-op costs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from leti import features
from leti.features import graph
from leti.spaces import nb201
from leti.spaces import nb201_costs as costs
from leti.spaces.base import CellGraph

CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def test_brp_reads_matrix_of_a_hand_worked_cell() -> None:
    # 1<-0 conv3x3 (slot 1), 2<-0 none (2), 2<-1 skip (3), 3<-0 pool (4), 3<-1 none (5), 3<-2 conv1x1 (6).
    # The skip is bypassed: conv3x3 feeds conv1x1 directly; none slots and the skip are empty.
    cell_graph = nb201.graph(CELL)
    assert cell_graph.nodes == ("input", "nor_conv_3x3", None, None, "avg_pool_3x3", None, "nor_conv_1x1", "output")
    reads = graph.reads(cell_graph)
    # node 0 is the global node: it reads every node; nobody reads it; every node reads itself.
    assert reads[0].tolist() == [1.0] * 9 and reads[1:, 0].tolist() == [0.0] * 8
    assert np.diag(reads).tolist() == [1.0] * 9
    # a node reads the nodes it feeds (BRP-NAS multiplies the data-flow matrix from the left)
    fed = {(i - 1, j - 1) for i, j in zip(*np.nonzero(reads)) if i and i != j}
    assert fed == {(0, 1), (0, 4), (1, 6), (4, 7), (6, 7)}
    backwards = graph.reads(cell_graph, direction="predecessors")
    assert {(j - 1, i - 1) for i, j in zip(*np.nonzero(backwards)) if i and i != j} == fed
    assert graph.reads(cell_graph, adjacency="identity").tolist() == np.eye(9).tolist()


def test_node_features_are_one_hot_with_empty_slots_zero() -> None:
    features = graph.node_features(nb201.graph(CELL), "nb201")
    types = graph.node_types("nb201")
    assert features.shape == (9, len(types))
    assert features[0, types.index("global")] == 1 and features[1, types.index("input")] == 1
    assert features[:, types.index("nor_conv_3x3")].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert [row.sum() for row in features] == [1, 1, 1, 0, 0, 1, 0, 1, 1]
    random_rows = graph.node_features(nb201.graph(CELL), "nb201", "random", CELL)
    assert random_rows.shape == features.shape and np.array_equal(random_rows, graph.node_features(nb201.graph(CELL), "nb201", "random", CELL))


def test_duplicate_feature_marks_an_op_repeating_an_earlier_one_on_the_same_inputs() -> None:
    # Both pools read the cell input; the conv on edge 1->3 repeats the one on 1->2 (both read node 1);
    # the conv on 0->3 reads the input, so it repeats nothing; the skip keeps node 2 alive.
    cell = "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|skip_connect~2|"
    features = graph.node_features(nb201.graph(cell), "nb201", kind="onehot+duplicates")
    assert features.shape == (9, graph.feature_size("nb201", "onehot+duplicates"))
    assert features[:, -1].tolist() == [0, 0, 0, 1, 0, 0, 1, 0, 0]
    plain = graph.node_features(nb201.graph(cell), "nb201")
    assert np.array_equal(features[:, :-1], plain)
    assert graph.node_features(nb201.graph(CELL), "nb201", kind="onehot+duplicates")[:, -1].sum() == 0


def test_dgl_graphconv_computes_the_dense_convolution() -> None:
    from leti.dgl_compat import dgl
    from leti.predictors.gcn import GraphConvolution

    dgl()
    from dgl.nn.pytorch import GraphConv

    archs = random.Random(2).sample(nb201.all_arch_strings(), 12)
    reads, x = graph.dense(archs, "nb201")
    dense = GraphConvolution(x.shape[-1], 16)
    sparse = GraphConv(x.shape[-1], 16, norm="none", allow_zero_in_degree=True)
    with torch.no_grad():
        sparse.weight.copy_(dense.weight)
        sparse.bias.copy_(dense.bias)
        batched = graph.to_dgl(archs, "nb201")
        expected = dense(reads, x).reshape(-1, 16)
        torch.testing.assert_close(sparse(batched, batched.ndata["x"]), expected, rtol=1e-5, atol=1e-5)


def test_graph_table_holds_each_cells_graph_as_the_space_defines_it() -> None:
    archs = [CELL, *random.Random(3).sample(nb201.all_arch_strings(), 5)]
    table = graph.graph_table(archs, "nb201")
    assert table["nodes"].to_list()[0] == ["input", "nor_conv_3x3", None, None, "avg_pool_3x3", None, "nor_conv_1x1", "output"]
    for arch, nodes, src, dst in table.select("arch", "nodes", "edge_src", "edge_dst").iter_rows():
        assert nb201.graph(arch) == CellGraph(tuple(nodes), tuple(zip(src, dst)))


@pytest.mark.parametrize("arch", random.Random(4).sample(nb201.all_arch_strings(), 4) + [CELL])
def test_fast_costs_equal_counting_the_real_network(arch: str) -> None:
    network = nb201.build_network(arch)
    cost = costs.network_cost(arch)
    assert cost.flops == nb201.count_flops(network, nb201.example_input())
    assert cost.params == nb201.count_params(network)


def test_flat_features_order_cells_by_cost() -> None:
    light = nb201.format_cell(("skip_connect",) * 6)
    heavy = nb201.format_cell(("nor_conv_3x3",) * 6)
    names = features.names("flat")
    light_vec, heavy_vec = features.vector(light, "flat"), features.vector(heavy, "flat")
    assert len(light_vec) == len(names)
    for name in ("mflops", "kparams", "memory_mb"):
        assert heavy_vec[names.index(name)] > light_vec[names.index(name)]
    assert heavy_vec[names.index("count_nor_conv_3x3")] == 6
