"""Capacity plans: how many nodes of each measured machine kind a service for N concurrent users
needs within an SLO, with the headroom and the energy per day. Pure functions of result sets.

A node's capacity comes from a `capacity` cell (bench/measure/capacity_search.py): from a concurrency search it is
the most concurrent users (closed loop, no think time) that met the cell's SLO; from a rate search it
is Little's law, requests/s x mean end-to-end latency at the best load. A cell answers a question
only if the SLO it was measured under is at least as strict as the one asked: every objective asked
was held at the same or a higher percentile with the same or a lower limit.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.errors import BenchError
from bench.measure import slo
from bench.planning.power import Power, node_power
from bench.profile.run_settings import SLOSpec
from bench.results.load import LoadedResultSet, Source, load_result_sets

METRICS = ("ttft", "itl", "tpot", "e2e")
_OBJECTIVE = re.compile(r"(ttft|itl|tpot|e2e)_p(\d+(?:\.\d+)?)\s*<=\s*(\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)
_ERRORS = re.compile(r"errors?\s*<=\s*(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
_LOOPBACK = ("localhost", "::1", "0.0.0.0")


@dataclass(frozen=True)
class Objective:
    metric: str  # one of METRICS
    percentile: float
    limit_s: float


@dataclass(frozen=True)
class Question:
    """The SLO a plan is asked for: objectives (each with its own percentile) and the error rate."""

    objectives: tuple[Objective, ...]
    max_error_rate: float = 0.0  # as a profile's run.slo: no errors allowed unless said

    def describe(self) -> str:
        parts = [f"{o.metric.upper()} p{o.percentile:g} <= {seconds(o.limit_s)}" for o in self.objectives]
        return ", ".join([*parts, f"errors <= {self.max_error_rate * 100:g}%"])


def seconds(value: float) -> str:
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def parse_slo(text: str) -> Question:
    """'ttft_p95<=2s,itl_p95<=100ms[,errors<=1%]' -> Question; BenchError naming the bad part."""
    objectives: dict[str, Objective] = {}
    max_errors = 0.0
    parts = [p.strip() for p in text.split(",")]
    for part in parts:
        if (match := _OBJECTIVE.fullmatch(part)) is not None:
            metric, unit = match.group(1).lower(), match.group(4)
            q, value = float(match.group(2)), float(match.group(3))
            if not 0 < q < 100:
                raise BenchError(f"--slo: {part!r}: the percentile must lie between 0 and 100")
            if value <= 0:
                raise BenchError(f"--slo: {part!r}: the limit must be above zero")
            if metric in objectives:
                raise BenchError(f"--slo: {part!r}: {metric} is given twice")
            objectives[metric] = Objective(metric, q, value / 1000 if unit.lower() == "ms" else value)
        elif (match := _ERRORS.fullmatch(part)) is not None:
            max_errors = float(match.group(1)) / (100 if match.group(2) else 1)
            if max_errors > 1:
                raise BenchError(f"--slo: {part!r}: an error rate is at most 100%")
        else:
            raise BenchError(f"--slo: {part!r} is not an objective; write METRIC_pQ<=LIMIT with METRIC one of "
                             f"{', '.join(METRICS)} and LIMIT in s or ms (e.g. ttft_p95<=2s,itl_p95<=100ms), "
                             "or errors<=1%")
    if not objectives:
        raise BenchError("--slo: give at least one latency objective, e.g. ttft_p95<=2s")
    return Question(tuple(objectives.values()), max_errors)


def compare_slo(question: Question, measured: dict[str, Any]) -> tuple[str, list[str]]:
    """'equal', 'stricter' (the cell can answer, conservatively) or 'looser' (it cannot), with why."""
    q_cell = float(measured.get("percentile", 95))
    looser, stricter = [], []
    for objective in question.objectives:
        name, limit = objective.metric.upper(), measured.get(f"{objective.metric}_s")
        if limit is None:
            looser.append(f"{name} was not an objective of the measurement")
        elif q_cell < objective.percentile:
            looser.append(f"{name} was held at p{q_cell:g}, asked p{objective.percentile:g}")
        elif limit > objective.limit_s:
            looser.append(f"{name} was held within {seconds(limit)}, asked {seconds(objective.limit_s)}")
        elif q_cell > objective.percentile or limit < objective.limit_s:
            stricter.append(f"{name} held at p{q_cell:g} <= {seconds(limit)}")
    asked = {o.metric for o in question.objectives}
    stricter += [f"{m.upper()} also held at p{q_cell:g} <= {seconds(measured[f'{m}_s'])}" for m in METRICS
                 if m not in asked and measured.get(f"{m}_s") is not None]
    errors = float(measured.get("max_error_rate", 0.0))
    if errors > question.max_error_rate:
        looser.append(f"errors allowed up to {errors:.1%}, asked {question.max_error_rate:.1%}")
    elif errors < question.max_error_rate:
        stricter.append(f"errors held within {errors:.1%}")
    if looser:
        return "looser", looser
    return ("stricter", stricter) if stricter else ("equal", [])


@dataclass(frozen=True)
class NodeCapacity:
    """One capacity cell: a node's concurrent users within the SLO it was measured under."""

    result_set: str
    cell_id: str
    machine: str
    host: str
    model: str  # as the cell names it
    model_names: frozenset[str]  # lower-cased names it answers to: card, name, display name, directory
    engine: str
    workload: str
    slo: dict[str, Any]
    search: str
    users: float | None  # None: no probed load met the cell's SLO
    basis: str
    at_search_ceiling: bool
    power: Power
    validity: str | None


