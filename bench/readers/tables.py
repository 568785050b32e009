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
            rows.append(row)
    # Comparable cells together: the same model, workload and point on each engine (and in each result set).
    return side_by_side(rows, lambda row: row["cell"])
