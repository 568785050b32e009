"""A real one-node Slurm (scripts/slurm_one_node.sh, as root): a campaign submitted as a job array, its
shards read as one run, and a cancelled shard resubmitted and completed without redoing a done cell."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_profile

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SETUP = REPO / "scripts" / "slurm_one_node.sh"


def _node_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and any(s.startswith(("idle", "mixed", "allocated")) for s in done.stdout.split())


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """The running cluster, or one started here (root only); skipped, with the reason, where neither can be."""
    if _node_up():
        return
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm munge; scripts/slurm_one_node.sh start)")
    if os.geteuid() != 0:
        pytest.skip("no Slurm node is up and starting one takes root (scripts/slurm_one_node.sh start)")
    done = subprocess.run(["bash", str(SETUP), "start"], capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not _node_up():
        pytest.skip(f"the one-node Slurm did not start: {done.stdout[-1500:]}{done.stderr[-1500:]}")


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def fleet_profile(path: Path, name: str, batch_sizes: list[int], min_duration_s: float | None = None) -> Path:
    data = tiny_profile(name=name, scenarios=[{"kind": "single-stream", "requests": 3},
                                              {"kind": "offline", "batch_sizes": batch_sizes, "batches": 2}])
    if min_duration_s:
        data["run"]["min_duration_s"] = min_duration_s
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def campaign_dir(results: Path) -> Path:
    (found,) = [p.parent for p in results.glob("*/campaign.json")]
    return found


def test_a_two_shard_campaign_runs_as_a_job_array_and_reads_as_one_run(slurm_cluster, tmp_path: Path) -> None:
    profile = fleet_profile(tmp_path / "fleet.yaml", "fleet-two", [1, 2, 4])
    results = tmp_path / "results"
    done = bench("submit", "slurm", str(profile), "--shards", "2", "--results", str(results), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    directory = campaign_dir(results)
    campaign = json.loads((directory / "campaign.json").read_text())
    (submission,) = campaign["submissions"]
    assert submission["job_ids"] and submission["job_ids"][0] in done.stdout
    script = (directory / submission["script"]).read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --exclusive" in script and "#SBATCH --requeue" in script
    commands = [line for line in script.splitlines() if not line.startswith("#")]
    assert commands[-1].startswith(f"exec {sys.executable} -m bench run ")  # the submitting Python, by path
    assert not any(re.search(r"\b(pip3?|curl|wget)\s", line) for line in commands)  # nothing installed or fetched
    assert f"#SBATCH --time={submission['time_limit']}" in script

    shards = sorted(p for p in directory.iterdir() if (p / "manifest.json").exists())
    group = submission["group"]
    assert [p.name.split("-of-")[0] for p in shards] == [f"{group}-shard-0", f"{group}-shard-1"]
    per_shard = [json.loads((p / "manifest.json").read_text()) for p in shards]
    assert all(m["status"] == "complete" and m["counts"]["COMPLETED"] == 2 for m in per_shard)
    assert {m["invocations"][0]["scheduler"]["SLURM_ARRAY_JOB_ID"] for m in per_shard} == set(submission["job_ids"])
    ids = [c["id"] for m in per_shard for c in m["cells"]]
    assert sorted(ids) == sorted(campaign["cell_ids"]) and len(set(ids)) == 4  # every cell in exactly one shard

    table = bench("table", str(directory), "--format", "json")
    assert table.returncode == 0, table.stderr
    rows = json.loads(table.stdout)["rows"]
    assert sorted(r["cell_id"] for r in rows) == sorted(campaign["cell_ids"])  # each cell once

    status = bench("status", str(directory), "--format", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    states = json.loads(status.stdout)["rows"]
    assert [(r["shard"], r["state"], r["done"]) for r in states] == [(0, "done", 2), (1, "done", 2)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cancelled_shard_resubmitted_completes_without_redoing_a_cell(slurm_cluster, tmp_path: Path) -> None:
    # Cells of at least 6 s each, so the shard is still running when the first one is sealed.
    profile = fleet_profile(tmp_path / "fleet.yaml", "fleet-cancel", [1, 2, 3, 4, 5], min_duration_s=6)
    results = tmp_path / "results"
    done = bench("submit", "slurm", str(profile), "--shards", "2", "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    directory = campaign_dir(results)
    job = json.loads((directory / "campaign.json").read_text())["submissions"][0]["job_ids"][0]

    deadline = time.monotonic() + 400
    written: list[Path] = []
    while not written and time.monotonic() < deadline:
        written = sorted(directory.glob("*-shard-0-of-2-*/cells/*/cell.json"))
        time.sleep(0.3)
    assert written, "shard 0 wrote no cell in time"
    subprocess.run(["scancel", f"{job}_0"], check=True, timeout=30)
    before = {p.parent.name: (_sha(p), p.stat().st_mtime_ns)
              for p in directory.glob("*-shard-0-of-2-*/cells/*/cell.json")
              if json.loads(p.read_text()).get("status") == "COMPLETED"}
    assert before

    while time.monotonic() < deadline:  # shard 0 gone from the queue; shard 1 may still run
        queued = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%K"], capture_output=True, text=True)
        if "0" not in queued.stdout.split():
            break
        time.sleep(1)
    (shard0,) = directory.glob("*-shard-0-of-2-*")
    stopped = json.loads((shard0 / "manifest.json").read_text())
    assert stopped["status"] != "complete" and stopped["counts"]["COMPLETED"] < 3

    again = bench("submit", "slurm", "--resume", str(directory), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    campaign = json.loads((directory / "campaign.json").read_text())
    assert [s["array"] for s in campaign["submissions"]] == [None, "0"]  # only the stopped shard went again
    manifest = json.loads((shard0 / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["COMPLETED"] == 3
    assert [i["resume"] for i in manifest["invocations"]] == [False, True]
    after = {p.parent.name: (_sha(p), p.stat().st_mtime_ns) for p in shard0.glob("cells/*/cell.json")}
    assert {k: after[k] for k in before} == before  # the cells done before the cancel were not run again
    rows = json.loads(bench("table", str(directory), "--format", "json").stdout)["rows"]
    assert sorted(r["cell_id"] for r in rows) == sorted(campaign["cell_ids"])
    assert bench("status", str(directory)).returncode == 0
