"""What every in-process scenario shares: the context, request making, and batch -> records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.engines.base import BatchResult, Engine
from bench.records import RequestRecord
from bench.workloads import Request, file_requests, synthetic_requests, token_ids_sha256

Progress = Callable[[str, int, int], None]
Decoder = Callable[[list[int]], str | None]


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
    store_text: bool = False  # run.store_text: records keep prompt and response text (else hashes only)
    # Served load shapes: the error-rate stop rule (run.stop_error_rate after run.stop_min_requests),
    # run.client_processes (an int or "auto") and this machine's calibrated single-process ceiling.
    stop_error_rate: float = 0.5
    stop_min_requests: int = 10
    client_processes: int | str = 1
    loadgen_ceiling: dict[str, Any] | None = None
    # What the served load shapes report for result.json: why a repetition was cut short (by its
    # index), and per load point how many client processes sent it and why.
    stops: dict[int, str] = field(default_factory=dict)
    client_points: list[dict[str, Any]] = field(default_factory=list)

    def decoder(self) -> Decoder | None:
        """The engine's detokenizer when run.store_text asks for text; None otherwise, so nothing is decoded."""
        return getattr(self.engine, "decode", None) if self.store_text else None

    def requests(self, count: int, stream: int) -> list[Request]:
        """Requests for a repetition (stream = repetition + 1) or for warm-up (stream 0)."""
        assert self.workload is not None
        if self.workload.get("prompts_file"):
            return file_requests(self.workload, count, self.engine.encode, stream)
        return synthetic_requests(self.workload, count, self.engine.token_space(), stream)

    def out_of_time(self, repetition_start: float) -> bool:
        return self.max_duration_s is not None and time.perf_counter() - repetition_start >= self.max_duration_s

    def client_report(self) -> dict[str, Any] | None:
        """The load generator's own account for result.json (served cells only): early stops and processes."""
        if not self.client_points and not self.stops:
            return None
        busiest = max(self.client_points, key=lambda p: p["processes"], default=None)
        cpu = [c for p in self.client_points for c in p.get("process_cpu_pct") or [] if c is not None]
        return {
            "stopped": [self.stops[k] for k in sorted(self.stops)],
            "client_processes": busiest["processes"] if busiest else 1,
            "client_processes_reason": busiest["reason"] if busiest else None,
            "client_pids": sorted({pid for p in self.client_points for pid in p.get("pids") or []}),
            "process_cpu_pct_max": max(cpu, default=None),
        }


def batch_records(
    result: BatchResult,
    requests: list[Request],
    t0: float,
    repetition: int,
    batch_index: int,
    decode: Decoder | None = None,
) -> list[RequestRecord]:
    """Per-request records from one batch; a short output becomes an error on its record. With
    `decode` (run.store_text) each record also carries its prompt and response text."""
    records = []
    for row, request in enumerate(requests):
        produced = result.output_tokens[row]
        steps = result.row_step_times[row] if result.row_step_times is not None else result.step_times
        times = [t - t0 for t in steps[:produced]]
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
                engine_timing=_relative(result.engine_timing[row], t0) if result.engine_timing is not None else None,
            )
        )
        output_ids = result.output_token_ids[row] if result.output_token_ids is not None else None
        if output_ids is not None:
            records[-1].response_sha256 = token_ids_sha256(output_ids)
        if decode is not None:
            records[-1].prompt_text = request.text if request.text is not None else decode(request.prompt_token_ids)
            records[-1].response_text = decode(output_ids) if output_ids is not None else None
    return records


ENGINE_STAMPS = ("queued", "scheduled", "first_token", "last_token")


def _relative(timing: dict[str, Any] | None, t0: float) -> dict[str, Any] | None:
    """An engine's own timestamps, on the cell's clock, made relative to the cell's start like every time."""
    if timing is None:
        return None
    return {k: (v - t0 if k in ENGINE_STAMPS else v) for k, v in timing.items()}


def run_batched(ctx: ScenarioContext, batch_size: int, requests_per_repetition: int) -> list[RequestRecord]:
    """Warm-up, then each repetition's requests in batches of `batch_size` (1: single stream)."""
    records: list[RequestRecord] = []
    if ctx.warmup:
        warm = ctx.requests(ctx.warmup * batch_size, 0)
        for index, start in enumerate(range(0, len(warm), batch_size)):
            ctx.progress("warm-up", start, len(warm))
            chunk = warm[start:start + batch_size]
            result = ctx.engine.generate([r.prompt_token_ids for r in chunk], [r.output_tokens for r in chunk])
            records += batch_records(result, chunk, ctx.t0, -1, index, ctx.decoder())
    for repetition in range(ctx.repetitions):
        requests = ctx.requests(requests_per_repetition, repetition + 1)
        started = time.perf_counter()
        for index, start in enumerate(range(0, len(requests), batch_size)):
            ctx.progress(f"repetition {repetition + 1}/{ctx.repetitions}", start, len(requests))
            chunk = requests[start:start + batch_size]
            result = ctx.engine.generate([r.prompt_token_ids for r in chunk], [r.output_tokens for r in chunk])
            records += batch_records(result, chunk, ctx.t0, repetition, index, ctx.decoder())
            if ctx.out_of_time(started):
                break
    return records
