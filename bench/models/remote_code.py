"""trust_remote_code only with pinned code: a model directory's Python files must match the SHA-256
values the profile pins, file for file, or the model is not loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.models.local import ModelError


class UnpinnedCodeError(ModelError):
    """The model's code differs from what the profile pinned."""


def code_files(model_dir: Path) -> dict[str, str]:
    """SHA-256 of every Python file in the model directory (what trust_remote_code would run)."""
    return {
        path.relative_to(model_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(model_dir).rglob("*.py"))
    }


def verify_code_pins(model_dir: Path, pins: dict[str, str]) -> dict[str, str]:
    """Raise unless the directory's code files are exactly the pinned ones; return their hashes."""
    found = code_files(model_dir)
    problems = []
    for name, digest in sorted(found.items()):
        if name not in pins:
            problems.append(f"{name} is not pinned")
        elif pins[name].lower() != digest:
            problems.append(f"{name} has sha256 {digest}, pinned {pins[name]}")
    problems += [f"{name} is pinned but absent" for name in sorted(set(pins) - set(found))]
    if problems:
        raise UnpinnedCodeError(f"{model_dir}: refusing trust_remote_code: " + "; ".join(problems))
    return found
