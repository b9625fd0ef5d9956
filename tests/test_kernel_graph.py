"""A network as the kernels a runtime executes: the torch.fx and ONNX readers, squeeze-excite blocks,
splitting by fusion rules, and kernel costs checked against torch's own FLOP counter."""

from __future__ import annotations

import io
import warnings
from collections import Counter

import pytest
import torch
from torch import nn

from leti.features import kernels as K


class Block(nn.Module):
    """Conv-BN-ReLU, a residual add, a squeeze-excite block, then a transformer-style head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16))
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.SiLU(), nn.Conv2d(4, 16, 1), nn.Sigmoid())
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.body(x) + x)
        x = x * self.squeeze(x)
        tokens = x.flatten(2).transpose(1, 2)
        return self.mlp(self.norm(tokens)).mean(1)


EXAMPLE = torch.randn(1, 3, 16, 16)


def types(graph: K.Graph, rules: K.Rules | None = None) -> Counter:
    return Counter(kernel.type for kernel in K.split_kernels(graph, rules or {}))


def test_the_fx_reader_finds_every_op_and_the_squeeze_excite_block() -> None:
    graph = K.torch_graph(Block(), EXAMPLE, "block")
    found = types(graph)
    assert found["se"] == 1 and found["conv"] == 1 and found["dwconv"] == 1 and found["bn"] == 2
    assert found["add"] == 1 and found["relu"] == 2 and found["layernorm"] == 1 and found["gelu"] == 1 and found["fc"] == 2
    assert not any(kind.startswith("torch:") for kind in found)
    stem = K.split_kernels(graph, {})[0]
    assert stem.type == "conv" and stem.config == {"batch": 1, "cin": 3, "hin": 16, "win": 16, "cout": 16, "hout": 8, "wout": 8,
                                                   "kernel": 3, "kernel_w": 3, "stride": 2, "groups": 1}


def test_the_onnx_reader_gives_the_same_kernels_as_the_fx_reader() -> None:
    network = Block().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # PRESERVE keeps the batch norms as the framework states them (eval export would fold them)
        torch.onnx.export(network, (EXAMPLE,), buffer, opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    import onnx

    from_onnx = types(K.onnx_graph(onnx.load_from_string(buffer.getvalue()), list(EXAMPLE.shape), "block"))
    from_fx = types(K.torch_graph(network, EXAMPLE, "block"))
    # the exporter writes flatten as a Reshape and the mean over tokens as ReduceMean (a gap here): the
    # compute kernels, GELU's five-node spelling and the SiLU gate included, agree one for one
    compute = {kind for kind in from_fx if kind not in ("reshape", "transpose", "gap")}
    assert {kind: from_onnx[kind] for kind in compute} == {kind: from_fx[kind] for kind in compute}
    assert not any(kind.startswith("onnx:") for kind in from_onnx)


def test_fusion_rules_merge_an_anchor_with_what_follows_only_where_they_say_and_one_reader_apart() -> None:
    graph = K.torch_graph(Block(), EXAMPLE, "block")
    rules = {("conv", "bn"): True, ("conv", "relu"): True, ("dwconv", "bn"): True, ("dwconv", "add"): True, ("fc", "gelu"): True}
    found = types(graph, rules)
    assert found["conv+bn+relu"] == 1 and found["fc+gelu"] == 1 and found["fc"] == 1
    # the stem's output feeds the depthwise conv and the residual add: nothing fuses across a tensor read twice,
    # so the add joins the depthwise kernel (its own output has one reader), the ReLU after it does not (no rule)
    assert found["dwconv+bn+add"] == 1 and found["relu"] == 1
    assert sum(found.values()) < sum(types(graph).values())


def test_a_convolution_kernel_costs_what_torch_counts() -> None:
    conv = nn.Conv2d(24, 48, (3, 5), stride=2, padding=(1, 2), groups=3)
    graph = K.torch_graph(nn.Sequential(conv), torch.randn(1, 24, 20, 20), "conv")
    (kernel,) = K.split_kernels(graph, {})
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        conv(torch.randn(1, 24, 20, 20))
    assert K.costs(kernel)["flops"] == counter.get_total_flops()
    assert K.costs(kernel)["params"] == sum(p.numel() for p in conv.parameters())
    assert (kernel.config["kernel"], kernel.config["kernel_w"], kernel.config["groups"]) == (3, 5, 3)


def test_an_op_outside_the_vocabulary_is_a_kernel_type_of_its_own() -> None:
    class Rolled(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.roll(torch.relu(x), 1, 2)

    found = types(K.torch_graph(Rolled(), EXAMPLE, "rolled"))
    assert found == Counter({"relu": 1, "torch:roll": 1})


def test_an_untraceable_network_is_one_error_naming_it() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(K.GraphError, match="branchy: torch.fx cannot trace"):
        K.torch_graph(Branchy(), EXAMPLE, "branchy")


def test_reading_shapes_leaves_the_networks_weights_in_place() -> None:
    network = Block().eval()
    before = network.stem[0].weight.detach().clone()
    K.torch_graph(network, EXAMPLE, "block")
    assert network.stem[0].weight.device.type == "cpu" and torch.equal(network.stem[0].weight, before)
    with torch.inference_mode():
        assert network(EXAMPLE).shape == (1, 10)
