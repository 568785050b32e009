"""Materialise a profile's cards before its run, one process per card at once, into the model cache
(LOKAAL_BENCH_CACHE): the run then finds them built, and this step's own time limit, not the
profile's, pays for the writing (a 3B card is about 6 GB; the GPU machine's disk speed is unknown).

    python -m bench.acceptance.materialise PROFILE [--plan] [--json-out FILE]

`--plan` writes nothing: the bytes the cards need against the free space where they would go.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any


def profile_models(profile_path: Path) -> list[tuple[str, str, int]]:
    """(card, dtype, seed) of every card the profile's cells use, once each; local directories need no build."""
    from bench.profile.cells import expand
    from bench.profile.loading import load_profile

    seen: dict[tuple[str, str, int], None] = {}
    for cell in expand(load_profile(profile_path), profile_path):
        if cell.model.card:
            seen[(cell.model.card, cell.engine.weights_dtype, cell.model.seed)] = None
    return list(seen)


def needed_bytes(models: list[tuple[str, str, int]]) -> int:
    from bench.models import load_card

    return sum(load_card(card).weight_bytes(dtype) for card, dtype, _ in models)


def _build(card: str, dtype: str, seed: int) -> dict[str, Any]:
    from bench.models import resolve_model

    writes: list[int] = []  # progress is only called while weights are written: none on a cache hit
    start = time.perf_counter()
    model = resolve_model(card=card, path=None, dtype=dtype, seed=seed, cache_dir=None,
                          progress=lambda done, total: writes.append(done))
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in Path(model.path).iterdir() if p.is_file())
    return {"card": card, "dtype": dtype, "seed": seed, "path": str(model.path), "bytes": size, "seconds": seconds,
            "cached": not writes}


def plan(profile_path: Path) -> dict[str, Any]:
    from bench.models.materialise import default_cache_dir

    models = profile_models(profile_path)
    cache = default_cache_dir()
    probe = next((p for p in (cache, *cache.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    need = needed_bytes(models)
    return {"cache_dir": str(cache), "models": [list(m) for m in models], "needed_bytes": need, "free_bytes": free,
            "fits": need < free}


def build(profile_path: Path) -> dict[str, Any]:
    """Build every card at once (each in its own process: the generator is single-threaded numpy)."""
    result = plan(profile_path)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(len(result["models"]), 1), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_build, *m) for m in result["models"]]
        result["built"] = [f.result() for f in futures]
    result["seconds"] = time.perf_counter() - start
    written = sum(b["bytes"] for b in result["built"] if not b["cached"])
    result["written_bytes"] = written
    result["gb_s"] = written / result["seconds"] / 1e9 if written and result["seconds"] > 0 else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.acceptance.materialise")
    parser.add_argument("profile")
    parser.add_argument("--plan", action="store_true", help="write nothing; say what would be written where")
    parser.add_argument("--json-out", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = plan(Path(args.profile)) if args.plan else build(Path(args.profile))
    text = json.dumps(result, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text, encoding="utf-8")
    print(text)
    return 0 if result["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
