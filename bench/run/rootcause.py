"""The root cause of a failed cell, when it happened in a child process.

Engines that start workers (vLLM's engine core and workers) fail in the child and re-raise a
generic error in the cell ("Engine core initialization failed. See root cause above."). The child's
own exception is in the cell log, on lines the engine prefixes with the process name and pid; the
last one is what a reader of a FAILED row needs. Pure: text in, text out.
"""

from __future__ import annotations

import re
from pathlib import Path

_CHILD_EXCEPTION = re.compile(
    r"^\((?P<proc>[\w.-]+) pid=\d+\)[^\n]*?\s(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception)): (?P<msg>[^\n]+)$",
    re.MULTILINE,
)
TAIL_BYTES = 512 * 1024


def child_root_cause(log_text: str) -> str | None:
    """'ValueError: ... (in VllmWorker-0)' for the last exception a child process logged, or None."""
    matches = list(_CHILD_EXCEPTION.finditer(log_text))
    if not matches:
        return None
    found = matches[-1]
    return f"{found['exc']}: {found['msg'].strip()} (in {found['proc']})"


def own_log_tail() -> str:
    """The end of this process's stderr, which bench.run.isolation points at the cell log."""
    try:
        path = Path("/proc/self/fd/2").resolve(strict=True)
        with path.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
