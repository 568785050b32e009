"""The verbs that read result sets: `table`, `compare`, `history`, `report` and `plot`. One function
per verb, taking the parsed options and an Output, returning the exit code; the tables they print
are built here from what bench.readers.{tables,compare,history} compute."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.errors import EXIT_FAILED_CELLS, EXIT_OK, BenchError
from bench.readers.printing import Column, Output, Table, percent


def _unit_of(heading: str) -> str | None:
    """`ttft_p99 (ms)` -> ms: bench.readers.tables.heading names each metric's display unit."""
    return heading[heading.rfind("(") + 1:-1] if heading.endswith(")") else None


def cells_table(rows: list[dict[str, Any]], metrics: list[str]) -> Table:
    """`table`: one row per cell of the result sets, the chosen metrics in their display units."""
    from bench.readers.tables import WORKLOAD_COLUMNS, heading

    metric_columns = [Column(m, heading(m), _unit_of(heading(m)), numeric=True) for m in metrics]
    shown = {name for row in rows for name in WORKLOAD_COLUMNS if name in row}
    workload_columns = [column for column in _workload_columns() if column.name in shown]
    table = Table("table", [Column("cell"), Column("machine"), *metric_columns, *workload_columns, Column("validity"),
                            Column("status", people=False), Column("result_set", people=False),
                            Column("cell_id", people=False)],
                  title=f"{len(rows)} cell(s) from {len({r['result_set'] for r in rows})} result set(s)")
    table.rows = [dict(row) for row in rows]
    return table


def _by_turn(value: Any, row: Mapping[str, Any]) -> str:
    return "-" if not value else " / ".join("-" if v is None else f"{v:.0f}" for v in value)


def _workload_columns() -> list[Column]:
    """TTFT by turn and the ideal and measured prefix-cache hit rates (bench/readers/tables.py)."""
    return [Column("ttft_by_turn_ms", "TTFT p50 by turn (ms)", "ms", format=_by_turn),
            Column("prefix_hit_ideal", "prefix hit ideal", numeric=True, format=percent()),
            Column("prefix_hit_measured", "prefix hit measured", numeric=True, format=percent()),
            Column("structured_valid", "valid answers", numeric=True, format=percent()),
            Column("structure_e2e_ratio", "E2E vs unstructured", numeric=True,
                   format=lambda v, row: "-" if v is None else f"{v:.2f}x")]


def table_command(args: argparse.Namespace, out: Output) -> int:
    from bench.readers.tables import DEFAULT_COLUMNS, cell_rows

    metrics = args.metric or DEFAULT_COLUMNS
    rows = cell_rows([Path(p) for p in args.results], metrics)
    if not rows:
        raise BenchError(f"no result sets found in {', '.join(args.results)}")
    out.table(cells_table(rows, metrics))
    return EXIT_OK


_CALL_STYLES = {"better": "green", "worse": "red", "insufficient data": "yellow"}


def _shown(side: str) -> Any:
    """A figure for people, with the bootstrap 95% interval of a median where one was computed."""
    def text(value: Any, row: Mapping[str, Any]) -> str:
        if value is None:
            return "-" if row.get("metric") != "note" else ""
        low, high = row.get(f"{side}_low"), row.get(f"{side}_high")
        interval = f" [{low:,.1f}-{high:,.1f}]" if low is not None and high is not None else ""
        return f"{value:,.2f}{interval} {row['unit']}"

    return text


def _blank_for_notes(inner: Any) -> Any:
    return lambda value, row: "" if row.get("metric") == "note" else inner(value, row)


def comparison_table(result: Any, a: str, b: str) -> Table:
    """`compare`: one row per cell and metric (A, B, change, p, noise, verdict); a row whose metric is
    `note` carries a note about its cell (versions differ, a side INVALID)."""
    def noise(value: Any, row: Mapping[str, Any]) -> str:
        return "/".join("-" if cv is None else f"{cv:.0%}" for cv in (row.get("a_cv"), row.get("b_cv")))

    def side(name: str) -> list[Column]:
        return [Column(name, name.upper(), numeric=True, format=_shown(name)),
                Column(f"{name}_low", numeric=True, people=False), Column(f"{name}_high", numeric=True, people=False),
                Column(f"{name}_cv", numeric=True, people=False)]

    where = "same machine" if result.same_machine else "different machines: matched on everything but hardware"
    table = Table("compare", [
        Column("cell_id", people=False),
        Column("cell", format=lambda v, row: v if row.get("first") else ""),
        Column("metric", style=lambda v, row: "yellow" if v == "note" else None),
        Column("unit", people=False), *side("a"), *side("b"),
        Column("change", unit="fraction", numeric=True, format=_blank_for_notes(percent(1, signed=True))),
        Column("p_value", "p", numeric=True,
               format=_blank_for_notes(lambda v, row: "-" if v is None else f"{v:.2g}")),
        Column("noise", "noise (CV) A/B", numeric=True, format=_blank_for_notes(noise), machines=False),
        Column("verdict", format=lambda v, row: row.get("note") or v or "",
               style=lambda v, row: _CALL_STYLES.get(v) if v else None),
        Column("note", people=False),
    ], title=f"A {a}  ->  B {b} ({where})",
        data={"a": a, "b": b, "same_machine": result.same_machine, "unmatched": result.unmatched})
    for cell in result.cells:
        for index, metric in enumerate(cell.metrics):
            scale, unit = (1000.0, "ms") if metric.unit == "s" else (1.0, metric.unit)

            def scaled(value: float | None, scale: float = scale) -> float | None:
                return None if value is None else value * scale

            row: dict[str, Any] = {"cell_id": cell.cell_id, "cell": cell.label, "first": index == 0,
                                   "metric": metric.metric, "unit": unit, "change": metric.change,
                                   "p_value": metric.verdict.p_value, "verdict": metric.verdict.call, "note": None}
            for name, value, estimate in (("a", metric.a, metric.verdict.a), ("b", metric.b, metric.verdict.b)):
                row.update({name: scaled(value), f"{name}_low": scaled(getattr(estimate, "low", None)),
                            f"{name}_high": scaled(getattr(estimate, "high", None)),
                            f"{name}_cv": getattr(estimate, "cv", None)})
            table.rows.append(row)
        for note in cell.notes:
            table.add(cell_id=cell.cell_id, cell=cell.label, first=not cell.metrics, metric="note", note=note)
    for entry in result.unmatched:
        table.note(f"not compared: {entry['label']} [{entry['cell']}]: {entry['reason']}")
    return table


