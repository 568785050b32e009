"""The vLLM engine's machine handling and its timing cross-check, without starting vLLM: what it
sets for the CPU and for one node, what it passes to vllm.EngineArgs, the root cause of a failure in
a worker process, and how vLLM's own timestamps are held against the wall clock."""

from __future__ import annotations

import pytest

from bench.engines.vllm_engine import VllmEngine, cpu_thread_binding
from bench.measure.engine_timing import cross_check, engine_stats
from bench.profile.engine_specs import VllmEngineSpec
from bench.results.records import RequestRecord
from bench.run.rootcause import child_root_cause


def test_cpu_ranks_get_equal_core_groups() -> None:
    assert cpu_thread_binding(2, [0, 1]) == "0|1"
    assert cpu_thread_binding(2, [4, 5, 6, 7]) == "4,5|6,7"
    assert cpu_thread_binding(1, [0, 1]) == "0,1"
    with pytest.raises(RuntimeError, match="need at least 4 CPU cores"):
        cpu_thread_binding(4, [0, 1])


def engine(**settings: object) -> VllmEngine:
    return VllmEngine(VllmEngineSpec(kind="vllm", **settings), "/models/m", {})


def test_cpu_defaults_and_what_reaches_vllm() -> None:
    args = engine(dtype="float32", tensor_parallel_size=2)._engine_args("cpu")
    assert args["enable_prefix_caching"] is False and args["disable_log_stats"] is False
    assert args["load_format"] == "safetensors" and args["tensor_parallel_size"] == 2
    # a fixed KV cache on the CPU, shared out per rank, instead of vLLM's 90% of host memory
    assert 0 < args["kv_cache_memory_bytes"] <= 2 * 1024**3 and "gpu_memory_utilization" not in args
    gpu = engine(memory_fraction=0.8, max_model_len=4096, engine_args={"block_size": 32})._engine_args("cuda")
    assert gpu["gpu_memory_utilization"] == 0.8 and "kv_cache_memory_bytes" not in gpu
    assert gpu["max_model_len"] == 4096 and gpu["block_size"] == 32
    pickled = VllmEngine(VllmEngineSpec(kind="vllm"), "/m", {"allow_pickle": True})
    assert "load_format" not in pickled._engine_args("cuda")


def test_environment_keeps_telemetry_off_and_vllm_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    env = engine(tensor_parallel_size=1)._environment("cuda")
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1" and env["VLLM_HOST_IP"] == "127.0.0.1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env
    assert "VLLM_HOST_IP" not in engine(distributed_executor_backend="ray")._environment("cuda")
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert engine(tensor_parallel_size=2)._environment("cpu")["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")  # the operator's own binding wins
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine(tensor_parallel_size=2)._environment("cpu")


LOG = """\
INFO 11-29 00:25:30 [llm.py:300] starting
(VllmWorker-0 pid=27775) ERROR 11-29 00:25:40 [multiproc_executor.py:953]     raise ValueError(
(VllmWorker-0 pid=27775) ERROR 11-29 00:25:40 [multiproc_executor.py:953] ValueError: Available memory on node 0 \
(18.6/20.09 GiB) is less than desired CPU memory utilization (0.99, 19.89 GiB).
Traceback (most recent call last):
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_a_worker_exception_in_the_log_is_the_root_cause() -> None:
    cause = child_root_cause(LOG)
    assert cause is not None and cause.startswith("ValueError: Available memory on node 0")
    assert cause.endswith("(in VllmWorker-0)")
    assert child_root_cause("RuntimeError: only the cell's own error\n") is None


def record(rid: int, first: float, end: float, engine_first: float, engine_last: float,
           **extra: object) -> RequestRecord:
    timing = {"same_clock": True, "queued": 0.0, "scheduled": 0.001, "first_token": engine_first,
              "last_token": engine_last, "queue_s": 0.001, "prefill_s": engine_first - 0.001,
              "decode_s": engine_last - engine_first, "cached_tokens": 0, **extra}
    return RequestRecord(request_id=rid, repetition=0, batch_index=0, batch_size=1, input_tokens=8,
                         expected_output_tokens=4, submit_time=0.0, first_token_time=first, end_time=end,
                         output_tokens=4, engine_timing=timing)


def test_engine_stamps_against_the_wall_clock() -> None:
    records = [record(0, 0.102, 0.302, 0.100, 0.300),   # 2 ms behind vLLM: agrees
               record(1, 0.250, 0.400, 0.100, 0.300),   # 150 ms behind: beyond 50 ms
               record(2, 0.095, 0.300, 0.100, 0.300)]   # before vLLM produced it: impossible
    check = cross_check(records, 0.05)
    assert check is not None and check["requests"] == 3 and check["same_clock"]
    assert check["disagreeing"] == 2 and check["disagreeing_examples"] == [1, 2]
    assert check["first_token_gap_s"]["max"] == pytest.approx(0.15)
    assert cross_check(records, 0.2)["disagreeing"] == 1
    assert cross_check([RequestRecord(0, 0, 0, 1, 8, 4, 0.0)], 0.05) is None  # engines without own timings


def test_cached_prompt_tokens_count_as_prefix_cache_hits() -> None:
    stats = engine_stats([record(0, 0.1, 0.3, 0.1, 0.3), record(1, 0.1, 0.3, 0.1, 0.3, cached_tokens=16)])
    assert stats == {"prefix_cache_hits": 1, "cached_tokens": 16, "preemptions": 0}