def machine_kind(environment: dict[str, Any]) -> str:
    """'AMD EPYC 9654 x2 + 8x NVIDIA H200': the hardware, so that nodes of one kind group together
    whatever their host names."""
    cpu = environment.get("cpu") or {}
    label = str(cpu.get("model_name") or "unknown CPU")
    if (cpu.get("sockets") or 1) > 1:
        label += f" x{cpu['sockets']}"
    gpus: dict[str, int] = {}
    for device in (environment.get("gpus") or {}).get("devices") or []:
        gpus[device.get("name") or "?"] = gpus.get(device.get("name") or "?", 0) + 1
    return label + "".join(f" + {n}x {name}" for name, n in gpus.items())


def _remote_host(engine: dict[str, Any]) -> str | None:
    """The server's host when it is not this machine: then this machine's inventory is the client's."""
    for url in engine.get("base_urls") or []:
        host = urlparse(url).hostname or ""
        if not (host.startswith("127.") or host in _LOOPBACK):
            return host
    return None


def _model_names(config: dict[str, Any], model: dict[str, Any]) -> tuple[str, frozenset[str]]:
    from bench.models import UnknownCardError, load_card

    spec = config.get("model") or {}
    names = {spec.get("card"), spec.get("name"), model.get("name"), Path(spec.get("path") or "").name or None}
    if spec.get("card"):
        with contextlib.suppress(UnknownCardError):  # a card of a newer lokaal-bench: its name still matches
            names.add(load_card(spec["card"]).display_name)
    shown = spec.get("name") or spec.get("card") or Path(spec.get("path") or "").name or "?"
    return shown, frozenset(n.lower() for n in names if n)


def _capacity_of(capacity: dict[str, Any]) -> tuple[float | None, str]:
    best = capacity.get("best")
    if not best:
        return None, "no probed load met the cell's SLO"
    if capacity.get("search") == "concurrency":
        return float(best["load"]), "concurrency search"
    if not best.get("mean_e2e_s"):
        return None, "rate search without a mean latency"
    users = best["load"] * best["mean_e2e_s"]
    return users, f"rate {best['load']:.3g}/s x mean E2E {seconds(best['mean_e2e_s'])} (Little's law)"


