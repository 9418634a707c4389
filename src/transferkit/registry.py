"""A small name -> factory registry with one-line descriptions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from transferkit.errors import UnknownNameError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to factories; an unknown name raises an error listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[F, str]] = {}

    def register(self, name: str, description: str) -> Callable[[F], F]:
        def decorate(factory: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = (factory, description)
            return factory

        return decorate

    def get(self, name: str) -> F:
        try:
            return self._items[name][0]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def describe(self) -> dict[str, str]:
        return {name: desc for name, (_, desc) in sorted(self._items.items())}

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
