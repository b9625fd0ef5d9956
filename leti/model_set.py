"""A model set to test network-level predictors on, made as nn-Meter made its set: variants of
torchvision's classifier families (width multipliers, depths, kernel sizes, group widths, input
resolutions), plus the popular networks ``params.yaml`` names (``models.names``).

A variant is named ``<family>-<what varies>-r<resolution>`` (``mobilenet_v2-w0.75-r160``) and is
accepted wherever a torchvision builder name is (``leti measure-model``, ``leti predict-model``); its
resolution is its default input. ``family`` is what a leave-family-out evaluation holds out: every
network of one family is left out of any fitting and tuning at once.

Sizes are kept to what two shared CPU cores measure in an hour (most variants under 2 GFLOPs); the
popular networks come at 224 x 224, whatever they cost.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POPULAR_FAMILIES = {
    "resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet", "resnet101": "resnet", "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_large": "mobilenet_v3", "mobilenet_v3_small": "mobilenet_v3", "efficientnet_b0": "efficientnet",
    "efficientnet_b1": "efficientnet", "shufflenet_v2_x1_0": "shufflenet_v2", "squeezenet1_0": "squeezenet", "squeezenet1_1": "squeezenet",
    "regnet_y_400mf": "regnet", "regnet_x_400mf": "regnet", "mnasnet1_0": "mnasnet", "mnasnet0_5": "mnasnet", "densenet121": "densenet",
    "convnext_tiny": "convnext", "vit_b_16": "vit", "vit_b_32": "vit", "googlenet": "googlenet", "alexnet": "alexnet",
    "vgg11": "vgg", "vgg11_bn": "vgg", "resnext50_32x4d": "resnext", "wide_resnet50_2": "resnext",
}
"""The family of a torchvision builder name (for the popular networks in a leave-family-out table)."""
DEVELOPMENT_FAMILIES = ("resnet", "mobilenet_v2")
"""Families looked at while choosing leti's kernel-campaign settings; results on the others are
the held-out ones."""


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    resolution: int
    make: Callable[[], Any]


def _tv() -> Any:
    from leti.torchvision_compat import import_torchvision

    return import_torchvision().models


def _resnet(block: str, layers: tuple[int, ...], groups: int = 1, width: int = 64) -> Any:
    models = _tv()
    kind = models.resnet.BasicBlock if block == "basic" else models.resnet.Bottleneck
    return models.resnet.ResNet(kind, list(layers), groups=groups, width_per_group=width)


def _efficientnet(width: float, depth: float) -> Any:
    models = _tv()
    setting, last = models.efficientnet._efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=depth)
    return models.EfficientNet(setting, dropout=0.2, last_channel=last)


def _regnet(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, se: float | None) -> Any:
    models = _tv()
    return models.RegNet(models.regnet.BlockParams.from_init_params(depth=depth, w_0=w_0, w_a=w_a, w_m=w_m,
                                                                    group_width=group_width, se_ratio=se))


def _convnext(dims: tuple[int, ...], depths: tuple[int, ...]) -> Any:
    models = _tv()
    config = models.convnext.CNBlockConfig
    setting = [config(dims[i], dims[i + 1] if i + 1 < len(dims) else None, depths[i]) for i in range(len(dims))]
    return models.ConvNeXt(setting, stochastic_depth_prob=0.0)


def _vit(resolution: int, patch: int, layers: int, heads: int, hidden: int) -> Any:
    return _tv().VisionTransformer(resolution, patch, layers, heads, hidden, 4 * hidden)


def _shufflenet(repeats: tuple[int, ...], channels: tuple[int, ...]) -> Any:
    return _tv().ShuffleNetV2(list(repeats), list(channels))


def _vgg(config: str, batch_norm: bool, resolution: int) -> Any:
    models = _tv()
    network = models.VGG(models.vgg.make_layers(models.vgg.cfgs[config], batch_norm=batch_norm), init_weights=False)
    return _classifier_at(network, resolution // 32)  # five 2x2 max pools


def _alexnet(resolution: int) -> Any:
    size = (resolution + 4 - 11) // 4 + 1  # conv 11x11/4, then three 3x3/2 max pools
    for _ in range(3):
        size = (size - 3) // 2 + 1
    return _classifier_at(_tv().AlexNet(), size)


def _classifier_at(model: Any, size: int) -> Any:
    """VGG and AlexNet pool their last feature map to a fixed grid before their first linear layer;
    at another resolution the grid is the map itself (the layer sized to it), as the original
    designs would be there. (An adaptive pool to a size that does not divide the map has no ONNX
    export.)"""
    import torch

    first = next(index for index, layer in enumerate(model.classifier) if isinstance(layer, torch.nn.Linear))
    grid = model.avgpool.output_size
    grid = grid if isinstance(grid, tuple) else (grid, grid)
    channels = model.classifier[first].in_features // (grid[0] * grid[1])
    model.avgpool = torch.nn.AdaptiveAvgPool2d((size, size))
    model.classifier[first] = torch.nn.Linear(channels * size * size, model.classifier[first].out_features)
    return model


def _builder(name: str, **kwargs: Any) -> Any:
    return _tv().get_model(name, weights=None, **kwargs)


def _densenet(growth: int, blocks: tuple[int, ...], features: int) -> Any:
    return _tv().DenseNet(growth, blocks, features)


def _googlenet() -> Any:
    return _tv().GoogLeNet(aux_logits=False, init_weights=False)


def _fmt(value: float) -> str:
    return f"{value:g}"


@functools.lru_cache(maxsize=1)
def variants() -> tuple[Variant, ...]:
    """Every variant of the set, in a fixed order."""
    found: list[Variant] = []

    def add(name: str, family: str, resolution: int, make: Callable[[], Any]) -> None:
        found.append(Variant(name, family, resolution, make))

    for (block, layers), resolution in itertools.product(
            [("basic", (1, 1, 1, 1)), ("basic", (2, 2, 2, 2)), ("basic", (2, 3, 4, 2)), ("basic", (3, 4, 6, 3)),
             ("bottleneck", (2, 2, 2, 2)), ("bottleneck", (3, 4, 6, 3))], (128, 160, 192)):
        add(f"resnet-{block}{''.join(map(str, layers))}-r{resolution}", "resnet", resolution,
            functools.partial(_resnet, block, layers))
    for (groups, width, layers), resolution in itertools.product(
            [(32, 4, (2, 2, 2, 2)), (16, 4, (3, 4, 6, 3)), (8, 8, (2, 2, 2, 2)), (1, 128, (1, 2, 2, 1))], (112, 144, 176)):
        add(f"resnext-g{groups}w{width}-{''.join(map(str, layers))}-r{resolution}", "resnext", resolution,
            functools.partial(_resnet, "bottleneck", layers, groups, width))
    for width, resolution in itertools.product((0.35, 0.5, 0.75, 1.0, 1.3), (96, 128, 160, 192)):
        add(f"mobilenet_v2-w{_fmt(width)}-r{resolution}", "mobilenet_v2", resolution,
            functools.partial(_builder, "mobilenet_v2", width_mult=width))
    for arch, width, resolution in itertools.product(("large", "small"), (0.5, 0.75, 1.0, 1.25), (128, 160, 192)):
        add(f"mobilenet_v3_{arch}-w{_fmt(width)}-r{resolution}", "mobilenet_v3", resolution,
            functools.partial(_builder, f"mobilenet_v3_{arch}", width_mult=width))
    for alpha, resolution in itertools.product(("0_5", "0_75", "1_0", "1_3"), (128, 160, 192)):
        add(f"mnasnet{alpha}-r{resolution}", "mnasnet", resolution, functools.partial(_builder, f"mnasnet{alpha}"))
    shuffle = {"x0.5": ((4, 8, 4), (24, 48, 96, 192, 1024)), "x1.0": ((4, 8, 4), (24, 116, 232, 464, 1024)),
               "x1.5": ((4, 8, 4), (24, 176, 352, 704, 1024)), "x1.0-d2": ((2, 4, 2), (24, 116, 232, 464, 1024)),
               "x2.0-d2": ((2, 4, 2), (24, 244, 488, 976, 2048))}
    for (label, (repeats, channels)), resolution in itertools.product(shuffle.items(), (128, 160, 224)):
        add(f"shufflenet_v2-{label}-r{resolution}", "shufflenet_v2", resolution, functools.partial(_shufflenet, repeats, channels))
    for version, resolution in itertools.product(("1_0", "1_1"), (128, 160, 192, 224)):
        add(f"squeezenet{version}-r{resolution}", "squeezenet", resolution, functools.partial(_builder, f"squeezenet{version}"))
    for (width, depth), resolution in itertools.product(((0.5, 0.5), (0.75, 0.75), (1.0, 1.0), (1.0, 1.4), (1.2, 1.0)), (128, 160, 192)):
        add(f"efficientnet-w{_fmt(width)}d{_fmt(depth)}-r{resolution}", "efficientnet", resolution,
            functools.partial(_efficientnet, width, depth))
    regnets = {"x200": (13, 24, 36.44, 2.49, 8, None), "x400": (22, 24, 24.48, 2.54, 16, None), "y200": (13, 24, 36.44, 2.49, 8, 0.25),
               "y400": (16, 48, 27.89, 2.09, 8, 0.25), "y600": (15, 48, 32.54, 2.32, 16, 0.25), "x800": (16, 56, 35.73, 2.28, 16, None),
               "y800": (14, 56, 38.84, 2.4, 16, 0.25)}
    for (label, config), resolution in itertools.product(regnets.items(), (128, 160, 192)):
        add(f"regnet-{label}-r{resolution}", "regnet", resolution, functools.partial(_regnet, *config))
    densenets = {"k12-6.12.24.16": (12, (6, 12, 24, 16), 24), "k24-6.12.12.8": (24, (6, 12, 12, 8), 48),
                 "k32-4.8.8.4": (32, (4, 8, 8, 4), 64), "k32-6.12.24.16": (32, (6, 12, 24, 16), 64)}
    for (label, config), resolution in itertools.product(densenets.items(), (96, 128, 160)):
        add(f"densenet-{label}-r{resolution}", "densenet", resolution, functools.partial(_densenet, *config))
    for (config, batch_norm), resolution in itertools.product((("A", False), ("A", True), ("B", True)), (64, 96, 128)):
        add(f"vgg-{config}{'-bn' if batch_norm else ''}-r{resolution}", "vgg", resolution, functools.partial(_vgg, config, batch_norm, resolution))
    for resolution in (96, 128, 160, 192, 224):
        add(f"googlenet-r{resolution}", "googlenet", resolution, _googlenet)
    convnexts = {"d32-1131": ((32, 64, 128, 256), (1, 1, 3, 1)), "d48-2262": ((48, 96, 192, 384), (2, 2, 6, 2)),
                 "d64-1131": ((64, 128, 256, 512), (1, 1, 3, 1)), "d96-1131": ((96, 192, 384, 768), (1, 1, 3, 1))}
    for (label, config), resolution in itertools.product(convnexts.items(), (96, 128, 160)):
        add(f"convnext-{label}-r{resolution}", "convnext", resolution, functools.partial(_convnext, *config))
    vits = {"p16-l4-h192": (16, 4, 3, 192), "p16-l6-h256": (16, 6, 4, 256), "p16-l8-h384": (16, 8, 6, 384),
            "p32-l6-h384": (32, 6, 6, 384), "p32-l12-h384": (32, 12, 6, 384)}
    for (label, (patch, layers, heads, hidden)), resolution in itertools.product(vits.items(), (128, 160, 224)):
        add(f"vit-{label}-r{resolution}", "vit", resolution, functools.partial(_vit, resolution, patch, layers, heads, hidden))
    for resolution in (128, 160, 192, 224):
        add(f"alexnet-r{resolution}", "alexnet", resolution, functools.partial(_alexnet, resolution))
    return tuple(found)


@functools.lru_cache(maxsize=1)
def by_name() -> dict[str, Variant]:
    return {variant.name: variant for variant in variants()}


def family_of(name: str) -> str | None:
    """The family of a variant or of a popular torchvision builder name; None when leti does not know it."""
    variant = by_name().get(name)
    return variant.family if variant else POPULAR_FAMILIES.get(name)


def names(popular: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every variant's name, then the popular networks'."""
    return [variant.name for variant in variants()] + [name for name in popular if name not in by_name()]
