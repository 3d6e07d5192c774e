"""Reading a suite file: YAML (``safe_load`` only), overrides, validation, and readable errors.

Every problem is reported as ``file: key.path: message``; unknown names and keys come with the
closest valid one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from benchmark.errors import SuiteError, suggest
from benchmark.suite.schema import Suite, cross_field_problems

# Tags pydantic adds to locations inside the models' tagged union; not keys the user wrote.
_MODEL_TAGS = {"checkpoint", "robustbench", "recipe", "none"}


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, str) and item in _MODEL_TAGS and i == 2 and loc[0] == "models":
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _problems_from_validation(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        loc = tuple(e["loc"])
        if e["type"] in ("unknown_key", "unknown_attack"):
            loc = loc + (e["ctx"]["key"],)
        if e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            inp = e.get("input")
            expected = e.get("ctx", {}).get("expected", "")
            choices = re.findall(r"'([^']*)'", expected)
            msg = f"invalid value {inp!r}.{suggest(str(inp), choices)} Expected {expected}"
        problems.append((_loc_to_key(loc), msg))
    # The same message from several union members says nothing new.
    return list(dict.fromkeys(problems))


def parse_suite(raw: Any, file: str | Path = "<suite>") -> Suite:
    """Validate a suite given as already-parsed YAML.

    Raises:
        SuiteError: with every problem found, each naming its key path.
    """
    file = str(file)
    if not isinstance(raw, dict):
        raise SuiteError(file, [("", f"a suite must be a mapping of keys, got {type(raw).__name__}")])
    # Top-level `x-...` keys hold YAML anchors shared by entries (as in docker-compose); not settings.
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    if "name" not in raw and file != "<suite>":
        raw = {"name": Path(file).stem, **raw}
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise SuiteError(file, _problems_from_validation(err)) from None
    problems = cross_field_problems(suite)
    if problems:
        raise SuiteError(file, problems)
    return suite


def load_suite(path: str | Path, overrides: list[str] | None = None,
               updates: Mapping[str, Any] | None = None) -> Suite:
    """Read and validate a suite file (``yaml.safe_load`` only).

    Args:
        path: the suite file.
        overrides: ``key.path=value`` strings (``--set``); the value is parsed as YAML, so that
            ``steps=50`` is a number and ``eps=[8/255]`` a list.
        updates: ``{key.path: value}`` set as given, without YAML parsing (the CLI's typed options:
            a ``--data-dir`` named ``on`` or ``my set #1`` stays that string).

    Raises:
        SuiteError: unreadable file, YAML syntax error or schema problems.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(str(path), [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(str(path), [("", f"cannot read file: {exc}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(str(path), [(where, f"invalid YAML: {problem}")]) from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SuiteError(str(path), [(item, "an override must look like key.path=value")])
        raw = set_key(raw, key, yaml.safe_load(value), str(path))
    for key, value in (updates or {}).items():
        raw = set_key(raw, key, value, str(path))
    return parse_suite(raw, path)


def set_key(raw: Any, key: str, value: Any, file: str) -> Any:
    """Set ``a.b[0].c`` to ``value`` in a parsed suite, creating missing mappings on the way.

    Raises:
        SuiteError: the path runs through a list index that does not exist or a non-mapping.
    """
    tokens = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    node = raw
    for j, tok in enumerate(tokens):
        last = j == len(tokens) - 1
        if tok.startswith("["):
            idx = int(tok[1:-1])
            if not isinstance(node, list) or idx >= len(node):
                raise SuiteError(file, [(key, f"override path: no list item {idx}")])
            if last:
                node[idx] = value
            node = node[idx]
        else:
            if not isinstance(node, dict):
                raise SuiteError(file, [(key, f"override path: '{tok}' is not inside a mapping")])
            if last:
                node[tok] = value
            else:
                node = node.setdefault(tok, {})
    return raw
