"""Torch's intra-op thread count for a block of work, restored afterwards.

Timing, converting, profiling and training each want their own count (a timed run the protocol's,
host work one thread so it does not fight the device for cores), and a process runs several of
them in turn, so every one sets the count for its block and gives the caller's back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch on ``threads`` intra-op threads for the block, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
