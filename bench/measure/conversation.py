"""A conversation cell's view by turn: how time to first token grows as the history does, and what was
dropped to fit the context. Pure; TTFT is the registry's (bench/measure/metric_registry.py), taken over
each turn's records."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.measure.metric_registry import METRICS
from bench.measure.stats import distribution
from bench.results.records import RequestRecord


def conversation_summary(records: list[RequestRecord]) -> dict[str, Any] | None:
    """Per turn (0 = the first message): TTFT's distribution, mean prompt and history tokens; the
    conversations measured; turns whose oldest history was dropped to fit the context. None when the
    records are not a conversation's."""
    measured = [r for r in records if not r.warmup and r.turn is not None]
    if not measured:
        return None
    by_turn: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in measured:
        by_turn[record.turn or 0].append(record)
    ttft = METRICS["ttft"]
    turns = []
    for turn in sorted(by_turn):
        group = by_turn[turn]
        ok = [r for r in group if r.ok]
        turns.append({
            "turn": turn,
            "requests": len(group),
            "ttft": distribution(ttft.compute(group), ttft.unit),
            "input_tokens_mean": sum(r.input_tokens for r in ok) / len(ok) if ok else None,
            "history_tokens_mean": sum(r.history_tokens or 0 for r in ok) / len(ok) if ok else None,
        })
    dropped = [r for r in measured if r.dropped_turns]
    conversations = {(r.repetition, r.client_process, r.conversation) for r in measured}
    return {
        "conversations": len(conversations),
        "turns": turns,
        "history_dropped": {"requests": len(dropped), "turns": sum(r.dropped_turns or 0 for r in dropped)},
        "think_time_s_mean": sum(r.think_time_s or 0 for r in measured) / len(measured),
    }


def ttft_by_turn(summary: dict[str, Any] | None, stat: str = "p50") -> list[float | None]:
    """TTFT (s) of each turn, in order, from a stored conversation summary."""
    return [(t.get("ttft") or {}).get(stat) for t in (summary or {}).get("turns") or []]
