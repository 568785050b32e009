"""Trace replay: the requests of a JSONL trace (bench/profile/trace_file.py) sent open-loop at their timestamps
(divided by the speedup), with their own input and output lengths. Latency counts from the
scheduled time, as in the `rate` scenario. Prompts are synthetic token ids of the stated lengths,
seeded by the workload's seed and the repetition. A duration floor longer than the trace replays it
again (bench/measure/sizing.py): each request of the trace is sent at least once per repetition."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

from bench.profile.trace_file import TraceEntry, load_trace
from bench.profile.workloads import Request
from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext
from bench.scenarios.served import open_loop_schedule, run_point, warm_up


def trace_requests(ctx: ScenarioContext, entries: list[TraceEntry], stream: int) -> Iterator[Request]:
    """The trace's requests, endlessly: each pass over the trace continues the same seeded token stream."""
    space = ctx.engine.token_space()
    rng = random.Random(f"{ctx.workload.seed if ctx.workload else 0}/trace/{stream}")
    for i in itertools.count():
        entry = entries[i % len(entries)]
        yield Request(i, space.draw(rng, entry.input_tokens), entry.output_tokens)


def trace_offsets(entries: list[TraceEntry], speedup: float) -> Iterator[float]:
    """Each entry at its timestamp divided by the speedup; a time floor longer than the trace replays it
    again, each pass one mean gap after the last."""
    first = entries[0].timestamp
    relative = [(e.timestamp - first) / speedup for e in entries]
    period = relative[-1] + (relative[-1] / (len(entries) - 1) if len(entries) > 1 else 1.0 / speedup)
    for i in itertools.count():
        yield (i // len(entries)) * period + relative[i % len(entries)]


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    point = ctx.scenario
    entries = load_trace(Path(point.file))[: point.requests or None]
    records = warm_up(ctx)
    for repetition in ctx.repetition_indices(records):
        requests, offsets = open_loop_schedule(ctx, trace_requests(ctx, entries, repetition + 1),
                                               trace_offsets(entries, point.speedup))
        records += run_point(ctx, requests, repetition, offsets=offsets)
    return records
