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

from pydantic import BaseModel, Field, TypeAdapter

from bench.hashing import canonical_json
from bench.profile.engine_specs import SERVED_ENGINES, EngineSpec
from bench.profile.loading import resolve_relative
from bench.profile.model_spec import ModelSpec
from bench.profile.points import (
    CapacityPoint,
    ConcurrencyPoint,
    OfflinePoint,
    PrefillDecodePoint,
    RatePoint,
    ScenarioPoint,
    SingleStreamPoint,
    TracePoint,
)
from bench.profile.run_settings import RunSettings, SLOSpec
from bench.profile.scenario_specs import (
    SERVED_SCENARIOS,
    CapacitySpec,
    ConcurrencySpec,
    OfflineSpec,
    PrefillDecodeSpec,
    RateSpec,
    ScenarioSpec,
    SingleStreamSpec,
    TraceSpec,
)
from bench.profile.spec import Profile
from bench.profile.trace_file import load_trace, trace_sha256
from bench.profile.workload_specs import ADDED_FIELDS, WorkloadSpec

# Bump only when the meaning of a cell's configuration changes; ids change with it.
CELL_ID_VERSION = 1
# Engine settings added after the first cells were measured: in the identity only when not at these defaults.
ADDED_ENGINE_FIELDS: dict[str, Any] = {"server": None, "think_tags": False, "weights": "files"}


class CellModel(ModelSpec):
    """A cell's model: the profile's entry, and where a local directory lies on this machine."""

    resolved_path: str | None = Field(None, description="the local directory, absolute (not part of the identity)")


class CellWorkload(WorkloadSpec):
    """A cell's workload: a prompt or conversations file with its absolute path and the hash that identifies it."""

    prompts_sha256: str | None = Field(None, description="a prompt file's content hash (its identity)")
    conversations_sha256: str | None = Field(None, description="a conversations file's content hash (its identity)")


def _dump(spec: BaseModel, drop_unset: tuple[str, ...] = ()) -> dict[str, Any]:
    """A spec as the plain dict that spec.json and cell.json hold; fields a cell adds stay out while unset."""
    data = spec.model_dump(by_alias=True)  # as a profile spells it (a JSON schema's `schema`)
    for name in drop_unset:
        if data.get(name) is None:
            data.pop(name, None)
    return data


