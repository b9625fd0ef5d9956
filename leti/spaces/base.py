"""The one interface every search-space module implements, and what the spaces share.

A space is a plain module (``leti.spaces.nb201``, ``leti.spaces.nb101``) with the members of
:class:`SearchSpace`; ``leti.spaces.get(name)`` returns it. Everything outside ``leti/spaces/``
handles architectures only as the space's arch strings and goes through these members, so adding a
space means writing one module, not editing the campaign, features or predictors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported where networks are built, so parsing arch strings stays light
    import numpy as np
    import torch
    from torch import nn


@dataclass(frozen=True)
class CellGraph:
    """A cell as the GCN reads it (BRP-NAS's ``keep_dims`` form).

    ``nodes`` has one entry per node slot; every cell of a space has the same number of slots, so
    graphs batch without padding. A slot whose op was pruned (or that carries no op, such as an
    NB201 skip) is ``None``. ``edges`` run in data-flow direction, ``(src, dst)``, between slots
    that are not ``None``. The featuriser adds the global node; the space does not.
    """

    nodes: tuple[str | None, ...]
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for src, dst in self.edges:
            if not (0 <= src < len(self.nodes) and 0 <= dst < len(self.nodes)):
                raise ValueError(f"edge {(src, dst)} leaves the {len(self.nodes)} node slots")
            if self.nodes[src] is None or self.nodes[dst] is None:
                raise ValueError(f"edge {(src, dst)} touches an empty slot: {self.nodes}")


@dataclass(frozen=True)
class OpInstance:
    """One operator at one input shape, as a space's operator decomposition
    (``leti.spaces.<space>_ops``) names it; ``key`` is the layer-wise lookup table's join key."""

    op: str
    channels_in: int
    channels_out: int
    size: int
    stride: int = 1

    @property
    def key(self) -> str:
        return f"{self.op}|{self.channels_in}|{self.channels_out}|{self.size}|{self.stride}"

    def input_shape(self, batch: int) -> list[int]:
        return [batch, self.channels_in, self.size, self.size]


@runtime_checkable
class SearchSpace(Protocol):
    """What a search-space module provides. Arch strings are the currency everywhere else.

    ``parse`` raises ``ArchStringError`` (a ``ValueError``) whose message quotes the input and
    says what is wrong; ``format_cell(parse(arch))`` is the canonical string of ``arch``.
    """

    NAME: str
    OPS: tuple[str, ...]
    """The ops a cell chooses from; :meth:`op_counts` counts them in this order."""
    SENTINEL: str
    """A fixed cell of median cost, timed around every chunk of a campaign: the device's speed now."""
    GRAPH_NODE_TYPES: tuple[str, ...]
    """Node labels that get a one-hot column in the GCN (the global node is the featuriser's)."""
    ENCODING_NAMES: tuple[str, ...]
    """Names of the values of :meth:`encoding`, one per value."""
    COST_NAMES: tuple[str, ...]
    """Names of the values of :meth:`costs` (``mflops``, ``kparams``, ...)."""
    ArchStringError: type[ValueError]
    NetworkConfig: type
    """Frozen dataclass of macro settings; its defaults are the benchmark's own network."""
    SMALL_NETWORK: Any
    """A ``NetworkConfig`` small enough to build and run in a test in milliseconds."""

    def parse(self, arch: str) -> Any:
        """The space's cell object for ``arch``; raises ``ArchStringError`` on bad input."""

    def format_cell(self, cell: Any) -> str:
        """The canonical arch string of a parsed cell."""

    def canonical_id(self, arch: str) -> str:
        """Equal for two archs iff they are the same cell up to isomorphism (the benchmark's rule)."""

    def is_valid(self, arch: str) -> bool:
        """Whether the cell computes something from its input (and so is worth measuring)."""

    def describe(self, arch: str) -> dict[str, object]:
        """The facts ``leti arch`` prints for a cell (canonical arch string first)."""

    def sample_valid(self, n: int, seed: int) -> list[str]:
        """``n`` distinct valid cells, drawn uniformly and reproducibly from ``seed``."""

    def graph(self, arch: str) -> CellGraph:
        """The cell's graph for the GCN, with the space's fixed number of node slots."""

    def build_network(self, arch: str, config: Any = ...) -> nn.Module:
        """The benchmark's network for ``arch``, in eval mode."""

    def example_input(self, config: Any = ..., batch: int = 1) -> torch.Tensor:
        """A random input batch of the shape the network takes."""

    def flops_params(self, arch: str, config: Any = ...) -> tuple[int, int]:
        """FLOPs (as :func:`count_flops` counts them) and parameters, without running the network."""

    def encoding(self, arch: str) -> np.ndarray:
        """The cell as a fixed-length float32 vector (tabular predictors' ``onehot`` feature set)."""

    def op_counts(self, arch: str) -> tuple[int, ...]:
        """How many times the cell uses each op of :attr:`OPS`."""

    def costs(self, arch: str) -> tuple[float, ...]:
        """Cheap scalar costs of the benchmark's own network, in :attr:`COST_NAMES` order."""


def count_flops(network: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass as torch's FlopCounterMode counts them (2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(example)
    return int(counter.get_total_flops())


def count_params(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
