"""The NAS-Bench-101 network in PyTorch, as the benchmark defines it (``model_builder``);
``leti.spaces.nb101`` builds it and re-exports these names."""

from __future__ import annotations

import torch
from torch import nn

from leti.spaces.nb101 import ArchStringError, Cell, NetworkConfig, vertex_channels


class ConvBnRelu(nn.Sequential):
    """The benchmark's ``conv_bn_relu``: same-padded conv without bias, BN (TF's eps and momentum), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.003),
            nn.ReLU(),
        )


def make_op(op: str, channels: int) -> nn.Module:
    if op == "conv3x3-bn-relu":
        return ConvBnRelu(channels, channels, 3)
    if op == "conv1x1-bn-relu":
        return ConvBnRelu(channels, channels, 1)
    if op == "maxpool3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    raise ArchStringError(f"unknown NAS-Bench-101 op {op!r}")


class CellModule(nn.Module):
    """One cell (``model_builder.build_module``): a vertex sums its inputs, edges from the cell
    input go through a 1x1 projection to the vertex's channels, vertex->vertex edges are truncated
    to them; the output concatenates its feeders and adds a projected input if wired to it."""

    def __init__(self, cell: Cell, c_in: int, c_out: int) -> None:
        super().__init__()
        n = cell.num_vertices
        self.matrix = cell.matrix
        self.channels = vertex_channels(c_in, c_out, cell.matrix)
        self.projections = nn.ModuleDict(
            {str(v): ConvBnRelu(c_in, self.channels[v], 1) for v in range(1, n) if cell.matrix[0][v]}
        )
        self.vertex_ops = nn.ModuleList(make_op(op, self.channels[v]) for v, op in enumerate(cell.ops[1:-1], start=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.matrix)
        values = [x]
        for v in range(1, n - 1):
            terms = [values[u][:, : self.channels[v]] for u in range(1, v) if self.matrix[u][v]]
            if self.matrix[0][v]:
                terms.append(self.projections[str(v)](x))
            values.append(self.vertex_ops[v - 1](sum(terms)))
        feeders = [values[v] for v in range(1, n - 1) if self.matrix[v][n - 1]]
        if not feeders:
            return self.projections[str(n - 1)](x)
        out = torch.cat(feeders, dim=1) if len(feeders) > 1 else feeders[0]
        if self.matrix[0][n - 1]:
            out = out + self.projections[str(n - 1)](x)
        return out


class Network(nn.Module):
    """Stem conv3x3-bn-relu, ``num_stacks`` stacks of ``cells_per_stack`` cells with a 2x2 max-pool
    (stride 2, TF 'same' padding) and doubled channels before every stack but the first, global
    average pool, dense layer."""

    def __init__(self, cell: Cell, config: NetworkConfig = NetworkConfig()) -> None:
        super().__init__()
        self.stem = ConvBnRelu(3, config.stem_channels, 3)
        layers: list[nn.Module] = []
        c_in = channels = config.stem_channels
        for stack in range(config.num_stacks):
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                channels *= 2
            for _ in range(config.cells_per_stack):
                layers.append(CellModule(cell, c_in, channels))
                c_in = channels
        self.cells = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cells(self.stem(x)).mean(dim=(2, 3)))
