"""Kernel campaigns: which adjacent ops a device fuses, and kernel configurations timed one at a time.

**Fusion rules are measured, not assumed.** For each pair of op kinds that real networks chain (a
convolution then its batch norm, a linear layer then GELU, a residual add then ReLU), the device
times the first op alone, the second alone and the two chained, each as a one-kernel model, at a few
configurations; the per-call overhead (a model that returns its input) and the layout conversions
the runtime does at the model's edges (``Backend.edge_ms``) are subtracted from each. A
pair is fused when chaining saves more than ``threshold`` of the cheaper op's time (nn-Meter's test,
its default 0.5): a fused second op costs almost nothing, an unfused one costs what it costs alone.
Eager PyTorch fuses nothing, and the rules find that.

**Kernel types come from the rules.** Chains that real networks use (``TEMPLATES``) are split by the
device's rules; each resulting kernel type (``conv+bn+relu`` on ONNX Runtime, ``conv``, ``bn`` and
``relu`` on eager PyTorch) is sampled: its configurations are drawn from ranges CNNs and vision
transformers use (``sample``: spatial sizes 7-224, channels 8-1024 in multiples of 8, kernels 1-7,
strides 1-2, groups, token counts and widths), built as one-kernel PyTorch modules and timed with
the device's protocol through ``leti.measure.session``. Adaptive rounds then add configurations
near the ones the type's regressor predicts worst (``leti.predictors.kernels``).

Everything is appended: each chunk of kernels is one measuring session (so another campaign can
take the CPU between chunks) and one Parquet part, starting with an ``empty`` kernel, the per-call
overhead at that moment. A rerun skips every kernel already in the store under the configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from leti.devices import make_backend
from leti.devices.base import Backend
from leti.devices.config import DeviceConfig
from leti.features import kernels as K
from leti.measure.session import measure_one, measuring_session
from leti.store import tables
from leti.store.parts import device_dir, write_part

log = logging.getLogger(__name__)

TEMPLATES: tuple[tuple[str, ...], ...] = (
    *((anchor, *tail) for anchor in K.CONV_KINDS for tail in (
        (), ("bn",), ("bn", "relu"), ("bn", "relu6"), ("bn", "hswish"), ("bn", "silu"), ("bn", "add"), ("bn", "add", "relu"),
        ("relu",), ("relu6",), ("add",))),
    ("fc",), ("fc", "relu"), ("fc", "gelu"), ("fc", "hswish"), ("fc", "add"),
    ("matmul",), ("matmul", "mul"), ("matmul", "softmax"),
    ("bn",), ("bn", "relu"), ("bn", "relu6"), ("add",), ("add", "relu"), ("mul",),
    *((kind,) for kind in ("relu", "relu6", "hswish", "hsigmoid", "sigmoid", "silu", "gelu", "softmax", "layernorm",
                           "concat", "split", "transpose", "reshape", "pad", "maxpool", "avgpool", "gap", "se")),
)
"""Op chains that real networks run (CNN blocks, their residual adds, transformer blocks); the
device's rules split each into the kernel types its campaign samples."""


def fusion_pairs(templates: Iterable[Sequence[str]] = TEMPLATES) -> list[tuple[str, str]]:
    """(anchor, next) pairs the rules decide: each op of a template after its first, with its first."""
    return sorted({(chain[0], kind) for chain in templates for kind in chain[1:]})


def chain_types(chain: Sequence[str], rules: K.Rules) -> list[str]:
    """The kernel types a device with ``rules`` runs for one op chain (the rule ``split_kernels`` applies)."""
    types, current = [], [chain[0]]
    for kind in chain[1:]:
        if rules.get((current[0], kind), False):
            current.append(kind)
        else:
            types.append("+".join(current))
            current = [kind]
    types.append("+".join(current))
    return types


def campaign_types(rules: K.Rules, templates: Iterable[Sequence[str]] = TEMPLATES) -> list[str]:
    """Every kernel type the device runs for the templates, plus ``empty`` (the per-call overhead)."""
    return sorted({kind for chain in templates for kind in chain_types(chain, rules)})


# --- one-kernel modules -------------------------------------------------------------------------


def activation(kind: str) -> nn.Module:
    modules: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "hsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid,
        "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh,
    }
    return modules[kind]()


class Tail(nn.Module):
    """The ops fused after an anchor: batch norm, activations, a residual add (its second input)."""

    def __init__(self, kinds: Sequence[str], channels: int, layout: str) -> None:
        super().__init__()
        self.kinds = list(kinds)
        self.steps = nn.ModuleList()
        for kind in self.kinds:
            if kind == "bn":
                self.steps.append(nn.BatchNorm2d(channels) if layout == "nchw" else nn.LayerNorm(channels))
            elif kind in K.ACTIVATIONS:
                self.steps.append(activation(kind))
            elif kind == "softmax":
                self.steps.append(nn.Softmax(dim=-1))
            else:
                self.steps.append(nn.Identity())

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        for kind, step in zip(self.kinds, self.steps):
            if kind == "add":
                x = x + residual
            elif kind == "mul":
                x = x * 0.125
            else:
                x = step(x)
        return x


