"""Profiles: what to measure. Validated at the edge (pydantic, extra fields forbidden).

A profile lists models, engines, workloads and scenarios; `bench.profile.cells.expand` turns it into
cells. Validation errors name the file, the field path and the problem (`ProfileError`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from bench.profile.engine_specs import SERVED_ENGINES, EngineSpec
from bench.profile.model_spec import ModelSpec
from bench.profile.run_settings import RunSettings
from bench.profile.scenario_specs import SERVED_SCENARIOS, ScenarioSpec
from bench.profile.strict import Strict
from bench.profile.workload_specs import WorkloadSpec


class Profile(Strict):
    name: str
    description: str = ""
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    engines: Annotated[list[EngineSpec], Field(min_length=1)]
    workloads: list[WorkloadSpec] = Field(default_factory=list)
    scenarios: Annotated[list[ScenarioSpec], Field(min_length=1)]
    run: RunSettings = Field(default_factory=RunSettings)

    @model_validator(mode="after")
    def _workloads_needed(self) -> Profile:
        needs = [s.kind for s in self.scenarios if s.kind != "prefill-decode"]
        if needs and not self.workloads:
            raise ValueError(f"scenarios {sorted(set(needs))} need at least one entry under 'workloads'")
        served = {e.kind in SERVED_ENGINES for e in self.engines}
        for scenario in self.scenarios:
            if (scenario.kind in SERVED_SCENARIOS) not in served:
                wanted = "an engine of kind openai" if scenario.kind in SERVED_SCENARIOS else "an in-process engine"
                raise ValueError(f"scenario {scenario.kind!r} needs {wanted} in this profile")
        if any(s.kind == "capacity" for s in self.scenarios) and self.run.slo is None:
            raise ValueError("scenario 'capacity' searches for the most load within an SLO: give run.slo")
        names = [w.name for w in self.workloads]
        if len(names) != len(set(names)):
            raise ValueError("workload names must be unique")
        known = {m.display_name for m in self.models} | {m.card for m in self.models if m.card}
        for index, engine in enumerate(self.engines):
            unknown = sorted(set(engine.models or []) - known)
            if unknown:
                raise ValueError(f"engines[{index}].models names {', '.join(unknown)}, not a model of this profile "
                                 f"(known: {', '.join(sorted(known))})")
        for where, chosen in [*((f"engines[{i}]", getattr(e, "workloads", None)) for i, e in enumerate(self.engines)),
                              *((f"scenarios[{j}]", getattr(s, "workloads", None))
                                for j, s in enumerate(self.scenarios))]:
            unknown = sorted(set(chosen or []) - set(names))
            if unknown:
                raise ValueError(f"{where}.workloads: no workload named {', '.join(unknown)} (known: "
                                 f"{', '.join(names) or 'none'})")
        self._workload_scenarios()
        return self

    def _workload_scenarios(self) -> None:
        """Conversations and structured answers need load shapes and routes that can carry them."""
        served = any(e.kind in SERVED_ENGINES for e in self.engines)
        for i, workload in enumerate(self.workloads):
            kinds = {s.kind for s in self.scenarios
                     if getattr(s, "workloads", None) is None or workload.name in (s.workloads or [])}
            if workload.kind == "conversation" and kinds & {"capacity", "trace"}:
                raise ValueError(f"workloads[{i}] is a conversation: it runs under single-stream, offline, "
                                 "concurrency (users) or rate (conversation arrivals), not capacity or trace; name "
                                 "the scenarios' workloads to keep them apart")
            if workload.structured and not served:
                raise ValueError(f"workloads[{i}] asks for structured answers ({workload.structured}): those need "
                                 "an engine of kind openai (a server's response_format and tools)")
