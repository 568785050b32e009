"""What every submission does before a scheduler sees it: read and check the profile, split its cells into
shards, estimate the largest shard's time (the sizing plan of bench/measure/sizing.py, as `validate`
prints it), and open the campaign directory with its record (bench/fleet/campaign.py).
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.fleet.campaign import check_id, new_campaign_id, read_campaign, text_sha256, write_campaign
from bench.fleet.shards import assignment

PROFILE_COPY = "profile.yaml"  # the profile as submitted, kept beside the scripts it was rendered into


@dataclass(frozen=True)
class CampaignPlan:
    profile: Path  # absolute: the nodes read the same file
    profile_name: str
    text: str
    cell_ids: list[str]
    shards: int
    campaign_id: str
    directory: Path
    largest_shard_min_s: float
    largest_shard_max_s: float | None

    @property
    def shard_cells(self) -> list[list[str]]:
        return assignment(self.cell_ids, self.shards)


def plan_campaign(profile: str | Path, shards: int, results: str | Path, campaign_id: str | None = None
                  ) -> CampaignPlan:
    """Check the profile (ProfileError, exit 2, names file and field) and size its shards."""
    from bench.measure.sizing import estimate_run
    from bench.profile.cells import expand
    from bench.profile.loading import profile_from_text, read_profile_text

    if shards < 1:
        raise BenchError(f"--shards {shards}: give at least 1")
    path = Path(profile).resolve()
    text = read_profile_text(path)
    loaded = profile_from_text(text, path)
    cells = expand(loaded, path)
    if shards > len(cells):
        raise BenchError(f"--shards {shards}: {path} has only {len(cells)} cell(s); a shard would be empty")
    ids = [c.id for c in cells]
    by_id = {c.id: c for c in cells}
    minimum, maximum = 0.0, 0.0
    bounded = True
    for share in assignment(ids, shards):
        estimate = estimate_run([by_id[i] for i in share])
        minimum = max(minimum, estimate.minimum_s)
        if estimate.maximum_s is None:
            bounded = False
        else:
            maximum = max(maximum, estimate.maximum_s)
    campaign_id = check_id(campaign_id) if campaign_id else new_campaign_id(loaded.name)
    directory = Path(results).resolve() / campaign_id
    return CampaignPlan(path, loaded.name, text, ids, shards, campaign_id, directory, minimum,
                        maximum if bounded else None)


def open_campaign(plan: CampaignPlan, scheduler: str) -> dict[str, Any]:
    """Write (or, for a campaign submitted again, check) its record; the profile's copy beside it."""
    existing = read_campaign(plan.directory)
    if existing is not None:
        if (existing.get("profile") or {}).get("sha256") != text_sha256(plan.text):
            raise BenchError(f"campaign {plan.campaign_id}: {plan.profile} changed since it was submitted")
        return existing
    record = {"id": plan.campaign_id, "profile": {"path": str(plan.profile), "sha256": text_sha256(plan.text),
                                                  "name": plan.profile_name, "copy": PROFILE_COPY},
              "shards": plan.shards, "cell_ids": plan.cell_ids, "scheduler": scheduler, "submissions": []}
    write_campaign(plan.directory, record)
    (plan.directory / PROFILE_COPY).write_text(plan.text, encoding="utf-8")
    return record


def record_submission(directory: Path, submission: dict[str, Any]) -> None:
    record = read_campaign(directory) or {}
    record.setdefault("submissions", []).append({"submitted": dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), **submission})
    write_campaign(directory, {k: v for k, v in record.items() if k != "kind"})


def this_command() -> list[str]:
    """The command line that submitted, as it can be run again (the absolute Python, `-m bench`)."""
    return [sys.executable, "-m", "bench", *sys.argv[1:]]


def package_root() -> str | None:
    """The folder holding this lokaal-bench's `bench/` when it runs from a source checkout (not installed
    into the environment), so the nodes' Python imports the same one."""
    import bench

    root = Path(bench.__file__).resolve().parent.parent
    return None if {"site-packages", "dist-packages"} & set(root.parts) else str(root)


def require_tool(command: str, why: str) -> str:
    found = shutil.which(command)
    if not found:
        raise BenchError(f"{command} not found on PATH: {why}")
    return found
