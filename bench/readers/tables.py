"""The rows of `lokaal-bench table`: `cell_rows` flattens the cells of one or more result sets into
rows (one per cell) with the chosen metrics in their display units (`heading` names them); the
printers of bench.readers.printing write them in every format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure.metrics import METRIC_INFO
from bench.readers.compare import split_metric
from bench.results.resultset import ResultSet, find_result_sets

DEFAULT_COLUMNS = ["output_tok_s", "decode_tok_s", "ttft_p50", "ttft_p99", "itl_p50", "e2e_latency_p99"]
_SCALE = {"s": ("ms", 1000.0)}  # latencies read better in milliseconds


def metric_value(summary: dict[str, Any], name: str) -> float | None:
    base, stat = split_metric(name)
    entry = (summary.get("metrics") or {}).get(base) or {}
    value = entry.get(stat or "value") if stat else entry.get("value", entry.get("p50"))
    if value is None:
        return None
    return value * _SCALE.get(METRIC_INFO[base][0], ("", 1.0))[1]


def heading(name: str) -> str:
    base, _ = split_metric(name)
    unit = METRIC_INFO[base][0]
    return f"{name} ({_SCALE.get(unit, (unit, 1))[0]})"


def result_set_paths(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        found += [path] if (path / "manifest.json").exists() else find_result_sets(path)
    return found


def cell_rows(paths: list[Path], metrics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for path in result_set_paths(paths):
        result_set = ResultSet(path)
        manifest = result_set.read_manifest()
        cpu = ((manifest.get("environment") or {}).get("cpu") or {}).get("model_name")
        for entry in manifest.get("cells", []):
            summary = result_set.read_cell_summary(entry["id"]) or {}
            row: dict[str, Any] = {
                "result_set": path.name, "machine": cpu, "cell_id": entry["id"], "cell": entry["label"],
                "status": entry["status"], "validity": (summary.get("validity") or {}).get("verdict"),
            }
            for name in metrics:
                row[name] = metric_value(summary, name) if summary.get("status") == "COMPLETED" else None
            rows.append(row)
    return rows
