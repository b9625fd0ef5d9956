"""Search spaces by name. Each space module parses, validates and formats its own arch strings;
nothing outside ``leti.spaces`` reads an arch string's format."""

from __future__ import annotations

import importlib
from types import ModuleType

SPACES = {"nb201": "leti.spaces.nb201"}


def get(name: str) -> ModuleType:
    """The module of the search space called ``name`` (it has ``parse``, raising ``ValueError``)."""
    try:
        return importlib.import_module(SPACES[name])
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (known: {', '.join(sorted(SPACES))})") from None
