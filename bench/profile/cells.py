"""Cells: one model x one engine setting x one workload x one scenario point.

A cell's id is a hash of its resolved configuration, minus anything that belongs to the machine
or to how long it was measured, so the same cell is found again on another machine or night.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hashing import canonical_json
from bench.profile.engine_specs import SERVED_ENGINES
from bench.profile.loading import resolve_relative
from bench.profile.model_spec import ModelSpec
from bench.profile.run_settings import RunSettings
from bench.profile.scenario_specs import SERVED_SCENARIOS
from bench.profile.spec import Profile
from bench.profile.trace_file import load_trace, trace_sha256
from bench.profile.workload_specs import WorkloadSpec

# Bump only when the meaning of a cell's configuration changes; ids change with it.
CELL_ID_VERSION = 1


@dataclass(frozen=True)
class Cell:
    id: str
    label: str
    model: dict[str, Any]
    engine: dict[str, Any]
    workload: dict[str, Any] | None
    scenario: dict[str, Any]
    run: dict[str, Any] = field(compare=False)

    def identity(self) -> dict[str, Any]:
        return cell_identity(self.model, self.engine, self.workload, self.scenario)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "model": self.model,
            "engine": self.engine,
            "workload": self.workload,
            "scenario": self.scenario,
            "run": self.run,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(**{k: data[k] for k in ("id", "label", "model", "engine", "workload", "scenario", "run")})


def cell_identity(model: dict, engine: dict, workload: dict | None, scenario: dict) -> dict[str, Any]:
    model_id = ModelSpec.model_validate({k: v for k, v in model.items() if k != "resolved_path"}).identity()
    workload_id = None
    if workload is not None:
        # A prompt file is identified by its content hash, not by where it lies on this machine.
        workload_id = {k: v for k, v in workload.items() if k not in ("prompts_file", "name")}
        if workload.get("prompts_file"):
            workload_id["prompts_sha256"] = workload.get("prompts_sha256")
    return {
        "v": CELL_ID_VERSION,
        "model": model_id,
        # fields added later enter the identity only when set, so earlier cells keep their ids
        "engine": {k: v for k, v in engine.items() if not (k == "server" and v is None)},
        "workload": workload_id,
        # A trace is identified by its content hash, not by where it lies on this machine.
        "scenario": {k: v for k, v in scenario.items() if not (k == "file" and scenario["kind"] == "trace")},
    }


def cell_id(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]


# Engine settings whose list values sweep (one cell per value); other lists (base_urls) are one value.
SWEEPABLE = frozenset({"dtype", "threads", "tensor_parallel_size", "pipeline_parallel_size"})


def _engine_variants(engine: dict[str, Any]) -> list[dict[str, Any]]:
    """List-valued sweepable settings (dtype: [bfloat16, float32]) expand into one engine each."""
    keys = [k for k, v in engine.items() if isinstance(v, list) and k in SWEEPABLE]
    if not keys:
        return [engine]
    variants = []
    for combo in itertools.product(*(engine[k] for k in keys)):
        variants.append({**engine, **dict(zip(keys, combo, strict=True))})
    return variants


def _scenario_points(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    kind = scenario["kind"]
    if kind == "single-stream":
        return [{"kind": kind, "requests": scenario["requests"], "batch_size": 1}]
    if kind == "offline":
        return [
            {"kind": kind, "batch_size": b, "requests": b * scenario["batches"]} for b in scenario["batch_sizes"]
        ]
    if kind == "prefill-decode":
        return [
            {"kind": kind, "depth": d, "prompt_tokens": p, "gen_tokens": g,
             "batch_size": scenario["batch_size"], "requests": scenario["runs"]}
            for d, p, g in itertools.product(scenario["depths"], scenario["prompt_tokens"], scenario["gen_tokens"])
        ]
    if kind == "concurrency":
        return [{"kind": kind, "users": n, "requests": scenario["requests"], "batch_size": n}
                for n in scenario["users"]]
    if kind == "rate":
        return [{"kind": kind, "rate": r, "arrival": scenario["arrival"], "burstiness": scenario["burstiness"],
                 "requests": scenario["requests"], "batch_size": 1} for r in scenario["rates"]]
    if kind == "capacity":
        return [{**scenario, "batch_size": 1}]
    if kind == "trace":
        return [{**scenario, "batch_size": 1}]  # one cell: the search, under the SLO it searches for
    raise ValueError(f"unknown scenario kind {kind!r}")


def point_label(point: dict[str, Any]) -> str:
    """A scenario point in a few characters: 'offline b=8', 'pp512+tg128 @d4096', 'rate 4/s poisson'."""
    kind = point["kind"]
    if kind == "single-stream":
        return "single-stream"
    if kind == "offline":
        return f"offline b={point['batch_size']}"
    if kind == "concurrency":
        return f"concurrency {point['users']}"
    if kind == "rate":
        return f"rate {point['rate']:g}/s {point['arrival']}"
    if kind == "capacity":
        return f"capacity ({point['search']})"
    if kind == "trace":
        return f"trace {Path(point['file']).name} x{point['speedup']:g}"
    depth = f" @d{point['depth']}" if point["depth"] else ""
    batch = f" b={point['batch_size']}" if point["batch_size"] > 1 else ""
    return f"pp{point['prompt_tokens']}+tg{point['gen_tokens']}{depth}{batch}"


def engine_label(engine: dict[str, Any]) -> str:
    parts = [engine["kind"], engine.get("dtype", ""), engine.get("device", "")]
    if engine.get("threads") not in (None, "auto"):
        parts.append(f"t{engine['threads']}")
    for key, short in (("tensor_parallel_size", "tp"), ("pipeline_parallel_size", "pp"), ("data_parallel_size", "dp")):
        if engine.get(key, 1) != 1:
            parts.append(f"{short}{engine[key]}")
    return "/".join(p for p in parts if p)


def _prompts_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resolved_model(spec: ModelSpec, profile_path: Path) -> dict[str, Any]:
    model = spec.model_dump()
    if spec.path:
        model["resolved_path"] = str(resolve_relative(spec.path, profile_path))
    return model


def _resolved_workload(spec: WorkloadSpec, profile_path: Path) -> dict[str, Any]:
    workload = spec.model_dump()
    if spec.prompts_file:
        path = resolve_relative(spec.prompts_file, profile_path)
        workload["prompts_file"] = str(path)
        workload["prompts_sha256"] = _prompts_sha256(path)
    return workload


def expand(profile: Profile, profile_path: Path) -> list[Cell]:
    """All cells of a profile, in a stable order: model, engine variant, workload, scenario point."""
    run = profile.run.model_dump()
    cells: list[Cell] = []
    seen: set[str] = set()
    for model_spec in profile.models:
        model = _resolved_model(model_spec, profile_path)
        for engine_spec in profile.engines:
            for engine in _engine_variants(engine_spec.model_dump()):
                for scenario_spec in profile.scenarios:
                    if (scenario_spec.kind in SERVED_SCENARIOS) != (engine["kind"] in SERVED_ENGINES):
                        continue  # served load shapes go to servers, in-process ones to in-process engines
                    scenario = scenario_spec.model_dump()
                    if scenario["kind"] == "capacity":
                        scenario["slo"] = run["slo"]  # the answer depends on the SLO: part of the cell's identity
                    if scenario["kind"] == "trace":
                        scenario["file"] = str(resolve_relative(scenario["file"], profile_path))
                        load_trace(Path(scenario["file"]))  # a bad trace is bad input now, not a failed cell later
                        scenario["trace_sha256"] = trace_sha256(Path(scenario["file"]))
                    workloads: list[dict[str, Any] | None] = (
                        [None] if scenario["kind"] == "prefill-decode"
                        else [_resolved_workload(w, profile_path) for w in profile.workloads]
                    )
                    for workload in workloads:
                        for point in _scenario_points(scenario):
                            identity = cell_identity(model, engine, workload, point)
                            cid = cell_id(identity)
                            if cid in seen:
                                continue  # the same cell listed twice is measured once
                            seen.add(cid)
                            label = " | ".join(
                                p for p in (model_spec.display_name, engine_label(engine),
                                            workload["name"] if workload else "", point_label(point)) if p
                            )
                            cells.append(Cell(cid, label, model, engine, workload, point, run))
    return cells


def run_settings(cell: Cell) -> RunSettings:
    return RunSettings.model_validate(cell.run)
