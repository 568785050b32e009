"""Load shapes against a server (engine `openai`), run on asyncio in the cell process.

- concurrency: a closed loop; N users each send their next request when the last one ends.
- rate: an open loop; requests go out on a schedule (Poisson with a gamma burstiness knob, or
  constant), whatever the server does. Each record's submit_time is the SCHEDULED time, so a slow
  server or a lagging client cannot hide delay (no coordinated omission); sent_time keeps the
  actual send, and their difference is the load generator's lag.

Requests are spread round-robin over the endpoints; each record names its endpoint. A load point
may be spread over several client processes (run.client_processes; bench/serving/workers.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from bench.engines.base import ServedEngine
from bench.profile.workloads import Request, token_ids_sha256
from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext
from bench.serving.client import Connection, StreamResult
from bench.serving.workers import START_MARGIN_S, Report, choose_client_processes, fan_out, usable_cores


def served_engine(ctx: ScenarioContext) -> ServedEngine:
    """The cell's engine as a served one: the served load shapes need its endpoints and request bodies."""
    if not isinstance(ctx.engine, ServedEngine):
        raise TypeError(f"scenario {ctx.scenario.kind!r} needs a served engine (kind openai), not {ctx.engine!r}")
    return ctx.engine


def arrival_stream(rate: float, arrival: str, burstiness: float, seed: int) -> Iterator[float]:
    """Offsets (s) of sends at `rate` per second, endlessly: constant, or gamma-distributed gaps with mean
    1/rate (burstiness 1 is Poisson, below 1 burstier, above 1 more regular), as vLLM's benchmark."""
    if arrival == "constant":
        yield from (i / rate for i in itertools.count())
        return
    rng = random.Random(seed)
    now = 0.0
    while True:
        yield now
        now += rng.gammavariate(burstiness, 1 / (rate * burstiness))


def arrival_times(count: int, rate: float, arrival: str, burstiness: float, seed: int) -> list[float]:
    """The first `count` offsets of the arrival stream."""
    return list(itertools.islice(arrival_stream(rate, arrival, burstiness, seed), count))


def open_loop_schedule(ctx: ScenarioContext, requests: Iterable[Request], offsets: Iterable[float],
                       count: int | None = None) -> tuple[list[Request], list[float]]:
    """An open loop's sends, sized as a repetition is: requests on their offsets until both floors hold
    (at least `count` (default: the plan's) sends, and the last one at or after the duration floor), none
    scheduled after run.max_duration_s. The schedule itself never depends on the server's speed."""
    plan = ctx.plan
    floor = plan.min_requests_per_repetition if count is None else count
    chosen: list[Request] = []
    times: list[float] = []
    for request, offset in zip(requests, offsets, strict=False):  # both endless or the requests shorter
        if plan.max_duration_s is not None and offset >= plan.max_duration_s and times:
            break
        if len(times) >= floor and times and times[-1] >= plan.min_duration_per_repetition_s:
            break
        chosen.append(request)
        times.append(offset)
    return chosen, times


def _record(ctx: ScenarioContext, request: Request, result: StreamResult, repetition: int, scheduled: float,
            endpoint: str, batch_index: int) -> RequestRecord:
    """One served request's record; each request is its own 'batch' (the server batches, not us).
    The server's usage, when it gives one, is the token count (a chunk may carry several tokens and,
    without token ids, is counted as one); each chunk's arrival and count are kept beside it. A
    structured answer ends when its structure does: it is judged on validity, not on its length."""
    from bench.scenarios.common import describe_request

    times = [t - ctx.t0 for t in result.token_times]
    counted = len(times)
    produced = result.usage_completion_tokens if result.usage_completion_tokens is not None else counted
    error = result.error
    structured = request.structured
    if error is None and produced != request.output_tokens and structured is None:
        error = f"short output: {produced} of {request.output_tokens} tokens"
    record = RequestRecord(
        request_id=request.index, repetition=repetition, batch_index=batch_index, batch_size=1,
        # a conversation's turn: the prompt as the server rendered and tokenised its messages
        input_tokens=len(result.prompt_token_ids if request.turn is not None and result.prompt_token_ids
                         else request.prompt_token_ids),
        expected_output_tokens=request.output_tokens,
        submit_time=scheduled - ctx.t0, first_token_time=times[0] if times else None,
        end_time=times[-1] if times else None, token_times=times, output_tokens=produced,
        finish_reason="length" if error is None else "error", error=error,
        prompt_sha256=token_ids_sha256(request.unsalted_ids), sent_time=result.sent - ctx.t0,
        usage_output_tokens=result.usage_completion_tokens, endpoint=endpoint,
        chunk_times=[t - ctx.t0 for t in result.chunk_times], chunk_tokens=list(result.chunk_tokens),
        chunk_tokens_exact=result.exact_token_ids is not None, retry_after=result.retry_after,
        response_sha256=response_sha256(result),
        prompt_text=_prompt_text(ctx, request) if ctx.store_text else None,
        response_text=result.text if ctx.store_text else None,
    )
    describe_request(record, request)
    if any(result.chunk_reasoning):  # reasoning apart from the answer: both first-token times
        record.reasoning_tokens = _reasoning_count(result, produced)
        first_answer = result.first_answer
        record.first_answer_time = first_answer - ctx.t0 if first_answer is not None else None
    if structured is not None:
        from bench.measure.structured import judge_answer

        record.structured = structured
        if result.ok:
            record.structured_valid, record.structured_problem = judge_answer(
                request.options or {}, result.answer_text, list(result.tool_calls.values()))
    return record


