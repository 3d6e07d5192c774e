"""Models: architectures (logits out, normalization inside), safe checkpoints, the RobustBench zoo.

The RobustBench functions are imported lazily on first access (``benchmark.models.load_robustbench``)
because importing robustbench pulls in timm and AutoAttack, which most runs never need.
"""

from __future__ import annotations

from typing import Any

from benchmark.models.architectures import (
    ARCHITECTURES,
    NORMALIZED_MODEL_PREFIX,
    Normalize,
    build_architecture,
    wide_resnet,
    with_normalization,
)
from benchmark.models.checkpoint import (
    apply_key_map,
    load_into,
    load_state_dict,
    read_safetensors_metadata,
    save_safetensors,
    sha256_file,
    weights_hash,
)

_LAZY = {"load_robustbench", "robustbench_names"}

__all__ = [
    "ARCHITECTURES",
    "NORMALIZED_MODEL_PREFIX",
    "Normalize",
    "apply_key_map",
    "build_architecture",
    "load_into",
    "load_robustbench",
    "load_state_dict",
    "read_safetensors_metadata",
    "robustbench_names",
    "save_safetensors",
    "sha256_file",
    "weights_hash",
    "wide_resnet",
    "with_normalization",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from benchmark.models import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
