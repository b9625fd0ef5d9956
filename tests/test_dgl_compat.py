"""DGL 2.1 must import and run on torch 2.13 through leti's one workaround module."""

import torch

from leti.dgl_compat import dgl


def test_dgl_imports_and_graphconv_matches_a_dense_gcn() -> None:
    module = dgl()
    from dgl.nn import GraphConv

    graph = module.add_self_loop(module.graph(([0, 1, 2], [1, 2, 3]), num_nodes=4))
    torch.manual_seed(0)
    conv = GraphConv(3, 2, norm="both", bias=False)
    x = torch.randn(4, 3)
    adjacency = torch.zeros(4, 4)
    src, dst = graph.edges()
    adjacency[dst, src] = 1.0
    d_out = adjacency.sum(0).clamp(min=1) ** -0.5
    d_in = adjacency.sum(1).clamp(min=1) ** -0.5
    dense = d_in[:, None] * (adjacency @ (d_out[:, None] * x)) @ conv.weight
    assert torch.allclose(conv(graph, x), dense, atol=1e-5)


def test_batching_and_backward() -> None:
    module = dgl()
    from dgl.nn import GraphConv

    graphs = module.batch([module.add_self_loop(module.graph(([0], [1]), num_nodes=2))] * 3)
    conv = GraphConv(4, 1)
    conv(graphs, torch.ones(6, 4)).sum().backward()
    assert graphs.batch_size == 3
    assert conv.weight.grad is not None
