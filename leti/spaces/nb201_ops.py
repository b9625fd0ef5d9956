"""NAS-Bench-201 networks as operator instances, for the layer-wise lookup (``leti.measure.operators``).

A NAS-Bench-201 network (``NetworkConfig``) holds: the stem; in each of its three stages, the five
cell operators at that stage's channels and resolution, plus the three additions that sum a cell's
edges (node 1 has one term, node 2 two, node 3 three; ``none`` edges are still computed, as in the
benchmark); the two reduction blocks; and the head (BN-ReLU, global pooling, linear).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import torch
from torch import nn

from leti.spaces import nb201
from leti.spaces.base import OpInstance

ADDS_PER_CELL = 3


class Add(nn.Module):
    """The element-wise sum of two edges of a cell, timed on one tensor added to itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class Head(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))


def stages(config: nb201.NetworkConfig) -> list[tuple[int, int]]:
    """(channels, resolution) of the three stages."""
    return [(config.channels * 2**stage, config.input_size // 2**stage) for stage in range(3)]


def fixed_ops(config: nb201.NetworkConfig = nb201.NetworkConfig()) -> Counter[OpInstance]:
    """Operator instances every network runs whatever its cell: stem, reductions, additions, head."""
    counts: Counter[OpInstance] = Counter()
    counts[OpInstance("stem", 3, config.channels, config.input_size)] += 1
    for index, (channels, size) in enumerate(stages(config)):
        if index > 0:
            counts[OpInstance("reduction", channels // 2, channels, size * 2, stride=2)] += 1
        counts[OpInstance("add", channels, channels, size)] += ADDS_PER_CELL * config.cells_per_stage
    channels, size = stages(config)[-1]
    counts[OpInstance("head", channels, config.num_classes, size)] += 1
    return counts


def edge_ops(op: str, config: nb201.NetworkConfig = nb201.NetworkConfig()) -> Counter[OpInstance]:
    """Operator instances one cell edge carrying ``op`` adds: one per cell, in every stage."""
    return Counter({OpInstance(op, channels, channels, size): config.cells_per_stage for channels, size in stages(config)})


def network_ops(arch: str, config: nb201.NetworkConfig = nb201.NetworkConfig()) -> Counter[OpInstance]:
    """How many times each operator instance runs in ``arch``'s network."""
    return Counter(_network_ops(nb201.parse(arch), config))


@lru_cache(maxsize=4096)
def _network_ops(cell: nb201.Cell, config: nb201.NetworkConfig) -> Counter[OpInstance]:
    """Shared by every arch string of one cell; callers get a copy (all 15625 cells in about a second)."""
    counts = fixed_ops(config)
    for op in cell:
        counts.update(edge_ops(op, config))
    return counts


def distinct_ops(config: nb201.NetworkConfig = nb201.NetworkConfig()) -> list[OpInstance]:
    """Every operator instance any cell of the space can use (5 ops x 3 stages + fixed blocks)."""
    every_op = nb201.format_cell(nb201.OPS[:1] * 6)
    fixed = [op for op in network_ops(every_op, config) if op.op not in nb201.OPS]
    return fixed + [OpInstance(op, c, c, size) for c, size in stages(config) for op in nb201.OPS]


def build_op(instance: OpInstance) -> nn.Module:
    if instance.op in nb201.OPS:
        return nb201.make_op(instance.op, instance.channels_in)
    if instance.op == "stem":
        return nn.Sequential(nn.Conv2d(3, instance.channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(instance.channels_out))
    if instance.op == "reduction":
        return nb201.ResNetBasicBlock(instance.channels_in, instance.channels_out)
    if instance.op == "add":
        return Add()
    if instance.op == "head":
        return Head(instance.channels_in, instance.channels_out)
    raise ValueError(f"unknown operator {instance.op!r}")
