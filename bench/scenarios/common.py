"""What every scenario shares: the context, the request stream, the repetition and warm-up loops
that follow the cell's measurement plan (bench/measure/sizing.py), and batch -> records."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engines.base import BatchResult, Engine, ServedEngine
from bench.measure.metrics import repetition_rates
from bench.measure.sizing import MeasurementPlan, precise_enough, steady
from bench.profile.points import ScenarioPoint
from bench.profile.run_settings import RunSettings
from bench.profile.workload_specs import WorkloadSpec
from bench.profile.workloads import Request, request_stream, token_ids_sha256
from bench.results.records import RequestRecord

Progress = Callable[[str, int, int], None]
Decoder = Callable[[list[int]], str | None]


@dataclass
class ScenarioContext:
    engine: Engine | ServedEngine
    scenario: ScenarioPoint  # the cell's typed point: what load, how many
    workload: WorkloadSpec | None
    plan: MeasurementPlan
    t0: float  # perf_counter at the start of the cell; record times are relative to it
    progress: Progress
    # The cell's run settings: store_text (records keep prompt and response text, else hashes only) and,
    # for served load shapes, the error-rate stop rule and client_processes.
    run: RunSettings = field(default_factory=RunSettings)
    loadgen_ceiling: dict[str, Any] | None = None  # this machine's calibrated single-process ceiling
    # What the served load shapes report for result.json: why a repetition was cut short (by its
    # index), and per load point how many client processes sent it and why.
    stops: dict[int, str] = field(default_factory=dict)
    client_points: list[dict[str, Any]] = field(default_factory=list)
    # What the loops did, for result.json's sizing: repetitions run, warm-up batches and whether steady,
    # and per repetition what it issued, for how long, and which floor bound it.
    repetitions_done: int = 0
    warmup_done: dict[str, Any] = field(default_factory=dict)
    issued: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Conversations: the model directory (its tokenizer's chat template) and the context a turn must fit.
    model_dir: Path | None = None
    context_tokens: int | None = None
    # A salted workload's salt is drawn from this: the cell's own, new every run, so no cache of an
    # earlier run can serve it either (prompt hashes leave the salt out).
    salt_nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def store_text(self) -> bool:
        return self.run.store_text

    @property
    def stop_error_rate(self) -> float:
        return self.run.stop_error_rate

    @property
    def stop_min_requests(self) -> int:
        return self.run.stop_min_requests

    @property
    def client_processes(self) -> int | str:
        return self.run.client_processes

    @property
    def max_duration_s(self) -> float | None:
        return self.plan.max_duration_s

    def decoder(self) -> Decoder | None:
        """The engine's detokenizer when run.store_text asks for text; None otherwise, so nothing is decoded."""
        return getattr(self.engine, "decode", None) if self.store_text else None

    def stream(self, stream: int) -> Iterator[Request]:
        """The seeded request stream of a repetition (stream = repetition + 1) or of warm-up (stream 0):
        its first requests are the same on every machine, however many a fast machine goes on to use."""
        assert self.workload is not None
        encode = self.engine.encode if self.workload.prompts_file else None
        return request_stream(self.workload, self.engine.token_space(), stream, encode,
                              anchor=self.plan.min_requests_per_repetition, salt_nonce=self.salt_nonce)

    def requests(self, count: int, stream: int) -> list[Request]:
        """The first `count` requests of a stream."""
        return list(itertools.islice(self.stream(stream), count))

    def out_of_time(self, repetition_start: float) -> bool:
        return self.max_duration_s is not None and time.perf_counter() - repetition_start >= self.max_duration_s

    def measured_from(self, started: float, first_batch: list[RequestRecord]) -> float:
        """The time floor counts from the repetition's first submit (its measured span starts there),
        not from when the loop began, so a floor that held is a measured duration that holds."""
        return max(started, self.t0 + min((r.submit_time for r in first_batch), default=started - self.t0))

    def enough(self, repetition_start: float, issued: int, count: int | None = None,
               measured_until: float | None = None) -> bool:
        """Both floors hold for a repetition that started at `repetition_start` and issued `issued` requests;
        its time counted up to `measured_until` (where its records end) or, without one, to now."""
        until = time.perf_counter() if measured_until is None else measured_until
        return self.plan.enough(until - repetition_start, issued, count)

    def keep_issuing(self, repetition_start: float, issued: int, count: int | None = None,
                     measured_until: float | None = None) -> bool:
        """Issue more work: a floor does not hold yet, and run.max_duration_s has not passed."""
        return (not self.enough(repetition_start, issued, count, measured_until)
                and not self.out_of_time(repetition_start))

    def sequential_repetition(self, repetition: int,
                              run_batch: Callable[[int], list[RequestRecord]]) -> list[RequestRecord]:
        """One repetition of batches one after another (`run_batch(index)` runs batch `index`), until both
        floors hold, capped by run.max_duration_s. Its time is the records' own span, first submit to last
        end, which is what validity measures: the wall clock at the check runs on past the last end by
        the records' bookkeeping, and a floor met by that clock alone could be a span just short of it."""
        started = time.perf_counter()
        records: list[RequestRecord] = []
        issued = index = 0
        measured_until: float | None = None
        while self.keep_issuing(started, issued, measured_until=measured_until):
            self.progress(self.phase(repetition), issued, self.plan.min_requests_per_repetition)
            batch = run_batch(index)
            records += batch
            started = self.measured_from(started, batch) if index == 0 else started
            ends = [r.end_time for r in batch if r.end_time is not None]
            # a batch that ended nowhere (every request failed before its end) counts to now
            measured_until = self.t0 + max(ends) if ends else time.perf_counter()
            issued += len(batch)
            index += 1
        self.note_repetition(repetition, started, issued)
        return records

    def note_repetition(self, repetition: int, started: float, issued: int, count: int | None = None) -> None:
        """What a repetition issued and which floor ended it: the count, the duration or the cap."""
        elapsed = time.perf_counter() - started
        floor = self.plan.min_requests_per_repetition if count is None else count
        if self.out_of_time(started) and not self.plan.enough(elapsed, issued, count):
            bound = "max_duration_s"
        elif issued > floor:
            bound = "duration"  # more work than the count asked for: the time floor held it open
        else:
            bound = "count"
        self.issued[repetition] = {"requests": issued, "seconds": round(elapsed, 3), "bound": bound}

    def repetition_indices(self, records: list[RequestRecord]) -> Iterator[int]:
        """0, 1, ... : a fixed count, or (auto) at least the minimum, then one more while the 95% half-width
        of output tok/s over the repetitions so far (`records`, appended to by the caller) misses the target."""
        plan = self.plan.repetitions
        done = 0
        while done < plan.maximum:
            yield done
            done += 1
            self.repetitions_done = done
            if done >= plan.minimum and (plan.mode == "fixed" or precise_enough(self.rates(records), plan)):
                break

    def rates(self, records: list[RequestRecord]) -> list[float]:
        """Output tok/s of each measured repetition so far (the headline's per-repetition values)."""
        by_repetition: dict[int, list[RequestRecord]] = {}
        for record in records:
            if not record.warmup:
                by_repetition.setdefault(record.repetition, []).append(record)
        values = [repetition_rates(by_repetition[k])["output_tok_s"] for k in sorted(by_repetition)]
        return [v for v in values if v]

    def phase(self, repetition: int) -> str:
        plan = self.plan.repetitions
        if plan.mode == "fixed":
            return f"repetition {repetition + 1}/{plan.maximum}"
        return f"repetition {repetition + 1} (auto, {plan.minimum} to {plan.maximum})"

    def warmup_batches(self, run_one: Callable[[int], list[RequestRecord]]) -> list[RequestRecord]:
        """Warm-up: a fixed number of batches, or (auto) until two consecutive ones agree within the
        tolerance, at most max_batches. `run_one(index)` runs warm-up batch `index` and returns its records."""
        plan = self.plan.warmup
        records: list[RequestRecord] = []
        throughputs: list[float] = []
        index = 0
        while index < plan.max_batches:
            if plan.mode == "fixed" and index >= plan.batches:
                break
            self.progress("warm-up", index, plan.max_batches)
            batch = run_one(index)
            records += batch
            throughputs.append(repetition_rates(batch)["output_tok_s"] or 0.0)
            index += 1
            if plan.mode == "auto" and index >= plan.batches and steady(throughputs, plan.tolerance or 0.0):
                break
        self.warmup_done = {"batches": index, "mode": plan.mode,
                            "steady": steady(throughputs, plan.tolerance) if plan.mode == "auto" and plan.tolerance
                            else None,
                            "throughputs": [round(t, 3) for t in throughputs]}
        return records

    def sizing_report(self) -> dict[str, Any]:
        """For result.json: the plan followed and what the loops did under it."""
        return {"plan": self.plan.to_json(), "repetitions_done": self.repetitions_done,
                "warmup": self.warmup_done, "per_repetition": [self.issued[k] for k in sorted(self.issued)]}

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
                prompt_sha256=token_ids_sha256(request.unsalted_ids),
                engine_timing=_relative(result.engine_timing[row], t0) if result.engine_timing is not None else None,
            )
        )
        describe_request(records[-1], request)
        output_ids = result.output_token_ids[row] if result.output_token_ids is not None else None
        if output_ids is not None:
            records[-1].response_sha256 = token_ids_sha256(output_ids)
        if decode is not None:
            records[-1].prompt_text = request.text if request.text is not None else decode(request.prompt_token_ids)
            records[-1].response_text = decode(output_ids) if output_ids is not None else None
    return records


