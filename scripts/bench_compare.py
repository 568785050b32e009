#!/usr/bin/env python3
"""Speed of the readers: `table` over 100 result sets of 50 cells, `compare` of two 50-cell sets,
`history` over the 100 sets. Target: seconds, not minutes.

The result sets are built from a real cell of tests/data (its cell.json and records, with fresh
ids and jittered numbers), so the readers do their real work on realistic files.

    python scripts/bench_compare.py [--sets 100] [--cells 50]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "data" / "nightly-1"


def build(root: Path, sets: int, cells: int) -> list[Path]:
    manifest = json.loads((TEMPLATE / "manifest.json").read_text())
    template_entry = manifest["cells"][0]
    cell_dir = TEMPLATE / template_entry["dir"]
    summary = json.loads((cell_dir / "cell.json").read_text())
    records = gzip.decompress((cell_dir / "records.jsonl.gz").read_bytes()).decode().splitlines()
    rng = random.Random(0)
    paths = []
    for s in range(sets):
        path = root / f"night-{s:03d}"
        entries = []
        for c in range(cells):
            cell_id = f"{c:016x}"
            target = path / "cells" / cell_id
            target.mkdir(parents=True)
            factor = 1 + rng.gauss(0, 0.03)
            one = copy.deepcopy(summary)
            one["cell_id"], one["label"] = cell_id, f"{summary['label']} #{c}"
            one["metrics"]["output_tok_s"]["value"] *= factor
            (target / "cell.json").write_text(json.dumps(one))
            jittered = []
            for line in records:
                record = json.loads(line)
                record["token_times"] = [t * factor for t in record["token_times"]]
                record["end_time"] = record["token_times"][-1] if record["token_times"] else record["end_time"]
                jittered.append(json.dumps(record))
            (target / "records.jsonl.gz").write_bytes(gzip.compress("\n".join(jittered).encode()))
            entries.append({**template_entry, "id": cell_id, "label": one["label"], "dir": f"cells/{cell_id}"})
        (path / "manifest.json").write_text(json.dumps({**manifest, "cells": entries,
                                                        "created": f"2026-11-{1 + s % 28:02d}T{s:03d}"}))
        paths.append(path)
    return paths


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.2f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=100)
    parser.add_argument("--cells", type=int, default=50)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.readers.compare import compare
    from bench.readers.history import collect
    from bench.readers.printing import render
    from bench.readers.tables import DEFAULT_COLUMNS, cell_rows

    root = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        timed(f"build {args.sets} result sets x {args.cells} cells", lambda: build(root, args.sets, args.cells))
        paths = sorted(root.iterdir())
        results = {
            "table": timed(f"table over {args.sets} x {args.cells} cells",
                           lambda: render(cell_rows([root], DEFAULT_COLUMNS), ["cell", *DEFAULT_COLUMNS], "csv", {})),
            "compare": timed(f"compare two sets of {args.cells} cells", lambda: compare(paths[0], paths[1])),
            "history": timed(f"history of one metric over {args.sets} sets",
                             lambda: collect([root], "output_tok_s")),
        }
    finally:
        shutil.rmtree(root)
    print(json.dumps({"sets": args.sets, "cells": args.cells, "seconds": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
