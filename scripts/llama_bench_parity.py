#!/usr/bin/env python3
"""lokaal-bench's llamacpp engine against llama.cpp's own llama-bench, built from the same llama.cpp source
(scripts/build_llama_cpp_tools.sh), on the same GGUF, threads and batch sizes: prompt processing of 512
tokens (pp512) and generation of 128 (tg128), in alternating rounds (AB, BA, ...) so machine drift hits
both arms alike. Reported: each arm's median over rounds and lokaal-bench / llama-bench (target: within
5%), and tg128 as a fraction of the memory-bandwidth roofline (the probed read bandwidth over the bytes
a decode step reads, weights and KV cache).

What is compared with what, so the ratio means "same work":
  pp   lokaal-bench prefill-decode pp512+tg128 at depth 0, prefill tok/s = 512 / time to first token
       llama-bench pp512 (-p 512 -n 0)
  tg   the same lokaal-bench cell's decode tok/s: 127 tokens after the first, the cache holding 512-640
       llama-bench tg128 at depth 512 (-p 0 -n 128 -d 512): 128 tokens, the cache holding 512-640
The lokaal-bench arm is the real in-process path of a cell: the engine, the scenario loop, per-token
records and the metric functions; llama-bench reports its own mean of -r runs per round.

    python scripts/llama_bench_parity.py                                # llama-3.2-1b Q4_K_M, all cores
    python scripts/llama_bench_parity.py --quantization Q8_0 --rounds 5 --json out.json
    python scripts/llama_bench_parity.py --gguf models/x.gguf --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def llama_bench(binary: Path, gguf: Path, args: argparse.Namespace, *test: str) -> dict[str, Any]:
    command = [str(binary), "-m", str(gguf), "-t", str(args.threads), "-b", str(args.n_batch), "-ub",
               str(args.n_ubatch), "-fa", args.flash_attn, "--repack", "1" if args.repack_resolved else "0",
               "-r", str(args.reps), "-o", "json", *test]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"llama-bench failed ({done.returncode}): {done.stderr[-1500:]}")
    rows = json.loads(done.stdout)
    return rows[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="llama-3.2-1b")
    parser.add_argument("--quantization", default="Q4_K_M")
    parser.add_argument("--gguf", help="a local GGUF instead of a card")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--pp", type=int, default=512)
    parser.add_argument("--tg", type=int, default=128)
    parser.add_argument("--n-batch", type=int, default=2048)
    parser.add_argument("--n-ubatch", type=int, default=512)
    parser.add_argument("--flash-attn", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--repack", default="auto", choices=["auto", "on", "off"],
                        help="llama.cpp's extra weight buffers (the engine's `repack`), the same in both arms")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3, help="runs per round and arm (llama-bench -r)")
    parser.add_argument("--bandwidth-gb-s", type=float, help="memory read bandwidth (default: probed now)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()

    from bench.engines.llamacpp_engine import LlamaCppEngine
    from bench.measure.metrics import headline_metrics
    from bench.measure.roofline import model_inputs
    from bench.measure.sizing import exact_plan
    from bench.models import resolve_model
    from bench.netguard import NetworkGuard, apply_offline_env
    from bench.profile.engine_specs import LlamaCppEngineSpec
    from bench.profile.points import PrefillDecodePoint
    from bench.scenarios import ScenarioContext, scenario_runner
    from bench.serving.llama_server import find_tool

    apply_offline_env()
    NetworkGuard.install([], None)
    binary = find_tool("llama-bench", None, "LOKAAL_BENCH_LLAMA_BENCH")
    model = (resolve_model(None, args.gguf, "auto", 0, None, gguf=True) if args.gguf
             else resolve_model(args.card, None, "auto", 0, None, gguf=True, quantization=args.quantization))
    settings = LlamaCppEngineSpec(kind="llamacpp", threads=args.threads, n_batch=args.n_batch, n_ubatch=args.n_ubatch,
                                  flash_attn=args.flash_attn, n_ctx=4096,
                                  repack={"on": True, "off": False}.get(args.repack, "auto"))
    engine = LlamaCppEngine(settings, str(model.path), {"config": model.config, "quantization": model.dtype,
                                                        "gguf": model.gguf})
    engine.load()
    args.repack_resolved = engine.repack  # as the engine resolved it: llama-bench gets the same
    scenario = PrefillDecodePoint(kind="prefill-decode", depth=0, prompt_tokens=args.pp, gen_tokens=args.tg,
                                  batch_size=1, requests=args.reps)
    plan = exact_plan(args.reps, warmup=1)

    def ours() -> tuple[float, float]:
        ctx = ScenarioContext(engine, scenario, None, plan, t0=time.perf_counter(), progress=lambda *a: None)
        metrics = headline_metrics(scenario_runner("prefill-decode")(ctx))
        return metrics["prefill_tok_s"]["value"], metrics["decode_tok_s"]["value"]

    def theirs() -> tuple[float, float]:
        pp = llama_bench(binary, model.path, args, "-p", str(args.pp), "-n", "0")
        tg = llama_bench(binary, model.path, args, "-p", "0", "-n", str(args.tg), "-d", str(args.pp))
        theirs.build = pp.get("build_commit")  # type: ignore[attr-defined]
        return float(pp["avg_ts"]), float(tg["avg_ts"])

    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        order = [("lokaal-bench", ours), ("llama-bench", theirs)]
        if index % 2:
            order.reverse()
        result: dict[str, Any] = {"round": index + 1, "first": order[0][0]}
        for name, arm in order:
            result[name] = dict(zip(("pp_tok_s", "tg_tok_s"), arm(), strict=True))
        rounds.append(result)
        print(f"round {index + 1}: lokaal-bench pp {result['lokaal-bench']['pp_tok_s']:.1f} tg "
              f"{result['lokaal-bench']['tg_tok_s']:.2f} | llama-bench pp {result['llama-bench']['pp_tok_s']:.1f} "
              f"tg {result['llama-bench']['tg_tok_s']:.2f} tok/s", file=sys.stderr)

    def median(arm: str, key: str) -> float:
        return statistics.median(r[arm][key] for r in rounds)

    bandwidth = args.bandwidth_gb_s
    if bandwidth is None:
        from bench.run.probes import host_memory_bandwidth

        bandwidth = host_memory_bandwidth(quick=False)["read_gb_s"]
    inputs = model_inputs(model.config, model.dtype, gguf=model.gguf, kv_cache_type="f16") or {}
    kv_per_token = inputs.get("kv_cache_bytes_per_token", 0)
    step_bytes = inputs.get("decode_read_bytes", 0) + (args.pp + args.tg / 2) * kv_per_token
    roof = bandwidth * 1e9 / step_bytes if step_bytes else None
    summary = {
        "model": model.name, "quantization": model.dtype, "gguf_tensor_bytes": model.gguf["tensor_bytes"],
        "threads": args.threads, "repack": engine.repack, "n_batch": args.n_batch, "n_ubatch": args.n_ubatch,
        "flash_attn": args.flash_attn,
        "rounds": rounds,
        "median": {arm: {k: median(arm, k) for k in ("pp_tok_s", "tg_tok_s")}
                   for arm in ("lokaal-bench", "llama-bench")},
        "llama_bench": str(binary), "llama_bench_build_commit": getattr(theirs, "build", None),
        "bindings_build": engine.describe()["llama_cpp_build"],
        "bandwidth_gb_s": bandwidth, "decode_roofline_tok_s": roof,
    }
    summary["ratio"] = {k: summary["median"]["lokaal-bench"][k] / summary["median"]["llama-bench"][k]
                        for k in ("pp_tok_s", "tg_tok_s")}
    if roof:
        summary["tg_roofline_fraction"] = {arm: summary["median"][arm]["tg_tok_s"] / roof
                                           for arm in ("lokaal-bench", "llama-bench")}
    engine.close()
    print(f"{model.name} {model.dtype}, {args.threads} threads, {args.rounds} rounds x {args.reps} runs")
    print(f"  pp{args.pp}: lokaal-bench {summary['median']['lokaal-bench']['pp_tok_s']:.1f}, llama-bench "
          f"{summary['median']['llama-bench']['pp_tok_s']:.1f} tok/s: ratio {summary['ratio']['pp_tok_s']:.3f}")
    print(f"  tg{args.tg} @d{args.pp}: lokaal-bench {summary['median']['lokaal-bench']['tg_tok_s']:.2f}, llama-bench "
          f"{summary['median']['llama-bench']['tg_tok_s']:.2f} tok/s: ratio {summary['ratio']['tg_tok_s']:.3f}")
    if roof:
        print(f"  decode roofline {roof:.1f} tok/s ({bandwidth:.1f} GB/s over {step_bytes / 1e9:.3f} GB a step): "
              f"lokaal-bench {summary['tg_roofline_fraction']['lokaal-bench']:.0%}, llama-bench "
              f"{summary['tg_roofline_fraction']['llama-bench']:.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
