"""What produced a result: package versions, git state, host; and the fingerprint hash of a cell."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

# Packages whose version can change a result; part of every fingerprint (major.minor only for torch,
# whose patch releases do not change kernels' semantics).
_VERSIONED = ("bench", "torch", "pyautoattack", "robustbench", "torchvision", "numpy")


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(parts: dict[str, Any]) -> str:
    """Hash of everything that changes a cell's result (JSON with sorted keys, sha256, 20 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for results ("absent" when not installed)."""
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def versions_for_fingerprint() -> dict[str, str]:
    """The part of the package versions that enters fingerprints."""
    v = dict(package_versions())
    v["torch"] = ".".join(v["torch"].split("+")[0].split(".")[:2])
    v.pop("torchvision", None)
    return v


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the git checkout the package runs from (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def python_and_host() -> dict[str, str]:
    """The Python version and the host name."""
    return {"python": platform.python_version(), "host": platform.node()}
