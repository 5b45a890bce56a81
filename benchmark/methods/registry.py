"""Extension points found by name: distillation objectives and networks (README, "Your own method").

A new method plugs in by name, registered, installed or imported, without any change to the benchmark's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from benchmark.errors import RegistryError

# A registry maps a name to a factory. Names resolve, in order, to:
# 1. a factory registered in this process (the built-in methods register themselves this way);
# 2. an installed Python entry point of the registry's group (`ctxray_bench.objectives`, `ctxray_bench.networks`):
#    a plugin package declares e.g.
#    `[project.entry-points."ctxray_bench.objectives"] my-term = "my_package.terms:MyTerm"`;
# 3. `module:attribute`, imported as written (a module on the Python path, no packaging needed).
# An unknown name, or an entry that fails to import, is a RegistryError naming it and what is known;
# `check_configurations` resolves every name a matrix uses before any training starts.

F = TypeVar("F", bound=Callable[..., object])

OBJECTIVES_GROUP = "ctxray_bench.objectives"
NETWORKS_GROUP = "ctxray_bench.networks"


class Registry(Generic[F]):
    """Factories of one kind by name: registered built-ins, installed entry points, or `module:attribute`."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, F] = {}  # registered here, or resolved once (an entry point, module:attribute)
        self._registered: set[str] = set()  # the names registered in this process: the built-ins

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: make `factory` available under `name` (a second registration of a name is an error)."""

        def add(factory: F) -> F:
            if name in self._factories and self._factories[name] is not factory:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._registered.add(name)
            return factory

        return add

    def get(self, name: str) -> F:
        """The factory called `name`; RegistryError naming it when it is unknown or does not load."""
        if name in self._factories:
            return self._factories[name]
        entry = self.entry_point(name)
        if entry is not None:
            factory = self._load(name, entry.value, entry.load)
        elif ":" in name:
            module, _, attribute = name.partition(":")
            factory = self._load(name, name, lambda: getattr(importlib.import_module(module), attribute))
        else:
            factory = None
        if factory is not None:
            self._factories[name] = factory  # resolved once per process
            return factory
        raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}; a plugin adds one "
                            f"through the entry-point group {self.group!r}, or name it as module:attribute")

    def origin(self, name: str) -> str | None:
        """Where the code behind `name` comes from when it is not this package's (a plugin's entry point, or
        `module:attribute`); None for a built-in. Nothing is imported to tell."""
        entry = self.entry_point(name)
        if entry is not None:
            dist = getattr(entry.dist, "name", None) or "?"
            own = is_this_package(dist) or name in self._registered
            return None if own else f"{self.kind} {name!r} = {entry.value} (installed by {dist})"
        if name in self._registered:
            return None
        return f"{self.kind} {name!r} (imported from the Python path)" if ":" in name else None

    def entry_point(self, name: str) -> EntryPoint | None:
        """The installed entry point of this registry's group called `name`, if any (nothing is imported)."""
        return next((e for e in entry_points(group=self.group) if e.name == name), None)

    def names(self) -> list[str]:
        """Every name this registry can resolve without importing: built-ins and installed entry points."""
        return sorted({*self._factories, *(e.name for e in entry_points(group=self.group))})

    def _load(self, name: str, target: str, load: Callable[[], object]) -> F:
        try:
            factory = load()
        except Exception as exc:  # noqa: BLE001 - a plugin can fail in any way; say which and why
            raise RegistryError(f"{self.kind} {name!r} ({target}) does not load: {type(exc).__name__}: {exc}") from exc
        if not callable(factory):
            raise RegistryError(f"{self.kind} {name!r} ({target}) is {type(factory).__name__}, not a factory")
        return factory  # type: ignore[return-value]


def is_this_package(distribution: str) -> bool:
    """True for this package's own distribution name, however it is spelled (ctxray_bench, CTXRAY-bench)."""
    return distribution.replace("_", "-").lower() == "ctxray-bench"


OBJECTIVES: Registry[Callable[..., object]] = Registry("objective", OBJECTIVES_GROUP)
NETWORKS: Registry[Callable[..., object]] = Registry("network", NETWORKS_GROUP)


def plugin_code(configurations: Iterable[Any]) -> list[str]:
    """The plugins (objectives and networks not of this package) that these configurations would import and run."""
    found: list[str] = []
    for configuration in configurations:
        networks = [configuration.network] + ([configuration.teacher.network] if configuration.teacher else [])
        named = [NETWORKS.origin(n.architecture) for n in networks]
        named += [OBJECTIVES.origin(term.objective) for term in configuration.loss.terms]
        found += [origin for origin in named if origin is not None and origin not in found]
    return found
