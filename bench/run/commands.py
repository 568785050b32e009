"""The verbs that run a profile (`run`, `rerun`) or check one (`validate`): one function per verb,
taking the parsed options and an Output, returning the exit code (bench.cli documents them)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from bench.errors import EXIT_FAILED_CELLS, EXIT_INTERRUPTED, EXIT_OK, BenchError
from bench.readers.printing import Column, Output, Table, percent, yes_no


def execute_run(profile_path: Path, args: argparse.Namespace, out: Output,
                source: str | None = None) -> tuple[int, Path, Table | None]:
    """Plan and run with progress (on out.messages); returns the exit code, the result set's path and
    the summary table (None when interrupted)."""
    from bench.run.display import RunDisplay, summary_table
    from bench.run.environment import collect_environment
    from bench.run.runner import Runner, RunObserver, prepare_run

    environment = collect_environment()
    output = Path(args.output) if args.output else None
    resume = Path(args.resume) if getattr(args, "resume", None) else None
    placement = _place_shard(profile_path, args, environment) if getattr(args, "shard", None) else None
    if placement is not None:  # a shard's result set lies where its campaign says; run again, it resumes
        if output is not None or resume is not None:
            raise BenchError("--shard places its result set in the campaign directory: drop --output and --resume")
        output, resume = (None, placement.result_dir) if placement.resumes else (placement.result_dir, None)
    plan = prepare_run(profile_path, Path(args.results_dir), output, resume, environment["machine_id"],
                       source=source, when_busy=getattr(args, "when_busy", "wait"),
                       shard=placement.shard if placement else None)
    if placement is not None:
        from bench.fleet.campaign import scheduler_context

        plan.campaign = placement.record(plan.all_cell_ids)
        plan.invocation = {"scheduler": scheduler_context()}
        out.message(f"campaign {placement.campaign_id}, shard {placement.shard} ({placement.group}): "
                    f"{len(plan.cells)} of {len(plan.all_cell_ids)} cell(s)"
                    + (f", resuming {len(plan.skip)} done" if plan.resume else ""))
    out.message(f"profile {profile_path} ({plan.profile.name}): {len(plan.cells)} cell(s)")
    with RunDisplay(out.messages) as display:
        observer = RunObserver(display.run_started, display.cell_started, display.cell_event,
                               display.cell_finished, display.message, display.model_progress)
        runner = Runner(plan, environment, observer)
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop: like Ctrl-C, the set is sealed
        try:
            manifest = runner.run()
        except KeyboardInterrupt:
            out.message(f"\ninterrupted; completed cells are kept. Resume with:\n  lokaal-bench run "
                        f"{profile_path} --resume {plan.result_set.path}")
            return EXIT_INTERRUPTED, plan.result_set.path, None
        finally:
            signal.signal(signal.SIGTERM, previous)
    table = summary_table([runner.summaries[c.id] for c in plan.cells if c.id in runner.summaries])
    counts = manifest["counts"]
    refused = manifest["offline"]["refused"]
    if refused:
        table.note(f"{len(refused)} outbound connection attempt(s) refused (see manifest offline.refused)", "red")
    table.note(f"{counts['COMPLETED']} completed, {counts['FAILED']} failed; result set: {plan.result_set.path}")
    table.data = {"result_set": str(plan.result_set.path), "profile": str(profile_path), "counts": counts,
                  "refused_connections": len(refused)}
    return (EXIT_FAILED_CELLS if counts["FAILED"] else EXIT_OK), plan.result_set.path, table


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (scancel, a preemption, a pod's deletion) stops a run as Ctrl-C does: completed cells kept,
    the result set marked interrupted and sealed, so the requeued or resubmitted shard resumes it."""
    raise KeyboardInterrupt


def _place_shard(profile_path: Path, args: argparse.Namespace, environment: dict[str, Any]) -> Any:
    from bench.fleet.campaign import place_shard
    from bench.fleet.shards import parse_shard
    from bench.profile.loading import read_profile_text

    text = read_profile_text(profile_path)
    return place_shard(profile_path, text, parse_shard(args.shard), args.campaign, args.group,
                       Path(args.results_dir), environment)


def run_command(args: argparse.Namespace, out: Output) -> int:
    from bench.run.runner import default_profile

    code, _, table = execute_run(Path(args.profile) if args.profile else default_profile(), args, out)
    if table is not None:
        out.table(table)
    return code