def compare_command(args: argparse.Namespace, out: Output) -> int:
    """Exit 1 when --fail-on finds a significant change beyond its threshold."""
    from bench.readers.compare import DEFAULT_METRICS, compare, parse_fail_on, regressions

    thresholds = parse_fail_on(args.fail_on) if args.fail_on else []
    metrics = args.metric or None
    if thresholds:  # every gated metric is compared, whatever --metric says
        gated = [t.metric for t in thresholds]
        metrics = list(dict.fromkeys([*(metrics or DEFAULT_METRICS), *gated]))
    result = compare(Path(args.a), Path(args.b), metrics, min_effect=args.min_effect, alpha=args.alpha)
    table = comparison_table(result, args.a, args.b)
    found = regressions(result, thresholds) if thresholds else []
    if thresholds:
        for line in found:
            table.note(f"REGRESSION {line}")
        table.note(f"{len(found)} regression(s) beyond --fail-on {args.fail_on}")
        table.data.update(fail_on=args.fail_on, regressions=found)
    out.table(table)
    return EXIT_FAILED_CELLS if found else EXIT_OK


def history_table(series: list[Any], metric: str) -> Table:
    """`history`: one row per cell, its values oldest first and the significant changes."""
    scale = 1000.0 if series[0].unit == "s" else 1.0
    unit = "ms" if series[0].unit == "s" else series[0].unit
    table = Table("history", [
        Column("cell_id", people=False), Column("cell"), Column("metric", people=False), Column("unit", people=False),
        Column("values", "trend (oldest first)",
               format=lambda v, row: " ".join("-" if x is None else f"{x:.4g}" for x in v)),
        Column("result_sets", people=False),
        Column("changes", format=lambda v, row: ", ".join(f"{c} at {s}" for c, s in zip(v, row["result_sets"],
                                                                                         strict=True) if c) or "none"),
    ], title=f"{metric} over {max(len(s.points) for s in series)} result set(s)")
    for one in series:
        table.add(cell_id=one.cell_id, cell=one.label, metric=one.metric, unit=unit,
                  values=[None if p.value is None else p.value * scale for p in one.points],
                  result_sets=[p.result_set for p in one.points], changes=[p.change for p in one.points])
    return table


def history_command(args: argparse.Namespace, out: Output) -> int:
    from bench.readers import plots
    from bench.readers.history import collect, prometheus_text, pytest_benchmark_json, trend_figure

    series = collect([Path(p) for p in args.results], args.metric, args.cell)
    if not series:
        raise BenchError(f"no completed cell{' ' + args.cell if args.cell else ''} in {', '.join(args.results)}")
    out.table(history_table(series, args.metric))
    if args.output:
        plots.save(trend_figure(series), Path(args.output))
        out.message(f"trend: {args.output}")
    if args.pytest_benchmark:
        pytest_benchmark_json(series, Path(args.pytest_benchmark))
    if args.prometheus:
        prometheus_text(series, Path(args.prometheus))
    return EXIT_OK


def report_command(args: argparse.Namespace, out: Output) -> int:
    from bench.readers.report import write_report
    from bench.results.load import load_result_sets

    sets = load_result_sets([Path(p) for p in args.results])
    if not sets:
        raise BenchError(f"no result sets found in {', '.join(args.results)}")
    written = write_report(sets, Path(args.output), args.title)
    out.message(f"report: {written} (one self-contained file; opens offline)")
    return EXIT_OK


def plot_command(args: argparse.Namespace, out: Output) -> int:
    import bench
    from bench.readers import plots
    from bench.results.load import load_result_sets

    sets = load_result_sets([Path(p) for p in args.results])
    if not sets:
        raise BenchError(f"no result sets found in {', '.join(args.results)}")
    directory = Path(args.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    cells = bench.load(sets)
    written = [plots.save(fn(cells), directory / f"{name}.{args.format}") for name, fn in plots.FIGURES.items()]
    requests = bench.load(sets, per="request")
    written.append(plots.save(plots.latency_distributions(requests), directory / f"distributions.{args.format}"))
    by_turn = plots.ttft_by_turn(requests)
    if by_turn is not None:  # conversations
        written.append(plots.save(by_turn, directory / f"ttft-by-turn.{args.format}"))
    server = plots.server_view(sets)
    if server is not None:  # served cells whose server's /metrics was read
        written.append(plots.save(server, directory / f"server.{args.format}"))
    out.message(f"{len(written)} figure(s) in {directory}: " + ", ".join(p.name for p in written))
    return EXIT_OK
