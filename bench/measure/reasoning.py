"""Reasoning models think before they answer: a cell's reasoning and answer tokens apart, the time to
the first token of either (TTFT) and to the first answer token, and each part's token rate. Pure: reads
records whose client counted reasoning apart (bench/serving/client.py)."""

from __future__ import annotations

from typing import Any

from bench.measure.stats import distribution
from bench.results.records import RequestRecord


def reasoning_summary(records: list[RequestRecord]) -> dict[str, Any] | None:
    """None when no measured request carried reasoning apart."""
    thinking = [r for r in records if not r.warmup and r.ok and r.reasoning_tokens is not None]
    if not thinking:
        return None
    first_answer = [r.first_answer_time - r.submit_time for r in thinking if r.first_answer_time is not None]
    ttft = [r.first_token_time - r.submit_time for r in thinking if r.first_token_time is not None]
    reasoning_rates, answer_rates = [], []
    for r in thinking:
        reasoning, answer = r.reasoning_tokens or 0, r.output_tokens - (r.reasoning_tokens or 0)
        if r.first_token_time is not None and r.first_answer_time is not None and reasoning > 1 \
                and r.first_answer_time > r.first_token_time:
            reasoning_rates.append(reasoning / (r.first_answer_time - r.first_token_time))
        answered = r.first_answer_time is not None and r.end_time is not None
        if answered and answer > 1 and r.end_time > r.first_answer_time:
            answer_rates.append((answer - 1) / (r.end_time - r.first_answer_time))
    return {
        "requests": len(thinking),
        "reasoning_tokens": sum(r.reasoning_tokens or 0 for r in thinking),
        "answer_tokens": sum(r.output_tokens - (r.reasoning_tokens or 0) for r in thinking),
        "ttft": distribution(ttft, "s"),
        "time_to_first_answer": distribution(first_answer, "s"),
        "reasoning_tok_s": distribution(reasoning_rates, "tok/s"),
        "answer_tok_s": distribution(answer_rates, "tok/s"),
    }
