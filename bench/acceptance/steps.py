"""One command under a time limit, in its own process group, its output in a log file.

A step that hangs must not eat the budget of the steps after it: at its limit the whole group gets
SIGINT (lokaal-bench's runner then seals what it finished), and SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

GRACE_S = 10.0  # between SIGINT and SIGKILL: enough for a runner to write its manifest


@dataclass
class Outcome:
    argv: list[str]
    returncode: int | None
    timed_out: bool
    seconds: float
    log: Path


@dataclass
class StepRecord:
    """What the summary says about one step: its status, its time against its limit, and why."""

    name: str
    title: str
    status: str = "PENDING"  # PENDING, RUNNING, OK, FAILED, TIMEOUT, SKIPPED, PLANNED (dry run)
    seconds: float | None = None
    limit_s: float | None = None
    note: str = ""
    commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # Children that outlived the leader (a cell process) still share its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def _opened(path: Path | None, fallback: IO[bytes]) -> Iterator[IO[bytes]]:
    if path is None:
        yield fallback
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        yield handle


def run_command(argv: Sequence[str], *, log: Path, timeout_s: float, env: dict[str, str] | None = None,
                cwd: Path | None = None, stdout: Path | None = None, grace_s: float = GRACE_S) -> Outcome:
    """Run argv with stderr (and stdout, unless `stdout` names a file for it) appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in argv]
    with open(log, "ab") as err, _opened(stdout, err) as out:
        err.write(f"$ {shlex.join(argv)}\n".encode())
        err.flush()
        start = time.monotonic()
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                   start_new_session=True)
        try:
            returncode: int | None = process.wait(timeout=max(timeout_s, 0.1))
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop_group(process, grace_s)
            returncode, timed_out = process.returncode, True
        seconds = time.monotonic() - start
        err.write(f"# exit {returncode}{' (time limit)' if timed_out else ''} after {seconds:.1f} s\n".encode())
    return Outcome(argv, returncode, timed_out, seconds, log)
