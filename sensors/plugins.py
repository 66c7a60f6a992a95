"""Plug-in registries: a kind name -> the class that implements it, imported when first asked for.

Sources, sinks, inference backends and tasks are each one module that declares its class and
that class's config model (whose ``kind`` field is a ``Literal`` of the kind name).  A registry
holds one line per plug-in; the config union with its discriminator is derived from it, and an
unknown kind is a :class:`ConfigError` that names the known ones.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import BaseModel, Field

from sensors.errors import ConfigError

T = TypeVar("T")


def config_model(cls: Any) -> type[BaseModel]:
    """A plug-in's config model: ``config_type``, or ``config_model()`` where it is derived at run time."""
    derive = getattr(cls, "config_model", None)
    model: type[BaseModel] = derive() if derive is not None else cls.config_type
    return model


class Registry(Generic[T]):
    """``kind -> "module:Class"``; classes carry ``config_type`` (or ``config_model()``), a pydantic model
    whose ``kind`` field is a Literal of the kind name."""

    def __init__(self, what: str, entries: dict[str, str]) -> None:
        self.what = what
        self.entries = dict(entries)
        self._extra: dict[str, type[T]] = {}
        self._listeners: list[Callable[[], None]] = []

    def kinds(self) -> list[str]:
        return [*self.entries, *self._extra]

    def get(self, kind: str) -> type[T]:
        """The class registered under ``kind``; ConfigError names the known kinds otherwise."""
        if kind in self._extra:
            return self._extra[kind]
        target = self.entries.get(kind)
        if target is None:
            raise ConfigError(f"unknown {self.what} kind {kind!r}; known: {', '.join(self.kinds())}")
        module, _, attribute = target.partition(":")
        found: type[T] = getattr(importlib.import_module(module), attribute)
        return found

    def extra(self) -> dict[str, type[T]]:
        """The plug-ins registered at run time."""
        return dict(self._extra)

    def all(self) -> dict[str, type[T]]:
        return {kind: self.get(kind) for kind in self.kinds()}

    def register(self, kind: str, cls: type[T]) -> None:
        """Add a plug-in at run time (the config's ``plugins:`` modules, tests)."""
        self._extra[kind] = cls
        for listener in self._listeners:
            listener()

    def unregister(self, kind: str) -> None:
        """Remove a plug-in registered at run time (tests that bring their own)."""
        del self._extra[kind]
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a plug-in is registered (derived config models clear their cache)."""
        self._listeners.append(listener)

    def config_union(self) -> Any:
        """The tagged union of every plug-in's config model, discriminated by ``kind``."""
        models = []
        for kind, cls in self.all().items():
            model = config_model(cls)
            declared = typing.get_args(model.model_fields["kind"].annotation)
            if declared != (kind,):
                raise TypeError(f"{self.what} {kind!r}: {model.__name__}.kind must be Literal[{kind!r}]")
            models.append(model)
        if len(models) == 1:
            return models[0]
        return Annotated[Union[tuple(models)], Field(discriminator="kind")]
