#!/usr/bin/env python3
"""The load generator measured against the calibration endpoint (issue 3's benchmark): TTFT 50 ms,
ITL 10 ms, 64 concurrent streams. Targets: TTFT and ITL within 1 ms of configured at p50 and 5 ms
at p99. Prints the errors and the client's ceiling; exits 1 when a target is missed.

    python scripts/bench_loadgen.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.serving.calibrate import calibrate

    result = calibrate(0.05, 0.01, [64, 128, 256], tokens=32, duration_s=args.duration)
    at64 = result["levels"][0]
    errors = {name: {q: value * 1000 for q, value in at64[f"{name}_error_s"].items()} for name in ("ttft", "itl")}
    met = all(abs(errors[n]["p50"]) <= 1.0 and abs(errors[n]["p99"]) <= 5.0 for n in errors)
    print(json.dumps({"at_64_streams_ms": errors, "requests_per_s": at64["requests_per_s"],
                      "ceiling": result["ceiling"], "targets_met": met}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
