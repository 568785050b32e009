"""`lokaal-bench submit slurm` and `lokaal-bench status`: a campaign's job arrays submitted, resubmitted,
waited for and reported (docs/fleet.md). Rendering and the scheduler's commands are in slurm.py, the
campaign's state in status.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.errors import EXIT_OK, BenchError
from bench.fleet import slurm
from bench.fleet.campaign import campaign_directory
from bench.fleet.status import DONE, QUEUED, RUNNING, CampaignState, campaign_state, job_ids
from bench.fleet.submit import (
    open_campaign,
    package_root,
    plan_campaign,
    record_submission,
    this_command,
)
from bench.readers.printing import Column, Output, Table

WAIT_POLL_S = 5.0


def submit_slurm_command(args: argparse.Namespace, out: Output) -> int:
    if args.resume:
        return _resubmit(Path(args.resume), args, out)
    if not args.profile:
        raise BenchError("submit slurm: give a PROFILE (or --resume CAMPAIGN_DIR)")
    if args.schedule:
        return _schedule(args, out)
    slurm.require("sbatch", "submit slurm submits the job array with it")
    plan = plan_campaign(args.profile, args.shards, args.results, args.campaign)
    if args.time:
        time_limit, why = args.time, "given with --time"
    else:
        time_limit, why = slurm.time_limit_for(plan.largest_shard_min_s, plan.largest_shard_max_s)
    partitions: list[str | None] = list(args.partition) or [None]
    if len(set(partitions)) != len(partitions):
        raise BenchError(f"--partition {' '.join(p or '' for p in partitions)}: a partition is named twice")
    open_campaign(plan, "slurm")
    logs = plan.directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = this_command()
    cache = os.environ.get("LOKAAL_BENCH_CACHE")
    for partition in partitions:
        group = partition or slurm.default_partition() or "default"
        job = slurm.ArrayJob(plan.campaign_id, group, partition, plan.shards, plan.profile, plan.directory.parent,
                             time_limit=time_limit, constraint=args.constraint, gres=args.gres,
                             account=args.account, qos=args.qos, exclusive=not args.shared,
                             cache_dir=Path(cache) if cache else None, pythonpath=package_root(), log_dir=logs,
                             submitted_by=command)
        script = plan.directory / f"slurm-{group}.sbatch"
        script.write_text(slurm.render_script(job), encoding="utf-8")
        job_id = slurm.sbatch(script)
        record_submission(plan.directory, {"scheduler": "slurm", "group": group, "partition": partition,
                                           "script": script.name, "command": command,
                                           "sbatch": ["sbatch", "--parsable", script.name], "array": None,
                                           "job_ids": [job_id], "time_limit": time_limit, "time_why": why})
        out.message(f"submitted job array {job_id} ({plan.shards} shard(s) on {group}): {script}")
    out.message(f"campaign {plan.campaign_id}: {plan.directory} (--time {time_limit}: {why})")
    out.message(f"  lokaal-bench status {plan.directory}")
    if args.wait:
        return _wait(plan.directory, out)
    return EXIT_OK


def _resubmit(directory: Path, args: argparse.Namespace, out: Output) -> int:
    """Submit again the shards of each group that stopped, never ran or have FAILED cells (not those queued,
    running or done): the same script, `--array` naming those indices; each resumes its result set, where
    completed cells are kept and the others run again."""
    slurm.require("sbatch", "submit slurm --resume submits the unfinished shards with it")
    directory, campaign = campaign_directory(directory)
    state = current_state(directory, campaign)
    scripts = {s["group"]: s["script"] for s in campaign.get("submissions") or [] if s.get("script")}
    command = this_command()
    submitted = 0
    for group, script in scripts.items():
        indices = [s.index for s in state.shards if s.group == group and s.state not in (DONE, RUNNING, QUEUED)]
        if not indices:
            continue
        array = ",".join(str(i) for i in indices)
        job_id = slurm.sbatch(directory / script, array, args.time)
        record_submission(directory, {"scheduler": "slurm", "group": group, "script": script, "command": command,
                                      "sbatch": ["sbatch", "--parsable", f"--array={array}",
                                                 *([f"--time={args.time}"] if args.time else []), script],
                                      "array": array, "job_ids": [job_id]})
        out.message(f"resubmitted shard(s) {array} on {group}: job {job_id}")
        submitted += 1
    if not submitted:
        out.message(f"campaign {campaign['id']}: no shard to resubmit (each is done, queued or running)")
    if args.wait:
        return _wait(directory, out)
    return EXIT_OK


def _schedule(args: argparse.Namespace, out: Output) -> int:
    """A scrontab entry that submits the profile (a new campaign each time) on the schedule."""
    from bench.profile.loading import load_profile

    profile = Path(args.profile).resolve()
    name = load_profile(profile).name
    command, skip = [], False
    for word in this_command():  # the same submission, less the schedule itself and the waiting
        if skip:
            skip = False
        elif word in ("--schedule", "--wait", "--campaign"):
            skip = word != "--wait"
        elif not word.startswith(("--schedule=", "--campaign=")):
            command.append(str(profile) if word == args.profile else word)
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    root = package_root()  # a source checkout: the entry's Python imports this lokaal-bench, as the scripts do
    entry = slurm.scrontab_entry(args.schedule, name, command, args.partition[0] if args.partition else None,
                                 results / f"nightly-{name}.log", {"PYTHONPATH": root} if root else {})
    kept = results / f"scrontab-{name}.txt"
    kept.write_text(entry, encoding="utf-8")
    installed, why = slurm.install_scrontab(entry, name, results)
    if installed:
        out.message(f"scrontab entry for {name} installed ({args.schedule}); kept in {kept}")
        return EXIT_OK
    out.message(f"scrontab not used ({why}); add this entry to `scrontab -e`, or run the command from cron "
                f"(kept in {kept}):")
    out.message(entry.rstrip("\n"))
    return EXIT_OK


# --- status -----------------------------------------------------------------------------------------


def current_state(directory: Path, campaign: dict[str, Any]) -> CampaignState:
    jobs = job_ids(campaign)
    queue = slurm.queued_tasks(jobs)
    accounting, note = slurm.accounted_tasks(jobs)
    return campaign_state(directory, campaign, queue, accounting, note)


def _wait(directory: Path, out: Output) -> int:
    directory, campaign = campaign_directory(directory)
    with out.status(f"waiting for campaign {campaign['id']}"):
        while True:
            state = current_state(directory, campaign)
            if state.over:
                break
            time.sleep(WAIT_POLL_S)
    out.table(status_table(state))
    return state.exit_code


def status_command(args: argparse.Namespace, out: Output) -> int:
    directory, campaign = campaign_directory(Path(args.campaign))
    state = current_state(directory, campaign)
    out.table(status_table(state))
    return state.exit_code


def status_table(state: CampaignState) -> Table:
    campaign = state.campaign
    table = Table("status", [
        Column("group"), Column("shard", numeric=True), Column("state"),
        Column("cells", numeric=True), Column("done", numeric=True), Column("failed", numeric=True),
        Column("to_do", "to do", numeric=True), Column("running_cell", "running cell"),
        Column("task"), Column("result_sets", "result set(s)"),
    ], title=f"campaign {campaign['id']} ({campaign.get('scheduler') or 'by hand'}): {state.directory}",
        data={"campaign": campaign["id"], "directory": str(state.directory), "exit_code": state.exit_code})
    for shard in state.shards:
        task = shard.task
        table.add(group=shard.group, shard=shard.index, state=shard.state, cells=shard.share, done=shard.completed,
                  failed=shard.failed, to_do=shard.to_do, running_cell=shard.running_cell,
                  task=None if task is None else f"{task.job_id}_{task.index} {task.state}"
                  + (f" ({task.reason})" if task.reason else ""),
                  result_sets=", ".join(s.name for s in shard.result_sets) or None)
    if state.accounting_note:
        table.note(f"sacct: {state.accounting_note}; the result sets and squeue are the record")
    verdict = {0: "completed cleanly", 1: "over, not clean (FAILED cells, or shards that stopped or never ran)",
               3: "not over (shards queued or running)"}[state.exit_code]
    table.note(f"campaign {verdict}: exit {state.exit_code}")
    return table
