"""Reading a profile: YAML text (UTF-8) to a validated Profile, with errors that name the file and field
(ProfileError). Paths in a profile are relative to the profile's own directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench.errors import ProfileError
from bench.profile.spec import Profile

_TAGS = {"transformers", "openai", "vllm", "llamacpp", "managed", "single-stream", "offline", "prefill-decode",
         "concurrency", "rate", "fixed",
         "capacity", "trace", "uniform", "normal", "list",
         "int", "str", "float", "bool", "none"}


def _location(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a profile path, e.g. engines[0].dtype; union-member and
    discriminator tags (literal['auto'], constrained-int, transformers) are not fields and are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        part = str(part)  # a YAML key need not be a string (1.5: x); a field path shows it as written
        if part in _TAGS or "[" in part or "-" in part:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_profile(data: Any, path: str) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(path, [("", "a profile must be a YAML mapping (name, models, engines, ...)")])
    try:
        return Profile.model_validate(data)
    except RecursionError:  # an anchor that holds itself (&a [*a]) nested past what validation follows
        raise ProfileError(path, [("", "a YAML alias refers to itself: not a profile")]) from None
    except ValidationError as exc:
        # A value that fits no member of a union gets one error per member: say them as one.
        by_field: dict[str, list[str]] = {}
        for err in exc.errors():
            messages = by_field.setdefault(_location(err["loc"]), [])
            message = _one_line(err["msg"].removeprefix("Value error, "))
            if message not in messages:
                messages.append(message)
        raise ProfileError(path, [(where, "; or ".join(msgs)) for where, msgs in by_field.items()]) from None


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file; raises ProfileError naming the file and field."""
    path = Path(path)
    return profile_from_text(read_profile_text(path), path)


def read_profile_text(path: Path) -> str:
    """A profile file's text; ProfileError when it cannot be read or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(str(path), [("", "file not found")]) from None
    except OSError as exc:
        raise ProfileError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    return decode_utf8(raw, str(path))


def decode_utf8(raw: bytes, label: str) -> str:
    """Text of a file lokaal-bench reads (profiles, prompt files, traces): UTF-8 or a ProfileError
    saying where the first byte that is not UTF-8 is."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProfileError(label, [(f"line {line}, column {column}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                                                     "save the file as UTF-8")]) from None


def profile_from_text(text: str, path: Path, label: str | None = None) -> Profile:
    """Validate a profile's YAML text; `path` anchors its relative paths, `label` names it in errors."""
    from bench.profile.preflight import check_profile

    label = label or str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(label, [(where, f"YAML syntax error: {_one_line(problem)}")]) from None
    except RecursionError:
        raise ProfileError(label, [("", "YAML nested too deeply to be a profile")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tagged value that cannot be built (!!timestamp ...)
        raise ProfileError(label, [("", f"YAML value cannot be read: {_one_line(str(exc))}")]) from None
    profile = parse_profile(data, label)
    check_profile(profile, path, label)  # everything a run could only find out later (bench/profile/preflight.py)
    return profile


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def resolve_relative(name: str, profile_path: Path) -> Path:
    """Paths in a profile are relative to the profile's own directory."""
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else (profile_path.parent / candidate).resolve()