def _reasoning_count(result: StreamResult, produced: int) -> int:
    """Reasoning tokens: per chunk where counts are exact (token ids), else one a chunk, scaled to the server's
    usage when it counted differently (the split between reasoning and answer chunks is kept)."""
    reasoning = result.reasoning_tokens
    counted = sum(result.chunk_tokens)
    if counted and produced != counted and result.exact_token_ids is None:
        return round(reasoning * produced / counted)
    return reasoning


def response_sha256(result: StreamResult) -> str | None:
    """What identifies the output: its token ids where the server returned them all, else its text when
    it has any; None ("not known") otherwise, never the hash of nothing."""
    ids = result.exact_token_ids
    if ids is not None:
        return token_ids_sha256(ids)
    return hashlib.sha256(result.text.encode()).hexdigest() if result.text else None


def _prompt_text(ctx: ScenarioContext, request: Request) -> str | None:
    """The prompt as written (prompt files) or decoded; None when the model directory has no tokenizer."""
    if request.text is not None:
        return request.text
    try:
        return str(ctx.engine.decode(request.prompt_token_ids))
    except (OSError, ValueError):
        return None


# Stop rules: no new request after run.max_duration_s (those in flight finish and count), nor once at
# least run.stop_min_requests finished and more than run.stop_error_rate of them failed (a dead or
# drowning server: waiting out hundreds of timeouts measures nothing). Unsent requests are not
# records; why a repetition stopped goes into ctx.stops, and from there into the cell summary. With
# several client processes each judges its own records (no shared state between processes).


def stop_reason(ctx: ScenarioContext, started: float, records: list[RequestRecord]) -> str | None:
    if ctx.out_of_time(started):
        return f"run.max_duration_s {ctx.max_duration_s:g} s reached after {len(records)} requests"
    failed = sum(1 for r in records if not r.ok)
    if len(records) >= ctx.stop_min_requests and failed > ctx.stop_error_rate * len(records):
        return f"error rate {failed / len(records):.2f} > {ctx.stop_error_rate:g} after {len(records)} requests"
    return None


def should_stop(ctx: ScenarioContext, started: float, records: list[RequestRecord], repetition: int) -> bool:
    reason = stop_reason(ctx, started, records)
    if reason is not None:
        ctx.stops.setdefault(repetition, reason)
    return reason is not None


async def _closed_loop(ctx: ScenarioContext, requests: Iterator[Request], users: Sequence[int], repetition: int,
                       records: list[RequestRecord], more: Callable[[float, int], bool],
                       started: float | None = None, total: int = 0) -> None:
    """`users` (their numbers pick their endpoints) share the requests, each sending its next when its last
    ends, while `more(started, issued)` says so (the floors; warm-up: until the requests run out)."""
    engine = served_engine(ctx)
    timeout = engine.request_timeout_s
    started = time.perf_counter() if started is None else started
    issued = 0
    first_send: float | None = None  # the time floor counts from here, where the measured span begins

    async def user(number: int) -> None:
        nonlocal issued, first_send
        host, port, prefix = engine.address(number)
        connection = Connection(host, port, engine.api_key)
        try:
            while more(first_send or started, issued) and not should_stop(ctx, started, records, repetition):
                request = next(requests, None)
                if request is None:
                    break
                issued += 1
                scheduled = time.perf_counter()
                first_send = scheduled if first_send is None else first_send
                route = f"{prefix}{engine.route_for(request)}"
                result = await connection.stream(route, engine.payload(request), timeout, engine.think_tags)
                records.append(_record(ctx, request, result, repetition, scheduled, f"{host}:{port}", request.index))
                ctx.progress(_phase(ctx, repetition), len(records), total)
        finally:
            await connection.close()

    await asyncio.gather(*(user(n) for n in users))


