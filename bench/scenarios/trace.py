"""Trace replay: the requests of a JSONL trace (bench/trace.py) sent open-loop at their timestamps
(divided by the speedup), with their own input and output lengths. Latency counts from the
scheduled time, as in the `rate` scenario. Prompts are synthetic token ids of the stated lengths,
seeded by the workload's seed and the repetition."""

from __future__ import annotations

import random
from pathlib import Path

from bench.records import RequestRecord
from bench.scenarios.common import ScenarioContext
from bench.scenarios.served import run_point, warm_up
from bench.trace import TraceEntry, load_trace
from bench.workloads import Request


def trace_requests(ctx: ScenarioContext, entries: list[TraceEntry], stream: int) -> list[Request]:
    space = ctx.engine.token_space()
    rng = random.Random(f"{(ctx.workload or {}).get('seed', 0)}/trace/{stream}")
    return [Request(i, space.draw(rng, e.input_tokens), e.output_tokens) for i, e in enumerate(entries)]


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    point = ctx.scenario
    entries = load_trace(Path(point["file"]))[: point.get("requests") or None]
    offsets = [(e.timestamp - entries[0].timestamp) / point["speedup"] for e in entries]
    records = warm_up(ctx)
    for repetition in range(ctx.repetitions):
        records += run_point(ctx, trace_requests(ctx, entries, repetition + 1), repetition, offsets=offsets)
    return records
