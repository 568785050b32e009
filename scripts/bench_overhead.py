#!/usr/bin/env python3
"""The harness measured against itself: decode tokens/s through lokaal-bench against a bare
`model.generate` loop on the same loaded model, in the same run. Target: ratio >= 0.98.

Both arms run the same prompts, interleaved round by round (AB, BA, AB, ...) so drift in the
machine hits both alike; the figure is the median over rounds. The lokaal-bench arm is the real in-process path
of a cell: the transformers engine with its per-step clock, the scenario loop, raw records, and the
metric functions, with the network guard installed. The bare arm times `model.generate` alone.

Decode tokens/s of the bare arm cannot be read off one call, so it is taken from two calls of the
same prompts: (N - 1) tokens over t(N tokens) - t(1 token).

    python scripts/bench_overhead.py                     # tiny-llama card, 5 rounds
    python scripts/bench_overhead.py --card llama-3.2-1b --dtype bfloat16 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="tiny-llama")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: leaves the other cores to the OS, which steadies the figure)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--input-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=4, help="requests (batches) per round and arm")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    import torch

    from bench.engines.transformers_engine import TransformersEngine
    from bench.measure.metrics import headline_metrics
    from bench.measure.sizing import exact_plan
    from bench.models import resolve_model
    from bench.netguard import NetworkGuard, apply_offline_env
    from bench.profile.engine_specs import TransformersEngineSpec
    from bench.profile.points import OfflinePoint
    from bench.profile.workload_specs import WorkloadSpec
    from bench.scenarios import ScenarioContext, scenario_runner

    apply_offline_env()
    NetworkGuard.install([], None)
    model = resolve_model(card=args.card, path=None, dtype=args.dtype, seed=0, cache_dir=None)
    settings = TransformersEngineSpec(kind="transformers", dtype=args.dtype, device="cpu", threads=args.threads)
    engine = TransformersEngine(settings, str(model.path), {})
    engine.load()
    workload = {"name": "overhead", "seed": 11, "input_tokens": args.input_tokens, "output_tokens": args.output_tokens}
    scenario = OfflinePoint(kind="offline", batch_size=args.batch, requests=args.batch * args.requests)
    plan = exact_plan(args.batch * args.requests)  # the same work in both arms, no time floor

    def through_lokaal_bench(seed_stream: int) -> float:
        ctx = ScenarioContext(engine, scenario, WorkloadSpec.model_validate({**workload, "seed": seed_stream}), plan,
                              t0=time.perf_counter(), progress=lambda *a: None)
        records = scenario_runner("offline")(ctx)
        return headline_metrics(records)["decode_tok_s"]["value"]

    def bare_generate(seed_stream: int) -> float:
        spec = WorkloadSpec.model_validate({**workload, "seed": seed_stream})
        ctx = ScenarioContext(engine, scenario, spec, plan, 0.0, lambda *a: None)
        requests = ctx.requests(args.batch * args.requests, 1)
        decode_time = 0.0
        for start in range(0, len(requests), args.batch):
            ids = torch.tensor([r.prompt_token_ids for r in requests[start:start + args.batch]])
            mask = torch.ones_like(ids)
            timings = []
            for new_tokens in (1, args.output_tokens):
                begin = time.perf_counter()
                with torch.inference_mode():
                    engine.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                          do_sample=False)
                timings.append(time.perf_counter() - begin)
            decode_time += timings[1] - timings[0]
        return len(requests) * (args.output_tokens - 1) / decode_time

    through_lokaal_bench(1)  # warm both paths once, unmeasured
    bare_generate(1)
    ratios, ours, bare = [], [], []
    for round_number in range(args.rounds):
        seed = 100 + round_number
        if round_number % 2:  # alternate which arm goes first, so neither always runs on a warmer machine
            b = bare_generate(seed)
            a = through_lokaal_bench(seed)
        else:
            a = through_lokaal_bench(seed)
            b = bare_generate(seed)
        ours.append(a)
        bare.append(b)
        ratios.append(a / b)
        print(f"round {round_number + 1}/{args.rounds}: lokaal-bench {a:.1f} tok/s, bare generate {b:.1f} tok/s, "
              f"ratio {a / b:.3f}", file=sys.stderr)
    result = {
        "card": args.card, "dtype": args.dtype, "threads": engine.threads, "batch": args.batch,
        "input_tokens": args.input_tokens, "output_tokens": args.output_tokens, "rounds": args.rounds,
        "lokaal_bench_decode_tok_s_median": statistics.median(ours),
        "bare_generate_decode_tok_s_median": statistics.median(bare),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target": 0.98,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"decode tok/s through lokaal-bench {result['lokaal_bench_decode_tok_s_median']:.1f}, "
              f"bare model.generate {result['bare_generate_decode_tok_s_median']:.1f}: ratio "
              f"{result['ratio_median']:.3f} (median of {args.rounds} rounds, range {result['ratio_min']:.3f}"
              f"-{result['ratio_max']:.3f}; target >= 0.98)")
    return 0 if result["ratio_median"] >= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main())