async def _open_loop(ctx: ScenarioContext, schedule: list[tuple[int, Request, float]], repetition: int,
                     records: list[RequestRecord], start: float | None = None) -> None:
    """Send each (index, request, offset) at start + offset whatever the server does; the index picks the
    endpoint. Without a start (one process), a moment from now to set up the tasks before the first send."""
    engine = served_engine(ctx)
    timeout = engine.request_timeout_s
    start = time.perf_counter() + START_MARGIN_S if start is None else start

    async def send(index: int, request: Request, offset: float) -> None:
        scheduled = start + offset
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if should_stop(ctx, start, records, repetition):
            return
        host, port, prefix = engine.address(index)
        connection = Connection(host, port, engine.api_key)  # open loop: a connection per request
        try:
            route = f"{prefix}{engine.route_for(request)}"
            result = await connection.stream(route, engine.payload(request), timeout, engine.think_tags)
        finally:
            await connection.close()
        records.append(_record(ctx, request, result, repetition, scheduled, f"{host}:{port}", request.index))
        ctx.progress(_phase(ctx, repetition), len(records), len(schedule))

    await asyncio.gather(*(send(*item) for item in schedule))


def _phase(ctx: ScenarioContext, repetition: int) -> str:
    if repetition < 0:
        return "warm-up"
    if ctx.scenario.kind == "capacity":
        return f"capacity probe {repetition + 1}"
    return ctx.phase(repetition)


def _drain(_started: float, _issued: int) -> bool:
    return True


def warm_up(ctx: ScenarioContext) -> list[RequestRecord]:
    """Warm-up requests one at a time before any measured one (repetition -1: in no metric): run.warmup
    of them, or (auto) until two in a row agree (bench/scenarios/common.py, warmup_batches)."""
    stream = ctx.stream(0)

    def one(index: int) -> list[RequestRecord]:
        done: list[RequestRecord] = []
        asyncio.run(_closed_loop(ctx, iter(itertools.islice(stream, 1)), [0], -1, done, _drain))
        for record in done:
            record.batch_index = index
        return done

    warm = ctx.warmup_batches(one)
    if -1 in ctx.stops:
        ctx.stops[-1] = f"warm-up: {ctx.stops[-1]}"
    return warm


def run_point(ctx: ScenarioContext, requests: Iterable[Request], repetition: int, *, users: int | None = None,
              offsets: list[float] | None = None, count: int | None = None) -> list[RequestRecord]:
    """One load point (a repetition, or a capacity probe): `users` closed-loop users sending from the
    `requests` stream until both floors hold (`count`, default the plan's, and the duration floor), or
    open-loop sends of the `requests` list at `offsets` (s after the start; see open_loop_schedule), in one
    process or spread over run.client_processes (see bench/serving/workers.py). Records come back sorted
    by request id; a stop rule's cut and what bound the point are noted."""
    assert (users is None) != (offsets is None)
    floor = ctx.plan.min_requests_per_repetition if count is None else count
    planned = list(requests) if offsets is not None else []
    load = _load(planned, users, offsets)
    processes, why = choose_client_processes(ctx.client_processes, load, ctx.loadgen_ceiling, usable_cores())
    processes = max(1, min(processes, users if users is not None else len(planned)))
    point: dict[str, Any] = {"repetition": repetition, "processes": processes, "reason": why, "load": load}
    records: list[RequestRecord] = []
    started = time.perf_counter()
    if processes == 1:
        if users is not None:
            def more(start: float, issued: int) -> bool:
                return ctx.keep_issuing(start, issued, floor)

            asyncio.run(_closed_loop(ctx, iter(requests), range(users), repetition, records, more, started,
                                     floor))
        else:
            assert offsets is not None
            schedule = [(i, r, offsets[i]) for i, r in enumerate(planned)]
            asyncio.run(_open_loop(ctx, schedule, repetition, records))
    else:
        records = _run_in_processes(ctx, requests if users is not None else planned, repetition, processes, users,
                                    offsets, point, floor)
    ctx.client_points.append(point)
    expected = len(planned) if offsets is not None else floor
    if repetition in ctx.stops and len(records) < expected:
        ctx.stops[repetition] = (f"{_phase(ctx, repetition)}: {ctx.stops[repetition]}; "
                                 f"{expected - len(records)} of {expected} requests not sent")
    ctx.note_repetition(repetition, started, len(records), floor)
    return sorted(records, key=lambda r: r.request_id)


