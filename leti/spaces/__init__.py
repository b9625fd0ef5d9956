"""Search spaces by name. Each is a module implementing :class:`leti.spaces.base.SearchSpace`."""

from __future__ import annotations

import importlib
from types import ModuleType

from leti.spaces import nb101, nb201
from leti.spaces.base import CellGraph, SearchSpace

SPACES: dict[str, SearchSpace] = {space.NAME: space for space in (nb201, nb101)}  # type: ignore[misc]
DEFAULT = nb201.NAME


class UnknownSpaceError(ValueError):
    """A search-space name leti does not know."""


def get(name: str) -> SearchSpace:
    """The space called ``name``; an unknown name fails with one line listing the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise UnknownSpaceError(f"unknown search space {name!r} (known: {', '.join(sorted(SPACES))})") from None


def of_network(config: object) -> SearchSpace:
    """The space whose ``NetworkConfig`` ``config`` is: a network setting names its space, so code
    that builds networks from one (a campaign, the preparation worker) needs no separate space."""
    for space in SPACES.values():
        if type(config) is space.NetworkConfig:
            return space
    raise TypeError(f"not the NetworkConfig of a known search space: {config!r}")


OPERATOR_DECOMPOSITIONS = {"nb201": "leti.spaces.nb201_ops"}
"""Spaces whose networks decompose into operator instances (the layer-wise lookup's keys): the
module gives ``distinct_ops(config)``, ``network_ops(arch, config)`` and ``build_op(instance)``."""


def operators(name: str) -> ModuleType:
    """The operator decomposition of ``name``'s networks; one line naming the spaces that have one."""
    if name not in OPERATOR_DECOMPOSITIONS:
        raise ValueError(f"layer-wise lookup tables exist for {', '.join(OPERATOR_DECOMPOSITIONS)} networks, not {name!r}")
    return importlib.import_module(OPERATOR_DECOMPOSITIONS[name])


__all__ = ["SPACES", "DEFAULT", "CellGraph", "SearchSpace", "UnknownSpaceError", "get", "of_network", "operators"]
