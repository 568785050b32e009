"""One measuring run per machine: two runs measuring at once spoil each other's numbers.

A run takes a machine-wide lock (flock on `measuring.lock` in LOCK_DIR) for as long as it
measures. When another run holds it, `--when-busy` says what to do:

- `wait` (the default): say so, and wait until the other run is done. Nightly jobs started on
  the same minute then measure one after the other, each on a quiet machine.
- `mark`: measure anyway. Both runs' cells that overlapped get the reason "another lokaal-bench
  run was measuring on this machine" and are INVALID (bench/measure/validity.py).

Every measuring run also leaves its presence in `runs/` (pid, result set, start, a heartbeat per
cell, end), kept a day after it ends, so any run (whatever its mode) finds out after each cell
whether another one measured during that cell, even one that started and ended inside it.

LOCK_DIR is LOKAAL_BENCH_LOCK_DIR, else /run/lock/lokaal-bench (one per machine, emptied at boot),
else the temporary directory. Runs in separate containers on one host see separate directories:
share one (a bind mount) and point LOKAAL_BENCH_LOCK_DIR at it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import BenchError

ENV = "LOKAAL_BENCH_LOCK_DIR"
WAIT, MARK = "wait", "mark"
KEEP_ENDED_S = 24 * 3600
REASON = "another lokaal-bench run was measuring on this machine"


class InterruptedWhileWaiting(BenchError):
    exit_code = 130


def lock_dir() -> Path:
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured).expanduser()
    run_lock = Path("/run/lock")
    if run_lock.is_dir() and os.access(run_lock, os.W_OK):
        return run_lock / "lokaal-bench"
    return Path(tempfile.gettempdir()) / "lokaal-bench-lock"


def _make_shared_dir(path: Path) -> None:
    """A directory every user's runs can write to (sticky, like /tmp)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            path.chmod(0o1777)


class MachineLock:
    def __init__(self, result_set: Path, mode: str = WAIT, directory: Path | None = None):
        self.directory = directory or lock_dir()
        self.result_set = str(result_set)
        self.mode = mode
        self.lock_file: Any = None
        self.presence = self.directory / "runs" / f"{os.getpid()}-{secrets.token_hex(4)}.json"
        self.started: float | None = None
        self.alongside: dict[str, Any] | None = None  # mark mode: who held the lock when we started

    # --- the lock -------------------------------------------------------------------------------

    def acquire(self, say: Callable[[str], None]) -> None:
        import fcntl

        _make_shared_dir(self.directory)
        _make_shared_dir(self.directory / "runs")
        self.lock_file = open(self.directory / "measuring.lock", "a+")  # noqa: SIM115 - held for the run
        with contextlib.suppress(OSError):
            os.chmod(self.directory / "measuring.lock", 0o666)
        try:
            fcntl.flock(self.lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if self.mode == MARK:
                self.alongside = holder
                say(f"{REASON} ({_describe(holder)}); measuring anyway (--when-busy mark): cells that overlap "
                    "it are marked INVALID")
            else:
                say(f"waiting: {REASON} ({_describe(holder)}); this run starts when it is done "
                    "(--when-busy mark would measure alongside and mark the cells INVALID)")
                try:
                    fcntl.flock(self.lock_file.fileno(), fcntl.LOCK_EX)
                except KeyboardInterrupt:
                    self.release()
                    raise InterruptedWhileWaiting("interrupted while waiting for the other run; nothing was "
                                                  "measured or written") from None
                say("the other run is done; starting")
        if self.alongside is None:
            self.lock_file.seek(0)
            self.lock_file.truncate()
            self.lock_file.write(json.dumps(self._me()))
            self.lock_file.flush()
        self.started = time.time()
        self._write_presence()
        self._collect_garbage()

    def release(self) -> None:
        if self.started is not None:
            self._write_presence(ended=time.time())
        if self.lock_file is not None:
            self.lock_file.close()  # closing drops the flock
            self.lock_file = None

    def heartbeat(self) -> None:
        self._write_presence()

    # --- who else measured ------------------------------------------------------------------------

    def others_during(self, start: float, end: float) -> list[dict[str, Any]]:
        """Other runs whose measuring overlapped [start, end] (wall-clock seconds)."""
        found = []
        for path in sorted((self.directory / "runs").glob("*.json")):
            if path == self.presence:
                continue
            other = _read(path)
            if not other:
                continue
            other_end = other.get("ended")
            if other_end is None:
                other_end = time.time() if _alive(other.get("pid")) else other.get("heartbeat") or other["started"]
            if other["started"] < end and other_end > start:
                found.append({k: other.get(k) for k in ("pid", "result_set", "started", "ended")})
        return found

    # --- files ----------------------------------------------------------------------------------

    def _me(self, **extra: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "result_set": self.result_set, "started": self.started or time.time(),
                "heartbeat": time.time(), "ended": None, **extra}

    def _write_presence(self, ended: float | None = None) -> None:
        data = self._me(ended=ended)
        tmp = self.presence.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.presence)

    def _holder(self) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.directory / "measuring.lock").read_text() or "null")
        return None

    def _collect_garbage(self) -> None:
        now = time.time()
        for path in (self.directory / "runs").glob("*.json"):
            other = _read(path)
            if other is None:
                continue
            last = other.get("ended") or (None if _alive(other.get("pid")) else other.get("heartbeat"))
            if last is not None and now - last > KEEP_ENDED_S:
                with contextlib.suppress(OSError):
                    path.unlink()


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "pid unknown"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {holder.get('pid')}, result set {holder.get('result_set')}, since {when}"


def _read(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("started"), (int, float)):
            return data
    return None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
