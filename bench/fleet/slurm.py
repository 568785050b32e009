"""Slurm: a campaign's shards as one job array per partition, and what the scheduler says about them.

`render_script` writes a plain sbatch script (no Python pickles; it is read before it is trusted): each
array task runs `python -m bench run PROFILE --shard $SLURM_ARRAY_TASK_ID/N` with the absolute path of
the Python that submitted it, so the nodes run the same installed lokaal-bench and nothing else (no pip,
no downloads). Nodes are exclusive with all their memory by default: a benchmark shares its node with
nothing. A task is requeueable: requeued, preempted or resubmitted, it finds its shard's result set
and resumes it (bench/fleet/campaign.py). Before the time limit Slurm sends SIGTERM, which a run takes
as an interruption: its completed cells are sealed, and a resubmission finishes the rest.

Queue state comes from `squeue` (queued and running tasks) and, where the cluster keeps accounting,
`sacct` (how finished tasks ended); a cluster without accounting says so and the result sets are the
record. `scrontab` (Slurm's own cron) runs a nightly submission where the cluster enables it.
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError

ARRAY_INDEX = "${SLURM_ARRAY_TASK_ID}"
# Slurm states of a task that will still run (or is running): the campaign is not over while any is.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"})
ALLOWANCE_S = 600.0  # model preparation, probes and process starts beyond the measured time
SLOWER_MACHINE_FACTOR = 2.0  # count-bound cells on a slower machine than the estimate assumes
SIGNAL_BEFORE_END_S = 120  # SIGTERM this long before the time limit: the shard seals what it has


@dataclass(frozen=True)
class ArrayJob:
    """One job array: a campaign's shards on one partition."""

    campaign_id: str
    group: str  # the partition's name; also the shards' group (their result sets' names)
    partition: str | None  # None: the cluster's default partition
    shards: int
    profile: Path
    results_dir: Path
    python: str = sys.executable
    time_limit: str | None = None
    constraint: str | None = None
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    exclusive: bool = True
    cache_dir: Path | None = None
    pythonpath: str | None = None  # where this lokaal-bench's package lies, for a source checkout
    log_dir: Path | None = None
    submitted_by: Sequence[str] = field(default_factory=tuple)

    @property
    def job_name(self) -> str:
        return f"lokaal-bench-{self.campaign_id}"[:120]

    def run_command(self) -> list[str]:
        return [self.python, "-m", "bench", "run", str(self.profile), "--shard", f"{ARRAY_INDEX}/{self.shards}",
                "--campaign", self.campaign_id, "--group", self.group, "--results-dir", str(self.results_dir)]


def _quote(word: str) -> str:
    """Shell quoting that leaves ${SLURM_ARRAY_TASK_ID} to the shell."""
    if ARRAY_INDEX in word:
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'
    return shlex.quote(word)


