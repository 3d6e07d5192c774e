"""Exception types. Every user-facing error names the file and the key at fault."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a " did you mean 'x'?" clause for the closest valid name, or an empty string."""
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
        self.file = file
        self.problems = problems
        lines = [f"{file}: {len(problems)} problem(s):"] if len(problems) > 1 else []
        for key, msg in problems:
            prefix = f"{file}: " if len(problems) == 1 else "  "
            lines.append(f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}")
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
