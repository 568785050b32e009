"""The prefix cache of a cell: the hit rate an ideal cache would reach on what was asked, and the one the
server (or in-process vLLM) says it reached, by tokens. Pure: reads records and summaries.

The ideal cache never evicts and starts empty at the cell's first request (its warm-up):
- shared documents: every reading of a document after its first is a hit of the document's tokens;
- conversations: every turn's history (the prompt tokens that repeat the previous turn's prompt and
  answer exactly, `history_tokens`) is a hit.
For shared documents the rate is also known before the run from the popularity alone (`expected`,
bench/profile/documents.py). The measured rate comes from the server's counters over the measured window
(bench/telemetry/server_metrics.py), or from in-process vLLM's cached tokens per request. A real
cache rounds down to whole blocks (vLLM: 16 tokens), so it reads somewhat below the ideal.
"""

from __future__ import annotations

from typing import Any

from bench.profile.cells import Cell
from bench.results.records import RequestRecord


def caching_declared(cell: Cell) -> bool | None:
    """Whether the cell's engine caches prefixes: in-process vLLM's setting, a managed vLLM server's arguments
    (off unless asked, bench/serving/managed.py); None where lokaal-bench cannot know (someone else's server)."""
    engine = cell.engine
    if engine.kind == "vllm":
        return bool(engine.enable_prefix_caching)
    server = getattr(engine, "server", None)
    if server is not None and server.kind == "vllm":
        args = list(server.args)
        return "--enable-prefix-caching" in args and "--no-enable-prefix-caching" not in args
    return None


def ideal_cached_tokens(records: list[RequestRecord], document_tokens: int | None) -> dict[int, int]:
    """Per measured record (by its position in `records`): the prompt tokens an ideal cache serves."""
    cached: dict[int, int] = {}
    if document_tokens is not None:
        seen: set[int] = set()
        order = sorted(range(len(records)), key=lambda k: (records[k].repetition, records[k].submit_time))
        for k in order:  # warm-up (repetition -1) first: its documents are cached when measuring starts
            record = records[k]
            if record.document is None:
                continue
            if not record.warmup:
                cached[k] = document_tokens if record.document in seen else 0
            seen.add(record.document)
        return cached
    return {k: r.history_tokens or 0 for k, r in enumerate(records) if not r.warmup and r.turn is not None}


def prefix_cache_summary(cell: Cell, records: list[RequestRecord], server: dict[str, Any] | None,
                         expected: float | None) -> dict[str, Any] | None:
    """ideal (on the requests sent), expected (documents, before the run), measured and their gap; None for a
    cell that neither shares prefixes on purpose nor has a measured rate."""
    workload = cell.workload
    documents = workload.documents if workload is not None else None
    conversation = workload is not None and workload.kind == "conversation"
    cached = ideal_cached_tokens(records, documents.tokens if documents is not None else None)
    measured_records = [r for r in records if not r.warmup]
    total = sum(r.input_tokens for r in measured_records)
    ideal = sum(cached.values()) / total if (documents is not None or conversation) and total else None
    measured, source = None, None
    if server and server.get("prefix_cache_hit_rate") is not None:
        measured, source = server["prefix_cache_hit_rate"], f"server /metrics ({server.get('url')})"
    elif server and server.get("prefix_cache_queries") == 0 and server.get("prefix_cache_hits") == 0:
        # the server counts cache lookups and made none over the window: nothing was served from a cache
        measured, source = 0.0, f"server /metrics ({server.get('url')}): no prefix-cache lookups"
    elif any("cached_tokens" in (r.engine_timing or {}) for r in measured_records) and total:
        # only an engine that counts cached prompt tokens (in-process vLLM): llama.cpp's timers say nothing of it
        hits = sum(int((r.engine_timing or {}).get("cached_tokens") or 0) for r in measured_records)
        measured, source = hits / total, "vLLM's cached tokens per request"
    if ideal is None and measured is None:
        return None
    return {
        "ideal_hit_rate": ideal,
        "expected_hit_rate": expected,
        "measured_hit_rate": measured,
        "measured_source": source,
        "gap": ideal - measured if ideal is not None and measured is not None else None,
        "caching": caching_declared(cell),
        "by": "tokens",
        "workload": workload.kind if workload is not None else None,
    }
