"""`rerun` runs exactly the stored profile again and says whether the two runs agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_profile

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=600)


def test_rerun_repeats_the_stored_profile_and_checks_agreement(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile(run={"repetitions": 2, "warmup": 1})))
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert cli("run", str(profile), "--output", str(first)).returncode == 0
    profile.write_text("name: edited-afterwards\n")  # rerun must use the stored profile, not the file

    done = cli("rerun", str(first), "--output", str(second), "--tolerance", "0.9")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 1 cell(s) agree within ±90%" in done.stdout
    a = json.loads((first / "manifest.json").read_text())
    b = json.loads((second / "manifest.json").read_text())
    assert a["profile"]["source"] == b["profile"]["source"]
    assert [c["id"] for c in a["cells"]] == [c["id"] for c in b["cells"]]
    cell = a["cells"][0]["id"]
    cell_a = json.loads((first / "cells" / cell / "cell.json").read_text())
    cell_b = json.loads((second / "cells" / cell / "cell.json").read_text())
    assert cell_a["prompts_sha256"] == cell_b["prompts_sha256"]  # the same prompts, token for token

    # Two timings are never equal to the last digit: with no tolerance the check must say so.
    done = cli("rerun", str(first), "--output", str(third), "--tolerance", "0")
    assert done.returncode == 1
    assert "0 of 1 cell(s) agree" in done.stdout and "differs by" in done.stdout


def test_rerun_of_something_that_is_not_a_result_set_exits_2(tmp_path: Path) -> None:
    done = cli("rerun", str(tmp_path))
    assert done.returncode == 2 and "not a result set" in done.stderr and "Traceback" not in done.stderr
