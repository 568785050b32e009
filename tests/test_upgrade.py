"""The upgrade path: result sets written by an older schema version still load through every reader,
upgraded in memory and reported as upgraded, while their files stay byte-identical (still verify).
The committed tests/data sets are schema v1, made before privacy was recorded: they are the old-version
fixtures. A version newer than this code is refused with a clear message."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench
from bench.errors import ResultSetError
from bench.readers.rerun import agreement
from bench.results.records import read_records
from bench.results.resultset import SCHEMA_VERSION, ResultSet, validate
from bench.results.upgrade import UPGRADED_FROM, upgrade_cell_summary, upgrade_manifest

DATA = Path(__file__).parent / "data"
OLD = DATA / "nightly-1"
NOTE = "written with result-set schema v1, upgraded to v3 on read (files unchanged)"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


def fingerprint(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_committed_sets_are_the_old_version() -> None:
    assert SCHEMA_VERSION == 3
    for name in ("nightly-1", "nightly-2", "nightly-3-contended", "calibration-cpu"):
        manifest = json.loads((DATA / name / "manifest.json").read_text())
        assert manifest["schema_version"] == 1 and "privacy" not in manifest


def test_upgrade_manifest_v1_to_v2_in_memory() -> None:
    original = json.loads((OLD / "manifest.json").read_text())
    before = json.dumps(original, sort_keys=True)
    upgraded = upgrade_manifest(original)
    assert json.dumps(original, sort_keys=True) == before  # the document read stays as it was
    assert upgraded["schema_version"] == 3 and upgraded[UPGRADED_FROM] == 1
    assert upgraded["privacy"] == {"store_text": False}  # v1 never stored text
    validate({k: v for k, v in upgraded.items() if k != UPGRADED_FROM}, "manifest")  # the current shape, exactly
    current = {k: v for k, v in upgraded.items() if k != UPGRADED_FROM}
    assert upgrade_manifest(current) is current  # nothing to do for the current version


def test_cell_summaries_go_through_the_same_path() -> None:
    result_set = ResultSet(OLD)
    for entry in result_set.read_manifest()["cells"]:
        raw = json.loads((OLD / entry["dir"] / "cell.json").read_text())
        assert raw["schema_version"] == 1
        summary = result_set.read_cell_summary(entry["id"])
        assert summary["schema_version"] == 3 and summary[UPGRADED_FROM] == 1
        assert summary["responses_sha256"] is None  # v1 kept no response hashes
        validate({k: v for k, v in summary.items() if k != UPGRADED_FROM}, "cell")
    with pytest.raises(ResultSetError, match="schema_version 7 is newer than this lokaal-bench understands"):
        upgrade_cell_summary({"schema_version": 7})


def test_every_reader_loads_the_old_set_and_says_it_was_upgraded(tmp_path: Path) -> None:
    before = fingerprint(OLD)
    manifest = ResultSet(OLD).read_manifest()
    assert manifest["schema_version"] == 3 and manifest[UPGRADED_FROM] == 1
    # old records load too: the fields added since (text, response hashes) are None
    records = list(read_records(OLD / manifest["cells"][0]["dir"] / "records.jsonl.gz"))
    assert records and all(r.response_sha256 is None and r.prompt_text is None for r in records)

    frame = bench.load(OLD)
    assert len(frame) == 2 and set(frame["schema_upgraded_from"]) == {1}
    assert len(bench.load(OLD, per="request")) == sum(1 for c in manifest["cells"]
                                                        for _ in read_records(OLD / c["dir"] / "records.jsonl.gz"))
    assert all(row["same_outputs"] is None for row in agreement(OLD, DATA / "nightly-2", 0.5))

    table = cli("table", str(OLD), "--format", "csv")
    assert table.returncode == 0, table.stderr
    assert "single-stream" in table.stdout and NOTE in table.stderr
    compare = cli("compare", str(OLD), str(DATA / "nightly-2"))
    assert compare.returncode == 0, compare.stderr
    assert f"{OLD}: {NOTE}" in compare.stderr and f"{DATA / 'nightly-2'}: {NOTE}" in compare.stderr
    report = cli("report", str(OLD), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report.html").stat().st_size > 0 and NOTE in report.stderr
    verify = cli("verify", str(OLD))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK" in verify.stdout and "written with result-set schema v1" in verify.stdout

    assert fingerprint(OLD) == before  # read through every reader, and not one byte changed


def test_writing_an_upgraded_manifest_drops_the_in_memory_note(tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(OLD, copy)
    result_set = ResultSet(copy)
    result_set.write_manifest(result_set.read_manifest())  # what a resume does
    written = json.loads((copy / "manifest.json").read_text())
    assert written["schema_version"] == 3 and UPGRADED_FROM not in written
    assert written["privacy"] == {"store_text": False}
    assert UPGRADED_FROM not in ResultSet(copy).read_manifest()


def test_a_newer_version_is_still_refused_by_every_reader(tmp_path: Path) -> None:
    future = tmp_path / "future"
    shutil.copytree(OLD, future)
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    words = "schema_version 99 is newer than this lokaal-bench understands (3); upgrade lokaal-bench to read it"
    with pytest.raises(ResultSetError, match=r"newer than this lokaal-bench understands \(3\)"):
        bench.load(future)
    for args in (("table", str(future)), ("compare", str(future), str(OLD)),
                 ("report", str(future), "-o", str(tmp_path / "r.html"))):
        done = cli(*args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    verify = cli("verify", str(future))
    assert verify.returncode == 1 and words in verify.stdout.replace("\n", "")
