"""How much faster `history` reads 100 result sets from the results store than from their directories
(issue 15, target >= 10x), both measured in this one run on this machine, so the ratio is what counts.

    python scripts/bench_store_history.py [--sets 100] [--repeats 3]

The 100 sets are copies of the committed nightly test data (tests/data/nightly-*), each given its own run
id and start and sealed again, so they are 100 distinct sealed result sets. Each timing is a fresh load
(nothing cached between repeats): `bench.readers.history.collect` over the folder, then over the store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.fleet.store import add  # noqa: E402
from bench.readers.history import collect  # noqa: E402
from bench.results.integrity import seal  # noqa: E402
from bench.results.load import load_result_sets  # noqa: E402


def make_sets(folder: Path, count: int) -> None:
    sources = sorted((REPO / "tests" / "data").glob("nightly-*"))
    start = dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone.utc)
    for n in range(count):
        target = folder / f"nightly-{n:03d}"
        shutil.copytree(sources[n % len(sources)], target)
        manifest = json.loads((target / "manifest.json").read_text())
        models = manifest.pop("integrity", {}).get("model_weights", {})
        manifest["run_id"] = target.name
        manifest["created"] = (start + dt.timedelta(days=n)).isoformat()
        seal(target, manifest, models)


def timed(source: str, repeats: int) -> tuple[float, int]:
    best, points = float("inf"), 0
    for _ in range(repeats):
        began = time.perf_counter()
        series = collect([source], "output_tok_s")
        best = min(best, time.perf_counter() - began)
        points = sum(len(s.points) for s in series)
    return best, points


def timed_reading(source: str, repeats: int) -> float:
    """Only what history reads, which is what the store replaces: the sets, their cells and each cell's
    samples of the metric (history's change tests, the same work from either source, left out)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        samples = sum(len(c.samples("output_tok_s")) for s in load_result_sets([source]) for c in s.cells
                      if not c.served)
        best = min(best, time.perf_counter() - began)
        assert samples
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, db = Path(tmp) / "results", Path(tmp) / "fleet.duckdb"
        folder.mkdir()
        make_sets(folder, args.sets)
        began = time.perf_counter()
        report = add([folder], db)
        adding = time.perf_counter() - began
        assert len(report.added) == args.sets and not report.refused, report
        directories, points_dirs = timed(str(folder), args.repeats)
        store, points_store = timed(str(db), args.repeats)
        assert points_dirs == points_store, (points_dirs, points_store)  # the same history both ways
        print(f"history over {args.sets} result sets ({points_store} points), best of {args.repeats}: "
              f"directories {directories:.3f} s, store {store:.3f} s, ratio {directories / store:.1f}x "
              f"(target >= 10x); store add took {adding:.1f} s")
        reading_dirs, reading_store = timed_reading(str(folder), args.repeats), timed_reading(str(db), args.repeats)
        print(f"reading alone (sets, cells, their samples): directories {reading_dirs:.3f} s, "
              f"store {reading_store:.3f} s, ratio {reading_dirs / reading_store:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
