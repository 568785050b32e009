"""Workloads like real use (issue 16): conversations, shared documents, salt, reasoning, structured answers
and the server's own /metrics, through real cell processes against the tiny card (transformers) and the
calibration endpoint (a real server process on loopback)."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.models import resolve_model
from bench.models.chat_format import load_chat_format
from bench.profile.conversations import conversation_stream
from bench.profile.documents import document_pool, expected_hit_rate
from bench.profile.workload_specs import WorkloadSpec
from bench.profile.workloads import TokenSpace, request_stream, token_ids_sha256
from bench.scenarios.conversation_state import ConversationState, TurnTooLong
from bench.serving.calibrate import start_server
from bench.telemetry.server_metrics import parse_prometheus, scrape_refusal
from conftest import cells_by_label, tiny_profile

TTFT, ITL = 0.02, 0.005


@contextlib.contextmanager
def endpoint(*options: str) -> Iterator[str]:
    proc, port = start_server(TTFT, ITL, options=options)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait()


def run(write_profile, tmp_path: Path, profile: dict) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(profile)), "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    return done, out




@pytest.fixture(scope="module")
def tiny_chat():
    model = resolve_model(card="tiny-llama", path=None, dtype="float32", seed=0, cache_dir=None)
    return load_chat_format(Path(model.path))


CONVERSATION = {"name": "chat", "kind": "conversation", "turns": 3, "input_tokens": 10, "output_tokens": 5,
                "seed": 2}


def _state(chat, tokenizer, context: int | None, turns: int = 3) -> ConversationState:
    workload = WorkloadSpec.model_validate({**CONVERSATION, "turns": turns})
    plan = next(conversation_stream(workload, 1))
    return ConversationState(plan, chat, lambda t: tokenizer.encode(t, add_special_tokens=False),
                             lambda ids: tokenizer.decode(ids), context, "2/1")


def test_each_turn_begins_with_the_previous_prompt_and_answer(tiny_chat) -> None:
    chat, tokenizer = tiny_chat
    assert chat.stable
    state = _state(chat, tokenizer, None)
    previous = None
    for turn in range(3):
        request = state.request(turn, 0.0)
        if previous is not None:
            assert request.prompt_token_ids[:len(previous)] == previous
            assert request.turn.history_tokens == len(previous)
        # the prompt a server renders from the messages (vLLM: the template's text, tokenised without
        # special tokens added) is the same ids
        text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        assert tokenizer.encode(text, add_special_tokens=False) == request.prompt_token_ids
        answer = [chat.words[turn], chat.words[turn + 1]]
        state.answered(request.prompt_token_ids, answer, tokenizer.decode(answer))
        previous = request.prompt_token_ids + answer


def test_history_beyond_the_context_is_dropped_oldest_first(tiny_chat) -> None:
    chat, tokenizer = tiny_chat
    state = _state(chat, tokenizer, 70, turns=4)
    dropped = []
    for turn in range(4):
        request = state.request(turn, 0.0)
        assert len(request.prompt_token_ids) + request.output_tokens <= 70
        dropped.append(request.turn.dropped_turns)
        state.answered(request.prompt_token_ids, [chat.words[0]] * 5, "")
    assert dropped[0] == 0 and dropped[-1] > 0 and dropped == sorted(dropped)
    with pytest.raises(TurnTooLong, match="do not fit the context of 12 tokens"):
        _state(chat, tokenizer, 12).request(0, 0.0)


def test_in_process_conversation_records_turns(write_profile, tmp_path: Path) -> None:
    done, out = run(write_profile, tmp_path, tiny_profile(
        workloads=[CONVERSATION], scenarios=[{"kind": "single-stream", "requests": 3},
                                             {"kind": "offline", "batch_sizes": [2], "batches": 1}],
        run={"repetitions": 1, "warmup": 1, "min_duration_s": 0}))
    assert done.returncode == 0, done.stdout + done.stderr
    for summary, records in cells_by_label(out).values():
        measured = [r for r in records if not r.warmup]
        by_conversation: dict[int, list] = {}
        for r in measured:
            by_conversation.setdefault(r.conversation, []).append(r)
        for turns in by_conversation.values():
            turns.sort(key=lambda r: r.turn)
            assert [r.turn for r in turns] == [0, 1, 2]
            for before, after in itertools.pairwise(turns):  # the whole previous prompt and answer
                assert after.history_tokens == before.input_tokens + before.output_tokens
        view = summary["conversation"]
        assert [t["turn"] for t in view["turns"]] == [0, 1, 2] and view["history_dropped"]["requests"] == 0
    offline = next(s for s, _ in cells_by_label(out).values() if "offline" in s["label"])
    assert {r.batch_size for r in cells_by_label(out)[offline["label"]][1]} == {2}  # two conversations side by side
    table = subprocess.run([sys.executable, "-m", "bench", "table", str(out), "--format", "json"],
                           capture_output=True, text=True, timeout=120)
    row = json.loads(table.stdout)["rows"][0]
    assert len(row["ttft_by_turn_ms"]) == 3 and row["prefix_hit_ideal"] > 0.3


def test_served_conversation_and_shared_documents_with_the_servers_view(write_profile, tmp_path: Path) -> None:
    with endpoint("--prefix-cache") as url:
        profile = tiny_profile(
            engines=[{"kind": "openai", "base_urls": [url]}],
            workloads=[{**CONVERSATION, "think_time_s": 0.01},
                       {"name": "docs", "kind": "shared-documents", "documents": {"count": 4, "tokens": 48},
                        "input_tokens": 8, "output_tokens": 4}],
            scenarios=[{"kind": "concurrency", "users": [2], "requests": 12}],
            run={"repetitions": 1, "warmup": 1, "min_duration_s": 0, "telemetry_interval_s": 0.1})
        done, out = run(write_profile, tmp_path, profile)
    assert done.returncode == 0, done.stdout + done.stderr
    found = {label.split(" | ")[2]: value for label, value in cells_by_label(out).items()}
    conversation, records = found["chat"]
    assert conversation["status"] == "COMPLETED", conversation["reason"]
    assert {r.turn for r in records if not r.warmup} == {0, 1, 2}
    assert all(r.history_tokens > 0 for r in records if r.turn)
    documents, records = found["docs"]
    cache = documents["prefix_cache"]
    assert 0 < cache["ideal_hit_rate"] < 1 and cache["measured_hit_rate"] is not None
    # the endpoint's cache never evicts and counts by token, as the ideal one does
    assert cache["measured_hit_rate"] == pytest.approx(cache["ideal_hit_rate"], abs=0.02)
    assert documents["server_metrics"]["available"] and documents["server_metrics"]["n_samples"] >= 2
    assert (out / "cells" / documents["cell_id"] / "server-metrics.jsonl.gz").exists()
    assert {r.document for r in records} <= set(range(4))
    # the figures: TTFT by turn, and the server's own view over time; the report puts both in
    figures = tmp_path / "figures"
    done = subprocess.run([sys.executable, "-m", "bench", "plot", str(out), "--output-dir", str(figures)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (figures / "ttft-by-turn.png").stat().st_size and (figures / "server.png").stat().st_size
    report = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "bench", "report", str(out), "--output", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    html = report.read_text()
    assert "TTFT by conversation turn" in html and "own view (/metrics)" in html


def test_an_unreachable_metrics_page_is_a_note_not_a_failure(write_profile, tmp_path: Path) -> None:
    with endpoint("--no-metrics") as url:
        profile = tiny_profile(engines=[{"kind": "openai", "base_urls": [url]}],
                               workloads=[{"name": "w", "input_tokens": 8, "output_tokens": 4}],
                               scenarios=[{"kind": "concurrency", "users": [1], "requests": 6}],
                               run={"repetitions": 1, "warmup": 1, "min_duration_s": 0, "telemetry_interval_s": 0.1})
        done, out = run(write_profile, tmp_path, profile)
    assert done.returncode == 0, done.stdout + done.stderr
    [(summary, _)] = cells_by_label(out).values()
    assert summary["status"] == "COMPLETED"
    assert not summary["server_metrics"]["available"] and "HTTP 404" in summary["server_metrics"]["reason"]
    assert any("/metrics was not read" in note for note in summary["validity"]["notes"])


@pytest.mark.parametrize("form,think_tags", [("reasoning", False), ("reasoning_content", False), ("tags", True)])
def test_reasoning_and_answer_tokens_are_counted_apart(write_profile, tmp_path: Path, form: str,
                                                       think_tags: bool) -> None:
    with endpoint("--reasoning", "5", "--reasoning-format", form) as url:
        profile = tiny_profile(engines=[{"kind": "openai", "api": "chat", "base_urls": [url],
                                         "think_tags": think_tags}],
                               workloads=[{"name": "w", "input_tokens": 8, "output_tokens": 12}],
                               scenarios=[{"kind": "concurrency", "users": [2], "requests": 8}],
                               run={"repetitions": 1, "warmup": 1, "min_duration_s": 0})
        done, out = run(write_profile, tmp_path, profile)
    assert done.returncode == 0, done.stdout + done.stderr
    [(summary, records)] = cells_by_label(out).values()
    for r in records:
        assert r.ok and r.output_tokens == 12 and r.reasoning_tokens == 5
        assert r.submit_time < r.first_token_time < r.first_answer_time <= r.end_time
    view = summary["reasoning"]
    assert view["reasoning_tokens"] == 5 * view["requests"] and view["answer_tokens"] == 7 * view["requests"]
    assert view["time_to_first_answer"]["p50"] > view["ttft"]["p50"]


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"]}


@pytest.mark.parametrize("structure", ["schema", "tools"])
def test_structured_answers_are_judged_on_validity(write_profile, tmp_path: Path, structure: str) -> None:
    extra = ({"response_format": {"type": "json_schema", "json_schema": {"name": "town", "schema": SCHEMA}}}
             if structure == "schema" else
             {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}]})
    with endpoint("--invalid-structured", "0.25") as url:
        profile = tiny_profile(engines=[{"kind": "openai", "base_urls": [url]}],
                               workloads=[{"name": "w", "input_tokens": 8, "output_tokens": 32, **extra},
                                          {"name": "plain", "input_tokens": 8, "output_tokens": 32}],
                               scenarios=[{"kind": "concurrency", "users": [1], "requests": 8}],
                               run={"repetitions": 1, "warmup": 1, "min_duration_s": 0})
        done, out = run(write_profile, tmp_path, profile)
    assert done.returncode == 0 or done.returncode == 1, done.stdout + done.stderr  # 1: a cell is INVALID
    found = {label.split(" | ")[2]: value for label, value in cells_by_label(out).items()}
    summary, records = found["w"]
    view = summary["structured"]
    assert view["kind"] == ("json_schema" if structure == "schema" else "tools")
    # one in four answers is cut short by the endpoint (warm-up included in its count)
    assert sum(1 for r in records if r.structured_valid is False) == len(records) // 4
    assert view["invalid"] > 0 and view["valid"] + view["invalid"] == view["answered"]
    assert summary["validity"]["verdict"] == "INVALID" and "not valid" in summary["validity"]["reasons"][-1]
    assert "structured" not in found["plain"][0]
    table = subprocess.run([sys.executable, "-m", "bench", "table", str(out), "--format", "json"],
                           capture_output=True, text=True, timeout=120)
    row = next(r for r in json.loads(table.stdout)["rows"] if r["cell"].split(" | ")[2] == "w")
    assert row["structured_valid"] == view["valid_rate"] and row["structure_e2e_ratio"] > 0


def test_a_schema_that_is_not_json_schema_is_bad_input(write_profile) -> None:
    profile = tiny_profile(engines=[{"kind": "openai", "base_urls": ["http://127.0.0.1:9/v1"]}],
                           workloads=[{"name": "w", "input_tokens": 8, "output_tokens": 8, "response_format": {
                               "type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}}],
                           scenarios=[{"kind": "concurrency", "users": [1]}])
    path = write_profile(profile)
    done = subprocess.run([sys.executable, "-m", "bench", "validate", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(path.name) in done.stderr and "workloads" in done.stderr and "schema" in done.stderr
    assert "not valid JSON Schema" in done.stderr and "Traceback" not in done.stderr


def test_salt_makes_every_prompt_its_own_but_keeps_the_hashes() -> None:
    space = TokenSpace(1000, frozenset({0, 1, 2}))
    plain = WorkloadSpec.model_validate({"name": "w", "input_tokens": 16, "output_tokens": 4})
    salted = WorkloadSpec.model_validate({"name": "w", "input_tokens": 16, "output_tokens": 4, "salt": True})
    a = [next(request_stream(salted, space, 1, salt_nonce=n)) for n in ("run-a", "run-b")]
    b = next(request_stream(plain, space, 1))
    assert a[0].prompt_token_ids != a[1].prompt_token_ids and a[0].salt_tokens == 8
    assert token_ids_sha256(a[0].unsalted_ids) == token_ids_sha256(a[1].unsalted_ids) == \
        token_ids_sha256(b.prompt_token_ids)


def test_the_ideal_hit_rate_of_shared_documents_is_known_in_advance() -> None:
    space = TokenSpace(5000, frozenset())
    for popularity in ("zipf", "uniform"):
        workload = WorkloadSpec.model_validate({
            "name": "d", "kind": "shared-documents", "input_tokens": 16, "output_tokens": 4,
            "documents": {"count": 10, "tokens": 100, "popularity": popularity}})
        pool = document_pool(workload.documents, space, workload.seed)
        draws = []
        seen: set[int] = set()
        hits = total = 0
        for request in (r for _, r in zip(range(400), request_stream(workload, space, 1), strict=False)):
            assert request.prompt_token_ids[:100] == pool[request.document]  # every prompt opens with its document
            hits += 100 if request.document in seen else 0
            total += len(request.prompt_token_ids)
            seen.add(request.document)
            draws.append(request.document)
        expected = expected_hit_rate(workload.documents, 16, 400)
        assert hits / total == pytest.approx(expected, abs=0.02)
        if popularity == "zipf":  # document 0 is the most read
            assert draws.count(0) > draws.count(9) * 3


def test_prometheus_text_and_who_may_be_scraped() -> None:
    text = ('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 3.0\n'
            'vllm:prefix_cache_queries_total{model_name="m"} 100\nvllm:prefix_cache_hits_total{model_name="m"} 40\n'
            'vllm:kv_cache_usage_perc{model_name="m",engine="0"} 0.25\n')
    values = parse_prometheus(text)
    assert values == {"running": 3.0, "prefix_cache_queries": 100.0, "prefix_cache_hits": 40.0,
                      "kv_cache_usage": 0.25}
    with pytest.raises(ValueError):
        parse_prometheus("<html>not metrics</html>")
    assert scrape_refusal("http://127.0.0.1:8000/metrics", []) is None
    assert scrape_refusal("http://gpu-node:8000/metrics", ["gpu-node"]) is None
    assert "neither loopback" in scrape_refusal("http://10.1.2.3:8000/metrics", [])


def test_conversations_replay_from_a_file(tiny_chat, tmp_path: Path) -> None:
    chat, tokenizer = tiny_chat
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps({"turns": [{"user": "Welke regels gelden?", "output_tokens": 7, "think_time_s": 1.5},
                                          {"input_tokens": 5}]}) + "\n")
    workload = WorkloadSpec.model_validate({"name": "c", "kind": "conversation", "conversations_file": str(path),
                                            "output_tokens": 3})
    plan = next(conversation_stream(workload, 1))
    assert [(t.user_text, t.user_tokens, t.output_tokens, t.think_time_s) for t in plan.turns] == [
        ("Welke regels gelden?", None, 7, 1.5), (None, 5, 3, 0.0)]
    state = ConversationState(plan, chat, lambda t: tokenizer.encode(t, add_special_tokens=False),
                              lambda ids: tokenizer.decode(ids), None, "0/1")
    first = state.request(0, 0.0)
    assert first.messages == [{"role": "user", "content": "Welke regels gelden?"}]


def test_a_bad_conversations_file_is_bad_input(write_profile, tmp_path: Path) -> None:
    (tmp_path / "conversations.jsonl").write_text('{"turns": [{"user": "hoi", "input_tokens": 4}]}\n')
    path = write_profile(tiny_profile(workloads=[{"name": "c", "kind": "conversation", "output_tokens": 4,
                                                  "conversations_file": "conversations.jsonl"}]))
    done = subprocess.run([sys.executable, "-m", "bench", "validate", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "workloads[0].conversations_file" in done.stderr and "line 1, turn 0" in done.stderr


def test_new_workload_fields_left_at_their_defaults_keep_the_cell_id(tmp_path: Path) -> None:
    from bench.profile.cells import expand
    from bench.profile.loading import parse_profile

    def cell_id(**workload: object) -> str:
        profile = parse_profile(tiny_profile(workloads=[{"name": "w", "input_tokens": 16, "output_tokens": 8,
                                                         **workload}]), str(tmp_path / "p.yaml"))
        return expand(profile, tmp_path / "p.yaml")[0].id

    plain = cell_id()
    assert cell_id(salt=False, kind="requests") == plain
    assert cell_id(salt=True) != plain
    assert cell_id(kind="shared-documents", documents={"count": 2, "tokens": 8}) != plain
