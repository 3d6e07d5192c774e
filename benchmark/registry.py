"""One generic registry: lazy ``"module:attr"`` entries with metadata, "did you mean", plugins.

Every named thing a suite can refer to (datasets, architectures, attacks, evaluation kinds, metrics,
recipes) lives in a :class:`Registry`. An entry is either the object itself or a ``"module:attr"``
string imported on first :meth:`Registry.get`, plus a one-line help and free metadata that can be
read without importing the entry. That is what lets ``bench validate`` and ``bench ls`` run without
importing torch: the names, help lines and the facts validation needs (a dataset's shape, a
recipe's hyperparameters, a metric's presentation) are in the registration, the code is not loaded.

Third-party packages add entries through the entry-point group ``bench.plugins``: each entry point
names a module that registers on import (``ATTACKS.add("mine", "my_pkg.attacks:mine", help=...)``).
Plugins are loaded once, the first time any registry is listed or looked up.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from benchmark.errors import LookupNameError, suggest

logger = logging.getLogger(__name__)

T = TypeVar("T")

PLUGIN_GROUP = "bench.plugins"
"""Entry-point group of third-party plugins; each entry point is a module that registers on import."""


@dataclass
class _PluginState:
    loaded: bool = False
    failed: dict[str, str] = field(default_factory=dict)


_plugins = _PluginState()


def load_plugins() -> dict[str, str]:
    """Import every ``bench.plugins`` entry point once.

    A plugin that fails to import is logged and skipped: the built-in names keep working, and a
    suite naming one of the plugin's entries gets an unknown-name error that mentions the failure.

    Returns:
        The plugins that failed, ``{entry point: error}``.
    """
    if _plugins.loaded:
        return _plugins.failed
    _plugins.loaded = True  # set first: a plugin looking up a registry while loading must not recurse
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            importlib.import_module(ep.value.partition(":")[0])
        except Exception as exc:  # a broken third-party module must not take the harness down
            _plugins.failed[f"{ep.name} = {ep.value}"] = f"{type(exc).__name__}: {exc}"
            logger.warning("plugin '%s' (%s) could not be imported: %s: %s", ep.name, ep.value,
                           type(exc).__name__, exc)
    return _plugins.failed


def plugin_failures() -> str:
    """`` (plugin x failed to load: ...)`` for every plugin that failed, to append to an unknown-name error."""
    return "".join(f" (plugin {p} failed to load: {e})" for p, e in _plugins.failed.items())


@dataclass(frozen=True)
class Entry:
    """One registered name.

    Attributes:
        target: the object, or a ``"module:attr"`` reference imported on first use.
        help: one line for ``bench ls``.
        meta: facts readable without importing the target (kind-specific keys).
    """

    target: Any
    help: str
    meta: Mapping[str, Any]


class Registry(Generic[T]):
    """A named collection of objects of one kind.

    Args:
        kind: what the entries are, used in messages ("attack", "dataset", ...).
        discover: called once before the first lookup, to register built-in entries that live in
            modules of their own (the evaluation kinds).
    """

    def __init__(self, kind: str, *, discover: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._discover = discover

    def _ready(self) -> None:
        if self._discover is not None:
            discover, self._discover = self._discover, None
            discover()
        load_plugins()

    def add(self, name: str, obj: T | str, *, help: str = "", **meta: Any) -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` reference) under ``name``.

        Args:
            name: the name suites use.
            obj: the entry, or ``"package.module:attr"``.
            help: one-line description; the object's docstring if empty (which imports a lazy entry
                when it is asked for).
            **meta: facts about the entry that must be readable without importing it.

        Raises:
            ValueError: ``name`` is already registered to something else.
        """
        old = self._entries.get(name)
        if old is not None and old.target is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        if isinstance(obj, str) and ":" not in obj:
            raise ValueError(f"lazy {self.kind} '{name}' must be 'module:attr', got {obj!r}")
        self._entries[name] = Entry(obj, help.strip(), MappingProxyType(dict(meta)))

    def register(self, name: str, *, help: str = "", **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            self.add(name, obj, help=help, **meta)
            return obj

        return deco

    def _entry(self, name: str) -> Entry:
        self._ready()
        entry = self._entries.get(name)
        if entry is None:
            raise LookupNameError(f"unknown {self.kind} '{name}'.{suggest(name, self._entries)} "
                                  f"Known: {', '.join(sorted(self._entries))}{plugin_failures()}")
        return entry

    def get(self, name: str) -> T:
        """The entry called ``name``, importing it if it is lazy.

        Raises:
            LookupNameError: unknown name; the message suggests the closest known one.
        """
        entry = self._entry(name)
        if isinstance(entry.target, str):
            module, _, attr = entry.target.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            entry = Entry(obj, entry.help, entry.meta)
            self._entries[name] = entry
        return entry.target  # type: ignore[no-any-return]

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata registered with ``name`` (never imports the entry).

        Raises:
            LookupNameError: unknown name.
        """
        return self._entry(name).meta

    def help(self, name: str) -> str:
        """One-line description: the registered help, else the first line of the entry's docstring."""
        entry = self._entry(name)
        if entry.help:
            return entry.help
        doc = (getattr(self.get(name), "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    def names(self) -> list[str]:
        """Sorted names of all entries."""
        self._ready()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ready()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
