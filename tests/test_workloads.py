"""Workloads: seeded, distinct per request, exact lengths, and real text from files."""

from __future__ import annotations

import json
import random

from pydantic import TypeAdapter

from bench.profile.workload_specs import LengthDist, WorkloadSpec
from bench.profile.workloads import TokenSpace, file_requests, prompts_digest, synthetic_requests
from bench.profile.workloads import sample_length as sample_typed


def sample_length(dist: dict, rng: random.Random) -> int:
    return sample_typed(TypeAdapter(LengthDist).validate_python(dist), rng)


def spec(workload: dict) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"name": "w", **workload})


def test_length_distributions_are_seeded_and_bounded() -> None:
    rng = random.Random(0)
    assert {sample_length({"dist": "fixed", "value": 7}, rng) for _ in range(5)} == {7}
    uniform = [sample_length({"dist": "uniform", "min": 3, "max": 5}, rng) for _ in range(200)]
    assert set(uniform) == {3, 4, 5}
    normal = [sample_length({"dist": "normal", "mean": 50, "std": 40, "min": 10, "max": 60}, rng) for _ in range(500)]
    assert min(normal) == 10 and max(normal) == 60
    assert {sample_length({"dist": "list", "values": [8, 9]}, rng) for _ in range(50)} == {8, 9}


def test_synthetic_prompts_are_distinct_seeded_and_avoid_special_tokens() -> None:
    space = TokenSpace(50, frozenset({0, 1, 2}))
    workload = {"seed": 5, "input_tokens": {"dist": "uniform", "min": 4, "max": 9},
                "output_tokens": {"dist": "fixed", "value": 3}}
    a = synthetic_requests(spec(workload), 40, space, stream=1)
    b = synthetic_requests(spec(workload), 40, space, stream=1)
    c = synthetic_requests(spec(workload), 40, space, stream=2)
    assert a == b and a != c
    assert len({tuple(r.prompt_token_ids[:4]) for r in a}) == 40  # no two requests share a prefix
    assert all(4 <= len(r.prompt_token_ids) <= 9 and r.output_tokens == 3 for r in a)
    assert not {t for r in a for t in r.prompt_token_ids} & {0, 1, 2}


def test_shared_prefix_only_when_asked() -> None:
    space = TokenSpace(1000)
    workload = {"seed": 1, "input_tokens": {"dist": "fixed", "value": 20},
                "output_tokens": {"dist": "fixed", "value": 2},
                "shared_prefix_tokens": 8}
    requests = synthetic_requests(spec(workload), 5, space)
    assert len({tuple(r.prompt_token_ids[:8]) for r in requests}) == 1
    assert len({tuple(r.prompt_token_ids[8:12]) for r in requests}) == 5


def test_file_requests_cycle_and_take_lengths(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in [{"prompt": "ab", "output_tokens": 3}, {"prompt": "abc"}]))
    workload = {"seed": 0, "prompts_file": str(path), "output_tokens": {"dist": "fixed", "value": 9}}
    requests = file_requests(spec(workload), 3, lambda text: [ord(ch) for ch in text])
    assert [r.prompt_token_ids for r in requests] == [[97, 98], [97, 98, 99], [97, 98]]
    assert [r.output_tokens for r in requests] == [3, 9, 3]


def test_prompts_digest_is_order_independent() -> None:
    assert prompts_digest([(0, 1, "a"), (0, 0, "b")]) == prompts_digest([(0, 0, "b"), (0, 1, "a")])
    assert prompts_digest([(0, 0, "a")]) != prompts_digest([(0, 0, "b")])
