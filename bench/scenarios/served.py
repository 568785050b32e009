"""Load shapes against a server (engine `openai`), run on asyncio in the cell process.

- concurrency: a closed loop; N users each send their next request when the last one ends.
- rate: an open loop; requests go out on a schedule (Poisson with a gamma burstiness knob, or
  constant), whatever the server does. Each record's submit_time is the SCHEDULED time, so a slow
  server or a lagging client cannot hide delay (no coordinated omission); sent_time keeps the
  actual send, and their difference is the load generator's lag.

Requests are spread round-robin over the endpoints; each record names its endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from typing import Any

from bench.records import RequestRecord
from bench.scenarios.common import ScenarioContext
from bench.serving.client import Connection, StreamResult
from bench.workloads import Request, token_ids_sha256


def arrival_times(count: int, rate: float, arrival: str, burstiness: float, seed: int) -> list[float]:
    """Offsets (s) of `count` sends at `rate` per second: constant, or gamma-distributed gaps with mean
    1/rate (burstiness 1 is Poisson, below 1 burstier, above 1 more regular), as vLLM's benchmark."""
    if arrival == "constant":
        return [i / rate for i in range(count)]
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += rng.gammavariate(burstiness, 1 / (rate * burstiness))
    return times


def _record(ctx: ScenarioContext, request: Request, result: StreamResult, repetition: int, scheduled: float,
            endpoint: str, batch_index: int) -> RequestRecord:
    """One served request's record; each request is its own 'batch' (the server batches, not us)."""
    times = [t - ctx.t0 for t in result.token_times]
    produced = len(times)
    error = result.error
    if error is None and produced != request.output_tokens:
        error = f"short output: {produced} of {request.output_tokens} tokens"
    return RequestRecord(
        request_id=request.index, repetition=repetition, batch_index=batch_index, batch_size=1,
        input_tokens=len(request.prompt_token_ids), expected_output_tokens=request.output_tokens,
        submit_time=scheduled - ctx.t0, first_token_time=times[0] if times else None,
        end_time=times[-1] if times else None, token_times=times, output_tokens=produced,
        finish_reason="length" if error is None else "error", error=error,
        prompt_sha256=token_ids_sha256(request.prompt_token_ids), sent_time=result.sent - ctx.t0,
        usage_output_tokens=result.usage_completion_tokens, endpoint=endpoint,
        response_sha256=hashlib.sha256(result.text.encode()).hexdigest(),
        prompt_text=_prompt_text(ctx, request) if ctx.store_text else None,
        response_text=result.text if ctx.store_text else None,
    )


def _prompt_text(ctx: ScenarioContext, request: Request) -> str | None:
    """The prompt as written (prompt files) or decoded; None when the model directory has no tokenizer."""
    if request.text is not None:
        return request.text
    try:
        return str(ctx.engine.decode(request.prompt_token_ids))  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None


# Stop rules: no new request after run.max_duration_s (those in flight finish and count), nor once at
# least STOP_AFTER requests finished and more than STOP_ERROR_RATE of them failed (a dead or drowning
# server: waiting out hundreds of timeouts measures nothing). Unsent requests are not records.
STOP_AFTER, STOP_ERROR_RATE = 10, 0.5


def should_stop(ctx: ScenarioContext, started: float, records: list[RequestRecord]) -> bool:
    if ctx.out_of_time(started):
        return True
    failed = sum(1 for r in records if not r.ok)
    return len(records) >= STOP_AFTER and failed > STOP_ERROR_RATE * len(records)


async def _closed_loop(ctx: ScenarioContext, requests: list[Request], users: int, repetition: int,
                       records: list[RequestRecord]) -> None:
    engine: Any = ctx.engine
    queue = list(reversed(requests))
    timeout = engine.settings.get("request_timeout_s", 600)
    started = time.perf_counter()

    async def user(number: int) -> None:
        host, port, prefix = engine.address(number)
        connection = Connection(host, port, engine.api_key)
        try:
            while queue and not should_stop(ctx, started, records):
                request = queue.pop()
                scheduled = time.perf_counter()
                result = await connection.stream(f"{prefix}{engine.route}", engine.payload(request), timeout)
                records.append(_record(ctx, request, result, repetition, scheduled, f"{host}:{port}", request.index))
                ctx.progress(f"repetition {repetition + 1}/{ctx.repetitions}", len(records), len(requests))
        finally:
            await connection.close()

    await asyncio.gather(*(user(n) for n in range(users)))


async def _open_loop(ctx: ScenarioContext, requests: list[Request], point: dict[str, Any], repetition: int,
                     records: list[RequestRecord], offsets: list[float] | None = None) -> None:
    engine: Any = ctx.engine
    if offsets is None:  # a trace brings its own arrival times
        offsets = arrival_times(len(requests), point["rate"], point["arrival"], point["burstiness"], repetition)
    timeout = engine.settings.get("request_timeout_s", 600)
    start = time.perf_counter() + 0.05  # a moment to set up the tasks before the first send is due

    async def send(index: int, request: Request) -> None:
        scheduled = start + offsets[index]
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if should_stop(ctx, start, records):
            return
        host, port, prefix = engine.address(index)
        connection = Connection(host, port, engine.api_key)  # open loop: a connection per request
        try:
            result = await connection.stream(f"{prefix}{engine.route}", engine.payload(request), timeout)
        finally:
            await connection.close()
        records.append(_record(ctx, request, result, repetition, scheduled, f"{host}:{port}", request.index))
        ctx.progress(f"repetition {repetition + 1}/{ctx.repetitions}", len(records), len(requests))

    await asyncio.gather(*(send(i, r) for i, r in enumerate(requests)))


def warm_up(ctx: ScenarioContext) -> list[RequestRecord]:
    """`run.warmup` requests one at a time before any measured one (repetition -1: in no metric)."""
    warm: list[RequestRecord] = []
    if ctx.warmup:
        asyncio.run(_closed_loop(ctx, ctx.requests(ctx.warmup, 0), 1, -1, warm))
    return warm


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    point = ctx.scenario
    records: list[RequestRecord] = warm_up(ctx)
    for repetition in range(ctx.repetitions):
        requests = ctx.requests(point["requests"], repetition + 1)
        done: list[RequestRecord] = []
        if point["kind"] == "concurrency":
            asyncio.run(_closed_loop(ctx, requests, point["users"], repetition, done))
        else:
            asyncio.run(_open_loop(ctx, requests, point, repetition, done))
        records += sorted(done, key=lambda r: r.request_id)
    return records
