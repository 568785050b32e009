"""Tables of result sets, for people and for papers: terminal, Markdown, CSV, LaTeX (booktabs), JSON.

`cell_rows` flattens the cells of one or more result sets into rows (one per cell) with the chosen
metrics; `render` writes them in a format. Units go in the column headings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from bench.measure.metric_registry import METRICS, metric, note_served_meaning, split_metric
from bench.results.load import LoadedCell, Source, load_result_sets

FORMATS = ("terminal", "markdown", "csv", "latex", "json")
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