def describe_request(record: RequestRecord, request: Request) -> None:
    """What a request was beyond its lengths: its conversation turn, its document, its salt."""
    if request.turn is not None:
        turn = request.turn
        record.conversation, record.turn, record.history_tokens = turn.conversation, turn.turn, turn.history_tokens
        record.dropped_turns, record.think_time_s = turn.dropped_turns, turn.think_time_s
    record.document = request.document
    record.salt_tokens = request.salt_tokens or None


ENGINE_STAMPS = ("queued", "scheduled", "first_token", "last_token")


def _relative(timing: dict[str, Any] | None, t0: float) -> dict[str, Any] | None:
    """An engine's own timestamps, on the cell's clock, made relative to the cell's start like every time."""
    if timing is None:
        return None
    return {k: (v - t0 if k in ENGINE_STAMPS else v) for k, v in timing.items()}


def run_batched(ctx: ScenarioContext, batch_size: int) -> list[RequestRecord]:
    """Warm-up, then each repetition's requests in batches of `batch_size` (1: single stream), batch after
    batch until both floors hold (the profile's count and run.min_duration_s), capped by run.max_duration_s."""

    def generate(chunk: list[Request], repetition: int, index: int) -> list[RequestRecord]:
        result = ctx.engine.generate([r.prompt_token_ids for r in chunk], [r.output_tokens for r in chunk])
        return batch_records(result, chunk, ctx.t0, repetition, index, ctx.decoder())

    warm_stream = ctx.stream(0)
    records = ctx.warmup_batches(lambda index: generate(list(itertools.islice(warm_stream, batch_size)), -1, index))
    for repetition in ctx.repetition_indices(records):
        stream = ctx.stream(repetition + 1)
        records += ctx.sequential_repetition(repetition, lambda index, stream=stream, repetition=repetition: generate(
            list(itertools.islice(stream, batch_size)), repetition, index))
    return records
