"""NAS-Bench-101 space check: re-count the benchmark's unique cells and test the sampler on them.

    python benchmarks/nb101_space.py                 # whole space (a few minutes on one core)
    python benchmarks/nb101_space.py --max-vertices 6 --sample 0

Enumerates every spec the way the benchmark's ``generate_graphs.py`` does (every upper-triangular
matrix of 2..7 vertices with nothing to prune and at most 9 edges, every labelling), hashes each
with ``nb101.spec_hash`` and prints the unique cells per vertex count. The paper's figure is
423,624 unique cells; the hash reproducing it is evidence that ``spec_hash`` is the benchmark's.
It also checks that ``representation_count`` of each cell equals the number of enumerated specs
with its hash (what makes ``sample_valid`` uniform), and compares the vertex counts of a sample
with the enumeration's (chi-square). It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter

import numpy as np
from scipy.stats import chisquare

from leti.spaces import nb101


def full_dag_matrices(vertices: int) -> np.ndarray:
    """All upper-triangular matrices with nothing to prune and <= 9 edges, as (count, V, V)."""
    positions = [(r, c) for r in range(vertices) for c in range(r + 1, vertices)]
    bits = np.arange(2 ** len(positions), dtype=np.int64)
    present = (bits[:, None] >> np.arange(len(positions))) & 1
    matrices = np.zeros((len(bits), vertices, vertices), dtype=np.int8)
    if positions:
        rows, cols = zip(*positions)
        matrices[:, rows, cols] = present
    full = matrices[:, :-1, :].any(axis=2).all(axis=1) & matrices[:, :, 1:].any(axis=1).all(axis=1)
    return matrices[full & (present.sum(axis=1) <= nb101.MAX_EDGES)]


def enumerate_space(max_vertices: int) -> tuple[dict[str, nb101.Cell], Counter, int]:
    """Hash -> one cell, the number of specs per hash, and how many specs were hashed."""
    cells: dict[str, nb101.Cell] = {}
    specs_per_hash: Counter = Counter()
    total = 0
    for vertices in range(2, max_vertices + 1):
        started = time.perf_counter()
        for matrix in full_dag_matrices(vertices).tolist():
            frozen = tuple(map(tuple, matrix))
            for labels in itertools.product(nb101.OPS, repeat=vertices - 2):
                cell = nb101.Cell(frozen, (nb101.INPUT, *labels, nb101.OUTPUT))
                key = nb101.spec_hash(cell)
                cells.setdefault(key, cell)
                specs_per_hash[key] += 1
                total += 1
        print(f"up to {vertices} vertices: {len(cells)} unique cells from {total} specs ({time.perf_counter() - started:.0f} s)", flush=True)
    return cells, specs_per_hash, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-vertices", type=int, default=nb101.MAX_VERTICES)
    parser.add_argument("--sample", type=int, default=20000, help="cells to sample for the uniformity check (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cells, specs_per_hash, total = enumerate_space(args.max_vertices)
    by_vertices = Counter(cell.num_vertices for cell in cells.values())
    print("unique cells per vertex count:", dict(sorted(by_vertices.items())))
    print(f"unique cells: {len(cells)} (NAS-Bench-101 paper: {nb101.UNIQUE_CELLS}); specs: {total}")

    mismatches = sum(nb101.representation_count(cell) != specs_per_hash[key] for key, cell in cells.items())
    print(f"cells whose representation_count differs from the enumerated specs with their hash: {mismatches}")

    if args.sample and args.max_vertices == nb101.MAX_VERTICES:
        started = time.perf_counter()
        sample = nb101.sample_valid(args.sample, seed=args.seed)
        elapsed = time.perf_counter() - started
        drawn = Counter(nb101.parse(arch).num_vertices for arch in sample)
        bins = {"<=5": range(2, 6), "6": [6], "7": [7]}  # pooled so every expected count is large
        expected = np.array([sum(by_vertices[v] for v in vs) for vs in bins.values()], dtype=float) / len(cells) * len(sample)
        observed = np.array([sum(drawn[v] for v in vs) for vs in bins.values()], dtype=float)
        print(f"sampled {len(sample)} cells in {elapsed:.1f} s; vertex counts drawn {dict(zip(bins, observed.astype(int).tolist()))}")
        print(f"expected from the enumeration {dict(zip(bins, np.round(expected, 1).tolist()))}")
        print(f"chi-square p-value (uniform over unique cells): {chisquare(observed, expected).pvalue:.3f}")
        print(f"sampled hashes all in the enumeration: {all(nb101.canonical_id(arch) in cells for arch in sample)}")


if __name__ == "__main__":
    main()
