"""History for nightly runs: a metric's trend per cell over many result sets, with change points
marked where consecutive runs differ significantly (bench.measure.stats, the same rule as `compare`), and
exports for the tools infrastructure teams already run: pytest-benchmark's JSON (read by CI
benchmark-trend tools) and Prometheus text exposition (for node_exporter's textfile collector)."""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.atomic import write_json, write_text
from bench.measure import metric_registry as registry
from bench.readers.compare import judge_samples
from bench.results.load import Source, load_result_sets


@dataclass
class Point:
    index: int  # the result set's place among all of them, oldest first
    result_set: str
    created: str
    machine_id: str | None
    value: float | None  # the registry's figure: the same as the cell summary's headline
    samples: list[float]  # what the change test compares: latencies per request, a rate per piece of time
    change: str | None = None  # "better" | "worse" when it differs significantly from the point before
    raw: list[Any] = field(default_factory=list, repr=False)  # the registry's samples behind `samples`


@dataclass
class Series:
    cell_id: str
    label: str
    metric: str
    unit: str
    points: list[Point] = field(default_factory=list)


def collect(paths: Source | Iterable[Source], metric: str, cell: str | None = None,
            min_effect: float = 0.02) -> list[Series]:
    """Every cell's series of a metric over the result sets, oldest first, change points marked."""
    base, stat = registry.split_metric(metric)
    definition = registry.METRICS[base]
    sets = sorted(load_result_sets(paths, samples_of=[base]), key=lambda s: s.created)
    found: dict[str, Series] = {}
    for index, result_set in enumerate(sets):
        for one in result_set.cells:
            if (cell and cell not in (one.id, one.entry["label"])) or one.entry.get("status") != "COMPLETED":
                continue
            if one.served:
                registry.note_served_meaning(metric)
            raw = one.samples(base)
            series = found.setdefault(one.id, Series(one.id, one.entry["label"], metric, definition.unit))
            series.points.append(Point(index, result_set.name, result_set.created, result_set.machine_id,
                                       definition.figure(raw, stat), definition.test_values(raw), raw=raw))
    for series in found.values():
        for before, after in zip(series.points, series.points[1:], strict=False):
            call = judge_samples(base, stat, before.raw, after.raw, min_effect).call
            if call in ("better", "worse"):
                after.change = call
    return list(found.values())


def trend_figure(series: list[Series]) -> Any:
    from bench.readers.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 4.8))
    shown = registry.metric(series[0].metric) if series else None
    scale, unit = (shown.scale, shown.display_unit) if shown else (1.0, "")
    names: dict[int, str] = {}
    for one in series:
        xs = [p.index for p in one.points]
        ys = [p.value * scale if p.value is not None else None for p in one.points]
        ax.plot(xs, ys, marker="o", label=one.label)
        for point in one.points:
            names[point.index] = point.result_set
            if point.change and point.value is not None:
                colour = "tab:red" if point.change == "worse" else "tab:green"
                ax.axvline(point.index - 0.5, color=colour, alpha=0.4, linestyle="--")
                ax.annotate(point.change, (point.index, point.value * scale), color=colour, fontsize=8,
                            textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_xticks(sorted(names), [names[i] for i in sorted(names)], rotation=30, ha="right", fontsize=7)
    metric = series[0].metric if series else ""
    ax.set(ylabel=f"{metric} ({unit})", title=f"{metric} over time (dashed: a significant change)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pytest_benchmark_json(series: list[Series], path: Path) -> None:
    """The newest point of each series in pytest-benchmark's JSON layout. pytest-benchmark measures
    seconds per round; a rate is exported as seconds per token (1 / tok/s) so lower stays better."""
    benchmarks = []
    for one in series:
        point = one.points[-1]
        seconds = [v for v in point.samples if v] if registry.metric(one.metric).unit == "s" else [
            1 / v for v in point.samples if v]
        if not seconds:
            continue
        data = sorted(seconds)
        q1, _, q3 = statistics.quantiles(data, n=4) if len(data) > 1 else (data[0], data[0], data[0])
        mean = statistics.fmean(data)
        benchmarks.append({
            "group": one.metric, "name": f"{one.label} [{one.metric}]", "fullname": f"{one.cell_id}::{one.metric}",
            "params": {"cell_id": one.cell_id, "result_set": point.result_set}, "param": one.cell_id,
            "extra_info": {"unit": one.unit, "value": point.value},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 1, "max_time": 0,
                        "min_time": 0, "warmup": False},
            "stats": {"min": data[0], "max": data[-1], "mean": mean,
                      "stddev": statistics.stdev(data) if len(data) > 1 else 0.0, "rounds": len(data),
                      "median": statistics.median(data), "iqr": q3 - q1, "q1": q1, "q3": q3, "iqr_outliers": 0,
                      "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": data[0], "hd15iqr": data[-1],
                      "ops": 1 / mean, "total": sum(data), "iterations": 1},
        })
    machine = series[0].points[-1].machine_id if series else None
    write_json(path, {"machine_info": {"node": machine, "machine_id": machine}, "commit_info": {},
                      "benchmarks": benchmarks,
                      "datetime": dt.datetime.now(dt.timezone.utc).isoformat(), "version": "4.0.0"})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(series: list[Series], path: Path) -> None:
    """Gauges of each cell's newest value, written atomically (the textfile collector's rule)."""
    by_metric: dict[str, list[Series]] = {}
    for one in series:
        by_metric.setdefault(one.metric, []).append(one)
    lines = []
    for metric, group in by_metric.items():
        name = "lokaal_bench_" + re.sub(r"[^a-zA-Z0-9_]", "_", metric)
        unit = registry.metric(metric).unit
        name += "_seconds" if unit == "s" else ""
        lines += [f"# HELP {name} lokaal-bench {metric} ({unit}) of the newest result set per cell",
                  f"# TYPE {name} gauge"]
        for one in group:
            point = one.points[-1]
            if point.value is None:
                continue
            labels = (f'cell_id="{_label(one.cell_id)}",cell="{_label(one.label)}",'
                      f'result_set="{_label(point.result_set)}",machine_id="{_label(point.machine_id or "")}"')
            lines.append(f"{name}{{{labels}}} {point.value:.9g}")
    write_text(path, "\n".join(lines) + "\n")
