"""prefill-decode, in the manner of llama-bench: process N prompt tokens, then generate M tokens,
on top of a KV cache already holding `depth` tokens (filled untimed). Prompt tokens/s and
generation tokens/s come out as prefill_tok_s and decode_tok_s.

Runs are drawn from one seeded stream in a fixed order (the fixed warm-up runs, then each
repetition's minimum runs), so those are the same on every machine; the extra runs a fast machine
makes to fill its time floor, and auto warm-up's runs, come from streams of their own."""

from __future__ import annotations

import random

from bench.profile.workloads import Request
from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext, batch_records


def _run_once(ctx: ScenarioContext, rng: random.Random, repetition: int, index: int) -> list[RequestRecord]:
    point = ctx.scenario
    space = ctx.engine.token_space()
    rows = point.batch_size
    depth_ids = [space.draw(rng, point.depth) for _ in range(rows)]
    prompts = [Request(index * rows + r, space.draw(rng, point.prompt_tokens), point.gen_tokens)
               for r in range(rows)]
    result = ctx.engine.prefill_decode(depth_ids, [p.prompt_token_ids for p in prompts], point.gen_tokens)
    return batch_records(result, prompts, ctx.t0, repetition, index, ctx.decoder())


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    seed = f"prefill-decode/{ctx.scenario.depth}/{ctx.scenario.prompt_tokens}"
    rng = random.Random(seed)
    warm_rng = rng if ctx.plan.warmup.mode == "fixed" else random.Random(f"{seed}/warm-up")
    records = ctx.warmup_batches(lambda index: _run_once(ctx, warm_rng, -1, index))
    rows = ctx.scenario.batch_size
    minimum_runs = ctx.plan.min_requests_per_repetition // rows
    for repetition in ctx.repetition_indices(records):
        extra = random.Random(f"{seed}/extra/{repetition}")
        records += ctx.sequential_repetition(repetition, lambda index, extra=extra, repetition=repetition: _run_once(
            ctx, rng if index < minimum_runs else extra, repetition, index))
    return records