class ConvKernel(nn.Module):
    def __init__(self, c: dict[str, int], tail: Sequence[str]) -> None:
        super().__init__()
        kernel = (c.get("kernel", 1), c.get("kernel_w", c.get("kernel", 1)))
        stride = c.get("stride", 1)
        padding = tuple(same_padding(c["hin" if i == 0 else "win"], c["hout" if i == 0 else "wout"], kernel[i], stride) for i in (0, 1))
        self.conv = nn.Conv2d(c["cin"], c["cout"], kernel, stride, padding, groups=max(c.get("groups", 1), 1))
        self.tail = Tail(tail, c["cout"], "nchw")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.tail(self.conv(x), residual)


def same_padding(size_in: int, size_out: int, kernel: int, stride: int) -> int:
    """The padding that makes a convolution map ``size_in`` to ``size_out``."""
    return max(0, -(-((size_out - 1) * stride + kernel - size_in) // 2))


def pool_output(size: int, kernel: int, stride: int) -> int:
    """A pool's output size with the usual padding of half its kernel (ResNet's 3x3/2 pool: 112 -> 56)."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


def pool_module(kind: str, c: dict[str, int]) -> nn.Module:
    """A pool that maps ``hin`` to ``hout``: the padding (at most half the kernel) and rounding that do."""
    kernel = (c.get("kernel", 1), c.get("kernel_w", c.get("kernel", 1)))
    stride = max(c.get("stride", 1), 1)
    cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
    for padding in range(kernel[0] // 2 + 1):
        for ceil_mode in (False, True):
            size = (c["hin"] + 2 * padding - kernel[0] + (stride - 1 if ceil_mode else 0)) // stride + 1
            if size == c.get("hout", size):
                pad_w = min(padding, kernel[1] // 2)
                return cls(kernel, stride, (padding, pad_w), ceil_mode=ceil_mode)
    return cls(kernel, stride, (kernel[0] // 2, kernel[1] // 2))


class FcKernel(nn.Module):
    def __init__(self, c: dict[str, int], tail: Sequence[str]) -> None:
        super().__init__()
        self.fc = nn.Linear(c["cin"], c["cout"])
        self.tail = Tail(tail, c["cout"], "tokens")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.tail(self.fc(x), residual)


class MatmulKernel(nn.Module):
    def __init__(self, tail: Sequence[str]) -> None:
        super().__init__()
        self.tail = Tail(tail, 1, "tokens")

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.tail(torch.matmul(left, right))


class Chain(nn.Module):
    """An element-wise or pooling anchor (bn, an activation, a pool) and its tail."""

    def __init__(self, anchor: nn.Module, tail: Sequence[str], channels: int) -> None:
        super().__init__()
        self.anchor = anchor
        self.tail = Tail(tail, channels, "nchw")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.tail(self.anchor(x), residual)


class Binary(nn.Module):
    def __init__(self, kind: str, tail: Sequence[str], channels: int) -> None:
        super().__init__()
        self.kind = kind
        self.tail = Tail(tail, channels, "nchw")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.tail(x + y if self.kind == "add" else x * y)


class Concat(nn.Module):
    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts, dim=1)


class Split(nn.Module):
    """``parts`` chunks along the channels, or (one part) the first half of them, a slice."""

    def __init__(self, parts: int, channels: int) -> None:
        super().__init__()
        self.parts, self.keep = parts, max(1, channels // 2)

    def forward(self, x: torch.Tensor) -> Any:
        if self.parts == 1:
            return x[:, : self.keep]
        return torch.chunk(x, self.parts, dim=1)


class Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).contiguous()


class Reshape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class Pad(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (1, 1, 1, 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int, act: str, gate: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Replicated(nn.Module):
    """``copies`` independent copies of a kernel, each on its own inputs, run one after the other."""

    def __init__(self, copies: Sequence[nn.Module], arity: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies)
        self.arity = arity

    def forward(self, *inputs: torch.Tensor) -> tuple[Any, ...]:
        return tuple(copy(*inputs[i * self.arity:(i + 1) * self.arity]) for i, copy in enumerate(self.copies))


def replicated(kernel: K.Kernel, replicas: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor | tuple[torch.Tensor, ...]]:
    """``build`` with ``replicas`` copies of the kernel side by side (see ``replicas_for``)."""
    if replicas <= 1:
        return build(kernel, seed)
    built = [build(kernel, seed + copy) for copy in range(replicas)]
    examples = [example if isinstance(example, tuple) else (example,) for _, example in built]
    return Replicated([module for module, _ in built], len(examples[0])).eval(), tuple(t for example in examples for t in example)


def build(kernel: K.Kernel, seed: int = 0) -> tuple[nn.Module, torch.Tensor | tuple[torch.Tensor, ...]]:
    """A module that runs exactly ``kernel`` in eval mode, and its example input (a tuple when the
    kernel reads two tensors: a residual add, a batched product, a concat)."""
    c = {name: value for name, value in kernel.config.items()}
    anchor, *tail = kernel.kinds
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    n = c.get("batch", 1)
    nchw = (n, c.get("cin", 1), c.get("hin", 1), c.get("win", 1))
    residual_shape: tuple[int, ...] | None = None
    if anchor in K.CONV_KINDS:
        module: nn.Module = ConvKernel(c, tail)
        example: tuple[torch.Tensor, ...] = (tensor(*nchw),)
        residual_shape = (n, c["cout"], c["hout"], c["wout"])
    elif anchor == "fc":
        module = FcKernel(c, tail)
        example = (tensor(1, c["hin"], c["cin"]) if c.get("hin", 1) > 1 else tensor(1, c["cin"]),)
        residual_shape = (1, c["hin"], c["cout"]) if c.get("hin", 1) > 1 else (1, c["cout"])
    elif anchor == "matmul":
        module = MatmulKernel(tail)
        example = (tensor(c.get("batch", 1), c["hin"], c["cin"]), tensor(c.get("batch", 1), c["cin"], c["cout"]))
    elif anchor in ("maxpool", "avgpool"):
        module, example = Chain(pool_module(anchor, c), tail, c["cin"]), (tensor(*nchw),)
    elif anchor == "gap":
        module, example = Chain(nn.AdaptiveAvgPool2d(1), tail, c["cin"]), (tensor(*nchw),)
    elif anchor in ("softmax", "layernorm"):
        norm = nn.Softmax(dim=-1) if anchor == "softmax" else nn.LayerNorm(c["cin"])
        module, example = Chain(norm, tail, c["cin"]), (tensor(1, c["hin"], c["cin"]),)
        residual_shape = (1, c["hin"], c["cin"])
    elif anchor in K.BINARY:
        other = c.get("other", int(np.prod(nchw)))
        second = nchw if other >= int(np.prod(nchw)) else (n, c.get("cin", 1), 1, 1)
        module, example = Binary(anchor, tail, c.get("cin", 1)), (tensor(*nchw), tensor(*second))
        residual_shape = nchw
    elif anchor == "bn" or anchor in K.ACTIVATIONS:
        first = nn.BatchNorm2d(c.get("cin", 1)) if anchor == "bn" else activation(anchor)
        module, example = Chain(first, tail, c.get("cin", 1)), (tensor(*nchw),)
        residual_shape = nchw
    elif anchor == "concat":
        parts = max(2, c.get("inputs", 2))
        sizes = [c["cin"] // parts + (1 if i < c["cin"] % parts else 0) for i in range(parts)]
        module, example = Concat(), tuple(tensor(n, size, c.get("hin", 1), c.get("win", 1)) for size in sizes)
    elif anchor == "split":
        module, example = Split(max(1, c.get("inputs", 2)), c.get("cin", 1)), (tensor(*nchw),)
    elif anchor == "transpose":
        module, example = Transpose(), (tensor(*nchw),)
    elif anchor == "reshape":
        module, example = Reshape(), (tensor(*nchw),)
    elif anchor == "pad":
        module, example = Pad(), (tensor(*nchw),)
    elif anchor == "se":
        module = SqueezeExcite(c["cin"], c["hidden"], K.SE_ACTS[c["act"] - 1], K.SE_GATES[c["gate"] - 1])
        example = (tensor(*nchw),)
    elif anchor == K.EMPTY:
        module, example = nn.Identity(), (tensor(*nchw),)
    else:
        raise ValueError(f"leti cannot build a kernel of type {kernel.type!r}")
    if "add" in tail and residual_shape is not None:
        example = (*example, tensor(*residual_shape))
    module = module.eval()
    with torch.no_grad():
        for norm in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.normal_(0, 0.1, generator=generator)
            norm.running_var.uniform_(0.5, 1.5, generator=generator)
    return module, example[0] if len(example) == 1 else example


# --- sampling configurations --------------------------------------------------------------------

SIZES = (7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224)
"""Spatial sizes of feature maps: the stages of CNNs at input resolutions 96-299."""
TOKENS = (1, 17, 49, 50, 65, 145, 196, 197, 257, 577, 785)
"""Token counts of vision transformers (patch grids, with and without a class token) and 1 (a classifier)."""
MAX_ELEMENTS = 1_700_000
"""Largest activation tensor sampled (about 112 x 112 x 128, 224 x 224 x 32): bigger ones are rare in
classifiers and slow to time."""


@dataclass(frozen=True)
class Sampler:
    """Draws kernel configurations of a type; ``seed`` makes a campaign repeatable."""

    seed: int = 0

    def channels(self, rng: np.random.Generator, size: int, low: int = 8, high: int = 1024) -> int:
        high = int(max(low, min(high, MAX_ELEMENTS // max(size * size, 1))))
        value = float(np.exp(rng.uniform(np.log(low), np.log(high + 1))))
        return int(max(low, min(high, 8 * round(value / 8))))

    def size(self, rng: np.random.Generator) -> int:
        return int(rng.choice(SIZES))

    def conv(self, rng: np.random.Generator, anchor: str) -> dict[str, int]:
        size = self.size(rng)
        stride = int(rng.choice([1, 2], p=[0.75, 0.25]))
        if anchor == "dwconv":
            cin = self.channels(rng, size, 8, 1536)
            kernel = int(rng.choice([3, 5, 7], p=[0.6, 0.25, 0.15]))
            cout, groups, kernel_w = cin, cin, kernel
        else:
            first_layer = anchor == "conv" and rng.random() < 0.08
            cin = 3 if first_layer else self.channels(rng, size)
            if first_layer:
                size, stride = int(rng.choice([96, 128, 160, 192, 224, 256, 299])), 2
            ratio = float(rng.choice([0.25, 0.5, 1.0, 1.0, 2.0, 4.0, 6.0])) if anchor == "pwconv" else float(rng.choice([0.5, 1.0, 1.0, 2.0]))
            cout = self.channels(rng, size, 8, 2048) if first_layer else int(max(8, min(2048, 8 * round(cin * ratio / 8))))
            if anchor == "pwconv":
                kernel = kernel_w = 1
                stride = int(rng.choice([1, 2], p=[0.9, 0.1]))
            else:
                shape = rng.choice(["square", "square", "square", "square", "row", "column"])
                kernel = int(rng.choice([3, 5, 7], p=[0.75, 0.1, 0.15]))
                kernel_w = kernel
                if shape != "square":
                    kernel, kernel_w = (1, 7) if shape == "row" else (7, 1)
            groups = 1
            if anchor == "conv" and not first_layer and rng.random() < 0.2:
                width = int(rng.choice([8, 16, 24, 32, 64]))
                if cin % width == 0 and cout % (cin // width) == 0:
                    groups = cin // width
        out = -(-size // stride)
        return {"batch": 1, "cin": cin, "hin": size, "win": size, "cout": cout, "hout": out, "wout": out,
                "kernel": kernel, "kernel_w": kernel_w, "stride": stride, "groups": groups}

    def tensor(self, rng: np.random.Generator) -> dict[str, int]:
        if rng.random() < 0.2:  # a transformer's tokens
            tokens = int(rng.choice(TOKENS[1:]))
            width = int(rng.choice([192, 256, 384, 512, 768, 1024, 1536, 3072]))
            return {"batch": 1, "cin": width, "hin": tokens, "win": 1}
        size = self.size(rng)
        return {"batch": 1, "cin": self.channels(rng, size, 8, 2048), "hin": size, "win": size}

    def draw(self, kernel_type: str, rng: np.random.Generator) -> dict[str, int]:
        anchor, *tail = kernel_type.split("+")
        if anchor in K.CONV_KINDS:
            values = self.conv(rng, anchor)
            if "add" in tail:  # residual blocks keep the map size
                values.update(stride=1, hout=values["hin"], wout=values["win"])
            return values
        if anchor == "fc":
            rows = int(rng.choice(TOKENS, p=[0.4] + [0.6 / (len(TOKENS) - 1)] * (len(TOKENS) - 1)))
            cin = int(rng.choice([64, 128, 192, 256, 384, 512, 576, 768, 960, 1024, 1280, 1536, 2048, 3072, 4096]))
            cout = int(rng.choice([10, 100, 256, 384, 512, 768, 1000, 1024, 1280, 1536, 2048, 3072, 4096]))
            if rows > 1:
                cout = int(rng.choice([cin // 4, cin, 3 * cin, 4 * cin])) if rng.random() < 0.7 else cout
            while rows * max(cin, cout) > 4 * MAX_ELEMENTS and rows > 1:
                rows = int(rng.choice(TOKENS[1:6]))
            return {"batch": 1, "hin": rows, "cin": cin, "cout": max(cout, 8)}
        if anchor == "matmul":
            tokens = int(rng.choice(TOKENS[1:-1]))
            heads = int(rng.choice([1, 2, 3, 4, 6, 8, 12, 16]))
            head_dim = int(rng.choice([32, 48, 64, 96]))
            if rng.random() < 0.5:  # queries x keys
                return {"batch": heads, "hin": tokens, "cin": head_dim, "cout": tokens}
            return {"batch": heads, "hin": tokens, "cin": tokens, "cout": head_dim}
        if anchor in ("maxpool", "avgpool"):
            size = self.size(rng)
            kernel = int(rng.choice([2, 3, 3, 5]))
            stride = int(rng.choice([1, 2, 2]))
            out = pool_output(size, kernel, stride)
            return {"batch": 1, "cin": self.channels(rng, size), "hin": size, "win": size, "cout": 0, "hout": out, "wout": out,
                    "kernel": kernel, "kernel_w": kernel, "stride": stride}
        if anchor == "gap":
            size = self.size(rng)
            return {"batch": 1, "cin": self.channels(rng, size, 16, 2048), "hin": size, "win": size}
        if anchor in ("softmax", "layernorm"):
            tokens = int(rng.choice(TOKENS[1:]))
            cols = int(rng.choice(TOKENS[1:-1])) if anchor == "softmax" else int(rng.choice([96, 192, 384, 768, 1024]))
            rows = tokens * (int(rng.choice([1, 3, 6, 12])) if anchor == "softmax" else 1)
            return {"batch": 1, "hin": rows, "cin": cols}
        if anchor == "se":
            size = int(rng.choice([s for s in SIZES if s <= 112]))
            channels = self.channels(rng, size, 16, 1536)
            hidden = max(8, channels // int(rng.choice([4, 4, 16, 24])))
            return {"batch": 1, "cin": channels, "hin": size, "win": size, "cout": channels, "hidden": hidden,
                    "act": int(rng.choice([1, 2])), "gate": int(rng.choice([1, 2]))}
        values = self.tensor(rng)
        if anchor in K.BINARY:
            elements = values["cin"] * values["hin"] * values["win"]
            broadcast = anchor == "mul" and rng.random() < 0.6
            values["other"] = values["cin"] if broadcast else elements
        if anchor == "concat":
            values["inputs"] = int(rng.choice([2, 2, 3, 4]))
        if anchor == "split":
            values["inputs"] = int(rng.choice([1, 2, 2]))
        return values

    def sample(self, kernel_type: str, count: int, salt: int = 0) -> list[K.Kernel]:
        """``count`` distinct configurations of ``kernel_type`` (fewer if the type has fewer)."""
        seed = int(hashlib.sha256(f"{self.seed}|{kernel_type}|{salt}".encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng(seed)
        if kernel_type == K.EMPTY:
            return [K.make_kernel(K.EMPTY, batch=1, cin=8, hin=8, win=8)][:count]
        found: dict[str, K.Kernel] = {}
        for _ in range(count * 20):
            if len(found) >= count:
                break
            kernel = K.make_kernel(kernel_type, **self.draw(kernel_type, rng))
            found.setdefault(kernel.key, kernel)
        return list(found.values())


def nearby(kernel: K.Kernel, count: int, seed: int) -> list[K.Kernel]:
    """Configurations close to ``kernel`` (sizes and channels one step either way, same kernel and
    stride): where the adaptive rounds look when a kernel was predicted badly."""
    rng = np.random.default_rng(seed)
    c = kernel.config
    found: dict[str, K.Kernel] = {}
    for _ in range(count * 10):
        if len(found) >= count:
            break
        values = dict(c)
        for name in ("cin", "cout", "hidden"):
            if values.get(name, 0) >= 8 and not (name == "cout" and kernel.kinds[0] == "dwconv"):
                values[name] = int(max(8, 8 * round(values[name] * float(rng.choice([0.75, 0.875, 1.125, 1.25])) / 8)))
        if kernel.kinds[0] == "dwconv":
            values["cout"] = values["groups"] = values["cin"]
        groups = values.get("groups", 1)
        if groups > 1 and (values["cin"] % groups or values["cout"] % groups):  # a grouped conv keeps whole groups
            continue
        if values.get("hin", 0) > 1 and kernel.kinds[0] not in ("fc", "matmul", "softmax", "layernorm") and values.get("win", 1) > 1:
            index = int(np.argmin([abs(s - values["hin"]) for s in SIZES]))
            size = SIZES[int(np.clip(index + rng.choice([-1, 0, 1]), 0, len(SIZES) - 1))]
            stride = max(values.get("stride", 1), 1)
            values.update(hin=size, win=size)
            if "hout" in values:
                kernel_size = values.get("kernel", 1)
                out = -(-size // stride) if kernel.kinds[0] in K.CONV_KINDS else pool_output(size, kernel_size, stride)
                values.update(hout=out, wout=out)
        elif values.get("hin", 0) > 1:
            values["hin"] = int(max(2, round(values["hin"] * float(rng.choice([0.75, 1.25])))))
        if kernel.kinds[0] in K.BINARY:
            full = values.get("cin", 1) * values.get("hin", 1) * values.get("win", 1)
            values["other"] = full if c.get("other", 0) >= c.get("cin", 1) * c.get("hin", 1) * c.get("win", 1) else values.get("cin", 1)
        candidate = K.make_kernel(kernel.type, **values)
        if candidate.key != kernel.key:
            found.setdefault(candidate.key, candidate)
    return list(found.values())


# --- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replication:
    """How many copies of a kernel a one-kernel model runs side by side, each on its own inputs and
    weights, its time divided by the count.

    Why: timed alone and repeated, a kernel finds its input and weights in cache, where inside a
    network its weights were last touched a whole inference ago; on the development networks
    (ResNet and MobileNetV2 variants) single copies summed 10-15 % below the network on this host's
    CPU. Copies until the working set reaches ``bytes`` (0: one copy), at most ``most``."""

    bytes: int = 0
    most: int = 8

    def replicas(self, kernel: K.Kernel) -> int:
        if self.bytes <= 0 or kernel.type == K.EMPTY:
            return 1
        working_set = max(K.costs(kernel)["bytes"], 1.0)
        return int(min(self.most, max(1, math.ceil(self.bytes / working_set))))


def config_id(device: DeviceConfig, replication: Replication = Replication()) -> str:
    """What shapes a kernel's timing besides the kernel: backend, its options, the protocol and the
    replication (a cell's ``config_id`` hashes its network too; a kernel has none). A backend that
    reports its edge conversions (``Backend.edge_ms``) measures another own time than before it did."""
    backend = make_backend(device.backend, device.options)
    payload = {"space": "kernels", "backend": device.backend, "options": backend.config_options(), "protocol": device.protocol.identity()}
    if type(backend).edge_ms is not Backend.edge_ms:
        payload["edges"] = True
    if replication.bytes > 0:
        payload["replication"] = asdict(replication)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def current_rows(folder: Path, config: str) -> pl.DataFrame:
    """The folder's kernel rows under ``config``, errors included."""
    rows = tables.read(folder, tables.KERNEL_LATENCY) if Path(folder).exists() else tables.empty(tables.KERNEL_LATENCY)
    return rows.filter(pl.col("config_id") == config)


@dataclass
class Progress:
    measured: int = 0
    failed: int = 0
    skipped: int = 0
    device_seconds: float = 0.0
    seconds: float = 0.0


def measure(
    kernels: Sequence[K.Kernel], device: DeviceConfig, store: Path, campaign: str, round_number: int = 0,
    chunk_size: int = 40, retries: int = 3, backoff_seconds: float = 2.0, progress: Progress | None = None,
    repeat: int = 0, replication: Replication = Replication(), retry_errors: bool = False,
) -> Progress:
    """Time every kernel the store lacks under the device's configuration; one part per chunk.

    Each chunk is a measuring session of its own (the CPU's lock is released between chunks) and
    starts with the ``empty`` kernel, the per-call overhead at that moment. After its timed runs, a
    kernel's model is profiled for the layout conversions its runtime does at the model's edges
    (``edge_ms``; ``Backend.edge_ms``), which a network does not repeat per kernel. ``repeat`` > 0 times the
    kernels again as a separate pass (their keys end in ``#repeat``). A kernel that failed is skipped
    like a measured one unless ``retry_errors``.
    """
    progress = progress or Progress()
    folder = device_dir(store, device.name)
    started = time.monotonic()
    config = config_id(device, replication)
    rows = current_rows(folder, config)
    done = set((rows.filter(pl.col("error").is_null()) if retry_errors else rows)["kernel_key"].to_list())
    suffix = f"#{repeat}" if repeat else ""
    pending = list({k.key: k for k in kernels if k.key + suffix not in done}.values())
    progress.skipped += len(kernels) - len(pending)
    empty = Sampler().sample(K.EMPTY, 1)[0]
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start:start + chunk_size]
        rows = []
        with measuring_session(device, folder, retries, backoff_seconds) as session, session.pinned():
            for kernel, kind in [(empty, "empty"), *((k, campaign) for k in chunk)]:
                replicas = replication.replicas(kernel)
                module, example = replicated(kernel, replicas)
                cost = K.costs(kernel)
                row = session.row(kernel_key=kernel.key + suffix if kind != "empty" else f"{kernel.key}|{time.time_ns()}",
                                  kernel_type=kernel.type, shape=kernel.to_json(), campaign=kind, round=round_number,
                                  replicas=replicas, flops=int(cost["flops"]), bytes=int(cost["bytes"]), config_id=config)

                def artifact(module=module, example=example):  # noqa: ANN001, ANN202 - bound per kernel
                    return session.backend.prepare(portable(module, session.backend), example, session.workdir)

                edges: dict[str, float | None] = {}

                def edge(prepared, timing, example=example, edges=edges):  # noqa: ANN001, ANN202 - measure_one's `after`
                    with session.device_turn():
                        edges["ms"] = session.backend.edge_ms(prepared, example, device.protocol)
                    return timing

                measured = session.retry(lambda row=row, artifact=artifact, example=example, edge=edge:
                                         measure_one(session, row, artifact, example, after=edge))
                rows.append({**measured.row, "edge_ms": edges.get("ms")})
                if kind != "empty":
                    progress.measured += measured.row["error"] is None
                    progress.failed += measured.row["error"] is not None
                progress.device_seconds += measured.device_seconds
                if device.protocol.cooldown_seconds:
                    time.sleep(device.protocol.cooldown_seconds)
        write_part(rows, store, device.name, tables.KERNEL_LATENCY)
        log.info("%s: %d/%d kernels of %s measured", device.name, start + len(chunk), len(pending), campaign)
    progress.seconds += time.monotonic() - started
    return progress


def portable(module: nn.Module, backend: Any) -> nn.Module:
    """The module as a ``torch.fx`` graph of plain ``torch.nn`` modules for a backend that converts in
    another environment (TFLite's converter has torch but not leti's dependencies, and unpickles what
    it is sent); the module itself for the others."""
    if backend.artifact_format != "tflite":
        return module
    if isinstance(module, Replicated):
        raise ValueError("replicated kernels (replica_bytes > 0) are for backends that time on this host; "
                         f"backend {backend.name!r} converts each kernel to .tflite (use replica_bytes: 0)")
    traced = torch.fx.symbolic_trace(module)
    for node in traced.graph.nodes:
        node.type = None  # the annotations are strings here (postponed evaluation): a pickled graph cannot name them
    traced.recompile()
    return traced


# --- fusion rules -------------------------------------------------------------------------------

PAIR_CONFIGS = (
    {"size": 56, "channels": 16, "tokens": 197, "width": 128},
    {"size": 28, "channels": 32, "tokens": 50, "width": 256},
    {"size": 112, "channels": 16, "tokens": 197, "width": 64},
    {"size": 14, "channels": 64, "tokens": 1, "width": 1024},
)
"""The configurations a pair is tested at: cheap anchors on large maps, so that the second op's own
cost (one pass over the output) is a visible share of the pair's time on a noisy host. (nn-Meter
tests at 28 x 28 with 16 -> 256 channels on phones.) Channels stay multiples of 16, as runtimes
that block channels (ONNX Runtime's NCHWc) need before they fuse."""


def pair_cases(first: str, second: str, case: int) -> tuple[K.Kernel, K.Kernel, K.Kernel]:
    """One-kernel models for a fusion test: ``first`` alone, ``second`` alone on ``first``'s
    output, and the two chained."""
    setting = PAIR_CONFIGS[case % len(PAIR_CONFIGS)]
    size, channels = setting["size"], setting["channels"]
    if first in K.CONV_KINDS:
        kernel = 1 if first == "pwconv" else 3
        groups = channels if first == "dwconv" else 1
        shape = {"batch": 1, "cin": channels, "hin": size, "win": size, "cout": channels, "hout": size, "wout": size,
                 "kernel": kernel, "kernel_w": kernel, "stride": 1, "groups": groups}
        out = {"batch": 1, "cin": channels, "hin": size, "win": size}
    elif first == "fc":
        rows = setting["tokens"]
        shape = {"batch": 1, "hin": rows, "cin": setting["width"], "cout": setting["width"]}
        out = {"batch": 1, "cin": setting["width"], "hin": rows, "win": 1}
    elif first == "matmul":
        tokens = max(setting["tokens"], 17)
        shape = {"batch": 6, "hin": tokens, "cin": 64, "cout": tokens}
        out = {"batch": 1, "cin": tokens, "hin": 6 * tokens, "win": 1}
    else:
        shape = {"batch": 1, "cin": channels, "hin": size, "win": size}
        out = dict(shape)
    elements = out["cin"] * out["hin"] * out["win"]
    if first in K.BINARY:
        shape["other"] = elements
    if second == "softmax":
        alone = K.make_kernel("softmax", batch=1, hin=out["hin"], cin=out["cin"])
    else:
        extra = {"other": elements} if second in K.BINARY else {}
        alone = K.make_kernel(second, **out, **extra)
    return K.make_kernel(first, **shape), alone, K.make_kernel(f"{first}+{second}", **shape)


def detect_fusion(
    device: DeviceConfig, kernel_store: Path, rules_store: Path, pairs: Sequence[tuple[str, str]], cases: int = 4,
    repeats: int = 3, threshold: float = 0.5, chunk_size: int = 40, replication: Replication = Replication(),
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Measure each pair's test models ``repeats`` times, in passes (those the kernel store lacks),
    and append the decisions the rules table lacks; returns the device's rule rows under its
    configuration. Each model's time is its fastest pass, less the per-call overhead."""
    tests = {(a, b, case): pair_cases(a, b, case) for a, b in pairs for case in range(cases)}
    models = list({k.key: k for trio in tests.values() for k in trio}.values())
    for repeat in range(repeats):
        measure(models, device, kernel_store, "fusion", chunk_size=chunk_size, repeat=repeat, replication=replication, progress=progress)
    folder = device_dir(rules_store, device.name)
    config = config_id(device, replication)
    existing = read_rule_rows(folder, config)
    if not tests:
        return existing
    decided = {(row["first"], row["second"], row["case"]) for row in existing.iter_rows(named=True)}
    from leti.store.reader import read_kernels

    data = read_kernels(device_dir(kernel_store, device.name), configuration=config)
    latency = dict(zip(data.table["kernel_key"].to_list(), data.table["own_ms"].to_list()))
    rows = []
    for (a, b, case), (first, second, pair) in tests.items():
        if (a, b, case) in decided or not all(k.key in latency for k in (first, second, pair)):
            continue
        cost_a, cost_b, cost_ab = (max(latency[k.key], 1e-6) for k in (first, second, pair))
        saving = (cost_a + cost_b - cost_ab) / min(cost_a, cost_b)
        rows.append({"device": device.name, "backend": device.backend, "config_id": config, "first": a, "second": b, "case": case,
                     "shape": first.to_json(), "first_ms": cost_a, "second_ms": cost_b, "pair_ms": cost_ab, "overhead_ms": data.overhead_ms,
                     "saving": saving, "threshold": threshold, "fused": bool(saving > threshold),
                     "decided_at": datetime.now(timezone.utc)})
    if rows:
        write_part(rows, rules_store, device.name, tables.FUSION_RULES)
    return read_rule_rows(folder, config)


def read_rule_rows(folder: Path, config: str) -> pl.DataFrame:
    rows = tables.read(folder, tables.FUSION_RULES) if Path(folder).exists() else tables.empty(tables.FUSION_RULES)
    return rows.filter(pl.col("config_id") == config)


def rules_from_rows(rows: pl.DataFrame) -> dict[tuple[str, str], bool]:
    """A pair is fused when its median saving over the test cases exceeds the threshold."""
    if rows.is_empty():
        return {}
    summary = rows.group_by("first", "second").agg(pl.col("saving").median(), pl.col("threshold").first())
    return {(row["first"], row["second"]): bool(row["saving"] > row["threshold"]) for row in summary.iter_rows(named=True)}


# --- a campaign ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """How much a kernel campaign measures (``kernels.campaigns.<name>`` in params.yaml)."""

    per_type: int = 30
    """First configurations sampled per kernel type."""
    adaptive_rounds: int = 1
    adaptive_share: float = 0.5
    """Each adaptive round adds this share of the first samples, near the worst-predicted kernels."""
    fusion_cases: int = 4
    fusion_repeats: int = 5
    threshold: float = 0.5
    seed: int = 0
    chunk_size: int = 40
    regressor: str = "xgboost"
    """The family whose cross-validated errors steer the adaptive rounds."""
    replica_bytes: int = 0
    """Copies of each kernel side by side until their working set reaches this (``Replication``)."""
    max_replicas: int = 8
    types: tuple[str, ...] | None = None
    """Only these kernel types (a small test campaign); None: every type the rules give."""
    retry_errors: bool = False
    """Measure again the kernels whose last attempt failed."""
    pairs: tuple[tuple[str, str], ...] | None = None
    """Only these fusion pairs; None: every pair the templates chain."""

    @property
    def replication(self) -> Replication:
        return Replication(self.replica_bytes, self.max_replicas)

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> Campaign:
        known = set(cls.__dataclass_fields__)
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"kernel campaign: unknown keys {sorted(unknown)} (known: {', '.join(sorted(known))})")
        values = dict(section)
        if values.get("types") is not None:
            values["types"] = tuple(values["types"])
        if values.get("pairs") is not None:
            values["pairs"] = tuple(tuple(pair) for pair in values["pairs"])
        return cls(**values)


def run_campaign(device: DeviceConfig, kernel_store: Path, rules_store: Path, campaign: Campaign,
                 say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Fusion rules, then the first samples of every kernel type they give, then adaptive rounds;
    each step measures only what the stores lack. Returns what was measured and how long it took."""
    from leti.predictors.kernels import cross_validated
    from leti.store.reader import read_kernels

    started = time.monotonic()
    progress = Progress()
    pairs = list(campaign.pairs) if campaign.pairs is not None else fusion_pairs()
    replication = campaign.replication
    rule_rows = detect_fusion(device, kernel_store, rules_store, pairs, campaign.fusion_cases, campaign.fusion_repeats,
                              campaign.threshold, campaign.chunk_size, replication, progress)
    rules = rules_from_rows(rule_rows)
    say(f"fusion rules of {device.name}: {', '.join(f'{a}+{b}' for (a, b), fused in sorted(rules.items()) if fused) or 'none fused'}")
    types = campaign_types(rules)
    if campaign.types is not None:
        types = [t for t in types if t in campaign.types]
    sampler = Sampler(campaign.seed)
    first = [kernel for kernel_type in types for kernel in sampler.sample(kernel_type, campaign.per_type)]
    measure(first, device, kernel_store, "sample", 0, campaign.chunk_size, progress=progress, replication=replication,
            retry_errors=campaign.retry_errors)
    say(f"{device.name}: {len(types)} kernel types, {len(first)} first samples")
    folder = device_dir(kernel_store, device.name)
    config = config_id(device, replication)
    done_rounds = set(current_rows(folder, config).filter(pl.col("campaign") == "adaptive")["round"].to_list())
    for round_number in range(1, campaign.adaptive_rounds + 1):
        if round_number in done_rounds:  # its picks came from the data of its time: a rerun does not pick again
            continue
        data = read_kernels(folder, configuration=config)
        rows = data.table.filter(pl.col("kernel_type").is_in(types))
        kernels = [K.kernel_from_json(t, s) for t, s in zip(rows["kernel_type"], rows["shape"])]
        own = np.maximum(rows["own_ms"].to_numpy(), 0.0005)
        predicted = cross_validated(kernels, own, campaign.regressor, seed=campaign.seed + round_number)
        budget = int(round(campaign.adaptive_share * len(first)))
        chosen = adaptive_picks(kernels, own, predicted, budget, campaign.seed + round_number)
        measure(chosen, device, kernel_store, "adaptive", round_number, campaign.chunk_size, progress=progress, replication=replication)
        say(f"{device.name}: adaptive round {round_number}: {len(chosen)} kernels near the worst-predicted")
    return {"device": device.name, "config_id": config_id(device, replication), "types": types, "fused": sorted(f"{a}+{b}" for (a, b), f in rules.items() if f),
            "measured": progress.measured, "failed": progress.failed, "skipped": progress.skipped,
            "device_seconds": round(progress.device_seconds, 1), "seconds": round(time.monotonic() - started, 1)}


def adaptive_picks(kernels: Sequence[K.Kernel], own_ms: np.ndarray, predicted_ms: np.ndarray, budget: int, seed: int) -> list[K.Kernel]:
    """Up to ``budget`` new configurations near the kernels predicted worst (relative error above
    10 %, largest first, two neighbours each), so sampling is densest where the regressor errs."""
    error = np.abs(predicted_ms - own_ms) / own_ms
    order = [i for i in np.argsort(-np.nan_to_num(error, nan=-1.0)) if np.isfinite(error[i]) and error[i] > 0.1]
    known = {kernel.key for kernel in kernels}
    chosen: dict[str, K.Kernel] = {}
    for rank, index in enumerate(order):
        if len(chosen) >= budget:
            break
        for candidate in nearby(kernels[index], 2, seed + rank):
            if candidate.key not in known and len(chosen) < budget:
                chosen.setdefault(candidate.key, candidate)
    return list(chosen.values())
