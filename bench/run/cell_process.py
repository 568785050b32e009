"""One cell in its own process: `python -m bench.run.cell_process SPEC_JSON CELL_DIR`.

The process loads the model once, runs the scenario, and leaves `records.jsonl.gz` and
`result.json` in CELL_DIR. It talks to the runner through one-line JSON events on stdout
(phases and progress); everything else it prints goes to the cell's log. The runner turns a crash,
a kill or a hang of this process into a FAILED row; this process never has to report its own death.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import scrub
from bench.atomic import write_json
from bench.netguard import NetworkGuard, apply_offline_env
from bench.profile.cells import Cell
from bench.profile.engine_specs import gguf_kv_cache_type, runs_gguf
from bench.run.rootcause import child_root_cause, own_log_tail

FAULT_ENV = "LOKAAL_BENCH_FAULT"


def emit(event: str, **fields: Any) -> None:
    """An event line for the runner. The real stdout is kept for events alone (see main)."""
    _EVENTS.write(json.dumps({"event": event, **fields}) + "\n")
    _EVENTS.flush()


_EVENTS = sys.stdout


def _slowed(call: Any, delay: float) -> Any:
    def slowed(*args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        return call(*args, **kwargs)

    return slowed


def engine_settings(spec: dict[str, Any], cell: Cell) -> Any:
    """The cell's engine settings; a managed server's URL (started by the runner, not part of the cell's
    identity) is where a served engine sends its requests."""
    managed = spec.get("managed_base_urls")
    return cell.engine.model_copy(update={"base_urls": managed}) if managed else cell.engine


def _inject_fault(cell: Cell, engine: Any) -> None:
    """Deliberate faults for testing isolation: LOKAAL_BENCH_FAULT='{"<label or id part>": "<fault>"}'."""
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return
    for match, fault in json.loads(raw).items():
        if match not in cell.label and match != cell.id:
            continue
        if fault == "short":  # an engine whose outputs end early, as an EOS would end them
            generate = engine.generate

            def short(prompts: list[list[int]], output_tokens: list[int], generate: Any = generate) -> Any:
                result = generate(prompts, output_tokens)
                result.output_tokens = [max(n - 1, 1) for n in result.output_tokens]
                return result

            engine.generate = short
            return
        if fault.startswith("slow:"):  # an engine this much slower per batch, whatever the machine's speed
            delay = float(fault.split(":", 1)[1])
            for name in ("generate", "prefill_decode"):
                setattr(engine, name, _slowed(getattr(engine, name), delay))
            return
        if fault == "raise":
            raise RuntimeError("injected fault: this cell raises")
        if fault == "hang":
            while True:
                time.sleep(3600)
        if fault == "oom":
            hog = []
            while True:  # grows until the runner's memory limit (or the kernel) kills the process
                hog.append(bytearray(64 * 1024 * 1024))
                time.sleep(0.02)
        if fault == "burst":  # one allocation far beyond the limit, faster than any poller looks
            limit = json.loads(os.environ.get("LOKAAL_BENCH_MEMORY_LIMIT") or '{"bytes": 1073741824}')["bytes"]
            hog = [bytearray(4 * limit)]
        if fault == "exit":
            os._exit(3)
        if fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if fault == "network":
            import socket

            socket.create_connection(("192.0.2.1", 80), timeout=2)  # TEST-NET-1: must be refused


def context_limit(cell: Cell, config: dict[str, Any]) -> int | None:
    """The positions a request may fill: the server's --max-model-len, the engine's max_model_len, else the
    model's own context (a conversation's history is cut to fit it)."""
    from bench.profile.preflight import server_max_model_len

    for value in (server_max_model_len(getattr(cell.engine, "server", None)),
                  getattr(cell.engine, "max_model_len", None),
                  *(config.get(k) for k in ("max_position_embeddings", "n_positions", "seq_length"))):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def stream_fingerprints(records: list[Any], plan: Any) -> dict[str, str | None]:
    """prompts_sha256 and responses_sha256 over the part of the request stream every machine sends: the
    minimum repetitions' minimum requests (and a fixed warm-up), not the extra work a fast machine did to
    fill its time floor, so rerun, cross-engine and cross-machine comparisons still match."""
    from bench.profile.workloads import prompts_digest

    def shared(record: Any) -> bool:
        if record.warmup:
            return plan.warmup.mode == "fixed"
        return record.repetition < plan.repetitions.minimum and record.request_id < plan.min_requests_per_repetition

    prefix = [r for r in records if shared(r)]
    return {
        "prompts_sha256": prompts_digest((r.repetition, r.request_id, r.prompt_sha256 or "") for r in prefix),
        # The outputs' fingerprint, when every record has one: a rerun can say whether it said the same.
        "responses_sha256": prompts_digest((r.repetition, r.request_id, r.response_sha256) for r in prefix)
        if prefix and all(r.response_sha256 for r in prefix) else None,
    }


def run_cell(spec: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
    from bench.engines.base import create_engine
    from bench.measure.roofline import model_inputs
    from bench.measure.sizing import MeasurementPlan
    from bench.models import resolve_model
    from bench.results.records import write_records
    from bench.scenarios import ScenarioContext, scenario_runner

    cell = Cell.from_dict(spec["cell"])
    run = cell.run
    t0 = time.perf_counter()
    t0_wall = time.time()
    emit("phase", phase="resolve model")
    model_spec = cell.model
    gguf, quantization = runs_gguf(cell.engine)  # llama.cpp: a GGUF file at the engine's (or server's) type
    model = resolve_model(
        card=model_spec.card,
        path=model_spec.resolved_path or model_spec.path,
        dtype=cell.engine.weights_dtype,
        seed=model_spec.seed,
        cache_dir=Path(run.model_cache_dir).expanduser() if run.model_cache_dir else None,
        allow_pickle=model_spec.allow_pickle,
        gguf=gguf,
        quantization=quantization,
        weights=cell.engine.weights_source,
    )
    safety = {
        "allow_pickle": model_spec.allow_pickle,
        "trust_remote_code": model_spec.trust_remote_code,
        "code_sha256": None,
    }
    if safety["trust_remote_code"]:
        from bench.models.remote_code import verify_code_pins

        safety["code_sha256"] = verify_code_pins(model.path, model_spec.code_sha256)
    engine_info: dict[str, Any] = dict(safety)
    if model.gguf is not None:  # llama.cpp: the token space from the card, and a memory check before loading
        engine_info.update(config=model.config, quantization=model.dtype, gguf=model.gguf,
                           memory_limit_bytes=int(run.memory_limit_gib * 2**30) if run.memory_limit_gib else None)
    engine = create_engine(engine_settings(spec, cell), str(model.path), engine_info)
    emit("phase", phase="load")
    load_info = engine.load()
    _inject_fault(cell, engine)

    def progress(phase: str, done: int, total: int) -> None:
        emit("progress", phase=phase, done=done, total=total)

    ctx = ScenarioContext(
        engine=engine,
        scenario=cell.scenario,
        workload=cell.workload,
        plan=MeasurementPlan.from_json(spec["plan"]),
        t0=t0,
        progress=progress,
        run=run,
        loadgen_ceiling=(spec.get("load_generator_calibration") or {}).get("ceiling"),
        model_dir=Path(model.path),
        context_tokens=context_limit(cell, model.config or {}),
    )
    records = scenario_runner(cell.scenario.kind)(ctx)
    emit("phase", phase="write")
    write_records(cell_dir / "records.jsonl.gz", records)
    measured = [r for r in records if not r.warmup]
    window = None
    if measured:
        ends = [r.end_time for r in measured if r.end_time is not None] or [r.submit_time for r in measured]
        window = [t0_wall + min(r.submit_time for r in measured), t0_wall + max(ends)]
    result = {
        "status": "COMPLETED",
        "load": load_info,
        "engine": engine.describe(),
        "model": {
            "name": model.name,
            "synthetic": model.synthetic,
            "weights": model.weights_note,
            "card": model.card,
            "dtype": model.dtype,
            "identity": model.identity,
            "parameter_count": model.parameter_count,
            "weight_bytes": model.weight_bytes,
            "safety": safety,
            "roofline_inputs": model_inputs(model.config, model.dtype, gguf=model.gguf,
                                            kv_cache_type=gguf_kv_cache_type(cell.engine)),
            **({"gguf": model.gguf} if model.gguf is not None else {}),
        },
        "memory": {"peak_rss_bytes": _peak_rss_bytes(), **engine.memory()},
        "load_generator": ctx.client_report(),  # served cells: early stops, client processes and why
        "clock": {"t0_wall": t0_wall, "measured_window_wall": window},
        **stream_fingerprints(records, ctx.plan),
        "sizing": ctx.sizing_report(),
        "finished_wall": time.time(),
    }
    engine.close()
    return result


def main(argv: list[str] | None = None) -> int:
    global _EVENTS
    args = sys.argv[1:] if argv is None else argv
    spec_path, cell_dir = Path(args[0]), Path(args[1])
    # Keep the real stdout for events; anything a library prints goes to stderr (the cell log).
    _EVENTS = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    scrub.register_engines([spec["cell"]["engine"]])  # the API key this cell sends is in no file it writes
    apply_offline_env()
    from bench.engines.openai_engine import endpoint_hosts

    # A served engine's endpoints are named by the profile (or are the managed server's, on loopback), so
    # they may be reached; nothing else.
    cell = Cell.from_dict(spec["cell"])
    urls = spec.get("managed_base_urls") or getattr(cell.engine, "base_urls", [])
    allowed = cell.run.allow_hosts + endpoint_hosts(urls)
    NetworkGuard.install(allowed, cell_dir / "network.jsonl")
    try:
        result = run_cell(spec, cell_dir)
    except BaseException as exc:  # every failure becomes a reason in the result, then a FAILED row
        from bench.run.memory_limit import refusal_reason

        if isinstance(exc, MemoryError):  # let go of what filled the memory before doing anything else
            traceback.clear_frames(exc.__traceback__)
        traceback.print_exc()
        reason = refusal_reason(exc) or f"{type(exc).__name__}: {exc}".strip()
        cause = child_root_cause(own_log_tail())
        if cause and cause.split(" (in ")[0] not in reason:
            reason += f"; root cause: {cause}"
        write_json(cell_dir / "result.json", {
            "status": "FAILED",
            "reason": reason,
            "memory": {"peak_rss_bytes": _peak_rss_bytes()},
        })
        return 1
    write_json(cell_dir / "result.json", result)
    emit("phase", phase="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
