"""A campaign: one profile run as N shards, on one or more machine kinds, by a scheduler or by hand.

Its directory, `<results>/<campaign-id>/`, holds `campaign.json` (the profile's hash, the shards, and
per submission the rendered scripts or manifests, the command that submitted them and the scheduler's
job ids, so the campaign can be reproduced) and one result set per shard and machine group:
`<group>-shard-<I>-of-<N>-<kind>/`, where the group is the Slurm partition (or `k8s`, or `local`) and
the kind the machine-kind id below. The path is fixed by those four, so a shard that is run again
(requeued, preempted, resubmitted) finds its result set and resumes it.

Each shard's manifest records `campaign`: the id, the shard, the group, the machine kind and every
cell id of the campaign in the profile's order. Readers (bench/results/load.py) read the shards of
one campaign on one machine kind as one run.

The machine kind is what makes two nodes interchangeable for a benchmark: CPU model and sockets,
GPU models and count (from the environment inventory), never the host name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import write_json
from bench.errors import BenchError
from bench.fleet.shards import Shard
from bench.hashing import canonical_json
from bench.results.load import CAMPAIGN_FILE

CAMPAIGN_ENV = "LOKAAL_BENCH_CAMPAIGN"  # a pod's campaign id (its Job's name), where no --campaign is given
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# What a scheduler says about the task that runs a shard, kept in the result set's invocations.
SCHEDULER_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION",
                       "SLURM_RESTART_COUNT", "SLURM_JOB_NODELIST", "JOB_COMPLETION_INDEX", "NODE_NAME", "HOSTNAME")


def machine_kind(environment: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark's hardware is, from the inventory: CPU model and sockets, GPU models and count."""
    cpu = environment.get("cpu") or {}
    gpus = environment.get("gpus") or {}
    models = sorted(str(d.get("name")) for d in gpus.get("devices") or [] if isinstance(d, dict))
    return {"cpu_model": cpu.get("model_name"), "sockets": cpu.get("sockets"), "gpu_models": models,
            "gpu_count": len(models)}


def machine_kind_id(kind: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(kind).encode()).hexdigest()[:10]


def describe_kind(kind: dict[str, Any]) -> str:
    """`AMD EPYC 9454P x1` or `... x2, 8x NVIDIA H200`."""
    text = f"{kind.get('cpu_model') or 'unknown CPU'} x{kind.get('sockets') or '?'}"
    if kind.get("gpu_count"):
        names = sorted(set(kind["gpu_models"]))
        text += f", {kind['gpu_count']}x {'/'.join(names)}"
    return text


def check_id(campaign_id: str, what: str = "--campaign") -> str:
    if not _SAFE_ID.fullmatch(campaign_id):
        raise BenchError(f"{what} {campaign_id!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    return campaign_id


def new_campaign_id(profile_name: str, now: dt.datetime | None = None) -> str:
    """One per submission: the profile, UTC minute and a random suffix (two submissions never collide)."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%MZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", profile_name).strip("-.") or "profile"
    return f"{safe[:60]}-{stamp}-{secrets.token_hex(2)}"


def default_campaign_id(profile_path: Path, profile_text: str) -> str:
    """A shard run by hand without --campaign: the profile's file name and hash, so running the same
    command again resumes it (a new campaign needs a new --campaign)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", profile_path.stem).strip("-.") or "profile"
    return f"{safe[:60]}-{hashlib.sha256(profile_text.encode()).hexdigest()[:8]}"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ShardPlacement:
    """Where one shard of a campaign runs on this machine, and what its result set records."""

    campaign_id: str
    shard: Shard
    group: str
    directory: Path  # the campaign directory
    kind: dict[str, Any]

    @property
    def kind_id(self) -> str:
        return machine_kind_id(self.kind)

    @property
    def result_dir(self) -> Path:
        return self.directory / f"{self.group}-{self.shard.name}-{self.kind_id}"

    @property
    def resumes(self) -> bool:
        return (self.result_dir / "manifest.json").is_file()

    def record(self, cell_ids: list[str]) -> dict[str, Any]:
        """The manifest's `campaign`: every cell of the campaign, so a reader knows what is missing."""
        return {"id": self.campaign_id, "shard": self.shard.to_json(), "group": self.group,
                "machine_kind": self.kind, "machine_kind_id": self.kind_id, "cell_ids": cell_ids}


def scheduler_context(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The scheduler's view of this task (job id, array index, restarts, node), for the invocation record."""
    environ = dict(os.environ) if environ is None else environ
    found = {name: environ[name] for name in SCHEDULER_VARIABLES if environ.get(name)}
    found.setdefault("HOSTNAME", socket.gethostname())
    return found


def place_shard(profile_path: Path, profile_text: str, shard: Shard, campaign_id: str | None, group: str | None,
                results_dir: Path, environment: dict[str, Any]) -> ShardPlacement:
    """The shard's result set path (resumed when it exists) and its campaign, checked against the campaign
    directory: a profile changed since submission would split its cells differently, so it is refused."""
    campaign_id = check_id(campaign_id or os.environ.get(CAMPAIGN_ENV) or default_campaign_id(profile_path,
                                                                                               profile_text))
    group = check_id(group or os.environ.get("SLURM_JOB_PARTITION") or "local", "--group")
    directory = results_dir / campaign_id
    campaign = read_campaign(directory)
    digest = text_sha256(profile_text)
    if campaign is None:
        write_campaign(directory, {"id": campaign_id, "profile": {"path": str(profile_path), "sha256": digest},
                                   "shards": shard.count, "scheduler": None, "submissions": []})
    else:
        recorded = (campaign.get("profile") or {}).get("sha256")
        if recorded and recorded != digest:
            raise BenchError(f"{profile_path}: changed since campaign {campaign_id} was submitted (its sha256 is not "
                             f"the one in {directory / CAMPAIGN_FILE}); its cells would split differently. Run "
                             "the profile as submitted, or start a new campaign")
        if campaign.get("shards") not in (None, shard.count):
            raise BenchError(f"--shard {shard}: campaign {campaign_id} has {campaign['shards']} shards")
    return ShardPlacement(campaign_id, shard, group, directory, machine_kind(environment))


# --- the campaign directory ------------------------------------------------------------------------


def read_campaign(directory: Path) -> dict[str, Any] | None:
    import json

    path = Path(directory) / CAMPAIGN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or "id" not in data:
        raise BenchError(f"{path}: not a lokaal-bench campaign file")
    return data


def write_campaign(directory: Path, data: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / CAMPAIGN_FILE, {"kind": "lokaal-bench-campaign", **data})


def campaign_directory(path: Path) -> tuple[Path, dict[str, Any]]:
    """A campaign directory given on the command line; BenchError naming it when it is none."""
    data = read_campaign(path)
    if data is None:
        raise BenchError(f"{path}: not a campaign directory (no {CAMPAIGN_FILE}); give results/<campaign-id>")
    return path, data
