"""A device as ``params.yaml`` names it: backend, options, timing protocol and the network a space's
cells are built in, with the ``config_id`` that keeps rows of different configurations apart."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leti import spaces
from leti.devices import BACKENDS, Protocol, UnknownBackendError, make_backend
from leti.params import load
from leti.spaces import SearchSpace


def default_network() -> Any:
    return spaces.get(spaces.DEFAULT).NetworkConfig()


@dataclass(frozen=True)
class DeviceConfig:
    """One entry of ``params.yaml``'s ``devices:`` measuring one search space: a named device, its
    backend and options, the timing protocol, and the network the space's cells are built in (the
    space's ``NetworkConfig``, which names the space)."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol = Protocol()
    network: Any = field(default_factory=default_network)

    @property
    def space(self) -> SearchSpace:
        return spaces.of_network(self.network)

    @property
    def config_id(self) -> str:
        """Hash of everything that shapes a timing; a different hash means a different row.

        Options enter as the backend states them (``Backend.config_options``: defaults filled in,
        connection details such as the adb path left out); the space and its network shape enter
        too, so two spaces' cells never share a configuration."""
        payload = {
            "backend": self.backend,
            "options": make_backend(self.backend, self.options).config_options(),
            "protocol": self.protocol.identity(),
            "space": self.space.NAME,
            "network": asdict(self.network),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_params(
        cls, name: str, section: dict[str, Any], defaults: dict[str, Any], space: str = spaces.DEFAULT,
        network: dict[str, Any] | None = None,
    ) -> DeviceConfig:
        """Build from a ``devices:`` entry measuring ``space``.

        Protocol keys fall back to ``defaults`` (``measure.defaults``). The network is the space's
        ``network`` settings (``measure.networks.<space>``) with any of its keys that the entry or
        ``defaults`` set on top; a key of another space's network is ignored, so one entry serves
        every space it measures.
        """
        merged = {**defaults, **section}
        if "backend" not in merged:
            raise ValueError(f"device {name!r} in params.yaml has no 'backend'")
        protocol_keys = Protocol.__dataclass_fields__.keys()
        network_keys = {key for known in spaces.SPACES.values() for key in known.NetworkConfig.__dataclass_fields__}
        unknown = set(merged) - set(protocol_keys) - network_keys - {"backend", "options", "spaces", "cells"}
        if unknown:
            raise ValueError(f"device {name!r} in params.yaml has unknown keys: {sorted(unknown)}")
        if merged["backend"] not in BACKENDS:
            raise UnknownBackendError(
                f"device {name!r} in params.yaml names unknown backend {merged['backend']!r} "
                f"(known: {', '.join(sorted(BACKENDS))})"
            )
        if merged.get("clock", "wall") != "wall" and not make_backend(merged["backend"], merged.get("options")).times_on_host:
            raise ValueError(f"device {name!r} in params.yaml: clock {merged['clock']!r} times this host's CPU; "
                             f"backend {merged['backend']!r} runs elsewhere (use clock: wall)")
        config_class = spaces.get(space).NetworkConfig
        own_keys = config_class.__dataclass_fields__.keys()
        foreign = set(network or {}) - set(own_keys)
        if foreign:
            raise ValueError(f"network settings of space {space!r} have unknown keys: {sorted(foreign)} (known: {', '.join(own_keys)})")
        shape = {**(network or {}), **{k: merged[k] for k in own_keys if k in merged}}
        return cls(
            name=name,
            backend=merged["backend"],
            options=dict(merged.get("options") or {}),
            protocol=Protocol(**{k: merged[k] for k in protocol_keys if k in merged}),
            network=config_class(**shape),
        )


def device_from_params(name: str, path: str | Path = "params.yaml", space: str = spaces.DEFAULT,
                       network: dict[str, Any] | None = None) -> DeviceConfig:
    """The named entry of ``devices:`` measuring ``space``: ``measure.defaults`` fill unset protocol
    keys, and the network is ``network`` or else ``measure.networks.<space>`` (the benchmark's own
    network where neither says)."""
    params = load(path)
    devices = params.get("devices") or {}
    if name not in devices:
        raise KeyError(f"unknown device {name!r}: params.yaml 'devices' has {', '.join(sorted(devices)) or 'none'}")
    measure = params.get("measure") or {}
    if network is None:
        network = (measure.get("networks") or {}).get(spaces.get(space).NAME) or {}
    return DeviceConfig.from_params(name, devices[name] or {}, measure.get("defaults") or {}, space, network)
