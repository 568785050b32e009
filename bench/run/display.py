"""What a person sees: progress while a run goes, and the summary table at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.measure.metrics import peak_host_bytes
from bench.profile.cells import Cell, engine_label, point_label


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _gib(value: Any) -> str:
    return "-" if not value else f"{value / 2**30:.2f}"


def _roof(summary: dict[str, Any], phase: str) -> str:
    """The measured share of the roofline bound (bench/measure/roofline.py): hardware or software limit?"""
    fraction = ((summary.get("roofline") or {}).get(phase) or {}).get("fraction")
    return "-" if fraction is None else f"{fraction:.0%}"


def precision_of(summary: dict[str, Any]) -> float | None:
    """The 95% half-width of output tok/s relative to its value: as reached by the cell (cell.json's
    sizing), or from its stored per-repetition values (result sets from before sizing)."""
    repetitions = (summary.get("sizing") or {}).get("repetitions") or {}
    if "precision" in repetitions:
        return repetitions["precision"]
    from bench.measure.sizing import relative_half_width

    values = ((summary.get("metrics") or {}).get("output_tok_s") or {}).get("per_repetition") or []
    return relative_half_width(values)


def _with_precision(text: str, precision: float | None) -> str:
    return text if precision is None or text == "-" else f"{text} ±{precision:.1%}"


def _point(scenario: dict[str, Any], workload: dict[str, Any] | None) -> str:
    return point_label(scenario) + (f" {workload['name']}" if workload else "")


def _model_name(config: dict[str, Any]) -> str:
    model = config["model"]
    return model.get("name") or model.get("card") or Path(model.get("path") or "").name


def summary_table(summaries: list[dict[str, Any]]) -> tuple[Table, list[str]]:
    """One row per cell with the headline numbers, units in the column heads, and the numbered
    reasons of failed cells. Model and engine get a column only when they differ between cells,
    else they go in the caption, to keep the table narrow."""
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
    table = Table(title="lokaal-bench summary", caption="; ".join(caption), header_style="bold")
    if len(models) > 1:
        table.add_column("model")
    if len(engines) > 1:
        table.add_column("engine")
    table.add_column("scenario point")
    for heading in ("TTFT ms\np50/p99", "ITL ms\np50/p99", "E2E ms\np50/p99", "output tok/s\n±95% CI",
                    "prefill\ntok/s", "decode\ntok/s", "decode\n% roof", "load\ns", "RSS\nGiB"):
        table.add_column(heading, justify="right", no_wrap=True)
    table.add_column("status")
    failures: list[str] = []
    notes: list[str] = []  # worth knowing, not invalidating (e.g. a nightly cell short of its precision)
    for summary in summaries:
        config = summary["config"]
        metrics = summary.get("metrics") or {}

        def pair(name: str, metrics: dict[str, Any] = metrics) -> str:
            dist = metrics.get(name) or {}
            return f"{_ms(dist.get('p50'))}/{_ms(dist.get('p99'))}" if dist.get("n") else "-"

        def value(name: str, metrics: dict[str, Any] = metrics) -> str:
            return _num((metrics.get(name) or {}).get("value"))

        validity = summary.get("validity") or {}
        if summary["status"] != "COMPLETED":
            failures.append(f"[{len(failures) + 1}] {summary['label']}: {summary.get('reason')}")
            status = f"[red]{summary['status']} [{len(failures)}][/]"
        elif validity.get("verdict") == "INVALID":
            failures.append(f"[{len(failures) + 1}] {summary['label']}: INVALID under the {validity['rules']} rules: "
                            + "; ".join(validity["reasons"]))
            status = f"[yellow]INVALID [{len(failures)}][/]"
        else:
            status = "[green]VALID[/]" if validity else "[green]ok[/]"
        for note in validity.get("notes") or []:
            notes.append(f"note: {summary['label']}: {note}")
        # An invalid cell's numbers are shown dimmed and struck through: never mistaken for results.
        style = "dim strike" if validity.get("verdict") == "INVALID" else ""
        row = []
        if len(models) > 1:
            row.append(_model_name(config))
        if len(engines) > 1:
            row.append(engine_label(config["engine"]))
        row += [
            _point(config["scenario"], config.get("workload")),
            pair("ttft"), pair("itl"), pair("e2e_latency"),
            _with_precision(value("output_tok_s"), precision_of(summary)),
            value("prefill_tok_s"), value("decode_tok_s"), _roof(summary, "decode"),
            _num(summary.get("load_s"), 2),
            _gib(peak_host_bytes(summary.get("memory") or {})),
        ]
        table.add_row(*[f"[{style}]{cell}[/]" if style else cell for cell in row], status)
    return table, failures + notes


class RunDisplay:
    """Progress bars on a terminal; one line per finished cell everywhere (logs of nightly runs)."""

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
        self.progress.update(self.cell_task, description=f"{cell.label}: starting", completed=0, total=None)

    def cell_event(self, cell: Cell, event: dict[str, Any]) -> None:
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