def node_capacities(paths: Source | Iterable[Source]) -> list[NodeCapacity]:
    """Every completed capacity cell in the result sets (or folders of them, or sets already loaded)."""
    found = []
    for result_set in load_result_sets(paths):
        environment = result_set.environment
        for cell in result_set.cells:
            summary = cell.summary or {}
            capacity = summary.get("capacity")
            if not cell.completed or not capacity:
                continue
            config = summary["config"]
            users, basis = _capacity_of(capacity)
            remote = _remote_host(config.get("engine") or {})
            machine = f"server {remote} (not inventoried)" if remote else machine_kind(environment)
            power = (Power(None, f"unknown: the server {remote} is not the machine measured") if remote
                     else node_power(environment, summary.get("telemetry") or {}))
            model, names = _model_names(config, summary.get("model") or {})
            found.append(NodeCapacity(
                result_set=result_set.name, cell_id=cell.id, machine=machine,
                host=str((environment.get("os") or {}).get("hostname") or "?"), model=model, model_names=names,
                engine=cell.engine_label or "?", workload=cell.workload or "?",
                slo=config["scenario"].get("slo") or (config.get("run") or {}).get("slo") or {},
                search=capacity.get("search", "?"), users=users, basis=basis,
                at_search_ceiling=bool(capacity.get("at_search_ceiling")), power=power,
                validity=cell.verdict))
    return found


def select_model(capacities: list[NodeCapacity], name: str, where: str) -> list[NodeCapacity]:
    """The capacity cells of a model (card, name or display name, any case); BenchError if none."""
    chosen = [c for c in capacities if name.strip().lower() in c.model_names]
    if chosen:
        return chosen
    if not capacities:
        raise BenchError(f"no capacity cells in {where}: run a profile with a `capacity` scenario first")
    models = sorted({c.model for c in capacities})
    raise BenchError(f"no capacity cell of model {name!r} in {where}; models with capacity cells: {', '.join(models)}")


def plan_row(capacity: NodeCapacity, users: int, question: Question) -> dict[str, Any]:
    """Nodes, headroom and energy per day for `users` concurrent users on this cell's machine kind."""
    verdict, why = compare_slo(question, capacity.slo)
    notes = []
    if capacity.at_search_ceiling:
        notes.append("the search stopped at its ceiling: a node may serve more, so fewer nodes may do")
    if capacity.validity == "INVALID":
        notes.append("the cell is INVALID under its validity rules")
    row: dict[str, Any] = {
        "machine": capacity.machine, "host": capacity.host, "model": capacity.model, "engine": capacity.engine,
        "workload": capacity.workload, "search": capacity.search, "users_per_node": capacity.users,
        "basis": capacity.basis, "nodes": None, "headroom": None, "power_w": capacity.power.watts,
        "power_source": capacity.power.source, "energy_kwh_per_day": None,
        "slo_measured": slo.describe(SLOSpec.model_validate(capacity.slo)), "slo_check": verdict,
        "answer": "", "notes": "; ".join(notes), "result_set": capacity.result_set, "cell_id": capacity.cell_id,
    }
    if verdict == "looser":
        row["answer"] = "cannot answer: measured under a looser SLO (" + "; ".join(why) + ")"
        return row
    if not capacity.users:
        row["answer"] = f"cannot answer: {capacity.basis}"
        return row
    nodes = max(1, math.ceil(users / capacity.users - 1e-9))  # 1e-9: 8 / 4.0 must stay 2, not round up
    total = nodes * capacity.users
    row.update(nodes=nodes, headroom=(total - users) / total)
    if capacity.power.watts is not None:
        row["energy_kwh_per_day"] = capacity.power.watts * 24 * nodes / 1000
    row["answer"] = "equal SLO" if verdict == "equal" else "conservative: measured under a stricter SLO (" + \
        "; ".join(why) + ")"
    return row


def plan(paths: Source | Iterable[Source], model: str, users: int, question: Question) -> list[dict[str, Any]]:
    """One row per capacity cell of the model, grouped by machine kind, answering rows first."""
    if users < 1:
        raise BenchError(f"--users must be at least 1 (got {users})")
    sources = [paths] if isinstance(paths, str | Path | LoadedResultSet) else list(paths)
    where = ", ".join(str(getattr(source, "path", source)) for source in sources)
    sets = load_result_sets(sources)
    rows = [plan_row(c, users, question) for c in select_model(node_capacities(sets), model, where)]
    return sorted(rows, key=lambda r: (r["machine"], r["nodes"] is None, r["nodes"] or 0, r["result_set"]))
