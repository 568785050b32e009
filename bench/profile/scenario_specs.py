"""Scenarios of a profile: the load shapes, each listing the points it sweeps."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bench.profile.strict import Strict

# Every scenario that takes a workload may name the ones it runs (default: all); not part of its cells' identity.
Workloads = Annotated[list[str] | None, Field(description="the workloads this scenario runs (default: all)")]


class SingleStreamSpec(Strict):
    """One request at a time: latency as a single user sees it."""

    kind: Literal["single-stream"]
    workloads: Workloads = None
    requests: Annotated[int, Field(ge=1)] = 16


class OfflineSpec(Strict):
    """All requests available at once, run in batches: throughput per batch size."""

    kind: Literal["offline"]
    workloads: Workloads = None
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    batches: Annotated[int, Field(ge=1)] = 2


class PrefillDecodeSpec(Strict):
    """llama-bench style: prompt processing of N tokens, then M generated, at a context depth."""

    kind: Literal["prefill-decode"]
    prompt_tokens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    gen_tokens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    depths: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, default_factory=lambda: [0])]
    batch_size: Annotated[int, Field(ge=1)] = 1
    runs: Annotated[int, Field(ge=1)] = 3


class ConcurrencySpec(Strict):
    """Closed loop against a server: N users, each sending its next request when the last ends."""

    kind: Literal["concurrency"]
    workloads: Workloads = None
    users: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    requests: Annotated[int, Field(ge=1)] = 32


class RateSpec(Strict):
    """Open loop against a server: requests sent on a schedule whatever the server does; latency is
    measured from the scheduled time, so a slow server cannot hide its delay (no coordinated omission)."""

    kind: Literal["rate"]
    workloads: Workloads = None
    rates: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
    arrival: Literal["poisson", "constant"] = "poisson"
    burstiness: Annotated[float, Field(gt=0)] = 1.0
    requests: Annotated[int, Field(ge=1)] = 32


class CapacitySpec(Strict):
    """Search for the most load whose percentiles meet run.slo: double from `start` until the SLO is
    missed (or `max` is reached), then bisect `steps` times. Each probe sends enough requests for the
    SLO percentile (10 beyond it) unless `requests` says more."""

    kind: Literal["capacity"]
    workloads: Workloads = None
    search: Literal["rate", "concurrency"] = "rate"
    start: Annotated[float, Field(gt=0)] = 1
    max: Annotated[float, Field(gt=0)] = 256
    steps: Annotated[int, Field(ge=0, le=10)] = 3
    arrival: Literal["poisson", "constant"] = "poisson"
    burstiness: Annotated[float, Field(gt=0)] = 1.0
    requests: Annotated[int, Field(ge=1)] | None = None


class TraceSpec(Strict):
    """Replay a JSONL trace ({"timestamp": s, "input_tokens": n, "output_tokens": m} per line) open-loop:
    each request at its timestamp divided by `speedup`, latency from that scheduled time."""

    kind: Literal["trace"]
    workloads: Workloads = None
    file: str = Field(description="the trace, relative to the profile")
    speedup: Annotated[float, Field(gt=0)] = 1.0
    requests: Annotated[int, Field(ge=1)] | None = Field(None, description="replay only the first N entries")


ScenarioSpec = Annotated[SingleStreamSpec | OfflineSpec | PrefillDecodeSpec | ConcurrencySpec | RateSpec | CapacitySpec
                         | TraceSpec, Field(discriminator="kind")]
SERVED_SCENARIOS = frozenset({"concurrency", "rate", "capacity", "trace"})
