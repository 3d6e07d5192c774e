"""Exception types. Every user-facing error names the file and the key at fault."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

CLIP_CHARS = 80
"""How much of a user value an error message shows (``clip``)."""
MAX_LISTED_PROBLEMS = 20
"""A ``SuiteError`` lists this many problems, then says how many more there are."""
MAX_KEY_CHARS = 200
MAX_MESSAGE_CHARS = 2000
"""Last-resort bounds on one problem's key path and message, whatever produced them."""

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 2 * CLIP_CHARS
_REPR.maxlevel = 3


def clip(value: object, limit: int = CLIP_CHARS) -> str:
    """A user value as an error message may show it: bounded, whatever the input.

    Strings are shown as they are, other values as a repr bounded in depth and length (never the
    full repr of a huge structure); text longer than ``limit`` keeps its start and says its length,
    e.g. ``aaaa... (1048576 chars)``.
    """
    text = value if isinstance(value, str) else _REPR.repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


def clip_repr(value: object, limit: int = CLIP_CHARS) -> str:
    """Like :func:`clip`, but a string is shown quoted (as ``repr`` would, once clipped)."""
    return repr(clip(value, limit)) if isinstance(value, str) else clip(value, limit)


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a " did you mean 'x'?" clause for the closest valid name, or an empty string."""
    if len(str(name)) > 4 * CLIP_CHARS:
        return ""  # no valid name is that long; and difflib's time grows with the length
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{matches[0]}'?" if matches else ""


class BenchError(Exception):
    """Base class of errors caused by bad input; the CLI reports them without a traceback (exit 2)."""


class SuiteError(BenchError):
    """A suite file is malformed: unknown key, wrong type, out-of-range value, unknown name.

    Args:
        file: the suite file.
        problems: (key path, message) pairs, one per problem found.
    """

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        # Keys and messages may carry user input: bounded here whatever built them, so that a hostile
        # suite never makes a huge message. The first MAX_LISTED_PROBLEMS are listed.
        self.file = file
        self.problems = problems
        lines = [f"{file}: {len(problems)} problem(s):"] if len(problems) > 1 else []
        for key, msg in problems[:MAX_LISTED_PROBLEMS]:
            key, msg = clip(key, MAX_KEY_CHARS), clip(msg, MAX_MESSAGE_CHARS)
            prefix = f"{file}: " if len(problems) == 1 else "  "
            lines.append(f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}")
        if len(problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
        super().__init__("\n".join(lines))


class LookupNameError(BenchError, KeyError):
    """An unknown registry name (dataset, architecture, attack, metric, recipe)."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class CheckpointError(BenchError):
    """A checkpoint is missing, corrupt, unsafe, pinned to another hash or does not fit the model."""


class DataError(BenchError):
    """A dataset is missing, corrupt or cannot be downloaded."""


class InvalidOutputError(BenchError):
    """A model produced outputs of the wrong shape or an attack broke its own constraints."""
