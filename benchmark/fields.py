"""Field types shared by every schema: strict sections, eps values and lists, registered names.

The suite schema, the evaluation kinds' parameter schemas and the training specs are built from
these, so this module sits below all of them and imports nothing of the harness but its errors
and the registry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from benchmark.errors import suggest
from benchmark.registry import plugin_failures

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_eps(value: Any) -> float:
    """Parse one eps: a number or a fraction string such as ``"8/255"``.

    Raises:
        ValueError: not a number, not finite, or negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = _FRACTION.match(value)
        try:
            eps = float(m.group(1)) / float(m.group(2)) if m else float(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}") from None
    else:
        raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {value!r}")
    return eps


def _eps_list(value: Any) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError("eps list is empty")
    # The cascade attacks eps in ascending order, so the list is kept sorted and free of repeats.
    return tuple(sorted({parse_eps(v) for v in values}))


EpsList = Annotated[tuple[float, ...], BeforeValidator(_eps_list)]
"""One eps or a list of them, as numbers or fractions; stored sorted and without repeats."""
Eps = Annotated[float, BeforeValidator(parse_eps)]
"""One eps, as a number or a fraction such as ``8/255``."""


def eps_label(eps: float) -> str:
    """Human label for an eps: a short decimal (``0.1``) when there is one, else ``k/255`` or 4 digits."""
    short = f"{eps:g}"
    if len(short.replace("0.", "", 1)) <= 3:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


class StrictModel(BaseModel):
    """Base of every suite section: unknown keys are rejected with the closest valid key."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            for key in data:
                if key not in known:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'.{hint} Valid keys: {valid}",
                        {"key": key, "hint": suggest(str(key), known), "valid": ", ".join(sorted(known))},
                    )
        return data


def check_name(kind: str, names: Iterable[str], name: str) -> str:
    """Return ``name`` if it is one of ``names``.

    Raises:
        PydanticCustomError: an ``unknown_name`` error with the closest known name.
    """
    names = list(names)
    if name not in names:
        raise PydanticCustomError(
            "unknown_name",
            "unknown {kind} '{name}'.{hint} Known: {known}{failed}",
            {"kind": kind, "name": name, "hint": suggest(name, names), "known": ", ".join(names),
             "failed": plugin_failures()},
        )
    return name


class Normalization(StrictModel):
    """Per-channel normalization applied inside the model, so attacks work in pixel space."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be > 0")
        return self
