"""Reading a suite file: YAML (``safe_load`` only), overrides, validation, and readable errors.

Every problem is reported as ``file: key.path: message``; unknown names and keys come with the
closest valid one. A suite file may be hostile: the reader bounds its size, what its aliases
expand to and how deep it nests, refuses duplicate keys and tags, and never puts an unbounded
user value into a message (``benchmark.errors.clip``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from benchmark.errors import CLIP_CHARS, SuiteError, clip, clip_repr, suggest
from benchmark.suite.schema import Suite, cross_field_problems

MAX_SUITE_BYTES = 1 << 20
"""Largest suite file read (1 MiB); checked before parsing. The largest shipped suite is ~5 KB."""
MAX_YAML_NODES = 100_000
"""Most values (scalars, lists, mappings) a suite may hold once its aliases are expanded."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of lists and mappings (a suite needs about 6; deeper ones exhaust the stack)."""

_CORE = "tag:yaml.org,2002:"
_PLAIN_TAGS = frozenset({"!"} | {_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map")})
_MERGE = _CORE + "merge"


class SuiteYAMLError(yaml.YAMLError):
    """Well-formed YAML that a suite may not be: where (``line L, column C``) and what."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


class SuiteLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (plain data only, never arbitrary objects) with a hostile file's limits.

    Refused, naming the line: aliases that expand the document past ``MAX_YAML_NODES`` values
    ("billion laughs": each alias counts as everything its anchor holds), an alias inside its own
    anchor (recursive data), nesting deeper than ``MAX_YAML_DEPTH``, a key repeated in one mapping
    (PyYAML would keep the last silently; ``<<`` merges may still be overridden) and explicit tags
    other than the core schema's (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``,
    ``!!seq``, ``!!map``).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to; the tree keeps nodes alive
        self._total = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Compose one node, counting what it expands to and checking its tag and depth."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is the composer's own error
                self._count_alias(event, target)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        self._check_tag(event)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise SuiteYAMLError(_at(event.start_mark), f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in _children(node))
        self._add(1, event.start_mark, "the document has")
        return node  # type: ignore[no-any-return]

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        """Compose a mapping, refusing a key written twice (``<<`` merges are not duplicates)."""
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue
            # safe_load reads a `=` key (YAML's "value" tag) as the string "=".
            key = key_node.value if key_node.tag == _CORE + "value" else self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor's own error
                continue
            if first is not None:
                where = f"line {first} and line {line}" if first != line else f"line {line}"
                raise SuiteYAMLError(where, f"duplicate key {clip_repr(key)}")
            seen[key] = line
        return node  # type: ignore[no-any-return]

    def _check_tag(self, event: yaml.Event) -> None:
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS:
            shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
            raise SuiteYAMLError(_at(event.start_mark), f"tag '{clip(shown)}' is not allowed: a suite is plain YAML "
                                                        f"(the only tags allowed are !!str, !!int, !!float, !!bool, "
                                                        f"!!null, !!seq and !!map)")

    def _count_alias(self, event: yaml.AliasEvent, target: yaml.Node) -> None:
        size = self._sizes.get(id(target))
        if size is None:  # its anchor's node is still being composed
            raise SuiteYAMLError(_at(event.start_mark), f"alias *{clip(event.anchor)} is inside its own anchor "
                                                        f"(recursive data)")
        self._add(size, event.start_mark, f"alias *{clip(event.anchor)} expands the document to")

    def _add(self, size: int, mark: yaml.Mark, what: str) -> None:
        self._total += size
        if self._total > MAX_YAML_NODES:
            raise SuiteYAMLError(_at(mark), f"{what} more than {MAX_YAML_NODES:,} values (each alias counts as "
                                            f"everything its anchor holds); a suite needs far fewer")


def parse_yaml(text: str, file: str, key: str = "") -> Any:
    """Parse suite YAML with :class:`SuiteLoader` (the data ``yaml.safe_load`` would give).

    Args:
        text: the YAML.
        file: the suite file, for errors.
        key: what the text is, named before the line in errors (``--set seed=...``).

    Raises:
        SuiteError: a syntax error or a refused document, naming the line where known.
    """
    try:
        return yaml.load(text, Loader=SuiteLoader)  # noqa: S506 -- a SafeLoader
    except SuiteYAMLError as exc:
        where, problem = exc.where, exc.problem
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = _at(mark) if mark else ""
        problem = f"invalid YAML: {clip(str(getattr(exc, 'problem', None) or exc), 4 * CLIP_CHARS)}"
    except (ValueError, OverflowError) as exc:  # e.g. a date 2001-02-30, an int of 5000 digits
        where, problem = "", f"invalid YAML value: {clip(str(exc), 4 * CLIP_CHARS)}"
    raise SuiteError(file, [(": ".join(k for k in (key, where) if k), problem)])


def read_suite_text(path: Path) -> str:
    """The text of a suite file of at most ``MAX_SUITE_BYTES``, read before any parsing.

    Raises:
        SuiteError: missing, unreadable, too large or not UTF-8.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)
    except FileNotFoundError:
        raise SuiteError(str(path), [("", "file not found")]) from None
    except OSError as exc:
        raise SuiteError(str(path), [("", f"cannot read file: {exc}")]) from None
    if len(data) > MAX_SUITE_BYTES:
        try:
            size = f"{path.stat().st_size:,} bytes, "
        except OSError:
            size = ""
        raise SuiteError(str(path), [("", f"file is {size}over the limit of a suite file ({MAX_SUITE_BYTES:,} bytes, "
                                          f"1 MiB)")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(str(path), [("", f"cannot read file: {exc}")]) from None


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
            parts.append(("." if parts else "") + clip(item))
    return "".join(parts)


def _clip_user_values(msg: str, error: Any) -> str:
    """``msg`` with every long user value it quotes (an unknown key or name, the input) clipped."""
    ctx = error.get("ctx") or {}
    for value in (ctx.get("key"), ctx.get("name"), error.get("input")):
        if isinstance(value, str) and len(value) > CLIP_CHARS:
            msg = msg.replace(repr(value), clip_repr(value)).replace(value, clip(value))
    return msg


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
            hint = suggest(inp, choices) if isinstance(inp, str) else ""
            msg = f"invalid value {clip_repr(inp)}.{hint} Expected {expected}"
        problems.append((_loc_to_key(loc), _clip_user_values(msg, e)))
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
    """Read and validate a suite file (``yaml.safe_load``'s plain data, within ``SuiteLoader``'s limits).

    Args:
        path: the suite file.
        overrides: ``key.path=value`` strings (``--set``); the value is parsed as YAML, so that
            ``steps=50`` is a number and ``eps=[8/255]`` a list (tags are refused as in the file).
        updates: ``{key.path: value}`` set as given, without YAML parsing (the CLI's typed options:
            a ``--data-dir`` named ``on`` or ``my set #1`` stays that string).

    Raises:
        SuiteError: unreadable or oversized file, YAML syntax error, refused YAML (see ``SuiteLoader``)
            or schema problems.
    """
    path = Path(path)
    raw = parse_yaml(read_suite_text(path), str(path))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SuiteError(str(path), [(clip(item), "an override must look like key.path=value")])
        raw = set_key(raw, key, parse_yaml(value, str(path), f"--set {clip(item)}"), str(path))
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
