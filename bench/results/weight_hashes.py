"""Weight files are hashed once: a 70B model is 140 GB, and a fleet seals a result set per shard each
night. The hash of a weight file is kept in `<cache>/weight-hashes.json` (the lokaal-bench cache,
LOKAAL_BENCH_CACHE: shared by a fleet's nodes), keyed by the file's absolute path, and reused while the
file's size and modification time (ns) are those it was hashed at; any change hashes it again. A cache
that cannot be read or written only costs the hashing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

CACHE_FILE = "weight-hashes.json"


def _cache_path() -> Path:
    from bench.models.materialise import default_cache_dir

    return default_cache_dir() / CACHE_FILE


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_sha256(files: list[Path], digest: Callable[[Path], str], cache: Path | None = None) -> dict[str, str]:
    """{file name: sha256} for the files, each hashed by `digest` only when the cache has no entry for its
    path, size and mtime."""
    cache = cache or _cache_path()
    entries = _read(cache)
    found, changed = {}, False
    for path in files:
        stat = path.stat()
        key = str(path.resolve())
        entry = entries.get(key) or {}
        if entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns and entry.get("sha256"):
            found[path.name] = str(entry["sha256"])
            continue
        found[path.name] = digest(path)
        entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": found[path.name]}
        changed = True
    if changed:
        try:
            from bench.atomic import write_text

            cache.parent.mkdir(parents=True, exist_ok=True)
            fresh = {**_read(cache), **entries}  # another node may have added entries meanwhile
            write_text(cache, json.dumps(fresh, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass
    return found
