"""Capacity: the most load (request rate, or concurrent users) whose SLO percentiles hold.

Each probe is a load point run like the `rate` (open loop, latency from the scheduled send) or
`concurrency` (closed loop) scenario, with enough requests for the SLO percentile. Every record
keeps the load it was sent under and the probe's index as its repetition, so the headline
(bench/measure/capacity_search.py) is re-derived from the raw records. Each probe is sized like a repetition (the
SLO percentile's requests and the duration floor, both); probes stop at run.max_duration_s overall.
"""

from __future__ import annotations

import dataclasses
import time

from bench.measure import slo
from bench.measure.capacity_search import next_load, requests_per_probe
from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext
from bench.scenarios.served import arrival_stream, open_loop_schedule, run_point, warm_up

MAX_PROBES = 16  # doubling from 1/s to 256/s and 3 bisections need 12; a bound, whatever the profile says


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    point = ctx.scenario
    records = warm_up(ctx)
    history: list[tuple[float, bool]] = []
    count = requests_per_probe(point)
    started = time.perf_counter()
    while len(history) < MAX_PROBES and not ctx.out_of_time(started):
        load = next_load(point, history)
        if load is None:
            break
        index = len(history)
        stream = ctx.stream(index + 1)
        # Each probe is sized as a repetition: enough requests for the SLO percentile AND the duration floor.
        if point.search == "rate":
            arrivals = arrival_stream(load, point.arrival, point.burstiness, index)
            requests, offsets = open_loop_schedule(ctx, stream, arrivals, count)
            done = run_point(ctx, requests, index, offsets=offsets, count=count)
        else:
            done = run_point(ctx, stream, index, users=int(load), count=count)
        done = [dataclasses.replace(r, load_point=load) for r in done]
        records += done
        history.append((load, slo.evaluate(done, point.slo)["verdict"] == "MET"))
        ctx.progress(f"capacity probe {index + 1}: {load:g} {'MET' if history[-1][1] else 'missed'}",
                     index + 1, index + 1)
    ctx.repetitions_done = len(history)
    return records
