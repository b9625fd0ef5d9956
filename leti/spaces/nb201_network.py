"""The NAS-Bench-201 network in PyTorch, as the benchmark defines it (xautodl's ``TinyNetwork`` and
``InferCell``); ``leti.spaces.nb201`` builds it and re-exports these names."""

from __future__ import annotations

import torch
from torch import nn

from leti.spaces.nb201 import EDGES, NUM_NODES, ArchStringError, Cell


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: the benchmark multiplies by zero rather than dropping the edge."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, channels: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ArchStringError(f"unknown NAS-Bench-201 op {op!r}")


class InferCell(nn.Module):
    def __init__(self, cell: Cell, channels: int) -> None:
        super().__init__()
        self.sources = [src for _, src in EDGES]
        self.targets = [dst for dst, _ in EDGES]
        self.edges = nn.ModuleList(make_op(op, channels) for op in cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in range(1, NUM_NODES):
            nodes.append(
                sum(
                    layer(nodes[src])
                    for layer, src, dst in zip(self.edges, self.sources, self.targets)
                    if dst == node
                )
            )
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages (stride 2, doubled channels, pooled 1x1 shortcut)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """Stem, three stages of ``cells_per_stage`` cells with reductions between, BN-ReLU-GAP-Linear head."""

    def __init__(
        self, cell: Cell, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(c, c * 2))
                c *= 2
            layers.extend(InferCell(cell, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(out).flatten(1))
