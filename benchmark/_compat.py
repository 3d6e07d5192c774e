"""Compatibility shims for third-party packages.

RobustBench 1.1.1 does ``from autoattack import AutoAttack`` and
``from autoattack.state import EvaluationState``, but the original authors' AutoAttack is published
on PyPI as ``pyautoattack``. ``ensure_autoattack_module`` makes the name ``autoattack`` (and every
``autoattack.<submodule>``) resolve to the very same module objects as ``pyautoattack`` when no real
``autoattack`` package is installed. Aliasing (rather than re-importing the files under a second
name) keeps one class identity: ``autoattack.state.EvaluationState is
pyautoattack.state.EvaluationState``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

ALIAS = "autoattack"
TARGET = "pyautoattack"

_lock = threading.Lock()


class _AliasLoader(importlib.abc.Loader):
    """Loads ``ALIAS.x`` by importing ``TARGET.x`` and handing back that same module object."""

    def __init__(self, target_name: str):
        self.target_name = target_name
        self._target_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target_name)
        self._target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system overwrote __spec__ with the alias spec; restore the real one so that
        # reload(), pickling and tools that inspect __spec__ keep seeing pyautoattack.
        module.__spec__ = self._target_spec


class AliasFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder mapping ``ALIAS`` and ``ALIAS.*`` onto ``TARGET`` and ``TARGET.*``.

    It must come first in ``sys.meta_path``: once ``autoattack`` is an alias of pyautoattack, its
    ``__path__`` is pyautoattack's directory, and the ordinary path finder would otherwise load
    ``autoattack.state`` a second time from that file as a distinct module.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """Return an alias spec for ``autoattack[.x]``, or None for every other name."""
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        target_name = TARGET + fullname[len(ALIAS) :]
        target_spec = importlib.util.find_spec(target_name)
        if target_spec is None:
            return None
        return importlib.util.spec_from_loader(
            fullname,
            _AliasLoader(target_name),
            is_package=target_spec.submodule_search_locations is not None,
        )


def _alias_installed() -> bool:
    return any(isinstance(finder, AliasFinder) for finder in sys.meta_path)


def ensure_autoattack_module() -> bool:
    """Make ``import autoattack`` resolve to pyautoattack unless a real ``autoattack`` exists.

    Idempotent and thread-safe; call it before importing robustbench.

    Returns:
        True if ``autoattack`` now refers to pyautoattack (installed now or earlier), False if a
        real ``autoattack`` package is importable and was left alone.

    Raises:
        ModuleNotFoundError: neither ``autoattack`` nor ``pyautoattack`` is installed.
    """
    with _lock:
        if _alias_installed():
            return True
        if ALIAS in sys.modules or importlib.util.find_spec(ALIAS) is not None:
            logger.debug("a real %r package is installed; not aliasing it to %r", ALIAS, TARGET)
            return False
        if importlib.util.find_spec(TARGET) is None:
            raise ModuleNotFoundError(
                f"neither {ALIAS!r} nor {TARGET!r} is installed; install AutoAttack with `pip install {TARGET}`",
                name=TARGET,
            )
        sys.meta_path.insert(0, AliasFinder())
        logger.debug("module %r now resolves to %r", ALIAS, TARGET)
        return True


# torchattacks' wheels ship an old copy of RobustBench (and 3.4.0 one of AutoAttack) as top-level
# packages; installed next to RobustBench 1.1.1 they overwrite its files. torchattacks is only needed
# to cross-check our PGD, so it lives in its own folder (README: `pip install --target .deps/...`),
# appended to the END of sys.path so that the real `robustbench` keeps precedence.
ISOLATED_DEPS = ".deps"


def import_isolated(name: str, root: str | Path) -> ModuleType:
    """Import ``name`` from ``root/.deps/<name>`` without letting its folder shadow installed packages.

    Raises:
        ImportError: not installed there (the message gives the command that installs it).
    """
    folder = Path(root) / ISOLATED_DEPS / name
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed in {folder}; run: pip install --no-deps --upgrade "
                          f"--target {folder} {name}") from exc


def check_robustbench_intact() -> None:
    """Fail clearly when RobustBench's files were overwritten by torchattacks' vendored old copy."""
    ensure_autoattack_module()
    import robustbench.utils

    if not hasattr(robustbench.utils, "download_gdrive_new"):
        raise ImportError(
            f"the robustbench package in {Path(robustbench.utils.__file__).parent} is not RobustBench 1.1.1: "
            "torchattacks' wheel overwrites it with an old copy. Repair it with "
            "`pip uninstall -y torchattacks && pip install --force-reinstall --no-deps robustbench==1.1.1`")
