"""Import DGL 2.1 on torch 2.13: the one place that knows about the GraphBolt workaround.

DGL 2.1.0 is the newest Linux wheel on PyPI. ``import dgl`` loads its GraphBolt C++ extension,
which ships only for torch 2.0-2.2, and fails on newer torch. GraphBolt serves only DGL's
distributed data-loading path, which leti does not use, so an empty module stands in for it
before the import. Graph building, batching, GraphConv and save/load work unchanged. Every DGL
use in leti goes through :func:`dgl` so the graph library can be swapped in one place.
"""

from __future__ import annotations

import os
import sys
import types
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def dgl() -> Any:
    """The ``dgl`` module, imported with GraphBolt stubbed out if its extension is missing."""
    os.environ.setdefault("DGLBACKEND", "pytorch")
    if "dgl" not in sys.modules:
        sys.modules.setdefault("dgl.graphbolt", types.ModuleType("dgl.graphbolt"))
    import dgl as module

    return module
