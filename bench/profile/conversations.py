"""Conversations: what each conversation of a workload says and waits, planned before it is sent.

A plan holds per turn the new user message (a length for synthetic messages, or the text of a replayed
one), the answer's length and the think time before the next message; the prompt of each turn (the
whole history plus the new message) is built when the turn is sent, because it holds the answers
(bench/scenarios/conversation_state.py). Plans are seeded like every request stream: the first
conversations of a stream are the same on every machine.

A conversations file is JSONL, one conversation per line:
    {"turns": [{"user": "text", "output_tokens": 64, "think_time_s": 2.5}, {"input_tokens": 40}, ...]}
each turn with `user` (the message as written) or `input_tokens` (a synthetic message of that length),
and optionally its answer's `output_tokens` and the `think_time_s` after it (else the workload's).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.profile.workload_specs import ExponentialSeconds, FixedSeconds, SecondsDist, UniformSeconds, WorkloadSpec


@dataclass(frozen=True)
class TurnPlan:
    user_tokens: int | None  # a synthetic message's length ...
    user_text: str | None  # ... or a replayed message as written
    output_tokens: int
    think_time_s: float  # after this turn's answer, before the next message


@dataclass(frozen=True)
class ConversationPlan:
    index: int  # within its stream
    first_request: int  # the request id of its first turn: turns are numbered through the stream
    turns: tuple[TurnPlan, ...]


def sample_seconds(dist: SecondsDist | None, rng: random.Random) -> float:
    if dist is None:
        return 0.0
    if isinstance(dist, FixedSeconds):
        return dist.value
    if isinstance(dist, UniformSeconds):
        return rng.uniform(dist.min, dist.max)
    if isinstance(dist, ExponentialSeconds):
        return rng.expovariate(1.0 / dist.mean) if dist.mean > 0 else 0.0
    raise ValueError(f"unknown think-time distribution {dist!r}")


def conversation_stream(workload: WorkloadSpec, stream: int) -> Iterator[ConversationPlan]:
    """The endless seeded conversations of a workload's stream (stream 0: warm-up; r + 1: repetition r)."""
    from bench.profile.workloads import sample_length

    rng = random.Random(f"{workload.seed}/{stream}/conversations")
    replayed = read_conversations_file(Path(workload.conversations_file)) if workload.conversations_file else None
    first = 0
    for index in itertools.count():
        turns: list[TurnPlan] = []
        if replayed is not None:
            entry = replayed[(stream * 7919 + index) % len(replayed)]  # streams start at different conversations
            for turn in entry:
                output = turn.get("output_tokens") or sample_length(workload.output_tokens, rng)
                think = turn.get("think_time_s")
                wait = float(think) if think is not None else sample_seconds(workload.think_time_s, rng)
                turns.append(TurnPlan(turn.get("input_tokens"), turn.get("user"), int(output), wait))
        else:
            assert workload.turns is not None and workload.input_tokens is not None
            for _ in range(sample_length(workload.turns, rng)):
                turns.append(TurnPlan(sample_length(workload.input_tokens, rng), None,
                                      sample_length(workload.output_tokens, rng),
                                      sample_seconds(workload.think_time_s, rng)))
        yield ConversationPlan(index, first, tuple(turns))
        first += len(turns)


def read_conversations_file(path: Path) -> list[list[dict[str, Any]]]:
    """The conversations of a file, each a list of turns; ValueError naming the line for one that is not right."""
    from bench.profile.loading import decode_utf8

    conversations = []
    for number, line in enumerate(decode_utf8(path.read_bytes(), str(path)).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path.name} line {number}: not JSON ({exc})") from None
        turns = entry.get("turns") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{path.name} line {number}: expected {{\"turns\": [...]}} with at least one turn")
        for t, turn in enumerate(turns):
            problem = _turn_problem(turn)
            if problem:
                raise ValueError(f"{path.name} line {number}, turn {t}: {problem}")
        conversations.append(turns)
    if not conversations:
        raise ValueError(f"{path.name}: no conversations")
    return conversations


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _turn_problem(turn: Any) -> str | None:
    if not isinstance(turn, dict):
        return "a turn must be a JSON object"
    unknown = set(turn) - {"user", "input_tokens", "output_tokens", "think_time_s"}
    if unknown:
        return f"unknown field(s) {', '.join(sorted(unknown))}"
    if ("user" in turn) == ("input_tokens" in turn):
        return "give exactly one of 'user' (the message) or 'input_tokens' (a synthetic message's length)"
    if "user" in turn and not isinstance(turn["user"], str):
        return "'user' must be text"
    if "input_tokens" in turn and not _whole(turn["input_tokens"]):
        return "'input_tokens' must be a whole number >= 1"
    if "output_tokens" in turn and not _whole(turn["output_tokens"]):
        return "'output_tokens' must be a whole number >= 1"
    think = turn.get("think_time_s")
    if think is not None and (not isinstance(think, int | float) or isinstance(think, bool) or think < 0):
        return "'think_time_s' must be a number >= 0"
    return None