def agreement_table(rows: list[dict], first: Path, second: Path, tolerance: float) -> Table:
    """`rerun`'s verdict per cell: relative differences, whether the outputs match, agreement."""
    change = percent(1, signed=True)
    table = Table("rerun", [
        Column("cell_id", people=False), Column("cell"),
        Column("output_tok_s_change", "output tok/s", "fraction", numeric=True, format=change),
        Column("decode_tok_s_change", "decode tok/s", "fraction", numeric=True, format=change),
        Column("prefill_tok_s_change", "prefill tok/s", "fraction", numeric=True, format=change, people=False),
        Column("same_outputs", "same outputs", format=yes_no),
        Column("agree", format=lambda v, row: "yes" if v else "NO: " + "; ".join(row["reasons"])),
        Column("reasons", people=False),
    ], title=f"reproducibility: {first} against {second} (tolerance ±{tolerance:.0%})",
        data={"first": str(first), "second": str(second), "tolerance": tolerance})
    for row in rows:
        diffs = row["differences"]
        table.add(cell_id=row["cell_id"], cell=row["label"], output_tok_s_change=diffs.get("output_tok_s"),
                  decode_tok_s_change=diffs.get("decode_tok_s"), prefill_tok_s_change=diffs.get("prefill_tok_s"),
                  same_outputs=row.get("same_outputs"), agree=row["agree"], reasons=row["reasons"])
    agreeing = sum(row["agree"] for row in rows)
    table.note(f"{agreeing} of {len(rows)} cell(s) agree within ±{tolerance:.0%}")
    return table


def rerun_command(args: argparse.Namespace, out: Output) -> int:
    """Run a result set's stored profile again; exit 1 unless every cell agrees."""
    from bench.readers.rerun import agreement, stored_profile

    first = Path(args.result_dir)
    anchor, source = stored_profile(first)
    code, second, summary = execute_run(anchor, args, out, source=source)
    if code == EXIT_INTERRUPTED or summary is None:
        return code
    out.table(summary)
    rows = agreement(first, second, args.tolerance)
    out.table(agreement_table(rows, first, second, args.tolerance))
    return code if all(row["agree"] for row in rows) else EXIT_FAILED_CELLS


def validate_command(args: argparse.Namespace, out: Output) -> int:
    """Check a profile and list its cells with what each will measure and how long, without running."""
    from bench.measure.sizing import estimate_run, format_duration
    from bench.profile.cells import expand
    from bench.profile.loading import load_profile

    path = Path(args.profile)
    cells = expand(load_profile(path), path)
    estimate = estimate_run(cells)

    def duration(value: object, row: object) -> str:
        return "-" if value is None else format_duration(float(value))  # type: ignore[arg-type]

    table = Table("validate", [
        Column("cell_id", "cell id"), Column("label"),
        Column("repetitions", machines=False), Column("repetitions_mode", people=False),
        Column("repetitions_min", numeric=True, people=False), Column("repetitions_max", numeric=True, people=False),
        Column("at_least", "at least", machines=False),
        Column("min_requests_per_repetition", numeric=True, people=False),
        Column("min_duration_per_repetition_s", unit="s", numeric=True, people=False),
        Column("probes", numeric=True, people=False),
        Column("minimum_measured_s", "measured at least", "s", numeric=True, format=duration),
        Column("maximum_measured_s", "up to", "s", numeric=True, format=duration),
        Column("overhead_s", unit="s", numeric=True, people=False),
    ], title=f"{path}: valid, {len(cells)} cell(s)",
        data={"profile": str(path), "minimum_s": estimate.minimum_s, "maximum_s": estimate.maximum_s})
    for cell, planned in zip(cells, estimate.cells, strict=True):
        plan = planned.plan
        reps = plan.repetitions
        table.add(cell_id=cell.id, label=cell.label,
                  repetitions=str(reps.minimum) if reps.mode == "fixed" else f"auto {reps.minimum}-{reps.maximum}",
                  repetitions_mode=reps.mode, repetitions_min=reps.minimum, repetitions_max=reps.maximum,
                  at_least=f"{plan.min_requests_per_repetition} req, {plan.min_duration_per_repetition_s:.3g} s"
                  + (" per probe" if planned.probes > 1 else " per rep."),
                  min_requests_per_repetition=plan.min_requests_per_repetition,
                  min_duration_per_repetition_s=plan.min_duration_per_repetition_s, probes=planned.probes,
                  minimum_measured_s=planned.minimum_measured_s, maximum_measured_s=planned.maximum_measured_s,
                  overhead_s=planned.overhead_s)
    table.note(estimate.describe())
    out.table(table)
    return EXIT_OK
