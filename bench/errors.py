"""Errors the command line turns into exit codes and one-line messages (no tracebacks)."""

from __future__ import annotations

# The command's exit codes: success; a run with FAILED cells, regressions or disagreement; bad input
# (a message, no traceback); interrupted.
EXIT_OK, EXIT_FAILED_CELLS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# `status` of a campaign whose shards are still queued or running (bench/fleet/status.py).
EXIT_IN_PROGRESS = 3


class BenchError(Exception):
    """A problem the user can fix; printed as a message, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class ProfileError(BenchError):
    """A profile that cannot be loaded: names the file, the field and the problem."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: {field}: {problem}" if field else f"{path}: {problem}" for field, problem in problems]
        super().__init__("\n".join(lines))


class ResultSetError(BenchError):
    """A result set that is missing, corrupt or of an unknown schema version."""
