"""The rows of `lokaal-bench table`: `cell_rows` flattens the cells of one or more result sets into
rows (one per cell) with the chosen metrics in their display units (`heading` names them); the
printers of bench.readers.printing write them in every format.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.measure.metric_registry import METRICS, metric, note_served_meaning, split_metric
from bench.profile.cells import side_by_side
from bench.results.load import LoadedCell, Source, load_result_sets

# Shown beside the metrics when any cell has them (conversations, shared documents, /metrics).
WORKLOAD_COLUMNS = ("ttft_by_turn_ms", "prefix_hit_ideal", "prefix_hit_measured", "structured_valid",
                    "structure_e2e_ratio")

DEFAULT_COLUMNS = ["output_tok_s", "decode_tok_s", "ttft_p50", "ttft_p99", "itl_p50", "e2e_latency_p99"]


def metric_value(cell: LoadedCell, name: str) -> float | None:
    """A metric of a cell as a table shows it: through the registry, in its display unit (latencies in ms)."""
    base, _ = split_metric(name)
    return METRICS[base].shown(cell.metric(name))


def heading(name: str) -> str:
    """`ttft_p99 (ms)`, `decode_tok_s (tok/s)`: the name and the unit it is shown in."""
    return f"{name} ({metric(name).display_unit})"


def cell_rows(sources: Source | Iterable[Source], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per cell of the result sets (or folders of them, or sets already loaded)."""
    for name in metrics:
        split_metric(name)  # an unknown name is bad input, even with no cells to show
    rows = []
    for result_set in load_result_sets(sources):
        summaries = [c.summary for c in result_set.cells if c.summary is not None]
        for cell in result_set.cells:
            row: dict[str, Any] = {
                "result_set": result_set.name, "machine": result_set.cpu, "cell_id": cell.id,
                "cell": cell.entry["label"], "status": cell.entry["status"], "validity": cell.verdict,
            }
            if cell.served:
                for name in metrics:
                    note_served_meaning(name)
            for name in metrics:
                row[name] = metric_value(cell, name) if cell.completed else None
            row.update(workload_fields(cell.summary or {}, summaries) if cell.completed else {})
            rows.append(row)
    # Comparable cells together: the same model, workload and point on each engine (and in each result set).
    return side_by_side(rows, lambda row: row["cell"])


def workload_fields(summary: dict[str, Any], others: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A conversation's TTFT p50 by turn (ms, turn 0 first); the prefix-cache hit rate an ideal cache would
    reach beside the one measured (the server's /metrics, or in-process vLLM's own count); structured
    answers' valid share and their E2E p50 against the same workload without the structure (`others`:
    the cells of the same result set)."""
    from bench.measure.conversation import ttft_by_turn
    from bench.measure.structured import baseline_for, latency_cost

    fields: dict[str, Any] = {}
    turns = ttft_by_turn(summary.get("conversation"))
    if turns:
        fields["ttft_by_turn_ms"] = [None if t is None else t * 1000 for t in turns]
    cache = summary.get("prefix_cache") or {}
    if cache:
        fields["prefix_hit_ideal"] = cache.get("ideal_hit_rate")
        fields["prefix_hit_measured"] = cache.get("measured_hit_rate")
    structured = summary.get("structured") or {}
    if structured:
        fields["structured_valid"] = structured.get("valid_rate")
        baseline = baseline_for(summary, others or [])
        fields["structure_e2e_ratio"] = latency_cost(summary, baseline)["e2e_latency_p50_ratio"] if baseline else None
    return fields
