"""What a hostile but fair tester tried (issue 12), tried again for real: a profile that is not UTF-8,
a prompt longer than the model's context and a cell that bursts its memory, what `validate` must
find before `run` does, a full disk (a real tmpfs), two runs of one profile at once. (Misbehaving
servers and secrets: test_faults.py; the seal over the manifest's bytes: test_integrity.py.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.errors import ProfileError
from bench.profile.loading import load_profile
from bench.results.resultset import new_run_id
from bench.run import memory_limit as memlimit
from conftest import calibration_endpoint, tiny_profile, tmpfs

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    """Poll for an event (not a duration): the test's own progress, never the machine's speed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# --- 1: a profile that is not UTF-8 ----------------------------------------------------------------


def test_a_profile_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_bytes(b"name: caf\xe9\n")
    done = cli("validate", str(profile))
    assert done.returncode == 2
    assert one_error_line(done) == f"error: {profile}: line 1, column 10: not UTF-8 text (byte 0xe9); save the " \
                                   "file as UTF-8"


# --- 2: longer than the model's context; the memory limit -------------------------------------------


def test_validate_refuses_a_workload_the_model_cannot_hold(write_profile, tmp_path: Path) -> None:
    profile = write_profile(tiny_profile(workloads=[{"name": "w", "input_tokens": 10_000_000, "output_tokens": 8}]))
    done = cli("validate", str(profile))
    assert done.returncode == 2
    assert one_error_line(done) == (f"error: {profile}: workloads[0].input_tokens: 10,000,000 input + 8 output tokens "
                                    "do not fit tiny-llama's context of 2,048 tokens (max_position_embeddings of card "
                                    "tiny-llama)")
    (tmp_path / "trace.jsonl").write_text('{"timestamp": 0, "input_tokens": 16, "output_tokens": 8}\n'
                                          '{"timestamp": 1, "input_tokens": 4000, "output_tokens": 8}\n')
    cases = [
        ({"scenarios": [{"kind": "prefill-decode", "prompt_tokens": [512], "gen_tokens": [64], "depths": [0, 1600]}]},
         "scenarios[0].prompt_tokens: 2,112 input + 64 output tokens do not fit"),
        ({"engines": [{"kind": "openai", "base_urls": ["http://127.0.0.1:1/v1"]}],
          "scenarios": [{"kind": "trace", "file": "trace.jsonl"}]},
         "scenarios[0].file (entry 2, by time): 4,000 input + 8 output tokens do not fit"),
        ({"engines": [{"kind": "vllm", "max_model_len": 32}]},
         "workloads[0].input_tokens: 48 input + 8 output tokens do not fit tiny-llama's context of 32 tokens "
         "(engines[0].max_model_len)"),
        ({"workloads": [{"name": "w", "input_tokens": 16, "output_tokens": {"dist": "uniform", "min": 1,
                                                                            "max": 4000}}]},
         "workloads[0].output_tokens: 16 input + 4,000 output tokens do not fit"),
    ]
    for overrides, words in cases:
        with pytest.raises(ProfileError, match=rf"{__import__('re').escape(words)}"):
            load_profile(write_profile(tiny_profile(**overrides)))
    load_profile(write_profile(tiny_profile()))  # what fits, passes


