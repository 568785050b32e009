"""offline: every request is available at once and runs in static batches; throughput per batch size."""

from __future__ import annotations

from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext, run_batched


def run(ctx: ScenarioContext) -> list[RequestRecord]:
    if ctx.workload is not None and ctx.workload.kind == "conversation":
        from bench.scenarios.conversation import run_in_process

        return run_in_process(ctx, ctx.scenario.batch_size)
    return run_batched(ctx, batch_size=ctx.scenario.batch_size)
