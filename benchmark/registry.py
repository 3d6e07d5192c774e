"""One small generic registry: a decorator to register, lazy ``"module:attr"`` entries, "did you mean"."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from benchmark.errors import LookupNameError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects of one kind (datasets, architectures, attacks, ...).

    Entries are either registered objects or ``"package.module:attr"`` strings, imported on first
    use so that heavy backends (torchvision, robustbench) load only when a suite needs them.

    Args:
        kind: what the entries are, used in error messages ("attack", "dataset", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj, help=help)
            return obj

        return deco

    def add(self, name: str, obj: T | str, help: str = "") -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` reference) under ``name``."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = obj
        doc = help or (getattr(obj, "__doc__", None) or "" if not isinstance(obj, str) else "")
        self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""

    def get(self, name: str) -> T:
        """Return the entry called ``name``, importing it if it is lazy.

        Raises:
            LookupNameError: the name is unknown; the message suggests the closest known name.
        """
        if name not in self._entries:
            raise LookupNameError(
                f"unknown {self.kind} '{name}'.{suggest(name, self._entries)} "
                f"Known: {', '.join(sorted(self._entries))}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def help(self, name: str) -> str:
        """One-line description of an entry (its docstring's first line)."""
        if not self._help.get(name):
            obj = self.get(name)
            doc = (getattr(obj, "__doc__", None) or "").strip()
            self._help[name] = doc.splitlines()[0] if doc else ""
        return self._help[name]

    def names(self) -> list[str]:
        """Sorted names of all entries."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
