"""Whole runs through the real command line, real cell processes, real torch and transformers on the
tiny synthetic-weight card: the result set, its schema, isolation of sabotaged cells, resume."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results.records import read_records
from bench.results.resultset import ResultSet, validate
from conftest import loopback_only, tiny_profile

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def cell_summaries(result: Path) -> dict[str, dict]:
    manifest = json.loads((result / "manifest.json").read_text())
    return {c["label"]: json.loads((result / c["dir"] / "cell.json").read_text()) for c in manifest["cells"]
            if (result / c["dir"] / "cell.json").exists()}


def test_run_writes_a_valid_result_set(write_profile, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": text}) for text in (
        "De Tweede Kamer vraagt om lokale AI-modellen.", "Which servers can run which models, and how fast?")))
    profile = write_profile(tiny_profile(
        workloads=[
            {"name": "synthetic", "input_tokens": {"dist": "uniform", "min": 16, "max": 48}, "output_tokens": 8,
             "seed": 3},
            {"name": "text", "prompts_file": "prompts.jsonl", "output_tokens": 6},
        ],
        scenarios=[
            {"kind": "single-stream", "requests": 3},
            {"kind": "offline", "batch_sizes": [3], "batches": 1},
            {"kind": "prefill-decode", "prompt_tokens": [32], "gen_tokens": [5], "depths": [0, 64], "runs": 2},
        ],
        run={"repetitions": 2, "warmup": 1, "probes": True, "telemetry_interval_s": 0.1},
    ))
    out = tmp_path / "result"
    done = run_cli("run", str(profile), "--output", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lokaal-bench summary" in done.stdout and str(out) in done.stdout.replace("\n", "")
    # Not a terminal (a nightly log): each cell's phases are lines, each repetition once.
    single = [line for line in done.stdout.splitlines() if "single-stream" in line and "(at " in line]
    assert [line.split(": ")[-1].split(" (at")[0] for line in single if "repetition" in line][:2] == \
        ["repetition 1/2", "repetition 2/2"], done.stdout

    manifest = ResultSet(out).read_manifest()
    validate(manifest, "manifest")
    assert manifest["status"] == "complete"
    assert manifest["counts"] == {"total": 6, "COMPLETED": 6, "FAILED": 0, "PENDING": 0}
    assert manifest["offline"]["env"]["HF_HUB_OFFLINE"] == "1" and manifest["offline"]["refused"] == []
    assert manifest["environment"]["cpu"] and manifest["machine_id"] == manifest["environment"]["machine_id"]
    assert manifest["probes"]["host_memory"]["read_gb_s"] > 0

    summaries = cell_summaries(out)
    for label, summary in summaries.items():
        validate(summary, "cell")
        assert summary["status"] == "COMPLETED", (label, summary["reason"])
        assert summary["synthetic_weights"] is True
        assert summary["load_s"] > 0
        assert summary["memory"]["peak_rss_bytes"] > 100 * 2**20
        metrics = summary["metrics"]
        assert metrics["output_tok_s"]["value"] > 0 and metrics["decode_tok_s"]["value"] > 0
        assert len(metrics["output_tok_s"]["per_repetition"]) == 2
        assert metrics["ttft"]["p50"] <= metrics["e2e_latency"]["p50"]
        assert summary["energy_per_output_token"]["unit"] == "J/tok"
        assert summary["roofline"]["decode"]["fraction"] > 0 and summary["roofline"]["decode"]["bound_tok_s"] > 0
        records = list(read_records(out / "cells" / summary["cell_id"] / "records.jsonl.gz"))
        measured = [r for r in records if not r.warmup]
        assert all(r.output_tokens == r.expected_output_tokens == len(r.token_times) for r in records)
        assert all(r.token_times == sorted(r.token_times) and r.submit_time <= r.first_token_time for r in records)
        assert metrics["requests"]["ok"] == len(measured)
        with gzip.open(out / "cells" / summary["cell_id"] / "telemetry.jsonl.gz", "rt") as samples:
            assert sum(1 for _ in samples) >= 1

    single = next(s for label, s in summaries.items() if "synthetic | single-stream" in label)
    # at least the profile's 3 per repetition, raised to the 10 samples p90 needs over 2 repetitions, and
    # held open by the nightly 1 s floor (0.5 s per repetition) where the machine is faster than that
    sizing = single["sizing"]
    assert sizing["min_requests_per_repetition"] == 5 and sizing["min_duration_per_repetition_s"] == 0.5
    assert single["metrics"]["requests"]["ok"] >= 2 * 5
    assert single["metrics"]["duration_s"]["value"] >= 1.0
    assert [r["requests"] for r in sizing["per_repetition"]] == [
        sum(1 for r in read_records(out / "cells" / single["cell_id"] / "records.jsonl.gz") if r.repetition == k)
        for k in (0, 1)]
    depth = next(s for label, s in summaries.items() if "@d64" in label)
    records = list(read_records(out / "cells" / depth["cell_id"] / "records.jsonl.gz"))
    assert {r.context_depth for r in records} == {64} and {r.input_tokens for r in records} == {32}
    text = next(s for label, s in summaries.items() if "text | single-stream" in label)
    assert {r.input_tokens for r in read_records(out / "cells" / text["cell_id"] / "records.jsonl.gz")} != {0}


def test_sabotaged_cells_fail_alone(write_profile, tmp_path: Path) -> None:
    profile = write_profile(tiny_profile(
        scenarios=[{"kind": "single-stream", "requests": 2}, {"kind": "offline", "batch_sizes": [2, 3, 4, 5]}],
        run={"repetitions": 1, "warmup": 0, "cell_timeout_s": 30, "memory_limit_gib": 2.5,
             "telemetry_interval_s": 0.1},
    ))
    faults = {"offline b=2": "raise", "offline b=3": "oom", "offline b=4": "hang", "offline b=5": "segfault"}
    out = tmp_path / "result"
    done = run_cli("run", str(profile), "--output", str(out), env={"LOKAAL_BENCH_FAULT": json.dumps(faults)})
    assert done.returncode == 1, done.stdout + done.stderr
    summaries = cell_summaries(out)
    reasons = {label.split(" | ")[-1]: s["reason"] for label, s in summaries.items()}
    assert reasons["single-stream"] is None
    assert "injected fault: this cell raises" in reasons["offline b=2"]
    assert "exceeded the memory limit" in reasons["offline b=3"]
    assert "timed out after 30 s" in reasons["offline b=4"]
    assert "SIGSEGV" in reasons["offline b=5"]
    good = next(s for s in summaries.values() if s["reason"] is None)
    # at least the profile's 2, raised to the 10 samples p90 needs in one repetition
    assert good["status"] == "COMPLETED" and good["metrics"]["requests"]["ok"] >= 10
    assert good["metrics"]["requests"]["ok"] == good["sizing"]["per_repetition"][0]["requests"]
    manifest = json.loads((out / "manifest.json").read_text())
    validate(manifest, "manifest")
    assert manifest["counts"]["FAILED"] == 4 and manifest["counts"]["COMPLETED"] == 1
    for summary in summaries.values():
        validate(summary, "cell")
        if summary["status"] == "FAILED":
            assert summary["validity"]["verdict"] == "INVALID"
            assert summary["validity"]["reasons"][0].startswith("the cell did not complete")
    assert "Traceback" not in done.stdout


def test_killed_run_resumes_only_unfinished_cells(write_profile, tmp_path: Path) -> None:
    profile = write_profile(tiny_profile(
        scenarios=[{"kind": "offline", "batch_sizes": [1, 2, 3, 4]}],
        run={"repetitions": 1, "warmup": 0, "cell_timeout_s": 120},
    ))
    out = tmp_path / "result"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(profile), "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    completed: set[str] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "manifest.json").exists():
            completed = ResultSet(out).completed_cells()
            if len(completed) >= 1:
                break
        time.sleep(0.2)
    assert completed, "no cell completed before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and whatever it started, mid-run
    proc.wait()
    completed = ResultSet(out).completed_cells()
    assert 1 <= len(completed) < 4
    before = {cid: (out / "cells" / cid / "cell.json").read_bytes() for cid in completed}
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    done = run_cli("run", str(profile), "--resume", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming: {len(completed)} cell(s) already completed, {4 - len(completed)} to run" in done.stdout
    for cid, content in before.items():
        assert (out / "cells" / cid / "cell.json").read_bytes() == content  # kept, not redone
    manifest = json.loads((out / "manifest.json").read_text())
    validate(manifest, "manifest")
    assert manifest["counts"]["COMPLETED"] == 4 and manifest["status"] == "complete"
    assert [i["resume"] for i in manifest["invocations"]] == [False, True]


def test_resume_refuses_another_profile(write_profile, tmp_path: Path) -> None:
    first = write_profile(tiny_profile(scenarios=[{"kind": "single-stream", "requests": 1}],
                                       run={"repetitions": 1, "warmup": 0}), "a.yaml")
    out = tmp_path / "result"
    assert run_cli("run", str(first), "--output", str(out)).returncode == 0
    other = write_profile(tiny_profile(scenarios=[{"kind": "single-stream", "requests": 2}]), "b.yaml")
    done = run_cli("run", str(other), "--resume", str(out))
    assert done.returncode == 2 and "other cells" in done.stderr and "Traceback" not in done.stderr


def test_outbound_connection_from_a_cell_is_refused_and_recorded(write_profile, tmp_path: Path) -> None:
    """The whole profile runs inside a network namespace with only loopback: the clean cell completes
    (nothing needs a network), the cell that tries to reach out is refused and the refusal recorded."""
    profile = write_profile(tiny_profile(scenarios=[{"kind": "single-stream", "requests": 2},
                                                    {"kind": "offline", "batch_sizes": [2]}],
                                         run={"repetitions": 1, "warmup": 0}))
    out = tmp_path / "result"
    prefix = loopback_only()
    done = run_cli("run", str(profile), "--output", str(out), prefix=prefix,
                   env={"LOKAAL_BENCH_FAULT": json.dumps({"single-stream": "network"})})
    assert done.returncode == 1, done.stdout + done.stderr
    summaries = cell_summaries(out)
    clean = next(s for label, s in summaries.items() if "offline" in label)
    assert clean["status"] == "COMPLETED" and clean["network_refused"] == []
    summary = next(s for label, s in summaries.items() if "single-stream" in label)
    assert summary["status"] == "FAILED" and "refused a network connection to 192.0.2.1" in summary["reason"]
    assert [r["host"] for r in summary["network_refused"]] == ["192.0.2.1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["cell"], r["host"], r["port"]) for r in manifest["offline"]["refused"]] == [
        (summary["cell_id"], "192.0.2.1", 80)]
    assert "outbound connection attempt(s) refused" in done.stdout


def test_ctrl_c_stops_the_cell_and_keeps_the_result_set(write_profile, tmp_path: Path) -> None:
    profile = write_profile(tiny_profile(scenarios=[{"kind": "offline", "batch_sizes": [1, 2]}],
                                         run={"repetitions": 1, "warmup": 0, "cell_timeout_s": 300}))
    out = tmp_path / "result"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(profile), "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LOKAAL_BENCH_FAULT": json.dumps({"offline b=1": "hang"})})
    deadline = time.monotonic() + 120
    spec = None
    while time.monotonic() < deadline and spec is None:
        spec = next(iter((out / "cells").glob("*/spec.json")), None) if (out / "cells").exists() else None
        time.sleep(0.2)
    assert spec is not None
    time.sleep(8)  # the cell is loading or hanging now
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    leftover = subprocess.run(["pgrep", "-f", f"bench.run.cell_process {spec}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the cell process outlived the interrupted run"


def test_local_model_directory_runs_and_is_not_called_synthetic(write_profile, tmp_path: Path) -> None:
    """A plain Hugging Face directory (save_pretrained), named relative to the profile."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from bench.models import load_card

    config = {k: v for k, v in load_card("tiny-llama").config.items() if k not in ("architectures", "model_type")}
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(LlamaConfig(**config)).save_pretrained(tmp_path / "my-model")
    profile = write_profile(tiny_profile(models=[{"path": "my-model"}], run={"repetitions": 1, "warmup": 0}))
    out = tmp_path / "result"
    done = run_cli("run", str(profile), "--output", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = cell_summaries(out).values()
    assert summary["status"] == "COMPLETED" and summary["synthetic_weights"] is False
    assert summary["model"]["identity"]["kind"] == "local" and summary["model"]["name"] == "my-model"
    assert summary["model"]["safety"] == {"allow_pickle": False, "trust_remote_code": False, "code_sha256": None}
    assert str(tmp_path) not in json.dumps(summary["identity"])  # the cell id holds no machine path


def test_planted_faults_make_invalid_cells_and_clean_cells_stay_valid(write_profile, tmp_path: Path) -> None:
    """An engine whose outputs end early and a dead endpoint are INVALID with their reasons; under the
    procurement rules a short run is INVALID for its duration; the clean cell stays VALID."""
    # One repetition: the noise check across repetitions (tested on its own) would make the clean cell's
    # verdict depend on how busy this shared machine is.
    data = tiny_profile(scenarios=[{"kind": "single-stream", "requests": 10}, {"kind": "offline", "batch_sizes": [2]}],
                        run={"repetitions": 1, "warmup": 0})
    data["workloads"][0]["output_tokens"] = 32  # the clean cell must measure for more than the nightly 1 s
    data["engines"].append({"kind": "openai", "base_urls": ["http://127.0.0.1:9/v1"]})
    data["scenarios"].append({"kind": "concurrency", "users": [1], "requests": 1})
    out = tmp_path / "nightly"
    done = run_cli("run", str(write_profile(data)), "--output", str(out),
                   env={"LOKAAL_BENCH_FAULT": json.dumps({"offline b=2": "short"})})
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = {label.split(" | ")[-1]: s["validity"] for label, s in cell_summaries(out).items()}
    assert verdicts["single-stream"]["verdict"] == "VALID", verdicts["single-stream"]
    assert verdicts["offline b=2"]["verdict"] == "INVALID"
    assert any("ended early" in r for r in verdicts["offline b=2"]["reasons"])
    assert verdicts["concurrency 1"]["verdict"] == "INVALID"
    assert "Connection refused" in verdicts["concurrency 1"]["reasons"][0]

    # The procurement floors would measure 600 s: run.max_duration_s caps each repetition at 1 s instead,
    # which is what a too-short procurement run is.
    procurement = tiny_profile(scenarios=[{"kind": "single-stream", "requests": 6}],
                               run={"repetitions": 3, "warmup": 0, "rules": "procurement", "max_duration_s": 1})
    out = tmp_path / "procurement"
    assert run_cli("run", str(write_profile(procurement, "procurement.yaml")), "--output", str(out)).returncode == 0
    (summary,) = cell_summaries(out).values()
    assert summary["status"] == "COMPLETED" and summary["validity"]["verdict"] == "INVALID"
    assert summary["validity"]["for_procurement"] is True
    assert any("less than the 600 s the procurement rules require" in r for r in summary["validity"]["reasons"])
