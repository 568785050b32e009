"""Request traces for the `trace` scenario: one JSON object per line,

    {"timestamp": 0.0, "input_tokens": 512, "output_tokens": 128}

with `timestamp` the arrival in seconds from the trace's start (sorted on load). A bad line is a
profile error naming the file and line, found when the profile is expanded, not mid-run.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ProfileError


@dataclass(frozen=True)
class TraceEntry:
    timestamp: float
    input_tokens: int
    output_tokens: int


def load_trace(path: Path) -> list[TraceEntry]:
    from bench.profile.loading import decode_utf8

    if not path.is_file():
        raise ProfileError(str(path), [("", "trace file not found")])
    try:
        text = decode_utf8(path.read_bytes(), str(path))
    except OSError as exc:
        raise ProfileError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            entry = TraceEntry(float(row["timestamp"]), int(row["input_tokens"]), int(row["output_tokens"]))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise ProfileError(str(path), [(f"line {number}", f"need timestamp, input_tokens, output_tokens "
                                                              f"({type(exc).__name__}: {exc})")]) from None
        if not math.isfinite(entry.timestamp) or entry.timestamp < 0 or min(entry.input_tokens,
                                                                             entry.output_tokens) < 1:
            raise ProfileError(str(path), [(f"line {number}", "timestamp must be >= 0 and token counts >= 1")])
        entries.append(entry)
    if not entries:
        raise ProfileError(str(path), [("", "the trace has no entries")])
    return sorted(entries, key=lambda e: e.timestamp)


def trace_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
