#!/usr/bin/env python3
"""How exactly the client times a reasoning model's two first tokens (issue 16's benchmark): the
calibration endpoint is told TTFT, ITL and that the first N tokens of every answer are reasoning, so
the first token (of either) is due at TTFT and the first answer token at TTFT + N x ITL. Closed-loop
users stream from it; printed per reasoning format (vLLM's `reasoning`, `reasoning_content`, think
tags): the errors of both times (measured minus told, p50 and p99) and whether every request counted
exactly N reasoning tokens. Exits 1 when a p99 error exceeds --bound-ms or a count is off.

    python scripts/bench_reasoning.py [--ttft 0.05] [--itl 0.01] [--reasoning 8] [--tokens 24] [--users 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure.stats import percentile
from bench.serving.calibrate import start_server
from bench.serving.client import Connection, StreamResult


async def _users(port: int, users: int, tokens: int, duration_s: float, think_tags: bool) -> list[StreamResult]:
    payload = {"model": "calibration", "messages": [{"role": "user", "content": "x"}], "max_tokens": tokens,
               "stream": True, "stream_options": {"include_usage": True}}
    deadline = time.perf_counter() + duration_s
    results: list[StreamResult] = []

    async def user() -> None:
        connection = Connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                results.append(await connection.stream("/v1/chat/completions", payload, 60, think_tags))
        finally:
            await connection.close()

    await asyncio.gather(*(user() for _ in range(users)))
    return results


def measure(form: str, args: argparse.Namespace) -> dict[str, Any]:
    proc, port = start_server(args.ttft, args.itl, options=["--reasoning", str(args.reasoning),
                                                            "--reasoning-format", form])
    try:
        results = asyncio.run(_users(port, args.users, args.tokens, args.duration, form == "tags"))
    finally:
        proc.kill()
        proc.wait()
    ok = [r for r in results if r.ok and r.first_token is not None and r.first_answer is not None]
    first = sorted(r.first_token - r.sent - args.ttft for r in ok)
    answer = sorted(r.first_answer - r.sent - (args.ttft + args.reasoning * args.itl) for r in ok)
    return {"format": form, "requests": len(results), "ok": len(ok),
            "reasoning_counts_exact": all(r.reasoning_tokens == args.reasoning for r in ok) and len(ok) == len(results),
            "ttft_error_ms": {"p50": percentile(first, 50) * 1000, "p99": percentile(first, 99) * 1000},
            "first_answer_error_ms": {"p50": percentile(answer, 50) * 1000, "p99": percentile(answer, 99) * 1000}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.01)
    parser.add_argument("--reasoning", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--bound-ms", type=float, default=5.0)
    args = parser.parse_args()
    rows = [measure(form, args) for form in ("reasoning", "reasoning_content", "tags")]
    print(json.dumps(rows, indent=2))
    missed = [r["format"] for r in rows if not r["reasoning_counts_exact"] or
              max(r["ttft_error_ms"]["p99"], r["first_answer_error_ms"]["p99"]) > args.bound_ms]
    if missed:
        print(f"missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
