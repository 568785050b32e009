"""Shards and campaigns without a scheduler: the split, `--shard` parsing, the rendered sbatch script, the
time-limit default, the scrontab entry, and what `submit slurm` says where Slurm is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.fleet.shards import Shard, assignment, parse_shard
from bench.fleet.slurm import ArrayJob, format_time_limit, render_script, scrontab_entry, time_limit_for
from conftest import REPO


@given(st.lists(st.text(alphabet="0123456789abcdef", min_size=16, max_size=16), unique=True, max_size=60),
       st.integers(min_value=1, max_value=9))
def test_shards_hold_every_cell_once_whatever_the_order(ids: list[str], count: int) -> None:
    shards = assignment(ids, count)
    assert sorted(i for s in shards for i in s) == sorted(ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert assignment(list(reversed(ids)), count) == shards  # the profile's order does not matter


def test_parse_shard_takes_the_index_from_the_scheduler() -> None:
    assert parse_shard("1/4") == Shard(1, 4)
    assert parse_shard("auto/3", {"SLURM_ARRAY_TASK_ID": "2"}) == Shard(2, 3)
    assert parse_shard("auto/3", {"JOB_COMPLETION_INDEX": "0", "SLURM_ARRAY_TASK_ID": "2"}) == Shard(0, 3)
    bad_ones = (("4/4", {}), ("x/2", {}), ("auto/2", {}), ("1/0", {}), ("auto/2", {"SLURM_ARRAY_TASK_ID": "a"}))
    for bad, environ in bad_ones:
        with pytest.raises(BenchError, match="--shard"):
            parse_shard(bad, environ)


def test_the_sbatch_script_is_plain_and_runs_the_submitting_python(tmp_path: Path) -> None:
    job = ArrayJob("c-1", "gpu", "gpu", 4, tmp_path / "my profile.yaml", tmp_path, time_limit="01:10:00",
                   gres="gpu:4", constraint="h100", pythonpath="/src")
    script = render_script(job)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = {line.split()[1] for line in lines if line.startswith("#SBATCH")}
    assert {"--array=0-3", "--partition=gpu", "--exclusive", "--mem=0", "--time=01:10:00", "--gres=gpu:4",
            "--constraint=h100", "--requeue"} <= directives
    run = lines[-1]
    assert run.startswith(f"exec {sys.executable} -m bench run ") and "'" in run  # the path with a space, quoted
    assert '--shard "${SLURM_ARRAY_TASK_ID}/4"' in run
    shared = render_script(ArrayJob("c-1", "debug", None, 2, tmp_path / "p.yaml", tmp_path, exclusive=False))
    assert "--exclusive" not in shared and "--partition" not in shared
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_the_time_limit_comes_from_the_estimate() -> None:
    assert format_time_limit(59) == "00:01:00" and format_time_limit(3601) == "01:01:00"
    assert format_time_limit(2 * 86400 + 60) == "2-00:01:00"
    limit, why = time_limit_for(100, 300)
    assert limit == format_time_limit(2 * 300 + 600) and "300 s" in why
    assert time_limit_for(100, None)[0] == format_time_limit(2 * 100 + 600)


def test_a_scrontab_entry_runs_the_submission_on_schedule(tmp_path: Path) -> None:
    entry = scrontab_entry("0 2 * * *", "nightly", ["/py", "-m", "bench", "submit", "slurm", "p.yaml"], "night",
                           tmp_path / "log", {"PYTHONPATH": "/src"})
    assert entry.splitlines()[-1] == "0 2 * * * PYTHONPATH=/src /py -m bench submit slurm p.yaml"
    assert "#SCRON --partition=night" in entry
    with pytest.raises(BenchError, match="five cron fields"):
        scrontab_entry("daily", "n", ["x"], None, tmp_path / "log")


def test_submit_slurm_without_sbatch_exits_2_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([sys.executable, "-m", "bench", "submit", "slurm", str(REPO / "profiles" / "quickstart.yaml"),
                           "--shards", "2", "--results", str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "sbatch not found" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


def test_more_shards_than_cells_is_bad_input(tmp_path: Path) -> None:
    from bench.fleet.submit import plan_campaign

    with pytest.raises(BenchError, match="only 5 cell"):
        plan_campaign(REPO / "profiles" / "quickstart.yaml", 6, tmp_path)
    plan = plan_campaign(REPO / "profiles" / "quickstart.yaml", 2, tmp_path)
    assert sorted(i for s in plan.shard_cells for i in s) == sorted(plan.cell_ids)
    assert plan.largest_shard_min_s > 0
