"""How long and how much to measure a cell: floors of time and of samples, both, as MLPerf's LoadGen.

A cell's work is sized by a minimum duration AND a minimum count, so it is valid on a slow machine
and on a fast one alike: a scenario keeps issuing work (more requests, batches or runs, on the same
seeded stream) until both hold, and `run.max_duration_s` caps a repetition whatever they say. The
rule set adds its own floors without the profile having to say so: under `nightly` its minimum
duration and the samples for p90; under `procurement` 600 s measured per cell (spread over its
repetitions) and the samples for p99. Repetitions are a fixed count or `auto`: at least 3, then more
until the 95% confidence half-width of the cell's output tok/s is within `run.target_precision`.

Pure: `plan_measurement` is what the cell process follows, `validate` prints and the runner's
timeout is derived from; `estimate_run` adds up the time a run will take.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bench.measure.validity import RULES, required_samples
from bench.profile.points import CapacityPoint, ScenarioPoint
from bench.profile.run_settings import RunSettings

if TYPE_CHECKING:
    from bench.profile.cells import Cell

AUTO_MIN_REPETITIONS = 3
CELL_START_ALLOWANCE_S = 1800.0  # process start, model load and count-bound time on a slow machine
SERVED_SCENARIOS = ("concurrency", "rate", "capacity", "trace")


@dataclass(frozen=True)
class RepetitionPlan:
    mode: str  # "fixed" | "auto"
    minimum: int
    maximum: int
    target_precision: float | None  # auto: relative 95% half-width of output tok/s to reach


@dataclass(frozen=True)
class WarmupPlan:
    mode: str  # "fixed" | "auto"
    batches: int  # fixed: exactly this many; auto: at least this many
    max_batches: int
    tolerance: float | None  # auto: two consecutive batches' throughput within this fraction


@dataclass(frozen=True)
class MeasurementPlan:
    """What a cell measures, and why: each floor with the source that set it."""

    rules: str
    min_duration_s: float  # the cell's total measured time, spread over its minimum repetitions
    min_duration_per_repetition_s: float  # each repetition (each capacity probe) measures at least this
    min_requests_per_repetition: int  # requests (samples) each repetition issues at least
    max_duration_s: float | None  # a repetition issues no new work after this long
    repetitions: RepetitionPlan
    warmup: WarmupPlan
    cell_timeout_s: float
    why: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MeasurementPlan:
        return cls(**{**data, "repetitions": RepetitionPlan(**data["repetitions"]),
                      "warmup": WarmupPlan(**data["warmup"])})

    def minimum_measured_s(self) -> float:
        """The least measured time the floors ask for (repetitions at their minimum)."""
        return self.min_duration_per_repetition_s * self.repetitions.minimum

    def enough(self, elapsed_s: float, issued: int, count: int | None = None) -> bool:
        """A repetition has issued enough work when both floors hold (`count` overrides the count floor)."""
        floor = self.min_requests_per_repetition if count is None else count
        return issued >= floor and elapsed_s >= self.min_duration_per_repetition_s


def exact_plan(requests: int, repetitions: int = 1, warmup: int = 0) -> MeasurementPlan:
    """A plan of exactly `requests` per repetition and no time floor: for scripts that measure the harness
    itself on a fixed amount of work (a cell always follows plan_measurement)."""
    return MeasurementPlan("none", 0.0, 0.0, requests, None, RepetitionPlan("fixed", repetitions, repetitions, None),
                           WarmupPlan("fixed", warmup, warmup, None), CELL_START_ALLOWANCE_S,
                           {"all": "exact_plan: a fixed amount of work"})


def scenario_count(point: ScenarioPoint) -> int:
    """The requests a scenario point asks for per repetition (the profile's counts, now minimums)."""
    if point.kind == "prefill-decode":
        return point.requests * point.batch_size  # runs x rows
    if point.kind == "capacity":
        from bench.measure.capacity_search import requests_per_probe

        return requests_per_probe(point)
    if point.kind == "trace":  # every entry of the trace (or of its first `requests`) at least once
        from pathlib import Path

        from bench.profile.trace_file import load_trace

        return len(load_trace(Path(point.file))[: point.requests or None])
    return point.requests or 0


def _unit(point: ScenarioPoint) -> int:
    """Work is issued in whole units: batches (offline), runs of batch_size rows (prefill-decode)."""
    return point.batch_size if point.kind in ("offline", "prefill-decode") else 1


def plan_measurement(run: RunSettings, point: ScenarioPoint) -> MeasurementPlan:
    """The measurement plan of one cell from its run settings and scenario point."""
    rules = RULES[run.rules]
    why: dict[str, str] = {}
    repetitions = _repetition_plan(run, point, why)
    profile_floor = run.min_duration_s
    if profile_floor is not None and profile_floor >= rules.min_duration_s:
        min_duration = float(profile_floor)
        why["min_duration_s"] = f"run.min_duration_s {profile_floor:g} s"
    else:
        min_duration = rules.min_duration_s
        why["min_duration_s"] = (f"{rules.name} rules: at least {rules.min_duration_s:g} s measured per cell"
                                 + (f" (above run.min_duration_s {profile_floor:g} s)" if profile_floor else ""))
    # A capacity probe is a load point in its own right: each measures the whole floor.
    spread = 1 if point.kind == "capacity" else repetitions.minimum
    per_repetition = min_duration / spread
    if spread > 1:
        why["min_duration_per_repetition_s"] = f"{min_duration:g} s over {spread} repetitions"
    count = scenario_count(point)
    samples = required_samples(rules)
    per_repetition_samples = math.ceil(samples / spread)
    unit = _unit(point)
    if per_repetition_samples > count:
        why["min_requests_per_repetition"] = (f"{rules.name} rules: {samples} samples for p{rules.percentile:g}"
                                              + (f" over {spread} repetitions" if spread > 1 else ""))
    else:
        why["min_requests_per_repetition"] = "the profile's count"
    min_requests = max(count, per_repetition_samples)
    min_requests = math.ceil(min_requests / unit) * unit
    warmup = _warmup_plan(run)
    max_duration = run.max_duration_s
    timeout = run.cell_timeout_s
    if timeout is None:
        bound = max(per_repetition, max_duration or 0.0)
        timeout = CELL_START_ALLOWANCE_S + 2 * repetitions.maximum * bound
        why["cell_timeout_s"] = (f"{CELL_START_ALLOWANCE_S:g} s start-up allowance + twice "
                                 f"{repetitions.maximum} repetition(s) x {bound:g} s")
    else:
        why["cell_timeout_s"] = "run.cell_timeout_s"
    return MeasurementPlan(rules.name, min_duration, per_repetition, min_requests, max_duration, repetitions,
                           warmup, float(timeout), why)


def _repetition_plan(run: RunSettings, point: ScenarioPoint, why: dict[str, str]) -> RepetitionPlan:
    if point.kind == "capacity":  # its "repetitions" are the search's probes, each a different load
        why["repetitions"] = "capacity: one search; its probes are its load points"
        return RepetitionPlan("fixed", 1, 1, None)
    rules = RULES[run.rules]
    value = run.repetitions
    if value == "auto":
        low = max(AUTO_MIN_REPETITIONS, rules.min_repetitions)
        high = max(run.max_repetitions, low)
        why["repetitions"] = (f"auto: {low} to {high}, until the 95% half-width of output tok/s is within "
                              f"{run.target_precision:.1%}")
        return RepetitionPlan("auto", low, high, run.target_precision)
    why["repetitions"] = f"run.repetitions {value}"
    return RepetitionPlan("fixed", int(value), int(value), None)


def _warmup_plan(run: RunSettings) -> WarmupPlan:
    value = run.warmup
    if value == "auto":
        return WarmupPlan("auto", 2, run.max_warmup, run.warmup_tolerance)
    return WarmupPlan("fixed", int(value), int(value), None)


def steady(throughputs: list[float], tolerance: float) -> bool:
    """Warm-up is over when the last two warm-up batches' throughputs agree within `tolerance`."""
    if len(throughputs) < 2 or not throughputs[-1] or not throughputs[-2]:
        return False
    a, b = throughputs[-2], throughputs[-1]
    return abs(a - b) / max(a, b) <= tolerance


def relative_half_width(values: list[float], confidence: float = 0.95) -> float | None:
    """The half-width of the mean's confidence interval (Student's t) relative to the mean; None for
    fewer than two values or a zero mean."""
    data = [float(v) for v in values if v is not None]
    if len(data) < 2:
        return None
    mean = sum(data) / len(data)
    if mean == 0:
        return None
    from scipy.stats import t

    stdev = math.sqrt(sum((v - mean) ** 2 for v in data) / (len(data) - 1))
    return float(t.ppf(0.5 + confidence / 2, len(data) - 1) * stdev / math.sqrt(len(data)) / abs(mean))


def precise_enough(values: list[float], plan: RepetitionPlan) -> bool:
    """An auto-repetition cell may stop: its minimum reached and its half-width within the target."""
    if len(values) < plan.minimum:
        return False
    if plan.mode == "fixed":
        return True
    reached = relative_half_width(values)
    return reached is not None and plan.target_precision is not None and reached <= plan.target_precision


# --- the time a run will take ------------------------------------------------------------------


CELL_OVERHEAD_S = 5.0  # a cell process's start, imports and warm-up on a tiny model
LOAD_BYTES_PER_S = 1 * 2**30  # reading weights from a local disk or page cache


@dataclass(frozen=True)
class CellEstimate:
    cell_id: str
    label: str
    plan: MeasurementPlan
    minimum_measured_s: float  # the floors with repetitions at their minimum
    maximum_measured_s: float | None  # repetitions at their maximum, when a duration bounds each one
    probes: int  # capacity: the most probes its search can take (1 otherwise)
    overhead_s: float  # start-up allowance: process, imports, loading the weights


def _probe_bound(point: CapacityPoint) -> int:
    """The most probes a capacity search makes: doublings from start to max, the ceiling, bisections."""
    doublings = math.ceil(math.log2(max(point.max / point.start, 1.0))) + 1
    return doublings + point.steps


def estimate_cell(cell_id: str, label: str, run: RunSettings, point: ScenarioPoint,
                  weight_bytes: int | None = None) -> CellEstimate:
    plan = plan_measurement(run, point)
    probes = _probe_bound(point) if isinstance(point, CapacityPoint) else 1
    minimum = plan.minimum_measured_s() * probes
    maximum: float | None = None
    if plan.max_duration_s is not None:  # each repetition is bounded: the worst case is known
        maximum = max(plan.min_duration_per_repetition_s, plan.max_duration_s) * plan.repetitions.maximum * probes
    elif plan.repetitions.mode == "auto":  # where the time floor binds, repetitions at their maximum
        maximum = plan.min_duration_per_repetition_s * plan.repetitions.maximum * probes
    overhead = CELL_OVERHEAD_S + (weight_bytes or 0) / LOAD_BYTES_PER_S
    return CellEstimate(cell_id, label, plan, minimum, maximum, probes, overhead)


@dataclass(frozen=True)
class RunEstimate:
    cells: list[CellEstimate]

    @property
    def minimum_s(self) -> float:
        return sum(c.minimum_measured_s + c.overhead_s for c in self.cells)

    @property
    def maximum_s(self) -> float | None:
        if any(c.maximum_measured_s is None for c in self.cells):
            return None
        return sum((c.maximum_measured_s or 0.0) + c.overhead_s for c in self.cells)

    def describe(self) -> str:
        """One paragraph for `validate`: the estimated total and what it leaves out."""
        measured = sum(c.minimum_measured_s for c in self.cells)
        overhead = sum(c.overhead_s for c in self.cells)
        text = (f"estimated total: at least {format_duration(self.minimum_s)} ({format_duration(measured)} "
                f"measured by the floors, {format_duration(overhead)} start-up and loading)")
        if self.maximum_s is not None and self.maximum_s > self.minimum_s:
            text += (f"; up to about {format_duration(self.maximum_s)} where every time floor binds and auto "
                     "repetitions run to their maximum")
        return (text + ". Cells whose counts take longer than their time floor on this machine take longer; "
                "preparing synthetic weights the first time, starting managed servers and probing the machine "
                "come on top.")


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_run(cells: list[Cell]) -> RunEstimate:
    """The time a run of these cells (bench.profile.cells.Cell) will take, from their plans and weight sizes."""
    from bench.models.cards import UnknownCardError, load_card

    estimates = []
    for cell in cells:
        weights = None
        if cell.model.card and not cell.served:
            try:
                card = load_card(cell.model.card)
                if cell.engine.kind == "llamacpp":  # a GGUF at its quantisation (a card's default: F16)
                    from bench.models.gguf_types import weight_bytes_estimate

                    weights = weight_bytes_estimate(card.parameter_count(), cell.engine.quantization or "F16")
                else:
                    weights = card.weight_bytes(cell.engine.weights_dtype)
            except UnknownCardError:
                weights = None
        estimates.append(estimate_cell(cell.id, cell.label, cell.run, cell.scenario, weights))
    return RunEstimate(estimates)


def sizing_summary(report: dict[str, Any] | None, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """cell.json's `sizing`: the floors applied and why, what each repetition issued and what bound it,
    the repetitions done and the precision reached (from the measured per-repetition output tok/s)."""
    if not report:
        return None
    plan = report["plan"]
    values = [v for v in (metrics.get("output_tok_s") or {}).get("per_repetition") or [] if v]
    reached = relative_half_width(values)
    repetitions = dict(plan["repetitions"])
    target = repetitions.get("target_precision")
    repetitions.update(done=report.get("repetitions_done"), precision=reached,
                       met=None if target is None else (reached is not None and reached <= target))
    return {
        "rules": plan["rules"],
        "min_duration_s": plan["min_duration_s"],
        "min_duration_per_repetition_s": plan["min_duration_per_repetition_s"],
        "min_requests_per_repetition": plan["min_requests_per_repetition"],
        "max_duration_s": plan["max_duration_s"],
        "cell_timeout_s": plan["cell_timeout_s"],
        "repetitions": repetitions,
        "warmup": {**plan["warmup"], **(report.get("warmup") or {})},
        "per_repetition": report.get("per_repetition") or [],
        "why": plan["why"],
    }
