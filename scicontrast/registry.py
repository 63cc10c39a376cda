"""Name -> class registries for adapters, pair builders and encoders.

A config names a component in one of three ways, tried in this order:

1. ``package.module:Class``: imported directly, so a lab's own code needs no registration;
2. a built-in name registered with ``@REGISTRY.register("name")`` in this project;
3. an entry point in the registry's group, so an installed package can register its own,
   e.g. in that package's ``pyproject.toml``::

       [project.entry-points."scicontrast.adapters"]
       my_format = "my_lab.adapters:MyFormatAdapter"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from scicontrast.errors import UnknownComponentError
from scicontrast.experiment import Component

T = TypeVar("T")


class Registry(Generic[T]):
    """Resolves a component name to a class."""

    def __init__(self, kind: str, entry_point_group: str, builtin_modules: list[str]) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = builtin_modules
        self._builtins: dict[str, type[T]] = {}
        self._builtins_imported = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator adding a built-in under ``name``."""

        def decorator(cls: type[T]) -> type[T]:
            if name in self._builtins and self._builtins[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builtins[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def _import_builtins(self) -> None:
        if not self._builtins_imported:
            self._builtins_imported = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def _entry_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def names(self) -> list[str]:
        """All names this registry resolves without a ``module:Class`` path."""
        self._import_builtins()
        return sorted(set(self._builtins) | set(self._entry_points()))

    def get(self, name: str) -> type[T]:
        if ":" in name:
            module_name, _, attr = name.partition(":")
            try:
                module = importlib.import_module(module_name)
            # A plug-in is user code: whatever its import raises (a SyntaxError, a missing
            # file it opens at import), the user must see which component and why.
            except Exception as exc:
                raise UnknownComponentError(
                    f"{self.kind} {name!r}: cannot import module {module_name!r} "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            try:
                return getattr(module, attr)
            except AttributeError:
                raise UnknownComponentError(
                    f"{self.kind} {name!r}: module {module_name!r} has no {attr!r}"
                ) from None
        # Built-in modules are imported one by one until one registers the name: a DNA
        # step then never imports the graph stack (torch_geometric), seconds per CLI call.
        for builtin_module in self._builtin_modules:
            if name in self._builtins:
                break
            importlib.import_module(builtin_module)
        if name in self._builtins:
            return self._builtins[name]
        entry_point = self._entry_points().get(name)
        if entry_point is not None:
            try:
                return entry_point.load()
            except Exception as exc:
                raise UnknownComponentError(
                    f"{self.kind} {name!r}: entry point {entry_point.value!r} in group "
                    f"{self.entry_point_group!r} failed to load ({type(exc).__name__}: {exc})"
                ) from exc
        raise UnknownComponentError(
            f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'} "
            f"(or give 'package.module:Class', or register an entry point in group "
            f"{self.entry_point_group!r})"
        )

    def create(self, spec: Component | Mapping[str, Any], where: str = "") -> T:
        """Instantiate a component: the experiment's, or ``{"name": ..., "params": {...}}``.

        ``where`` names the config key (e.g. ``experiments.demo.adapter``) in error messages.
        """
        if isinstance(spec, Mapping):
            # The dict form, as plug-ins and scripts write it; params are optional there.
            spec = Component(name=spec["name"], params=spec.get("params", {}))
        prefix = f"{where}: " if where else ""
        try:
            cls = self.get(spec.name)
        except UnknownComponentError as exc:
            raise UnknownComponentError(f"{prefix}{exc}") from None
        try:
            return cls(**spec.params)
        except TypeError as exc:
            raise UnknownComponentError(
                f"{prefix}{self.kind} {spec.name!r}: bad params {spec.params}: {exc}"
            ) from None


# Lookups import these modules in order until the name is found: the graph modules, which
# import torch_geometric, come last.
ADAPTERS: Registry = Registry(
    "adapter",
    "scicontrast.adapters",
    [
        "scicontrast.data_adapters.dna.reading",
        "scicontrast.data_adapters.dna.genome_store",
        "scicontrast.data_adapters.dna.upstream",
        "scicontrast.data_adapters.images.folder",
        "scicontrast.data_adapters.grains.reading",
        "scicontrast.data_adapters.audio_image.reading",
        "scicontrast.data_adapters.graphs.planetoid",
        "scicontrast.data_adapters.graphs.tables",
        "scicontrast.data_adapters.graphs.networkx_graphs",
    ],
)
PAIR_BUILDERS: Registry = Registry(
    "pair builder",
    "scicontrast.pairs",
    [
        "scicontrast.data_adapters.dna.views",
        "scicontrast.data_adapters.dna.genome_reads",
        "scicontrast.data_adapters.images.rotations",
        "scicontrast.data_adapters.audio_image.pairs",
        "scicontrast.data_adapters.graphs.views",
        "scicontrast.data_adapters.graphs.neighbors",
    ],
)
ENCODERS: Registry = Registry(
    "encoder",
    "scicontrast.encoders",
    [
        "scicontrast.models.dna_cnn",
        "scicontrast.models.dna_attention",
        "scicontrast.models.image_cnn",
        "scicontrast.models.audio_image",
        "scicontrast.models.gnn",
    ],
)
