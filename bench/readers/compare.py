"""Compare two result sets cell by cell, and gate on regressions.

Cells are matched by their stable id (model, engine settings, workload, scenario point; never the
hardware), so last night is compared with tonight and vendor A's machine with vendor B's. Cells
that cannot be compared are listed with the reason, never dropped. Each metric is compared on its
raw samples (latencies per request, throughput per batch) with bench.measure.stats: a change is called
only when significant and larger than the minimum effect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.measure.metrics import METRIC_INFO, e2e_latency, inter_token_latencies, percentile, tpot, ttft
from bench.measure.stats import Verdict, compare_samples
from bench.results.records import RequestRecord, read_records
from bench.results.resultset import ResultSet

LATENCIES = {"ttft": ttft, "tpot": tpot, "e2e_latency": e2e_latency}
DEFAULT_METRICS = ["output_tok_s", "decode_tok_s", "prefill_tok_s", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99",
                   "e2e_latency_p50"]
_STAT = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:_(?P<stat>p50|p90|p95|p99|mean))?$")


def split_metric(name: str) -> tuple[str, str | None]:
    """`ttft_p99` -> (ttft, p99); `decode_tok_s` -> (decode_tok_s, None)."""
    match = _STAT.match(name)
    base, stat = (match["base"], match["stat"]) if match else (name, None)
    if base not in METRIC_INFO:
        raise BenchError(f"unknown metric {name!r}; known: {', '.join(sorted(METRIC_INFO))} "
                         "(latencies take _p50/_p90/_p95/_p99/_mean)")
    if stat and METRIC_INFO[base][0] != "s":
        raise BenchError(f"{name!r}: only latencies take a percentile suffix")
    return base, stat


def _batch_rates(records: list[RequestRecord]) -> dict[str, list[float]]:
    """Throughput per batch (a batch of one in single-stream): many samples per cell, not one."""
    groups: dict[tuple[int, int], list[RequestRecord]] = {}
    for record in records:
        groups.setdefault((record.repetition, record.batch_index), []).append(record)
    rates: dict[str, list[float]] = {"output_tok_s": [], "decode_tok_s": [], "prefill_tok_s": []}
    for batch in groups.values():
        ok = [r for r in batch if r.ok and r.first_token_time is not None and r.end_time is not None]
        if not ok:
            continue
        submit = min(r.submit_time for r in ok)
        first, end = max(r.first_token_time for r in ok), max(r.end_time for r in ok)
        if end > submit:
            rates["output_tok_s"].append(sum(r.output_tokens for r in ok) / (end - submit))
        if end > first:
            rates["decode_tok_s"].append(sum(r.output_tokens - 1 for r in ok) / (end - first))
        if first > submit:
            rates["prefill_tok_s"].append(sum(r.input_tokens for r in ok) / (first - submit))
    return rates


def cell_samples(result_set: ResultSet, cell_id: str) -> dict[str, list[float]]:
    """Raw samples per metric of one cell, from its records (warm-up excluded)."""
    path = result_set.cell_dir(cell_id) / "records.jsonl.gz"
    if not path.exists():
        return {}
    records = [r for r in read_records(path) if not r.warmup]
    ok = [r for r in records if r.ok]
    samples: dict[str, list[float]] = {name: [v for r in ok if (v := fn(r)) is not None]
                                       for name, fn in LATENCIES.items()}
    samples["itl"] = [v for r in ok for v in inter_token_latencies(r)]
    samples.update(_batch_rates(records))
    return samples


def tail_samples_needed(stat: str | None, beyond: int = 10) -> int:
    """A percentile is compared only with `beyond` samples past it on each side: p99 needs 1000,
    p95 200, p90 100, p50 20, as bench.measure.validity asks of the percentiles a cell reports."""
    if stat is None or stat == "mean":
        return 0
    return round(beyond / (1 - float(stat[1:]) / 100))


def statistic(values: list[float], stat: str | None) -> float | None:
    """The metric's figure from its samples: a percentile, the mean, or (rates) the median."""
    if not values:
        return None
    if stat == "mean":
        return sum(values) / len(values)
    return percentile(sorted(values), float(stat[1:]) if stat else 50.0)


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


def _summaries(result_set: ResultSet) -> dict[str, dict[str, Any]]:
    manifest = result_set.read_manifest()
    found = {}
    for entry in manifest.get("cells", []):
        summary = result_set.read_cell_summary(entry["id"])
        found[entry["id"]] = summary or {"label": entry.get("label"), "status": entry.get("status", "PENDING"),
                                         "reason": entry.get("reason")}
    return found


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


def compare(a_path: Path, b_path: Path, metrics: list[str] | None = None, min_effect: float = 0.02,
            alpha: float = 0.05) -> Comparison:
    a_set, b_set = ResultSet(a_path), ResultSet(b_path)
    a_manifest, b_manifest = a_set.read_manifest(), b_set.read_manifest()
    a_cells, b_cells = _summaries(a_set), _summaries(b_set)
    names = metrics or DEFAULT_METRICS
    parsed = [(name, *split_metric(name)) for name in names]
    cells, unmatched = [], []
    for cell_id in sorted(set(a_cells) | set(b_cells), key=lambda c: (a_cells.get(c) or b_cells[c]).get("label", "")):
        one, other = a_cells.get(cell_id), b_cells.get(cell_id)
        label = (one or other or {}).get("label", cell_id)
        if one is None or other is None:
            side = "B" if one is None else "A"
            unmatched.append({"cell": cell_id, "label": label, "reason": f"only in {side}: no cell with the same "
                              "model, engine settings, workload and scenario point on the other side"})
            continue
        if one.get("status") != "COMPLETED" or other.get("status") != "COMPLETED":
            unmatched.append({"cell": cell_id, "label": label, "reason": f"not completed on both sides "
                              f"(A {one.get('status')}, B {other.get('status')})"})
            continue
        a_samples, b_samples = cell_samples(a_set, cell_id), cell_samples(b_set, cell_id)
        result = CellComparison(cell_id, label, notes=_version_notes(one, other))
        for name, base, stat in parsed:
            unit, higher = METRIC_INFO[base]
            xs, ys = a_samples.get(base, []), b_samples.get(base, [])
            if min(len(xs), len(ys)) < tail_samples_needed(stat):  # as bench.measure.validity asks of percentiles
                verdict = Verdict("insufficient data", None, None, None, None)
            else:
                # Medians (rates, _p50) take the U test; tails and means test their own statistic.
                tail = None if stat in (None, "p50") else (lambda values, stat=stat: statistic(values, stat))
                quantile = None if stat == "mean" else float(stat[1:]) / 100 if stat else 0.5
                verdict = compare_samples(xs, ys, higher, min_effect, alpha, statistic=tail, quantile=quantile,
                                          intervals=stat in (None, "p50"))
            result.metrics.append(MetricComparison(name, unit, higher, statistic(xs, stat), statistic(ys, stat),
                                                   verdict))
        cells.append(result)
    return Comparison(a_path, b_path, cells, unmatched, a_manifest.get("machine_id") == b_manifest.get("machine_id"))


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
