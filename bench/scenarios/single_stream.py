"""single-stream: one request at a time, the latency a lone user sees (MLPerf's SingleStream)."""

from __future__ import annotations

from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext, run_batched


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    if ctx.workload is not None and ctx.workload.kind == "conversation":
        from bench.scenarios.conversation import run_in_process

        return run_in_process(ctx, 1)
    return run_batched(ctx, batch_size=1)
