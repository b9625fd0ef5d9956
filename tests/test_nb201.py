"""NAS-Bench-201: arch strings, counts, and the network the benchmark defines."""

import pytest
import torch

from leti.spaces import nb201

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MIXED = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"


def test_round_trip_of_every_cell() -> None:
    for cell in nb201.enumerate_cells():
        assert nb201.parse(nb201.format_cell(cell)) == cell


def test_parse_gives_ops_in_edge_order() -> None:
    assert nb201.parse(MIXED) == (
        "nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none",
    )


@pytest.mark.parametrize(
    ("arch", "complaint"),
    [
        ("|nor_conv_3x3~0|+|none~0|skip_connect~1|", "expected 3 '+'-separated node groups, found 2"),
        ("|nor_conv_3x3~0|+|none~0|skip_conect~1|+|none~0|none~1|none~2|", "unknown op 'skip_conect'"),
        ("|nor_conv_3x3~0|+|none~0|skip_connect~0|+|none~0|none~1|none~2|", "must read from node 1, not 0"),
        ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "must have 2 edge(s), found 1"),
        ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
        ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "is not 'op~input'"),
        ("", "found 1"),
    ],
)
def test_malformed_strings_are_quoted_and_explained(arch: str, complaint: str) -> None:
    with pytest.raises(nb201.ArchStringError) as raised:
        nb201.parse(arch)
    assert repr(arch) in str(raised.value)
    assert complaint in str(raised.value)


def test_space_counts() -> None:
    cells = list(nb201.enumerate_cells())
    assert len(cells) == 15625
    assert len(set(cells)) == 15625
    assert sum(not nb201.has_path(cell) for cell in cells) == 341
    assert len({nb201.canonical_form(cell) for cell in cells}) == 6466
    assert len(nb201.canonical_ids()) == 6466


def test_path_needs_a_non_none_route() -> None:
    assert nb201.has_path(nb201.parse(BEST))
    # Only the 0->1 and 1->3 edges are live: a path through node 1.
    assert nb201.has_path(("skip_connect", "none", "none", "none", "nor_conv_1x1", "none"))
    # Node 2 is reachable but nothing leaves it except through `none`.
    assert not nb201.has_path(("none", "skip_connect", "none", "none", "none", "none"))


def test_isomorphic_cells_share_a_class() -> None:
    # Node 1 is a copy of the input (skip), so node 2 = conv(input) whether it reads node 0 or 1.
    a = ("skip_connect", "nor_conv_3x3", "none", "none", "none", "skip_connect")
    b = ("skip_connect", "none", "nor_conv_3x3", "none", "none", "skip_connect")
    assert nb201.canonical_form(a) == nb201.canonical_form(b)
    assert nb201.canonical_form(a) != nb201.canonical_form(a[:1] + ("nor_conv_1x1",) + a[2:])
    # A conv whose output nobody reads does not change the function.
    assert nb201.canonical_form(a) == nb201.canonical_form(("nor_conv_1x1",) + a[1:])


def reference_param_count(c: int = 16, classes: int = 10) -> int:
    """Parameters of the all-conv3x3 network, counted by hand from the benchmark's definition."""
    conv_bn = lambda cin, cout, k: cin * cout * k * k + 2 * cout  # noqa: E731
    stem = 3 * c * 9 + 2 * c
    cells = sum(5 * 6 * conv_bn(ch, ch, 3) for ch in (c, 2 * c, 4 * c))
    reductions = sum(conv_bn(ch, 2 * ch, 3) + conv_bn(2 * ch, 2 * ch, 3) + ch * 2 * ch for ch in (c, 2 * c))
    head = 2 * 4 * c + 4 * c * classes + classes
    return stem + cells + reductions + head


def test_network_of_a_known_cell() -> None:
    network = nb201.build_network(BEST)
    with torch.inference_mode():
        out = network(nb201.example_input())
    assert out.shape == (1, 10)
    assert nb201.count_params(network) == reference_param_count() == 1_531_546
    # NAS-Bench-201 reports 220 M multiply-adds for this cell on CIFAR; torch counts 2 FLOPs each.
    assert round(nb201.count_flops(network, nb201.example_input()) / 2e6) == 220


def test_network_parameters_follow_the_config() -> None:
    config = nb201.NetworkConfig(input_size=16, channels=8, cells_per_stage=1, num_classes=120)
    network = nb201.build_network(MIXED, config)
    with torch.inference_mode():
        assert network(nb201.example_input(config, batch=2)).shape == (2, 120)
    assert len(network.cells) == 3 + 2  # one cell per stage plus two reduction blocks


def test_none_edges_multiply_by_zero_as_in_the_benchmark() -> None:
    only_none = nb201.build_network(nb201.format_cell(("none",) * 6))
    ops = [type(m).__name__ for m in only_none.cells[0].edges]
    assert ops == ["Zero"] * 6


def test_sample_is_seeded_distinct_and_valid() -> None:
    first = nb201.sample_valid(50, seed=3)
    assert first == nb201.sample_valid(50, seed=3)
    assert first != nb201.sample_valid(50, seed=4)
    assert len(set(first)) == 50
    assert all(nb201.has_path(nb201.parse(arch)) for arch in first)
    with pytest.raises(ValueError, match="only 15284 valid cells"):
        nb201.sample_valid(20000, seed=0)