@dataclass(frozen=True)
class Cell:
    """One cell, typed: the specs the profile gave, resolved to one engine variant and one scenario point.
    The cell process gets exactly these (spec.json is their dump, `to_dict`)."""

    id: str
    label: str
    model: CellModel
    engine: EngineSpec
    workload: CellWorkload | None
    scenario: ScenarioPoint
    run: RunSettings = field(compare=False)

    def identity(self) -> dict[str, Any]:
        data = self.to_dict()
        return cell_identity(data["model"], data["engine"], data["workload"], data["scenario"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "model": _dump(self.model, ("resolved_path",)),
            "engine": _dump(self.engine),
            "workload": _dump(self.workload, ("prompts_sha256", "conversations_sha256"))
            if self.workload is not None else None,
            "scenario": _dump(self.scenario),
            "run": _dump(self.run),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(
            id=data["id"],
            label=data["label"],
            model=CellModel.model_validate(data["model"]),
            engine=_ENGINE.validate_python(data["engine"]),
            workload=CellWorkload.model_validate(data["workload"]) if data.get("workload") is not None else None,
            scenario=_POINT.validate_python(data["scenario"]),
            run=RunSettings.model_validate(data["run"]),
        )

    @property
    def served(self) -> bool:
        return self.engine.kind in SERVED_ENGINES


_ENGINE: TypeAdapter[Any] = TypeAdapter(EngineSpec)
_POINT: TypeAdapter[Any] = TypeAdapter(ScenarioPoint)


def cell_identity(model: dict, engine: dict, workload: dict | None, scenario: dict) -> dict[str, Any]:
    """What makes a cell the same cell on another machine or night, from its dumps (old result sets' stored
    configs too): no machine paths, no run settings."""
    model_id = ModelSpec.model_validate({k: v for k, v in model.items() if k != "resolved_path"}).identity()
    workload_id = None
    if workload is not None:
        # A prompt file is identified by its content hash, not by where it lies on this machine; fields
        # added later enter the identity only when they differ from their defaults.
        workload_id = {k: v for k, v in workload.items()
                       if k not in ("prompts_file", "name", "prompts_sha256", "conversations_file",
                                    "conversations_sha256") and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
        if workload.get("prompts_file"):
            workload_id["prompts_sha256"] = workload.get("prompts_sha256")
        if workload.get("conversations_file"):
            workload_id["conversations_sha256"] = workload.get("conversations_sha256")
    return {
        "v": CELL_ID_VERSION,
        "model": model_id,
        # fields added later enter the identity only when set, so earlier cells keep their ids
        "engine": _engine_identity(engine),
        "workload": workload_id,
        # A trace is identified by its content hash, not by where it lies on this machine.
        "scenario": {k: v for k, v in scenario.items() if not (k == "file" and scenario["kind"] == "trace")},
    }


def _engine_identity(engine: dict[str, Any]) -> dict[str, Any]:
    """Fields added later stay out while at their default (ADDED_ENGINE_FIELDS); which workloads and
    models an engine runs picks cells, it does not configure the engine."""
    out = {k: v for k, v in engine.items()
           if k not in ("workloads", "models") and not (k in ADDED_ENGINE_FIELDS and v == ADDED_ENGINE_FIELDS[k])}
    if isinstance(out.get("server"), dict) and out["server"].get("weights") == "files":
        out["server"] = {k: v for k, v in out["server"].items() if k != "weights"}
    return out


def cell_id(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]


# Engine settings whose list values sweep (one cell per value); other lists (base_urls) are one value.
SWEEPABLE = frozenset({"dtype", "threads", "tensor_parallel_size", "pipeline_parallel_size",
                       # llamacpp (bench/engines/llamacpp_engine.py)
                       "quantization", "threads_batch", "n_ctx", "n_batch", "n_ubatch", "flash_attn", "kv_cache_type",
                       "use_mmap", "use_mlock", "numa", "n_gpu_layers", "repack"})


def _engine_variants(engine: EngineSpec) -> list[EngineSpec]:
    """List-valued sweepable settings (dtype: [bfloat16, float32]) expand into one engine each."""
    data = engine.model_dump()
    keys = [k for k, v in data.items() if isinstance(v, list) and k in SWEEPABLE]
    if not keys:
        return [engine]
    return [type(engine).model_validate({**data, **dict(zip(keys, combo, strict=True))})
            for combo in itertools.product(*(data[k] for k in keys))]


def _scenario_points(scenario: ScenarioSpec, slo: SLOSpec | None, profile_path: Path) -> list[ScenarioPoint]:
    """One point per combination of the scenario's listed values."""
    if isinstance(scenario, SingleStreamSpec):
        return [SingleStreamPoint(kind=scenario.kind, requests=scenario.requests)]
    if isinstance(scenario, OfflineSpec):
        return [OfflinePoint(kind=scenario.kind, batch_size=b, requests=b * scenario.batches)
                for b in scenario.batch_sizes]
    if isinstance(scenario, PrefillDecodeSpec):
        return [PrefillDecodePoint(kind=scenario.kind, depth=d, prompt_tokens=p, gen_tokens=g,
                                   batch_size=scenario.batch_size, requests=scenario.runs)
                for d, p, g in itertools.product(scenario.depths, scenario.prompt_tokens, scenario.gen_tokens)]
    if isinstance(scenario, ConcurrencySpec):
        return [ConcurrencyPoint(kind=scenario.kind, users=n, requests=scenario.requests, batch_size=n)
                for n in scenario.users]
    if isinstance(scenario, RateSpec):
        return [RatePoint(kind=scenario.kind, rate=r, arrival=scenario.arrival, burstiness=scenario.burstiness,
                          requests=scenario.requests) for r in scenario.rates]
    if isinstance(scenario, CapacitySpec):  # one cell: the search, under the SLO it searches for
        return [CapacityPoint(**scenario.model_dump(exclude={"workloads"}), slo=slo)]
    if isinstance(scenario, TraceSpec):
        path = resolve_relative(scenario.file, profile_path)
        load_trace(path)  # a bad trace is bad input now, not a failed cell later
        return [TracePoint(**{**scenario.model_dump(exclude={"workloads"}), "file": str(path)},
                           trace_sha256=trace_sha256(path))]
    raise ValueError(f"unknown scenario kind {scenario.kind!r}")


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


def comparison_group(label: str) -> tuple[str, ...]:
    """A cell label without its engine: model, workload and scenario point ('m | engine | w | point')."""
    parts = label.split(" | ")
    return (parts[0], *parts[2:]) if len(parts) >= 3 else tuple(parts)


def side_by_side(items: list[Any], label_of: Any) -> list[Any]:
    """Items in an order where cells of the same model, workload and scenario point sit together (their
    engines side by side: llama.cpp at Q4_K_M beside transformers), groups in order of first appearance."""
    order: dict[tuple[str, ...], int] = {}
    for item in items:
        order.setdefault(comparison_group(label_of(item)), len(order))
    return sorted(items, key=lambda item: order[comparison_group(label_of(item))])


def engine_label(engine: dict[str, Any]) -> str:
    if engine["kind"] == "llamacpp" or (engine.get("server") or {}).get("kind") == "llamacpp":
        from bench.engines.llamacpp_label import llamacpp_label

        return llamacpp_label(engine)
    parts = [engine["kind"], engine.get("dtype", ""), engine.get("device", "")]
    if engine.get("threads") not in (None, "auto"):
        parts.append(f"t{engine['threads']}")
    for key, short in (("tensor_parallel_size", "tp"), ("pipeline_parallel_size", "pp"), ("data_parallel_size", "dp")):
        if engine.get(key, 1) != 1:
            parts.append(f"{short}{engine[key]}")
    server_args = (engine.get("server") or {}).get("args") or []
    if engine.get("enable_prefix_caching") or "--enable-prefix-caching" in server_args:
        parts.append("prefix-cache")  # cells that differ only in caching must be told apart in a table
    if "dummy" in (engine.get("weights"), (engine.get("server") or {}).get("weights")):
        parts.append("dummy-weights")
    return "/".join(p for p in parts if p)


def _prompts_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resolved_model(spec: ModelSpec, profile_path: Path) -> CellModel:
    resolved = str(resolve_relative(spec.path, profile_path)) if spec.path else None
    return CellModel(**spec.model_dump(), resolved_path=resolved)


def _resolved_workload(spec: WorkloadSpec, profile_path: Path) -> CellWorkload:
    data: dict[str, Any] = spec.model_dump(by_alias=True)
    for name, digest in (("prompts_file", "prompts_sha256"), ("conversations_file", "conversations_sha256")):
        if data.get(name):
            path = resolve_relative(data[name], profile_path)
            data.update({name: str(path), digest: _prompts_sha256(path)})
    return CellWorkload.model_validate(data)


def _runs(workload: CellWorkload, engine: EngineSpec, scenario: ScenarioSpec) -> bool:
    """Whether an engine and a scenario run a workload: each may name the workloads it runs (default: all)."""
    chosen = [getattr(engine, "workloads", None), getattr(scenario, "workloads", None)]
    return all(names is None or workload.name in names for names in chosen)


def expand(profile: Profile, profile_path: Path) -> list[Cell]:
    """All cells of a profile, in a stable order: model, engine variant, workload, scenario point."""
    cells: list[Cell] = []
    seen: set[str] = set()
    for model_spec in profile.models:
        model = _resolved_model(model_spec, profile_path)
        for engine_spec in profile.engines:
            if not engine_spec.runs(model_spec):
                continue
            for engine in _engine_variants(engine_spec):
                for scenario_spec in profile.scenarios:
                    if (scenario_spec.kind in SERVED_SCENARIOS) != (engine.kind in SERVED_ENGINES):
                        continue  # served load shapes go to servers, in-process ones to in-process engines
                    workloads: list[CellWorkload | None] = (
                        [None] if scenario_spec.kind == "prefill-decode"
                        else [w for w in (_resolved_workload(w, profile_path) for w in profile.workloads)
                              if _runs(w, engine, scenario_spec)]
                    )
                    for workload in workloads:
                        for point in _scenario_points(scenario_spec, profile.run.slo, profile_path):
                            cell = Cell("", "", model, engine, workload, point, profile.run)
                            data = cell.to_dict()
                            cid = cell_id(cell.identity())
                            if cid in seen:
                                continue  # the same cell listed twice is measured once
                            seen.add(cid)
                            label = " | ".join(
                                p for p in (model_spec.display_name, engine_label(data["engine"]),
                                            workload.name if workload else "", point_label(data["scenario"])) if p
                            )
                            cells.append(Cell(cid, label, model, engine, workload, point, profile.run))
    return cells
