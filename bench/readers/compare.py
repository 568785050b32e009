"""Compare two result sets cell by cell, and gate on regressions.

Cells are matched by their stable id (model, engine settings, workload, scenario point; never the
hardware), so last night is compared with tonight and vendor A's machine with vendor B's. Cells
that cannot be compared are listed with the reason, never dropped. Each metric is compared on the
registry's samples of it (bench/measure/metric_registry.py: latencies per request, rates per piece of
measured time) with bench.measure.stats: a change is called only when significant and larger than
the minimum effect. The figures shown are the registry's, the same as the cell summary's headline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.measure.metric_registry import METRICS, note_served_meaning, split_metric
from bench.measure.stats import Verdict, compare_samples
from bench.profile.cells import comparison_group
from bench.results.load import LoadedCell, LoadedResultSet, load_result_set

DEFAULT_METRICS = ["output_tok_s", "decode_tok_s", "prefill_tok_s", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99",
                   "e2e_latency_p50"]


def tail_samples_needed(stat: str | None, beyond: int = 10) -> int:
    """A percentile is compared only with `beyond` samples past it on each side: p99 needs 1000,
    p95 200, p90 100, p50 20, as bench.measure.validity asks of the percentiles a cell reports."""
    if stat is None or stat == "mean":
        return 0
    return round(beyond / (1 - float(stat[1:]) / 100))


def judge_samples(base: str, stat: str | None, xs: list[Any], ys: list[Any], min_effect: float = 0.02,
                  alpha: float = 0.05) -> Verdict:
    """A's and B's samples of one metric (the registry's), judged as compare and history do: medians
    and rates by the U test on the values (a rate: per piece), tails and means by a bootstrap test of
    themselves; a percentile only with enough samples beyond it."""
    metric = METRICS[base]
    a, b = metric.test_values(xs), metric.test_values(ys)
    if min(len(a), len(b)) < tail_samples_needed(stat):  # as bench.measure.validity asks of percentiles
        return Verdict("insufficient data", None, None, None, None)
    tail = None if stat in (None, "p50") else (lambda values, stat=stat: metric.figure(values, stat))
    quantile = None if stat == "mean" else float(stat[1:]) / 100 if stat else 0.5
    # A median's interval is shown beside the median; a rate's figure is a ratio of sums, not a median.
    return compare_samples(a, b, metric.higher_is_better, min_effect, alpha, statistic=tail, quantile=quantile,
                           intervals=metric.kind == "latency" and stat in (None, "p50"))


@dataclass
class MetricComparison:
    metric: str
    unit: str
    higher_is_better: bool
    a: float | None
    b: float | None
    verdict: Verdict

    @property
    def change(self) -> float | None:
        if self.a in (None, 0) or self.b is None:
            return None
        return (self.b - self.a) / self.a


@dataclass
class CellComparison:
    cell_id: str
    label: str
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # engine versions differ, INVALID cells...


@dataclass
class Comparison:
    a: Path
    b: Path
    cells: list[CellComparison]
    unmatched: list[dict[str, str]]  # cell, label, reason
    same_machine: bool


def _version_notes(one: dict[str, Any], other: dict[str, Any]) -> list[str]:
    notes = []
    for key in ("transformers_version", "torch_version", "vllm_version", "device"):
        x, y = (one.get("engine") or {}).get(key), (other.get("engine") or {}).get(key)
        if x != y:
            notes.append(f"{key} differs: {x} vs {y}")
    for side, summary in (("A", one), ("B", other)):
        validity = summary.get("validity") or {}
        if validity.get("verdict") == "INVALID":
            notes.append(f"{side} is INVALID: {'; '.join(validity.get('reasons', []))}")
    return notes


def compare(a_path: Path | LoadedResultSet, b_path: Path | LoadedResultSet, metrics: list[str] | None = None,
            min_effect: float = 0.02, alpha: float = 0.05) -> Comparison:
    a_set, b_set = (s if isinstance(s, LoadedResultSet) else load_result_set(s) for s in (a_path, b_path))
    a_cells: dict[str, LoadedCell] = {c.id: c for c in a_set.cells}
    b_cells: dict[str, LoadedCell] = {c.id: c for c in b_set.cells}
    names = metrics or DEFAULT_METRICS
    parsed = [(name, *split_metric(name)) for name in names]
    cells, unmatched = [], []
    def order(cell_id: str) -> tuple[tuple[str, ...], str]:  # the same point on each engine, together
        label = (a_cells.get(cell_id) or b_cells[cell_id]).label
        return comparison_group(label), label

    for cell_id in sorted(set(a_cells) | set(b_cells), key=order):
        one, other = a_cells.get(cell_id), b_cells.get(cell_id)
        label = (one or other or b_cells[cell_id]).label
        if one is None or other is None:
            side = "B" if one is None else "A"
            unmatched.append({"cell": cell_id, "label": label, "reason": f"only in {side}: no cell with the same "
                              "model, engine settings, workload and scenario point on the other side"})
            continue
        if not one.completed or not other.completed:
            unmatched.append({"cell": cell_id, "label": label, "reason": f"not completed on both sides "
                              f"(A {one.status}, B {other.status})"})
            continue
        if one.served or other.served:
            for name in names:
                note_served_meaning(name)
        result = CellComparison(cell_id, label, notes=_version_notes(one.summary or {}, other.summary or {}))
        for name, base, stat in parsed:
            metric = METRICS[base]
            xs, ys = one.samples(base), other.samples(base)
            verdict = judge_samples(base, stat, xs, ys, min_effect, alpha)
            result.metrics.append(MetricComparison(name, metric.unit, metric.higher_is_better, metric.figure(xs, stat),
                                                   metric.figure(ys, stat), verdict))
        cells.append(result)
    return Comparison(a_set.path, b_set.path, cells, unmatched, a_set.machine_id == b_set.machine_id)


# --- the gate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    metric: str
    limit: float  # signed relative change that fails: -0.05 (5% lower) or +0.10 (10% higher)


def parse_fail_on(text: str) -> list[Threshold]:
    """`decode_tok_s:-5%,ttft_p99:+10%`: the worst relative change each metric may show."""
    thresholds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, limit = part.partition(":")
        match = re.fullmatch(r"([+-])(\d+(?:\.\d+)?)%", limit.strip())
        if not match:
            raise BenchError(f"--fail-on {part!r}: expected METRIC:+N% or METRIC:-N% (e.g. decode_tok_s:-5%)")
        split_metric(name.strip())
        value = float(match[2]) / 100 * (1 if match[1] == "+" else -1)
        thresholds.append(Threshold(name.strip(), value))
    if not thresholds:
        raise BenchError("--fail-on: no thresholds given")
    return thresholds


def regressions(comparison: Comparison, thresholds: list[Threshold]) -> list[str]:
    """Each significant change beyond its threshold, in the direction the threshold names."""
    found = []
    for cell in comparison.cells:
        for metric in cell.metrics:
            for threshold in (t for t in thresholds if t.metric == metric.metric):
                change = metric.change
                if metric.verdict.call != "worse" or change is None:
                    continue
                crossed = change <= threshold.limit if threshold.limit < 0 else change >= threshold.limit
                if crossed:
                    found.append(f"{cell.label} [{cell.cell_id}]: {metric.metric} {metric.a:.4g} -> {metric.b:.4g} "
                                 f"{metric.unit} ({change:+.1%}, limit {threshold.limit:+.0%}, "
                                 f"p={metric.verdict.p_value:.2g})")
    return found
