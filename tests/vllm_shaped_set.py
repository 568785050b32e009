"""Write a result set through the runner's own code (plan, cell summary, manifest, seal) whose records
are shaped like vLLM's: an in-process vLLM offline cell whose rows are scheduled in waves (rows decode
while later rows are still in prefill, each row with its own token times), and a served concurrency
cell of overlapping streams. vLLM is not installed on these machines, so only the cell process is
stood in for: it writes result.json and records.jsonl.gz as a real vLLM cell does, records built by
the scenarios' own `batch_records` from vLLM-shaped engine batches.

    python tests/vllm_shaped_set.py OUT_DIR    (OUT_DIR/profile.yaml, OUT_DIR/result)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

STEP_S = 0.02  # one engine step
OUTPUT_TOKENS = 12
ROWS = 8
WAVE = 4  # rows admitted per prefill step: rows 4-7 prefill while rows 0-3 decode
USERS = 4
STREAM_TOKENS = 16

PROFILE: dict[str, Any] = {
    "name": "vllm-shaped",
    "models": [{"card": "tiny-llama"}],
    "engines": [{"kind": "vllm", "dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.25},
                {"kind": "openai", "base_urls": ["http://127.0.0.1:9/v1"]}],
    "workloads": [{"name": "w", "input_tokens": 32, "output_tokens": OUTPUT_TOKENS, "seed": 1}],
    "scenarios": [{"kind": "offline", "batch_sizes": [ROWS], "batches": 3},
                  {"kind": "concurrency", "users": [USERS], "requests": 12}],
    "run": {"repetitions": 2, "warmup": 1, "probes": False, "cell_timeout_s": 60},
}


def vllm_batch(submit: float, slow: float) -> Any:
    """A generate() of ROWS rows as vLLM's engine loop reports it: wave k's rows get their first token
    at the end of prefill step k + 1 and one token per step after, each row its own token times."""
    from bench.engines.base import BatchResult

    step = STEP_S * slow
    rows = []
    for row in range(ROWS):
        first = submit + 0.03 * slow + step * (row // WAVE) * 2
        rows.append([first + step * k for k in range(OUTPUT_TOKENS)])
    return BatchResult(submit_time=submit, step_times=rows[0], output_tokens=[OUTPUT_TOKENS] * ROWS,
                       finish_reasons=["length"] * ROWS, row_step_times=rows,
                       output_token_ids=[[7] * OUTPUT_TOKENS for _ in range(ROWS)])


def offline_records() -> list[Any]:
    from bench.profile.workloads import Request
    from bench.scenarios.common import batch_records

    records, clock = [], 1.0
    for repetition in (-1, 0, 1):
        for index in range(1 if repetition < 0 else 3):
            requests = [Request(i, [5] * 32, OUTPUT_TOKENS) for i in range(index * ROWS, (index + 1) * ROWS)]
            result = vllm_batch(clock, 1.0 + 0.05 * ((index + repetition) % 3))
            records += batch_records(result, requests, 0.0, repetition, index)
            clock = max(max(r.token_times) for r in records) + 0.004  # host time between batches
    return records


def served_records() -> list[Any]:
    """USERS closed-loop users, each sending its next request when the last one ended (a stream each)."""
    from bench.results.records import RequestRecord

    records, index, clock = [], 0, 1.0
    for repetition in (-1, 0, 1):
        per_user = 1 if repetition < 0 else 3
        for user in range(1 if repetition < 0 else USERS):
            start = clock + 0.011 * user
            for _ in range(per_user):
                first = start + 0.05 + 0.003 * (index % 5)
                times = [first + 0.03 * k * (1 + 0.02 * (index % 3)) for k in range(STREAM_TOKENS)]
                records.append(RequestRecord(
                    request_id=index, repetition=repetition, batch_index=index, batch_size=1, input_tokens=32,
                    expected_output_tokens=STREAM_TOKENS, submit_time=start, first_token_time=times[0],
                    end_time=times[-1], token_times=times, output_tokens=STREAM_TOKENS, finish_reason="length",
                    sent_time=start, usage_output_tokens=STREAM_TOKENS, endpoint="127.0.0.1:9"))
                index += 1
                start = times[-1] + 0.001
        clock = max(r.end_time for r in records) + 0.01
    return records


def fake_cell_process(spec_path: Path, cell_dir: Path, **_: Any) -> Any:
    """What a finished cell process leaves behind (result.json, records.jsonl.gz), and its outcome."""
    from bench.results.records import write_records
    from bench.run.isolation import Outcome

    spec = json.loads(spec_path.read_text())["cell"]
    served = spec["engine"]["kind"] == "openai"
    records = served_records() if served else offline_records()
    write_records(cell_dir / "records.jsonl.gz", records)
    engine = {"engine": "openai"} if served else {"engine": "vllm", "device": "cpu", "dtype": "float32",
                                                   "vllm_version": "0.32.0 (records shaped by the test)"}
    result = {"status": "COMPLETED", "engine": engine, "load": {"load_s": 1.0},
              "model": {"name": "tiny-llama", "synthetic": True}, "load_generator": {"client_processes": 1}}
    (cell_dir / "result.json").write_text(json.dumps(result))
    return Outcome(returncode=0, failure=None, wall_s=2.0)


def main(out: Path) -> None:
    import bench.run.isolation
    from bench.run.environment import collect_environment
    from bench.run.runner import Runner, prepare_run

    out.mkdir(parents=True, exist_ok=True)
    profile = out / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE, sort_keys=False))
    bench.run.isolation.run_isolated = fake_cell_process  # the runner imports it at each cell
    environment = collect_environment()
    plan = prepare_run(profile, out, out / "result", None, environment["machine_id"])
    Runner(plan, environment).run()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
