"""A campaign's state: per shard and group, from its result sets (the record: cells done, failed, still
to do, the one running) and the scheduler (queued or running tasks; how finished ones ended, where the
cluster keeps accounting). The exit status tells an alert what it needs: 0 the campaign completed
cleanly, 1 it is over but not clean (FAILED cells, or shards that stopped or never ran and are no longer
queued), 3 it is not over yet (tasks still queued or running).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import EXIT_FAILED_CELLS, EXIT_IN_PROGRESS, EXIT_OK
from bench.fleet.shards import assignment
from bench.fleet.slurm import ACTIVE_STATES, TaskState
from bench.results.load import LoadedResultSet, load_result_sets

DONE, DONE_WITH_FAILURES, RUNNING, QUEUED, STOPPED, NOT_STARTED = (
    "done", "done with failures", "running", "queued", "stopped", "not started")


@dataclass
class ShardState:
    group: str
    index: int
    count: int
    share: int | None  # the cells this shard holds, when the campaign's cells are known
    result_sets: list[LoadedResultSet] = field(default_factory=list)
    task: TaskState | None = None  # squeue's, else sacct's
    accounted: TaskState | None = None

    def _cells(self) -> list[Any]:
        return [c for s in self.result_sets for c in s.cells]

    @property
    def completed(self) -> int:
        return sum(c.completed for c in self._cells())

    @property
    def failed(self) -> int:
        return sum(c.status == "FAILED" for c in self._cells())

    @property
    def to_do(self) -> int | None:
        total = self.share if self.share is not None else len(self._cells()) if self.result_sets else None
        return None if total is None else max(total - self.completed - self.failed, 0)

    @property
    def running_cell(self) -> str | None:
        """The cell being measured: started (its spec.json written) and not finished, while the task runs."""
        if self.state != RUNNING:
            return None
        for cell in self._cells():
            if cell.summary is None and (cell.directory / "spec.json").exists():
                return cell.label
        return None

    @property
    def finished_sets(self) -> bool:
        return bool(self.result_sets) and all(s.manifest.get("status") == "complete" for s in self.result_sets) \
            and self.to_do == 0

    @property
    def state(self) -> str:
        if self.task is not None and self.task.state in ACTIVE_STATES:
            return RUNNING if self.task.state in ("RUNNING", "COMPLETING", "CONFIGURING") else QUEUED
        if self.finished_sets:
            return DONE_WITH_FAILURES if self.failed else DONE
        return STOPPED if self.result_sets else NOT_STARTED


@dataclass
class CampaignState:
    directory: Path
    campaign: dict[str, Any]
    shards: list[ShardState]
    accounting_note: str | None = None

    @property
    def exit_code(self) -> int:
        states = {s.state for s in self.shards}
        if states & {RUNNING, QUEUED}:
            return EXIT_IN_PROGRESS
        return EXIT_OK if states <= {DONE} and self.shards else EXIT_FAILED_CELLS

    @property
    def over(self) -> bool:
        return self.exit_code != EXIT_IN_PROGRESS


def job_ids(campaign: dict[str, Any]) -> list[str]:
    return [job for submission in campaign.get("submissions") or [] for job in submission.get("job_ids") or []]


def campaign_state(directory: Path, campaign: dict[str, Any], queue: dict[tuple[str, int], TaskState] | None = None,
                   accounting: dict[tuple[str, int], TaskState] | None = None,
                   accounting_note: str | None = None) -> CampaignState:
    """Each (group, shard) the campaign submitted or ran, with its result sets and the scheduler's word."""
    queue, accounting = queue or {}, accounting or {}
    sets = [s for s in load_result_sets([directory], merge=False) if s.campaign]
    count = int(campaign.get("shards") or max((s.campaign["shard"]["count"] for s in sets), default=1))
    cell_ids = campaign.get("cell_ids") or next((s.campaign.get("cell_ids") for s in sets), None)
    shares = [len(ids) for ids in assignment(cell_ids, count)] if cell_ids else None
    groups: dict[str, list[str]] = {}  # group -> its job ids, newest first
    for submission in campaign.get("submissions") or []:
        groups.setdefault(submission["group"], []).extend(reversed(submission.get("job_ids") or []))
    for one in sets:
        groups.setdefault(str(one.campaign["group"]), [])
    states = []
    for group, jobs in groups.items():
        for index in range(count):
            mine = [s for s in sets if s.campaign["group"] == group and s.campaign["shard"]["index"] == index]
            state = ShardState(group, index, count, shares[index] if shares else None, mine)
            state.task = next((queue[(j, index)] for j in jobs if (j, index) in queue), None)
            state.accounted = next((accounting[(j, index)] for j in jobs if (j, index) in accounting), None)
            if state.task is None and state.accounted is not None:
                state.task = state.accounted
            states.append(state)
    return CampaignState(directory, campaign, states, accounting_note)
