"""What every in-process scenario shares: the context, request making, and batch -> records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.engines.base import BatchResult, Engine
from bench.records import RequestRecord
from bench.workloads import Request, file_requests, synthetic_requests, token_ids_sha256

Progress = Callable[[str, int, int], None]


@dataclass
class ScenarioContext:
    engine: Engine
    scenario: dict[str, Any]
    workload: dict[str, Any] | None
    repetitions: int
    warmup: int
    max_duration_s: float | None
    t0: float  # perf_counter at the start of the cell; record times are relative to it
    progress: Progress

    def requests(self, count: int, stream: int) -> list[Request]:
        """Requests for a repetition (stream = repetition + 1) or for warm-up (stream 0)."""
        assert self.workload is not None
        if self.workload.get("prompts_file"):
            return file_requests(self.workload, count, self.engine.encode, stream)
        return synthetic_requests(self.workload, count, self.engine.token_space(), stream)

    def out_of_time(self, repetition_start: float) -> bool:
        return self.max_duration_s is not None and time.perf_counter() - repetition_start >= self.max_duration_s


def batch_records(
    result: BatchResult,
    requests: list[Request],
    t0: float,
    repetition: int,
    batch_index: int,
) -> list[RequestRecord]:
    """Per-request records from one batch; a short output becomes an error on its record."""
    records = []
    for row, request in enumerate(requests):
        produced = result.output_tokens[row]
        times = [t - t0 for t in result.step_times[:produced]]
        error = None
        if produced != request.output_tokens:
            error = f"short output: {produced} of {request.output_tokens} tokens"
        records.append(
            RequestRecord(
                request_id=request.index,
                repetition=repetition,
                batch_index=batch_index,
                batch_size=len(requests),
                input_tokens=len(request.prompt_token_ids),
                expected_output_tokens=request.output_tokens,
                submit_time=result.submit_time - t0,
                first_token_time=times[0] if times else None,
                end_time=times[-1] if times else None,
                token_times=times,
                output_tokens=produced,
                finish_reason=result.finish_reasons[row],
                error=error,
                context_depth=result.context_depth,
                prompt_sha256=token_ids_sha256(request.prompt_token_ids),
            )
        )
    return records


def run_batched(ctx: ScenarioContext, batch_size: int, requests_per_repetition: int) -> list[RequestRecord]:
    """Warm-up, then each repetition's requests in batches of `batch_size` (1: single stream)."""
    records: list[RequestRecord] = []
    if ctx.warmup:
        warm = ctx.requests(ctx.warmup * batch_size, 0)
        for index, start in enumerate(range(0, len(warm), batch_size)):
            ctx.progress("warm-up", start, len(warm))
            chunk = warm[start:start + batch_size]
            result = ctx.engine.generate([r.prompt_token_ids for r in chunk], [r.output_tokens for r in chunk])
            records += batch_records(result, chunk, ctx.t0, -1, index)
    for repetition in range(ctx.repetitions):
        requests = ctx.requests(requests_per_repetition, repetition + 1)
        started = time.perf_counter()
        for index, start in enumerate(range(0, len(requests), batch_size)):
            ctx.progress(f"repetition {repetition + 1}/{ctx.repetitions}", start, len(requests))
            chunk = requests[start:start + batch_size]
            result = ctx.engine.generate([r.prompt_token_ids for r in chunk], [r.output_tokens for r in chunk])
            records += batch_records(result, chunk, ctx.t0, repetition, index)
            if ctx.out_of_time(started):
                break
    return records