def render_script(job: ArrayJob) -> str:
    directives = [f"--job-name={job.job_name}", f"--array=0-{job.shards - 1}"]
    if job.partition:
        directives.append(f"--partition={job.partition}")
    if job.exclusive:
        directives += ["--exclusive", "--mem=0"]  # the whole node and all its memory
    if job.time_limit:
        directives.append(f"--time={job.time_limit}")
    for flag, value in (("--constraint", job.constraint), ("--gres", job.gres), ("--account", job.account),
                        ("--qos", job.qos)):
        if value:
            directives.append(f"{flag}={value}")
    log_dir = job.log_dir or job.results_dir / job.campaign_id / "logs"
    directives += ["--requeue", "--open-mode=append", f"--signal=B:TERM@{SIGNAL_BEFORE_END_S}",
                   f"--output={log_dir}/{job.group}-%A_%a.out"]
    lines = [
        "#!/bin/bash",
        f"# lokaal-bench campaign {job.campaign_id}: shard $SLURM_ARRAY_TASK_ID of {job.shards} on "
        f"{job.partition or 'the default partition'}, one array task per shard.",
        "# Runs only the lokaal-bench installed for the Python below (no pip, no downloads). A requeued,",
        "# preempted or resubmitted task resumes its shard's result set; nothing in here is generated at run time.",
    ]
    if job.submitted_by:
        lines.append("# Submitted with: " + " ".join(shlex.quote(w) for w in job.submitted_by))
    lines += [f"#SBATCH {d}" for d in directives]
    lines += ["set -euo pipefail"]
    if job.cache_dir:
        lines.append(f"export LOKAAL_BENCH_CACHE={shlex.quote(str(job.cache_dir))}  # cards materialised once, shared")
    if job.pythonpath:
        lines.append(f'export PYTHONPATH={shlex.quote(job.pythonpath)}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    lines.append("exec " + " ".join(_quote(w) for w in job.run_command()))
    return "\n".join(lines) + "\n"


def format_time_limit(seconds: float) -> str:
    """Slurm's D-HH:MM:SS, rounded up to whole minutes."""
    minutes = max(1, math.ceil(seconds / 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00" if days else f"{hours:02d}:{minutes:02d}:00"


def time_limit_for(estimated_minimum_s: float, estimated_maximum_s: float | None,
                   preparation_s: float = 0.0) -> tuple[str, str]:
    """The --time default from the plan's estimate of the largest shard (bench/measure/sizing.py), and why."""
    basis = estimated_maximum_s if estimated_maximum_s is not None else estimated_minimum_s
    seconds = SLOWER_MACHINE_FACTOR * basis + ALLOWANCE_S + preparation_s
    why = (f"{SLOWER_MACHINE_FACTOR:g} x the largest shard's estimate ({basis:.0f} s"
           f"{'' if estimated_maximum_s is not None else ', its minimum'}) + {ALLOWANCE_S:.0f} s for preparing "
           f"models, probes and process starts" + (f" + {preparation_s:.0f} s to materialise cards not yet cached"
                                                    if preparation_s else ""))
    return format_time_limit(seconds), why


# --- the scheduler's commands ---------------------------------------------------------------------


def require(command: str, why: str) -> str:
    """The path of a Slurm command; BenchError (exit 2) naming it when it is missing."""
    found = shutil.which(command)
    if not found:
        raise BenchError(f"{command} not found on PATH: {why} (install Slurm's client commands, or run this on "
                         "a login node of the cluster)")
    return found


def _run(command: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{command[0]} did not answer in {timeout:g} s") from None


def sbatch(script: Path, array: str | None = None, time_limit: str | None = None) -> str:
    """Submit a script (optionally only some array indices, or with another time limit); the job id."""
    command = [require("sbatch", "submit slurm submits the job array with it"), "--parsable"]
    if array:
        command.append(f"--array={array}")
    if time_limit:
        command.append(f"--time={time_limit}")
    done = _run([*command, str(script)])
    if done.returncode != 0:
        raise BenchError(f"sbatch {script} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip().split(";")[0]  # "123" or "123;cluster"


def default_partition() -> str | None:
    """The cluster's default partition (sinfo marks it with '*'), or None when sinfo cannot say."""
    if not shutil.which("sinfo"):
        return None
    done = _run(["sinfo", "-h", "-o", "%P"])
    return next((p.rstrip("*") for p in done.stdout.split() if p.endswith("*")), None)


@dataclass(frozen=True)
class TaskState:
    job_id: str
    index: int
    state: str
    reason: str | None = None


def queued_tasks(job_ids: Sequence[str]) -> dict[tuple[str, int], TaskState]:
    """squeue's tasks of these array jobs, one per index (pending ranges expanded)."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    done = _run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%F|%K|%T|%r"])
    found: dict[tuple[str, int], TaskState] = {}
    for line in done.stdout.splitlines():  # an unknown (long finished) job id: an error and no lines
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        found[(parts[0], int(parts[1]))] = TaskState(parts[0], int(parts[1]), parts[2],
                                                      None if parts[3] in ("None", "") else parts[3])
    return found


def accounted_tasks(job_ids: Sequence[str]) -> tuple[dict[tuple[str, int], TaskState], str | None]:
    """sacct's record of these array jobs' tasks, or ({}, why not) on a cluster without accounting."""
    if not job_ids:
        return {}, None
    if not shutil.which("sacct"):
        return {}, "sacct not found"
    done = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode"])
    if done.returncode != 0 or "disabled" in (done.stdout + done.stderr).lower():
        return {}, (done.stderr or done.stdout).strip() or "sacct failed"
    found: dict[tuple[str, int], TaskState] = {}
    for line in done.stdout.splitlines():
        job, _, rest = line.partition("|")
        state, _, exit_code = rest.partition("|")
        array_job, _, index = job.partition("_")
        if index.isdigit():
            found[(array_job, int(index))] = TaskState(array_job, int(index), state.split()[0] if state else "",
                                                       f"exit {exit_code}")
    return found, None


# --- nightly: scrontab ----------------------------------------------------------------------------

SCRON_MARK = "# lokaal-bench nightly campaign:"


def scrontab_entry(schedule: str, name: str, command: Sequence[str], partition: str | None,
                   log: Path, environment: dict[str, str] | None = None) -> str:
    """A scrontab entry that runs the submission itself (a fresh campaign each time) on schedule."""
    fields = schedule.split()
    if len(fields) != 5:
        raise BenchError(f"--schedule {schedule!r}: give five cron fields, e.g. \"0 2 * * *\"")
    lines = [f"{SCRON_MARK} {name}", "#SCRON --time=00:10:00", f"#SCRON --output={log}", "#SCRON --open-mode=append"]
    if partition:
        lines.append(f"#SCRON --partition={partition}")
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (environment or {}).items())
    lines.append(f"{schedule} {prefix}" + " ".join(shlex.quote(w) for w in command))
    return "\n".join(lines) + "\n"


def install_scrontab(entry: str, name: str, directory: Path) -> tuple[bool, str]:
    """Add (or replace) the entry in this user's scrontab; (False, why) where scrontab is unavailable
    (not installed, or not enabled by the cluster's ScronParameters)."""
    if not shutil.which("scrontab"):
        return False, "scrontab not found on PATH"
    current = _run(["scrontab", "-l"])
    listing = current.stdout if current.returncode == 0 else ""
    if current.returncode != 0 and "no crontab" not in (current.stderr + current.stdout).lower():
        return False, (current.stderr or current.stdout).strip() or "scrontab -l failed"
    kept, in_entry = [], False
    for line in listing.splitlines():  # an earlier entry of this name: its mark, #SCRON lines and cron line
        if line.startswith(f"{SCRON_MARK} {name}"):
            in_entry = True
        elif not in_entry:
            kept.append(line)
        elif not line.startswith("#"):
            in_entry = False
    path = directory / "scrontab.txt"
    path.write_text("\n".join([*kept, entry.rstrip("\n")]) + "\n", encoding="utf-8")
    done = _run(["scrontab", str(path)])
    if done.returncode != 0:
        return False, (done.stderr or done.stdout).strip() or "scrontab failed"
    return True, "installed in this user's scrontab"