def _load(requests: list[Request], users: int | None, offsets: list[float] | None) -> dict[str, float]:
    """The load point in the units of the calibrated ceiling: users, or requests/s and streamed tokens/s."""
    if users is not None:
        return {"users": float(users)}
    assert offsets is not None
    span = max(offsets) - min(offsets) if offsets else 0.0
    if len(offsets) < 2 or span <= 0:
        return {}
    rate = (len(offsets) - 1) / span
    return {"requests_per_s": rate, "tokens_per_s": rate * sum(r.output_tokens for r in requests) / len(requests)}


def _run_in_processes(ctx: ScenarioContext, requests: Iterable[Request], repetition: int, processes: int,
                      users: int | None, offsets: list[float] | None, point: dict[str, Any],
                      count: int) -> list[RequestRecord]:
    """Closed loop: users round-robin over the processes, each request of the stream going with the user
    it would have fallen to (so a process's share of requests matches its share of users), each process
    issuing its share of the count floor and all of them held open by the one duration floor; open loop:
    the schedule round-robin. Every worker sends on the same absolute start time."""
    def mine(j: int, w: int) -> bool:
        return ((j % users) % processes if users is not None else j % processes) == w

    shares: list[Any]  # per worker: its requests (closed loop: a stream) or its (index, request, offset) sends
    if users is not None:
        stream = iter(requests)  # forked: every worker walks its own copy of the stream, keeping its share

        def share_of(w: int) -> Iterator[Request]:
            return (r for j, r in enumerate(stream) if mine(j, w))

        shares = [share_of(w) for w in range(processes)]
    else:
        assert offsets is not None
        shares = [[(j, r, offsets[j]) for j, r in enumerate(requests) if mine(j, w)] for w in range(processes)]
    phase = _phase(ctx, repetition)

    def work(index: int, start: float, report: Report) -> dict[str, Any]:
        # This runs in the forked worker: ctx is its own copy, and progress goes to the parent.
        ctx.progress = lambda _phase, done, _total: report(phase, done)
        ctx.stops.clear()
        done: list[RequestRecord] = []
        if users is not None:
            share = sum(1 for j in range(count) if mine(j, index))

            def more(begin: float, issued: int) -> bool:
                return ctx.keep_issuing(begin, issued, share)

            asyncio.run(_closed_loop(ctx, shares[index], range(index, users, processes), repetition, done, more,
                                     start, share))
        else:
            asyncio.run(_open_loop(ctx, shares[index], repetition, done, start))
        for record in done:
            record.client_process = index
        return {"records": [r.to_json() for r in done], "stop": ctx.stops.get(repetition)}

    results = fan_out(processes, work, lambda _phase, done: ctx.progress(phase, done, count))
    stops = [(i, r["stop"]) for i, r in enumerate(results) if r["stop"]]
    if stops:
        first, reason = stops[0]
        ctx.stops.setdefault(repetition, f"{reason} (client process {first}; {len(stops)} of {processes} stopped)")
    point["pids"] = [r["pid"] for r in results]
    point["process_cpu_pct"] = [r["cpu_pct"] for r in results]
    return [RequestRecord.from_json(data) for r in results for data in r["records"]]


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    if ctx.workload is not None and ctx.workload.kind == "conversation":
        from bench.scenarios.conversation import run_served

        return run_served(ctx)
    point = ctx.scenario
    records: list[RequestRecord] = warm_up(ctx)
    for repetition in ctx.repetition_indices(records):
        stream = ctx.stream(repetition + 1)
        if point.kind == "concurrency":
            records += run_point(ctx, stream, repetition, users=point.users)
        else:
            arrivals = arrival_stream(point.rate, point.arrival, point.burstiness, repetition)
            requests, offsets = open_loop_schedule(ctx, stream, arrivals)
            records += run_point(ctx, requests, repetition, offsets=offsets)
    return records
