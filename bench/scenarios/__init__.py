"""Scenarios own the load shape: which requests go to the engine, when, and in what batches.

Each scenario module has `run(ctx) -> list[RequestRecord]`; warm-up records carry repetition -1.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext

Runner = Callable[[ScenarioContext], list[RequestRecord]]


def scenario_runner(kind: str) -> Runner:
    if kind == "single-stream":
        from bench.scenarios.single_stream import run
    elif kind == "offline":
        from bench.scenarios.offline import run
    elif kind == "prefill-decode":
        from bench.scenarios.prefill_decode import run
    elif kind in ("concurrency", "rate"):
        from bench.scenarios.served import run
    elif kind == "capacity":
        from bench.scenarios.capacity import run
    elif kind == "trace":
        from bench.scenarios.trace import run
    else:
        raise ValueError(f"unknown scenario kind {kind!r}")
    return run


__all__ = ["ScenarioContext", "scenario_runner"]