def test_a_cell_that_bursts_its_memory_is_stopped_by_the_kernel_near_the_limit(write_profile, tmp_path: Path) -> None:
    limit_gib = 1.0
    profile = write_profile(tiny_profile(
        scenarios=[{"kind": "offline", "batch_sizes": [1, 2]}],
        run={"repetitions": 1, "warmup": 0, "memory_limit_gib": limit_gib, "telemetry_interval_s": 0.1}))
    faults = {"offline b=1": "oom", "offline b=2": "burst"}  # grow 64 MiB at a time; one allocation of 4x the limit
    out = tmp_path / "result"
    done = cli("run", str(profile), "--output", str(out), env={"LOKAAL_BENCH_FAULT": json.dumps(faults)})
    assert done.returncode == 1, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        limit = summary["memory_limit"]
        assert limit["bytes"] == int(limit_gib * 2**30) and limit["source"] == "run.memory_limit_gib"
        assert limit["mechanism"] in (memlimit.CGROUP, memlimit.RLIMIT), limit  # a kernel mechanism, here
        assert summary["status"] == "FAILED"
        assert summary["reason"].startswith("exceeded the memory limit"), summary["reason"]
        assert limit["mechanism"] in summary["reason"]  # the kernel stopped it, not the RSS poller
        peak = max(summary["memory"].get("peak_rss_bytes") or 0, summary["memory"]["peak_tree_rss_bytes_sampled"])
        assert peak <= 1.1 * limit["bytes"], (entry["label"], peak)  # near the limit, never far past it


def test_the_default_limit_comes_from_the_machine_and_a_profile_can_raise_it() -> None:
    total, what = memlimit.machine_memory()
    limit, source = memlimit.resolve(None)
    assert limit == int(total * memlimit.DEFAULT_SHARE) and source == f"default: 80% of {what}"
    assert memlimit.resolve(2 * total / 2**30) == (int(2 * total), "run.memory_limit_gib")
    chosen = memlimit.prepare(limit, source)
    assert chosen.mechanism in (memlimit.CGROUP, memlimit.RLIMIT) and chosen.why
    assert chosen.poller_bytes > chosen.bytes  # the poller is the last line, behind the kernel's
    memlimit.release(chosen)


# --- 3: validate finds what run would --------------------------------------------------------------


