"""Scenario points: one load point of a scenario, the typed `scenario` of a cell.

A profile's scenario lists values (batch sizes, depths, users, rates); `expand` makes one point of
each combination. A point's dump is part of its cell's identity (bench/profile/cells.py), so its
fields are exactly what they have always been: a new field may only enter with a default that is
left out of the identity when unset.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bench.profile.run_settings import SLOSpec
from bench.profile.scenario_specs import CapacitySpec, TraceSpec
from bench.profile.strict import Strict


class SingleStreamPoint(Strict):
    kind: Literal["single-stream"]
    requests: int
    batch_size: int = 1


class OfflinePoint(Strict):
    kind: Literal["offline"]
    batch_size: int
    requests: int  # per repetition, at least: batch_size x batches


class PrefillDecodePoint(Strict):
    kind: Literal["prefill-decode"]
    depth: int
    prompt_tokens: int
    gen_tokens: int
    batch_size: int
    requests: int  # runs per repetition, at least


class ConcurrencyPoint(Strict):
    kind: Literal["concurrency"]
    users: int
    requests: int
    batch_size: int


class RatePoint(Strict):
    kind: Literal["rate"]
    rate: float
    arrival: Literal["poisson", "constant"]
    burstiness: float
    requests: int
    batch_size: int = 1


class CapacityPoint(CapacitySpec):
    """The whole search is one cell, under the SLO it searches for (part of its identity)."""

    slo: SLOSpec | None = None
    batch_size: int = 1


class TracePoint(TraceSpec):
    """`file` is resolved to an absolute path; the trace is identified by its content's hash."""

    trace_sha256: str
    batch_size: int = 1


ScenarioPoint = Annotated[SingleStreamPoint | OfflinePoint | PrefillDecodePoint | ConcurrencyPoint | RatePoint
                          | CapacityPoint | TracePoint, Field(discriminator="kind")]
