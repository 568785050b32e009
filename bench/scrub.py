"""Secrets never reach the disk: one scrubber, used at every place lokaal-bench writes a file.

What is scrubbed: any `Bearer <token>` (a server that echoes the Authorization header), and the
values of the secrets this process was told about (`register`): the API key read from the
environment variable a profile names (`api_key_env`), and secrets written into a managed server's
settings (an `env` entry whose name says KEY, TOKEN, SECRET or PASSWORD; the value after an
`--api-key` argument). Those values are replaced wherever they stand as a whole word (a key
inside a longer hex hash is left alone, so scrubbing never breaks a seal), in error texts,
records, cell summaries, manifests (with the stored profile source), cell logs and server logs.

Each process registers what it knows (the runner from the profile, a cell from its spec) before
it writes anything. A secret shorter than MIN_SECRET_LENGTH characters is only scrubbed after
`Bearer`: a short common word would otherwise be cut out of everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW", re.IGNORECASE)
_SECRET_FLAGS = ("--api-key", "--api_key", "--token", "--hf-token")
# A bearer token ends at whitespace, a quote, a backslash (an escape in JSON text) or a separator.
_BEARER = re.compile(r"(?i)\b(bearer)([ \t]+)[^\s\"'\\,;]+")
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(values: Iterable[str | None]) -> None:
    """Remember secret values to scrub from everything this process writes from now on."""
    global _pattern
    added = {v.strip() for v in values if v and len(v.strip()) >= MIN_SECRET_LENGTH} - _secrets
    if added:
        _secrets.update(added)
        words = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
        # A whole word: not inside a longer run of letters, digits, '-' or '_' (a hash, an identifier).
        _pattern = re.compile(rf"(?<![A-Za-z0-9_\-])(?:{words})(?![A-Za-z0-9_\-])")


def clear() -> None:
    """Forget every registered secret (tests)."""
    global _pattern
    _secrets.clear()
    _pattern = None


def engine_secrets(engine: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    """The secret values an engine's settings point at: its API key and a managed server's secrets."""
    environ = dict(os.environ) if environ is None else environ
    found: list[str] = []
    key_env = engine.get("api_key_env")
    if key_env and environ.get(key_env):
        found.append(environ[key_env])
    server = engine.get("server") or {}
    found += [str(v) for k, v in (server.get("env") or {}).items() if _SECRET_NAME.search(str(k))]
    for args in (server.get("args") or [], server.get("command") or []):
        args = [str(a) for a in args]
        for index, arg in enumerate(args):
            name, _, value = arg.partition("=")
            if name in _SECRET_FLAGS:
                found.append(value if value else (args[index + 1] if index + 1 < len(args) else ""))
    return [v for v in found if v]


def register_engines(engines: Iterable[dict[str, Any]]) -> None:
    for engine in engines:
        register(engine_secrets(engine))


def text(value: str) -> str:
    """`value` with bearer tokens and registered secrets replaced by [REDACTED]."""
    if "earer" in value or "EARER" in value:
        value = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)
    if _pattern is not None:
        value = _pattern.sub(REDACTED, value)
    return value


def data(value: Any) -> Any:
    """A JSON-like structure with every string (keys included) scrubbed; other values unchanged."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k) if isinstance(k, str) else k: data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(data(v) for v in value)
    return value


def file(path: Path) -> None:
    """Scrub a log file in place (atomically), whatever its bytes; nothing happens when it is clean."""
    from bench.atomic import atomic_path

    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return
    decoded = raw.decode("utf-8", errors="surrogateescape")  # bytes that are not UTF-8 survive as they were
    cleaned = text(decoded)
    if cleaned != decoded:
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(cleaned.encode("utf-8", errors="surrogateescape"))
