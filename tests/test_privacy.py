"""Privacy, run for real: by default no prompt or response text reaches any file of a result set (the
records keep lengths and hashes), with run.store_text they do; an API key never does. Both an
in-process cell (transformers on the tiny card) and a served one (the calibration endpoint)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.results.records import read_records
from bench.results.resultset import ResultSet, validate
from conftest import calibration_endpoint, tiny_profile

pytestmark = pytest.mark.slow

PROMPTS = ("Confidential: the salary of employee 4711 is forty thousand euros",
           "Vertrouwelijk: het dossier van burger 815 ligt bij de gemeente")
SECRET = "sk-privacy-test-0123456789abcdef"  # the API key: in no file, whatever store_text says
KEY_ENV = "LOKAAL_TEST_ENDPOINT_KEY"


@pytest.fixture(scope="module")
def endpoint():
    with calibration_endpoint(0.005, 0.002) as url:
        yield url


def run_profile(tmp_path: Path, endpoint: str, store_text: bool | None) -> Path:
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": text}) for text in PROMPTS))
    run = {"repetitions": 1, "warmup": 1, "cell_timeout_s": 120, "telemetry_interval_s": 0.1}
    if store_text is not None:
        run["store_text"] = store_text
    data = tiny_profile(
        engines=[{"kind": "transformers", "dtype": "float32", "device": "cpu", "threads": 1},
                 {"kind": "openai", "base_urls": [endpoint], "api_key_env": KEY_ENV}],
        workloads=[{"name": "text", "prompts_file": "prompts.jsonl", "output_tokens": 4}],
        scenarios=[{"kind": "single-stream", "requests": 2}, {"kind": "concurrency", "users": [1], "requests": 2}],
        run=run,
    )
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(tmp_path / "profile.yaml"), "--output", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, KEY_ENV: SECRET})
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    return out


def every_file_text(result: Path) -> dict[str, str]:
    """Every file of the result set as text, gzip files unpacked: what a grep of the set would see."""
    texts = {}
    for path in sorted(result.rglob("*")):
        if path.is_file():
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            texts[path.relative_to(result).as_posix()] = raw.decode("utf-8", errors="replace")
    return texts


def records_of(result: Path) -> dict[str, list]:
    manifest = ResultSet(result).read_manifest()
    return {c["label"]: list(read_records(result / c["dir"] / "records.jsonl.gz")) for c in manifest["cells"]}


def test_by_default_no_text_reaches_the_result_set(tmp_path: Path, endpoint: str) -> None:
    result = run_profile(tmp_path, endpoint, store_text=None)
    files = every_file_text(result)
    assert any(name.endswith("records.jsonl.gz") for name in files)
    for name, text in files.items():
        for prompt in PROMPTS:
            for part in (prompt, prompt.split(":")[1].strip()):
                assert part not in text, f"prompt text in {name}"
        assert " t0 t1" not in text, f"the calibration server's response text in {name}"
        assert SECRET not in text, f"the API key in {name}"
    manifest = ResultSet(result).read_manifest()
    validate(manifest, "manifest")
    assert manifest["privacy"] == {"store_text": False} and manifest["schema_version"] == 3
    for label, records in records_of(result).items():
        # one warm-up request, and at least the 10 measured requests p90 needs (the profile asked for 2)
        assert sum(r.warmup for r in records) == 1 and len(records) - 1 >= 10, label
        for record in records:
            assert record.prompt_text is None and record.response_text is None
            assert record.prompt_sha256 and record.response_sha256, label  # what is kept instead: hashes
    for entry in manifest["cells"]:
        summary = ResultSet(result).read_cell_summary(entry["id"])
        validate(summary, "cell")
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert summary["responses_sha256"]


def test_store_text_keeps_prompts_and_responses(tmp_path: Path, endpoint: str) -> None:
    result = run_profile(tmp_path, endpoint, store_text=True)
    files = every_file_text(result)
    assert all(SECRET not in text for text in files.values())
    assert ResultSet(result).read_manifest()["privacy"] == {"store_text": True}
    by_label = records_of(result)
    served = next(records for label, records in by_label.items() if "concurrency" in label)
    in_process = next(records for label, records in by_label.items() if "single-stream" in label)
    for records in (served, in_process):
        assert {r.prompt_text for r in records} == set(PROMPTS)  # the prompts as written in the file
    assert any(PROMPTS[0] in text for name, text in files.items() if name.endswith("records.jsonl.gz"))
    assert all(r.response_text == " t0 t1 t2 t3" for r in served)  # what the calibration server streams
    # In process: the generated ids decoded by the model's tokenizer; greedy, so one prompt gives one
    # output, and its text and its hash agree across the requests that asked it.
    by_prompt: dict[str, set] = {}
    for record in in_process:
        assert record.response_text and record.output_tokens == 4
        by_prompt.setdefault(record.prompt_text, set()).add((record.response_text, record.response_sha256))
    assert all(len(outputs) == 1 for outputs in by_prompt.values()), by_prompt
