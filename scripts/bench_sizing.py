#!/usr/bin/env python3
"""What sizing by time and precision costs and buys, measured on the quickstart (or any profile): the
run's wall time against the 3-minute target, and per cell the repetitions `auto` needed, the 95%
half-width of output tok/s it reached, which floor bound each repetition (count or duration), the
warm-up batches, and the verdict.

    python scripts/bench_sizing.py                              # profiles/quickstart.yaml
    python scripts/bench_sizing.py profiles/vllm-cpu.yaml --target-s 900 --json

It runs `lokaal-bench run` for real, in a temporary results directory (kept with --keep).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", nargs="?", default=str(REPO / "profiles" / "quickstart.yaml"))
    parser.add_argument("--target-s", type=float, default=180.0, help="the wall-time target (default 3 minutes)")
    parser.add_argument("--keep", action="store_true", help="keep the result set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-sizing-"))
    out = workdir / "result"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", "run", args.profile, "--output", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1) or not (out / "manifest.json").exists():
        print(done.stdout + done.stderr, file=sys.stderr)
        return 2
    cells = []
    for entry in json.loads((out / "manifest.json").read_text())["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        sizing = summary.get("sizing") or {}
        repetitions = sizing.get("repetitions") or {}
        cells.append({
            "cell": entry["label"],
            "status": summary["status"],
            "verdict": (summary.get("validity") or {}).get("verdict"),
            "repetitions_mode": repetitions.get("mode"),
            "repetitions_done": repetitions.get("done"),
            "half_width": repetitions.get("precision"),
            "target": repetitions.get("target_precision"),
            "bound": [r["bound"] for r in sizing.get("per_repetition") or []],
            "warmup_batches": (sizing.get("warmup") or {}).get("batches"),
            "wall_s": summary.get("wall_s"),
            "output_tok_s": ((summary.get("metrics") or {}).get("output_tok_s") or {}).get("value"),
        })
    result = {"profile": args.profile, "wall_s": wall, "target_s": args.target_s,
              "all_valid": all(c["verdict"] == "VALID" for c in cells), "cells": cells}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for c in cells:
            reached = "-" if c["half_width"] is None else f"±{c['half_width']:.1%}"
            bounds = {b: c["bound"].count(b) for b in sorted(set(c["bound"]))}
            print(f"{c['cell']}: {c['verdict'] or c['status']}, {c['repetitions_done']} repetition(s) "
                  f"({c['repetitions_mode']}), output tok/s {c['output_tok_s'] or 0:.1f} {reached} "
                  f"(target ±{(c['target'] or 0):.0%}), bound by {bounds}, warm-up {c['warmup_batches']} "
                  f"batch(es), {c['wall_s'] or 0:.1f} s")
        print(f"total {wall:.0f} s against a target of {args.target_s:.0f} s; "
              f"{'all cells VALID' if result['all_valid'] else 'NOT all cells VALID'}")
    if args.keep:
        print(f"result set kept: {out}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result["all_valid"] and wall <= args.target_s else 1


if __name__ == "__main__":
    sys.exit(main())
