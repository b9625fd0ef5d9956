"""Fast FLOPs, params and memory traffic of NAS-Bench-201 networks, summed from per-op costs
(``nb201.flops_params`` and ``nb201.costs``; imported on first use, since counting needs torch).

Every op of a cell runs at the same three (channels, spatial size) shapes whatever the other ops
are, so a network's cost is a fixed part (stem, reductions, head) plus the sum of its ops' costs.
The per-op costs are counted once on real ``nb201`` modules with the same FLOP counter the
network uses, so the sum equals ``nb201.count_flops(build_network(arch))`` exactly, for all 15625
cells in milliseconds instead of the hours that building every network would take.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from leti.spaces import nb201

BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class OpCost:
    """One op's cost summed over every cell of the network."""

    flops: int
    params: int
    memory_bytes: int  # activations read and written, plus weights, once per forward pass


def stage_shapes(config: nb201.NetworkConfig) -> list[tuple[int, int]]:
    """(channels, spatial size) of each of the three stages."""
    return [(config.channels * 2**stage, config.input_size // 2**stage) for stage in range(3)]


def _op_cost_at(op: str, channels: int, size: int) -> OpCost:
    module = nb201.make_op(op, channels).eval()
    example = torch.zeros(1, channels, size, size)
    params = nb201.count_params(module)
    activation = channels * size * size
    # `none` multiplies by zero (read + write); skip passes its input through untouched.
    traffic = {"none": 2 * activation, "skip_connect": 0}.get(op, 2 * activation + params)
    return OpCost(nb201.count_flops(module, example), params, traffic * BYTES_PER_VALUE)


@lru_cache(maxsize=8)
def op_costs(config: nb201.NetworkConfig = nb201.NetworkConfig()) -> dict[str, OpCost]:
    """Each op's cost over all ``3 * cells_per_stage`` cells of the network."""
    costs = {}
    for op in nb201.OPS:
        per_stage = [_op_cost_at(op, c, s) for c, s in stage_shapes(config)]
        costs[op] = OpCost(
            *(config.cells_per_stage * sum(getattr(cost, name) for cost in per_stage) for name in ("flops", "params", "memory_bytes"))
        )
    return costs


@lru_cache(maxsize=8)
def fixed_cost(config: nb201.NetworkConfig = nb201.NetworkConfig()) -> OpCost:
    """Cost of everything outside the cells, counted on a real network of skip connections."""
    reference = nb201.format_cell(("skip_connect",) * len(nb201.EDGES))
    network = nb201.build_network(reference, config)
    flops = nb201.count_flops(network, nb201.example_input(config))
    params = nb201.count_params(network)
    skip = op_costs(config)["skip_connect"]
    cells = len(nb201.EDGES)
    memory = _outside_memory(config)
    return OpCost(flops - cells * skip.flops, params - cells * skip.params, memory)


def _outside_memory(config: nb201.NetworkConfig) -> int:
    """Stem, reduction and head traffic: their activations in and out, plus their weights."""
    shapes = stage_shapes(config)
    values = 3 * config.input_size**2 + 2 * shapes[0][0] * shapes[0][1] ** 2  # stem conv + BN
    for (c_in, s_in), (c_out, s_out) in zip(shapes, shapes[1:]):
        values += 4 * c_in * s_in**2 + 6 * c_out * s_out**2  # conv_a, shortcut in; conv_b, BN, sum out
    values += 2 * shapes[-1][0] * shapes[-1][1] ** 2 + shapes[-1][0] * (config.num_classes + 1)
    return values * BYTES_PER_VALUE


@lru_cache(maxsize=2**16)
def network_cost(arch: str, config: nb201.NetworkConfig = nb201.NetworkConfig()) -> OpCost:
    """FLOPs, params and memory traffic of the whole network of ``arch``. Cached: reports and the
    investigation ask for all 15625 cells once per predictor and device."""
    costs, fixed = op_costs(config), fixed_cost(config)
    cell = nb201.parse(arch)
    return OpCost(
        fixed.flops + sum(costs[op].flops for op in cell),
        fixed.params + sum(costs[op].params for op in cell),
        fixed.memory_bytes + sum(costs[op].memory_bytes for op in cell),
    )
