"""How a profile's cells are measured: repetitions, floors, limits, rules, SLOs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bench.profile.strict import Strict


class SLOSpec(Strict):
    """Service-level objectives for served cells: each stated metric's percentile must be within its
    limit (seconds), and errors within max_error_rate. Goodput counts requests meeting all of them."""

    percentile: Annotated[float, Field(gt=0, lt=100)] = 95
    ttft_s: Annotated[float, Field(gt=0)] | None = None
    itl_s: Annotated[float, Field(gt=0)] | None = None
    tpot_s: Annotated[float, Field(gt=0)] | None = None
    e2e_s: Annotated[float, Field(gt=0)] | None = None
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0


class RunSettings(Strict):
    """How a cell is measured. Work is sized by time AND count (bench/measure/sizing.py): every scenario keeps
    issuing work on the same seeded stream until both `min_duration_s` and its own count (the profile's
    requests, batches or runs, and the samples the rules need) hold; the rules add their own floors."""

    repetitions: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        3, description="a fixed count, or auto: at least 3, then more until the 95% confidence half-width "
                       "of output tok/s is within target_precision, at most max_repetitions"
    )
    target_precision: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.02, description="repetitions auto: the relative 95% half-width of output tok/s to reach"
    )
    max_repetitions: Annotated[int, Field(ge=1)] = Field(10, description="repetitions auto: at most this many")
    min_duration_s: Annotated[float, Field(ge=0)] | None = Field(
        None, description="measure each cell at least this long in total, spread over its repetitions (each "
                          "capacity probe: this long); the rules' floor applies when higher"
    )
    warmup: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        1, description="warm-up batches before measuring (single-stream: requests); never in metrics; auto: "
                       "until two consecutive batches agree within warmup_tolerance, at most max_warmup"
    )
    warmup_tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.1
    max_warmup: Annotated[int, Field(ge=2)] = 10
    max_duration_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="a repetition issues no new work after this long, whatever the floors say"
    )
    cell_timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="kill a cell after this long; default: from its measurement plan (bench/measure/sizing.py)"
    )
    memory_limit_gib: Annotated[float, Field(gt=0)] | None = Field(
        None, description="a cell's memory limit, enforced by the kernel (bench/run/memory_limit.py); default: 80% of "
                          "this machine's memory"
    )
    telemetry_interval_s: Annotated[float, Field(gt=0)] = 0.25
    probes: bool = Field(True, description="probe memory bandwidth and FLOP/s first, for each cell's roofline")
    rules: Literal["nightly", "procurement"] = Field(
        "nightly", description="validity rules: nightly (short, not for procurement) or procurement (MLPerf-like)"
    )
    seed: int = 0
    allow_hosts: list[str] = Field(default_factory=list, description="non-loopback hosts cells may reach")
    model_cache_dir: str | None = None
    slo: SLOSpec | None = Field(None, description="service-level objectives: every served cell reports goodput")
    store_text: bool = Field(
        False, description="keep prompt and response text in the records (default: lengths and hashes only)"
    )
    stop_error_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="served cells: send no more requests in a repetition once more than this fraction failed"
    )
    stop_min_requests: Annotated[int, Field(ge=1)] = Field(
        10, description="served cells: requests finished before the error-rate stop rule applies"
    )
    client_processes: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        1, description="served cells: client processes that send the load; auto: from this machine's "
                       "`lokaal-bench calibrate` ceiling (1 without one), at most cores - 1"
    )
    server_metrics: bool = Field(
        True, description="served cells: scrape the server's Prometheus /metrics at telemetry_interval_s (loopback "
                          "and allow_hosts only)"
    )
    prefix_hit_tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        0.15, description="shared documents with prefix caching on: a measured hit rate further than this below "
                          "the ideal one makes the cell INVALID"
    )
