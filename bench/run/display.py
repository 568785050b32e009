"""What a person sees: progress while a run goes, and the summary table at the end (a Table of
bench.readers.printing, so it prints in every format)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.measure.metrics import peak_host_bytes
from bench.profile.cells import Cell, engine_label, point_label, side_by_side
from bench.readers.printing import Column, Table, fixed, percent
from bench.readers.printing.table import Formatter


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _roof(summary: dict[str, Any], phase: str) -> float | None:
    """The measured share of the roofline bound (bench/measure/roofline.py): hardware or software limit?"""
    return ((summary.get("roofline") or {}).get(phase) or {}).get("fraction")


def precision_of(summary: dict[str, Any]) -> float | None:
    """The 95% half-width of output tok/s relative to its value: as reached by the cell (cell.json's
    sizing), or from its stored per-repetition values (result sets from before sizing)."""
    repetitions = (summary.get("sizing") or {}).get("repetitions") or {}
    if "precision" in repetitions:
        return repetitions["precision"]
    from bench.measure.sizing import relative_half_width

    values = ((summary.get("metrics") or {}).get("output_tok_s") or {}).get("per_repetition") or []
    return relative_half_width(values)


def _point(scenario: dict[str, Any], workload: dict[str, Any] | None) -> str:
    return point_label(scenario) + (f" {workload['name']}" if workload else "")


def _model_name(config: dict[str, Any]) -> str:
    model = config["model"]
    return model.get("name") or model.get("card") or Path(model.get("path") or "").name


def _pair(first: str, second: str) -> Formatter:
    """Two latencies in milliseconds in one column for people: `p50/p99`."""
    def text(value: Any, row: Mapping[str, Any]) -> str:
        a, b = row.get(first), row.get(second)
        if a is None and b is None:
            return "-"
        return "/".join("-" if v is None else f"{v:.1f}" for v in (a, b))

    return text


def _with_precision(value: Any, row: Mapping[str, Any]) -> str:
    text, precision = _num(value), row.get("output_tok_s_precision")
    return text if precision is None or text == "-" else f"{text} ±{precision:.1%}"


def _status_style(value: Any, row: Mapping[str, Any]) -> str:
    return {"FAILED": "red", "INVALID": "yellow"}.get(str(value).split(" ")[0], "green")


def _summary_columns(models: int, engines: int) -> list[Column]:
    def ms(name: str) -> Column:
        return Column(name, unit="ms", numeric=True, people=False)

    def rate(name: str, heading: str) -> Column:
        return Column(name, heading, "tok/s", numeric=True, format=fixed(1), no_wrap=True)

    return [
        Column("cell_id", people=False), Column("label", people=False),
        Column("model", people=models > 1), Column("engine", people=engines > 1),
        Column("point", "scenario point"),
        Column("ttft", "TTFT ms\np50/p99", numeric=True, format=_pair("ttft_p50", "ttft_p99"), machines=False,
               no_wrap=True),
        Column("itl", "ITL ms\np50/p99", numeric=True, format=_pair("itl_p50", "itl_p99"), machines=False,
               no_wrap=True),
        Column("e2e", "E2E ms\np50/p99", numeric=True, format=_pair("e2e_latency_p50", "e2e_latency_p99"),
               machines=False, no_wrap=True),
        ms("ttft_p50"), ms("ttft_p99"), ms("itl_p50"), ms("itl_p99"), ms("e2e_latency_p50"), ms("e2e_latency_p99"),
        Column("output_tok_s", "output tok/s\n±95% CI", "tok/s", numeric=True, format=_with_precision, no_wrap=True),
        Column("output_tok_s_precision", unit="fraction", numeric=True, people=False),
        rate("prefill_tok_s", "prefill\ntok/s"), rate("decode_tok_s", "decode\ntok/s"),
        Column("decode_roofline_fraction", "decode\n% roof", "fraction", numeric=True, format=percent(0),
               no_wrap=True),
        Column("load_s", "load\ns", "s", numeric=True, format=fixed(2), no_wrap=True),
        Column("peak_host_bytes", "RSS\nGiB", "bytes", numeric=True, no_wrap=True,
               format=lambda v, row: "-" if not v else f"{v / 2**30:.2f}"),
        Column("shown_status", "status", style=_status_style, machines=False),
        Column("status", people=False), Column("validity", people=False), Column("reason", people=False),
        Column("wall_s", unit="s", numeric=True, people=False),
    ]


def summary_table(summaries: list[dict[str, Any]]) -> Table:
    """One row per cell with the headline numbers, units in the column heads, and the numbered
    reasons of failed cells as notes. Model and engine get a column for people only when they
    differ between cells, else they go in the caption, to keep the table narrow."""
    summaries = side_by_side(summaries, lambda s: s["label"])  # the same point on each engine, together
    models = {_model_name(s["config"]) for s in summaries}
    engines = {engine_label(s["config"]["engine"]) for s in summaries}
    caption = []
    if len(models) == 1:
        caption.append(f"model {next(iter(models))}")
    if len(engines) == 1:
        caption.append(f"engine {next(iter(engines))}")
    if any(s.get("synthetic_weights") for s in summaries):
        caption.append("synthetic weights: speed and memory are real, answer quality is not")
    rules = {(s.get("validity") or {}).get("rules") for s in summaries} - {None}
    if rules:
        caption.append(f"validity rules: {', '.join(sorted(rules))}"
                       + ("" if rules == {"procurement"} else " (not for procurement)"))
    # An invalid cell's numbers are shown dimmed and struck through: never mistaken for results.
    table = Table("run", _summary_columns(len(models), len(engines)), title="lokaal-bench summary",
                  caption="; ".join(caption), header_style="bold",
                  row_style=lambda row: "dim strike" if row.get("validity") == "INVALID" else None)
    failures: list[str] = []
    notes: list[str] = []  # worth knowing, not invalidating (e.g. a nightly cell short of its precision)
    for summary in summaries:
        config = summary["config"]
        metrics = summary.get("metrics") or {}

        def ms(name: str, stat: str, metrics: dict[str, Any] = metrics) -> float | None:
            dist = metrics.get(name) or {}
            return None if not dist.get("n") or dist.get(stat) is None else dist[stat] * 1000

        def value(name: str, metrics: dict[str, Any] = metrics) -> float | None:
            return (metrics.get(name) or {}).get("value")

        validity = summary.get("validity") or {}
        if summary["status"] != "COMPLETED":
            failures.append(f"[{len(failures) + 1}] {summary['label']}: {summary.get('reason')}")
            shown = f"{summary['status']} [{len(failures)}]"
        elif validity.get("verdict") == "INVALID":
            failures.append(f"[{len(failures) + 1}] {summary['label']}: INVALID under the {validity['rules']} rules: "
                            + "; ".join(validity["reasons"]))
            shown = f"INVALID [{len(failures)}]"
        else:
            shown = "VALID" if validity else "ok"
        for note in validity.get("notes") or []:
            notes.append(f"note: {summary['label']}: {note}")
        table.add(
            cell_id=summary.get("cell_id"), label=summary.get("label"), model=_model_name(config),
            engine=engine_label(config["engine"]), point=_point(config["scenario"], config.get("workload")),
            ttft_p50=ms("ttft", "p50"), ttft_p99=ms("ttft", "p99"), itl_p50=ms("itl", "p50"), itl_p99=ms("itl", "p99"),
            e2e_latency_p50=ms("e2e_latency", "p50"), e2e_latency_p99=ms("e2e_latency", "p99"),
            output_tok_s=value("output_tok_s"), output_tok_s_precision=precision_of(summary),
            prefill_tok_s=value("prefill_tok_s"), decode_tok_s=value("decode_tok_s"),
            decode_roofline_fraction=_roof(summary, "decode"), load_s=summary.get("load_s"),
            peak_host_bytes=peak_host_bytes(summary.get("memory") or {}), shown_status=shown,
            status=summary["status"], validity=validity.get("verdict"), reason=summary.get("reason"),
            wall_s=summary.get("wall_s"),
        )
    for line in failures + notes:
        table.note(line)
    return table


class RunDisplay:
    """Progress bars on a terminal; one line per finished cell everywhere (logs of nightly runs), and in a
    log one line each time a cell enters a phase (load, each warm-up and repetition), with its elapsed time,
    so a procurement cell of half an hour is not silent."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.cells_task: Any = None
        self.cell_task: Any = None
        self.finished = 0
        self.total = 0
        self.cell_phase: str | None = None
        self.cell_began = 0.0

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_started(self, path: Path, cells: list[Cell], done: set[str]) -> None:
        self.total = len(cells) - len(done)
        self.console.print(f"result set: [bold]{path}[/]")
        if done:
            self.console.print(f"resuming: {len(done)} cell(s) already completed, {self.total} to run")
        self.cells_task = self.progress.add_task("cells", total=self.total)
        self.cell_task = self.progress.add_task("", total=None)

    def model_progress(self, name: str, done: int, total: int) -> None:
        """Materialising synthetic weights (an 8B model writes 16 GB): a bar counting MiB written."""
        self.progress.update(self.cell_task, description=f"materialising {name} (MiB)",
                             completed=done // 2**20, total=max(total // 2**20, 1))

    def message(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/]")

    def cell_started(self, cell: Cell, index: int, total: int) -> None:
        self.cell_phase, self.cell_began = None, time.monotonic()
        self.progress.update(self.cell_task, description=f"{cell.label}: starting", completed=0, total=None)

    def _log_phase(self, cell: Cell, phase: str) -> None:
        if self.console.is_terminal or phase == self.cell_phase or phase == "done":
            return
        self.cell_phase = phase
        self.console.print(f"  {cell.label}: {phase} (at {time.monotonic() - self.cell_began:.0f} s)")

    def cell_event(self, cell: Cell, event: dict[str, Any]) -> None:
        if event.get("event") in ("phase", "progress"):
            self._log_phase(cell, event["phase"])
        if event.get("event") == "phase":
            self.progress.update(self.cell_task, description=f"{cell.label}: {event['phase']}", total=None)
        elif event.get("event") == "progress":
            self.progress.update(self.cell_task, description=f"{cell.label}: {event['phase']}",
                                 completed=event["done"], total=event["total"])

    def cell_finished(self, cell: Cell, summary: dict[str, Any]) -> None:
        self.finished += 1
        self.progress.update(self.cells_task, completed=self.finished)
        status = summary["status"]
        if status == "COMPLETED":
            rate = (summary["metrics"].get("output_tok_s") or {}).get("value")
            detail = f"[green]COMPLETED[/] {summary['wall_s']:.1f} s, {_num(rate)} output tok/s"
            if summary.get("slo"):
                detail += f", goodput {_num(summary['slo']['goodput_rps'], 2)} req/s (SLO {summary['slo']['verdict']})"
        else:
            detail = f"[red]{status}[/] {summary.get('reason')}"
        self.console.print(f"[{self.finished}/{self.total}] {cell.label}: {detail}")
        if (summary.get("capacity") or {}).get("headline"):
            self.console.print(f"[bold]{summary['capacity']['headline']}[/]")
