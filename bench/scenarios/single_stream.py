"""single-stream: one request at a time, the latency a lone user sees (MLPerf's SingleStream)."""

from __future__ import annotations

from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext, run_batched


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    return run_batched(ctx, batch_size=1)
