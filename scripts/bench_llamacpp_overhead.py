#!/usr/bin/env python3
"""The harness measured against itself on llama.cpp: decode tokens/s through lokaal-bench (the llamacpp
engine in the single-stream scenario loop, per-token records, the metric functions, the network guard)
against a bare llama-cpp-python generation loop (llama_decode one token, argmax of its logits, nothing
else) on the same loaded model and context, in the same process. Target: ratio >= 0.98.

Both arms run the same prompts, interleaved round by round (AB, BA, ...) so drift hits both alike; the
figure is the median over rounds of decode tok/s, counted the same way in both: the tokens after the
first over the time from the first to the last.

    python scripts/bench_llamacpp_overhead.py                          # llama-3.2-1b Q4_K_M, all cores
    python scripts/bench_llamacpp_overhead.py --card tiny-llama --quantization Q8_0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="llama-3.2-1b")
    parser.add_argument("--quantization", default="Q4_K_M")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--input-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=3, help="requests per round and arm")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    import numpy as np

    from bench.engines.llamacpp_engine import LlamaCppEngine
    from bench.measure.metrics import headline_metrics
    from bench.measure.sizing import exact_plan
    from bench.models import resolve_model
    from bench.netguard import NetworkGuard, apply_offline_env
    from bench.profile.engine_specs import LlamaCppEngineSpec
    from bench.profile.points import SingleStreamPoint
    from bench.profile.workload_specs import WorkloadSpec
    from bench.scenarios import ScenarioContext, scenario_runner

    apply_offline_env()
    NetworkGuard.install([], None)
    model = resolve_model(args.card, None, "auto", 0, None, gguf=True, quantization=args.quantization)
    engine = LlamaCppEngine(LlamaCppEngineSpec(kind="llamacpp", threads=args.threads, n_ctx=2048), str(model.path),
                            {"config": model.config, "quantization": model.dtype, "gguf": model.gguf})
    engine.load()
    lib = engine.lib
    def workload(seed: int) -> WorkloadSpec:
        return WorkloadSpec.model_validate({"name": "overhead", "seed": seed, "input_tokens": args.input_tokens,
                                            "output_tokens": args.output_tokens})

    scenario = SingleStreamPoint(kind="single-stream", batch_size=1, requests=args.requests)
    plan = exact_plan(args.requests)  # the same work in both arms, no time floor

    def through_lokaal_bench(seed: int) -> float:
        ctx = ScenarioContext(engine, scenario, workload(seed), plan, t0=time.perf_counter(), progress=lambda *a: None)
        return headline_metrics(scenario_runner("single-stream")(ctx))["decode_tok_s"]["value"]

    def bare_loop(seed: int) -> float:
        ctx = ScenarioContext(engine, scenario, workload(seed), plan, 0.0, lambda *a: None)
        tokens = decode_time = 0.0
        n_vocab = engine.n_vocab
        for request in ctx.requests(args.requests, 1):
            lib.llama_memory_clear(lib.llama_get_memory(engine.ctx), True)
            prompt = (lib.llama_token * len(request.prompt_token_ids))(*request.prompt_token_ids)
            lib.llama_decode(engine.ctx, lib.llama_batch_get_one(prompt, len(request.prompt_token_ids)))
            token = (lib.llama_token * 1)()
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(engine.ctx, -1), shape=(n_vocab,))
            token[0] = int(logits.argmax())
            first = time.perf_counter()
            for _ in range(request.output_tokens - 1):
                lib.llama_decode(engine.ctx, lib.llama_batch_get_one(token, 1))
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(engine.ctx, -1), shape=(n_vocab,))
                token[0] = int(logits.argmax())
            decode_time += time.perf_counter() - first
            tokens += request.output_tokens - 1
        return tokens / decode_time

    through_lokaal_bench(0)  # warm both paths (page cache, thread pool) before any round counts
    bare_loop(0)
    rounds = []
    for index in range(args.rounds):
        arms = [("lokaal-bench", through_lokaal_bench), ("bare", bare_loop)]
        if index % 2:
            arms.reverse()
        measured = {name: arm(index + 1) for name, arm in arms}
        rounds.append(measured)
        print(f"round {index + 1}: lokaal-bench {measured['lokaal-bench']:.2f} bare {measured['bare']:.2f} tok/s",
              file=sys.stderr)
    engine.close()
    ours = statistics.median(r["lokaal-bench"] for r in rounds)
    bare = statistics.median(r["bare"] for r in rounds)
    ratios = [r["lokaal-bench"] / r["bare"] for r in rounds]
    result = {"card": args.card, "quantization": model.dtype, "threads": args.threads,
              "input_tokens": args.input_tokens, "output_tokens": args.output_tokens, "rounds": rounds,
              "median_lokaal_bench_tok_s": ours, "median_bare_tok_s": bare, "ratio": ours / bare,
              "median_round_ratio": statistics.median(ratios), "target": 0.98}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.card} {model.dtype}, {args.threads} threads: decode lokaal-bench {ours:.2f} tok/s, bare "
              f"llama-cpp-python loop {bare:.2f} tok/s: ratio {ours / bare:.3f} (median of per-round ratios "
              f"{statistics.median(ratios):.3f}; target >= 0.98)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
