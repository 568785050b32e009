"""Tables of result sets, for people and for papers: terminal, Markdown, CSV, LaTeX (booktabs), JSON.

`cell_rows` flattens the cells of one or more result sets into rows (one per cell) with the chosen
metrics; `render` writes them in a format. Units go in the column headings.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from bench.measure.metrics import METRIC_INFO
from bench.readers.compare import split_metric
from bench.results.resultset import ResultSet, find_result_sets

FORMATS = ("terminal", "markdown", "csv", "latex", "json")
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


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def terminal_table(rows: list[dict[str, Any]], columns: list[str], headings: dict[str, str], title: str,
                   numeric: set[str] | frozenset[str] = frozenset(), caption: str | None = None) -> Any:
    """The same rows as a rich Table for the terminal: numbers right-aligned, None as '-'."""
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(headings.get(column, column), justify="right" if column in numeric else "left")
    for row in rows:
        table.add_row(*[_text(row.get(c)) for c in columns])
    return table


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                          ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                          ("^", r"\textasciicircum{}")):
        text = text.replace(char, escaped)
    return text


def render(rows: list[dict[str, Any]], columns: list[str], fmt: str, headings: dict[str, str]) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    titles = [headings.get(c, c) for c in columns]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(titles)
        writer.writerows([["" if row.get(c) is None else row.get(c) for c in columns] for row in rows])
        return out.getvalue()
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(titles) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        numeric = [all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows) for c in columns]
        spec = "".join("r" if n else "l" for n in numeric)
        lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
                 " & ".join(_latex_escape(t) for t in titles) + r" \\", r"\midrule"]
        lines += [" & ".join(_latex_escape(c) for c in line) + r" \\" for line in cells]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}")
