"""Errors the command line turns into exit codes and one-line messages (no tracebacks)."""

from __future__ import annotations


class BenchError(Exception):
    """A problem the user can fix; printed as a message, exit code 2."""

    exit_code = 2


class ProfileError(BenchError):
    """A profile that cannot be loaded: names the file, the field and the problem."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: {field}: {problem}" if field else f"{path}: {problem}" for field, problem in problems]
        super().__init__("\n".join(lines))


class ResultSetError(BenchError):
    """A result set that is missing, corrupt or of an unknown schema version."""