def test_validate_and_run_refuse_what_run_would_only_find_later(write_profile, tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "broken",\n')
    (tmp_path / "nameless.jsonl").write_text('{"text": "no prompt field"}\n')
    (tmp_path / "trace.jsonl").write_text('{"timestamp": 0, "input_tokens": 16}\n')
    profile = write_profile(tiny_profile(
        models=[{"card": "tiny-llama"}, {"card": "no-such-card"}],
        engines=[{"kind": "openai", "base_urls": ["http://127.0.0.1:1/v1"], "api_key_env": "LOKAAL_TEST_UNSET_KEY"}],
        workloads=[{"name": "p", "prompts_file": "prompts.jsonl", "output_tokens": 4},
                   {"name": "n", "prompts_file": "nameless.jsonl", "output_tokens": 4}],
        scenarios=[{"kind": "concurrency", "users": [1]}, {"kind": "trace", "file": "trace.jsonl"}]))
    expected = [
        "models[1].card: unknown model card 'no-such-card'",
        "workloads[0].prompts_file: prompts.jsonl line 2: not JSON",
        "workloads[1].prompts_file: nameless.jsonl line 1: expected a JSON object with a 'prompt' text",
        "scenarios[1].file: ",
        "engines[0].api_key_env: the environment variable LOKAAL_TEST_UNSET_KEY is not set",
    ]
    results = tmp_path / "results"
    for args in (("validate", str(profile)), ("run", str(profile), "--results-dir", str(results))):
        done = cli(*args, env={"LOKAAL_TEST_UNSET_KEY": ""})
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        for words in expected:
            assert f"{profile}: {words}" in done.stderr, (words, done.stderr)
        assert "line 1: need timestamp, input_tokens, output_tokens" in done.stderr
    assert not results.exists()  # run refused before it started anything


# --- 4: a full disk ----------------------------------------------------------------------------------


def fill(directory: Path) -> None:
    """Write until the filesystem refuses: 1 MiB at a time, then 4 KiB, then bytes."""
    with open(directory / "filler", "ab", buffering=0) as out:
        for size in (2**20, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError:
                continue


def test_a_full_disk_stops_the_run_in_one_line_keeps_the_cells_and_resumes(write_profile, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "24m") as disk, calibration_endpoint(0.002, 0.001) as url:
        # Served cells: what fills the disk does not care what is measured, and they start in a second.
        profile = write_profile(tiny_profile(engines=[{"kind": "openai", "base_urls": [url]}],
                                             workloads=[{"name": "w", "input_tokens": 8, "output_tokens": 4}],
                                             scenarios=[{"kind": "concurrency", "users": [1, 2, 3], "requests": 6}],
                                             run={"repetitions": 1, "warmup": 0}))
        out = disk / "result"
        run = subprocess.Popen([sys.executable, "-m", "bench", "run", str(profile), "--output", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # As soon as the first cell is on disk, the disk fills up (a job beside the run, say).
        filler = threading.Thread(target=lambda: (wait_for(lambda: any(out.glob("cells/*/cell.json")),
                                                           "the first cell"), fill(disk)))
        filler.start()
        stdout, stderr = run.communicate(timeout=600)
        filler.join()
        assert run.returncode == 130, stdout + stderr
        line = one_error_line(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr))
        assert line.startswith("error: the disk is full at ") and f"(filesystem mounted at {disk})" in line, line
        assert f"Free some space, then resume with: lokaal-bench run {profile} --resume {out}" in line
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["interruption"]["reason"] == "disk full"
        assert manifest["counts"]["COMPLETED"] >= 1 and manifest["counts"]["FAILED"] == 0
        kept = {c["id"] for c in manifest["cells"] if c["status"] == "COMPLETED"}
        assert cli("verify", str(out)).returncode == 0  # sealed as it was left: nothing half-written

        (disk / "filler").unlink()
        done = cli("run", str(profile), "--resume", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["counts"]["COMPLETED"] == 3
        assert kept <= {c["id"] for c in manifest["cells"]}
        assert cli("verify", str(out)).returncode == 0


def test_a_run_that_clearly_does_not_fit_the_disk_is_refused_before_it_starts(write_profile, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "2m") as small:
        profile = write_profile(tiny_profile())
        done = cli("run", str(profile), "--results-dir", str(small / "results"))
        assert done.returncode == 2
        line = one_error_line(done)
        assert f"not enough disk space for this run: {small}" in line and "the result set of 1 cell(s)" in line
        # synthetic weights not yet in the model cache count too: a 1B card in float32 is 4.6 GiB
        profile = write_profile(tiny_profile(models=[{"card": "llama-3.2-1b"}],
                                             run={"model_cache_dir": str(small / "cache")}))
        done = cli("validate", str(profile))
        assert done.returncode == 0  # validate: the profile is fine; it is this machine's disk that is not
        done = cli("run", str(profile), "--results-dir", str(tmp_path / "results"))
        assert done.returncode == 2 and "synthetic weights of llama-3.2-1b (float32)" in one_error_line(done)
        assert not list(small.iterdir())


# --- 5: two runs at once -----------------------------------------------------------------------------


def test_run_ids_are_unique_within_one_second(tmp_path: Path) -> None:
    from bench.run.runner import _claim_run_dir

    now = dt.datetime(2026, 12, 1, 3, 0, 0, tzinfo=dt.timezone.utc)
    ids = {new_run_id("nightly", "0123456789abcdef", now=now) for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("20261201T030000Z-nightly-01234567-") for i in ids)
    claimed = {_claim_run_dir(tmp_path, "nightly", "0123456789abcdef") for _ in range(20)}
    assert len(claimed) == 20 and all(p.is_dir() for p in claimed)


def gated_profile(tmp_path: Path, port: int) -> Path:
    """A served cell whose every request waits for the gate file: a run that measures until the test says."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile(
        engines=[{"kind": "openai", "base_urls": [f"http://127.0.0.1:{port}/gated/v1"], "request_timeout_s": 300}],
        workloads=[{"name": "w", "input_tokens": 8, "output_tokens": 4}],
        scenarios=[{"kind": "concurrency", "users": [1], "requests": 2}],
        run={"repetitions": 1, "warmup": 0}), sort_keys=False))
    return profile


@pytest.fixture
def two_runs(tmp_path: Path):
    """Two `lokaal-bench run` of one profile against a gated fault server, a lock directory of their own."""
    from bench.serving.fault_server import start

    gate = tmp_path / "gate"
    proc, port = start("--gate", str(gate))
    lock = tmp_path / "lock"
    env = {**os.environ, "LOKAAL_BENCH_LOCK_DIR": str(lock), "PYTHONUNBUFFERED": "1"}
    profile = gated_profile(tmp_path, port)
    results = tmp_path / "results"
    started: list[subprocess.Popen[str]] = []

    def launch(name: str, *extra: str) -> subprocess.Popen[str]:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the process writes it; closed by the OS
        run = subprocess.Popen([sys.executable, "-m", "bench", "run", str(profile), "--results-dir", str(results),
                                *extra], stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        started.append(run)
        return run

    def measuring() -> int:
        return len(list((lock / "runs").glob("*.json"))) if (lock / "runs").is_dir() else 0

    try:
        yield {"launch": launch, "gate": gate, "measuring": measuring, "results": results, "logs": tmp_path}
    finally:
        gate.touch()
        for run in started:
            try:
                run.wait(timeout=120)
            except subprocess.TimeoutExpired:
                run.kill()
        proc.kill()
        proc.wait()


def summaries(results: Path) -> dict[Path, dict[str, Any]]:
    out = {}
    for manifest_path in sorted(results.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        (entry,) = manifest["cells"]
        cell = json.loads((manifest_path.parent / entry["dir"] / "cell.json").read_text())
        out[manifest_path.parent] = {"manifest": manifest, "cell": cell}
    return out


def test_a_second_run_waits_for_the_one_measuring(two_runs: dict[str, Any]) -> None:
    first = two_runs["launch"]("first")
    wait_for(lambda: two_runs["measuring"]() == 1, "the first run to measure")
    second = two_runs["launch"]("second")
    log = two_runs["logs"] / "second.log"
    wait_for(lambda: "waiting: another lokaal-bench run was measuring on this machine" in log.read_text(),
             "the second run to say it waits")
    assert two_runs["measuring"]() == 1  # it waits without measuring
    two_runs["gate"].touch()
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0, log.read_text()
    sets = summaries(two_runs["results"])
    assert len(sets) == 2  # one profile, started in the same second or not: two result sets
    (a, b) = sorted(sets.values(), key=lambda s: s["manifest"]["created"])
    assert b["cell"]["started"] >= a["manifest"]["finished"]  # one after the other
    for one in (a, b):
        assert one["cell"]["validity"]["verdict"] == "VALID" or not any(
            "another lokaal-bench run" in r for r in one["cell"]["validity"]["reasons"])
        assert "concurrent_runs" not in one["cell"]
        assert one["cell"]["memory_limit"]["source"].startswith("default: 80% of")


def test_a_run_told_to_measure_alongside_marks_both_runs_cells_invalid(two_runs: dict[str, Any]) -> None:
    first = two_runs["launch"]("first")
    wait_for(lambda: two_runs["measuring"]() == 1, "the first run to measure")
    second = two_runs["launch"]("second", "--when-busy", "mark")
    wait_for(lambda: two_runs["measuring"]() == 2, "the second run to measure alongside")
    two_runs["gate"].touch()
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    assert "measuring anyway (--when-busy mark)" in (two_runs["logs"] / "second.log").read_text()
    sets = summaries(two_runs["results"])
    assert len(sets) == 2
    for path, one in sets.items():
        others = one["cell"]["concurrent_runs"]
        assert len(others) == 1 and others[0]["result_set"] != str(path)
        assert one["cell"]["validity"]["verdict"] == "INVALID"
        assert any(r.startswith("another lokaal-bench run was measuring on this machine during this cell")
                   for r in one["cell"]["validity"]["reasons"])
