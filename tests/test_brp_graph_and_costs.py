"""BRP-NAS graphs of NAS-Bench-201 cells, and FLOPs/params summed from per-op costs."""

from __future__ import annotations

import random

import pytest
import torch

from leti import features
from leti.features import costs, graph
from leti.spaces import nb201

CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def test_graph_has_a_node_per_kept_op_plus_input_output_global() -> None:
    g = graph.build_graph(CELL)
    labels, edges = graph.structure(CELL)
    assert labels == ["input", "nor_conv_3x3", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "output", "global"]
    assert g.num_nodes() == 7
    onehot = g.ndata["x"]
    assert onehot[:, graph.NODE_TYPES.index("none")].sum() == 0  # none ops are not nodes
    assert torch.equal(onehot.sum(1), torch.ones(7))
    # data flow: conv3x3 (1<-0) feeds skip (2<-1), which feeds conv1x1 (3<-2); pool (3<-0) and conv1x1 feed output
    assert sorted(edges) == [(0, 1), (0, 3), (1, 2), (2, 4), (3, 5), (4, 5)]


def test_global_node_is_linked_with_every_node() -> None:
    g = graph.build_graph(CELL)
    glob = g.num_nodes() - 1
    src, dst = (t.tolist() for t in g.edges())
    pairs = set(zip(src, dst))
    assert all((n, glob) in pairs and (glob, n) in pairs for n in range(g.num_nodes()))
    assert all((n, n) in pairs for n in range(g.num_nodes()))


def test_zero_edges_cut_the_data_flow() -> None:
    cut = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
    labels, edges = graph.structure(cut)
    conv1x1 = labels.index("nor_conv_1x1")
    assert not any(dst == conv1x1 for _, dst in edges)  # its source node 2 only receives zeros
    assert (labels.index("skip_connect"), labels.index("output")) in edges


def test_batched_graphs_keep_each_cell() -> None:
    archs = nb201.all_arch_strings()[500:510]
    batch = graph.batch_graphs(archs, "onehot+cost")
    assert batch.batch_size == 10
    assert batch.batch_num_nodes().tolist() == [graph.build_graph(a).num_nodes() for a in archs]
    assert batch.ndata["x"].shape[1] == graph.feature_size("onehot+cost")


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
