"""prefill-decode, in the manner of llama-bench: process N prompt tokens, then generate M tokens,
on top of a KV cache already holding `depth` tokens (filled untimed). Prompt tokens/s and
generation tokens/s come out as prefill_tok_s and decode_tok_s."""

from __future__ import annotations

import random
import time

from bench.records import RequestRecord
from bench.scenarios.common import ScenarioContext, batch_records
from bench.workloads import Request


def _run_once(ctx: ScenarioContext, rng: random.Random, repetition: int, index: int) -> list[RequestRecord]:
    point = ctx.scenario
    space = ctx.engine.token_space()
    rows = point["batch_size"]
    depth_ids = [space.draw(rng, point["depth"]) for _ in range(rows)]
    prompts = [Request(index * rows + r, space.draw(rng, point["prompt_tokens"]), point["gen_tokens"])
               for r in range(rows)]
    result = ctx.engine.prefill_decode(depth_ids, [p.prompt_token_ids for p in prompts], point["gen_tokens"])
    return batch_records(result, prompts, ctx.t0, repetition, index, ctx.decoder())


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    rng = random.Random(f"prefill-decode/{ctx.scenario['depth']}/{ctx.scenario['prompt_tokens']}")
    records: list[RequestRecord] = []
    for index in range(ctx.warmup):
        ctx.progress("warm-up", index, ctx.warmup)
        records += _run_once(ctx, rng, -1, index)
    runs = ctx.scenario["requests"]
    for repetition in range(ctx.repetitions):
        started = time.perf_counter()
        for index in range(runs):
            ctx.progress(f"repetition {repetition + 1}/{ctx.repetitions}", index, runs)
            records += _run_once(ctx, rng, repetition, index)
            if ctx.out_of_time(started):
                break
    return records
