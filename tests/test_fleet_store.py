"""The results store (DuckDB): the committed example result sets and the nightly test data round-trip
through it, adding is incremental by seal, a tampered set is refused, concurrent adders wait their turn,
and the readers take the store as a source."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("duckdb", reason="the results store needs DuckDB (pip install -e '.[store]')")

from bench.fleet.store import STORE_SCHEMA_VERSION, add, connect, export_parquet, load_from_store
from bench.measure.metric_registry import METRICS
from bench.results.load import load_result_set, load_result_sets

DATA = REPO / "tests" / "data"
SETS = [REPO / "results" / "examples" / "quickstart-2core-epyc-vm", *sorted(DATA.glob("nightly-*")),
        DATA / "calibration-cpu"]


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    for path in SETS:
        shutil.copytree(path, folder / path.name)
    return folder


def test_every_set_round_trips_manifest_cells_and_records(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    report = add(SETS, db)
    assert sorted(Path(p).name for p in report.added) == sorted(p.name for p in SETS) and not report.refused
    # One metric's samples fetched with the sets (as history asks), the others when first asked for.
    stored = {s.name: s for s in load_from_store(str(db), samples_of=["output_tok_s"])}
    for path in SETS:
        direct, back = load_result_set(path), stored[path.name]
        # what the store's columns answer, before the manifest is decoded, then the manifest itself
        assert (back.created, back.machine_id, back.campaign) == (direct.created, direct.machine_id, direct.campaign)
        assert [c.id for c in back.cells] == [c.id for c in direct.cells]
        assert [(c.scenario_kind, c.served) for c in back.cells] == [(c.scenario_kind, c.served) for c in direct.cells]
        assert back.manifest == direct.manifest
        for a, b in zip(direct.cells, back.cells, strict=True):
            assert b.summary == a.summary
            assert [r.to_json() for r in b.records] == [r.to_json() for r in a.records]
            assert b.metric("output_tok_s") == a.metric("output_tok_s")
            for base in METRICS:  # the samples stored at add time are the ones the records give
                assert b.samples(base) == a.samples(base), base


def test_adding_again_skips_by_seal_and_a_tampered_set_is_refused(tmp_path: Path) -> None:
    folder, db = _copy(tmp_path), tmp_path / "fleet.duckdb"
    assert len(add([folder], db).added) == len(SETS)
    again = add([folder], db)
    assert not again.added and len(again.skipped) == len(SETS)

    tampered = tmp_path / "tampered"
    shutil.copytree(SETS[1], tampered)
    summary = next(tampered.glob("cells/*/cell.json"))
    data = json.loads(summary.read_text())
    data["label"] = data["label"] + " (edited)"
    summary.write_text(json.dumps(data))
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["run_id"] = "tampered"  # not the seal of the set already in: it must be verified
    manifest["integrity"]["manifest_bytes_sha256"] = "f" * 64
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    refused = add([tampered], db)
    assert not refused.added and refused.refused and "tampered" in refused.refused[0][0]
    assert len(load_from_store(str(db))) == len(SETS)


def test_the_store_keeps_its_schema_version_and_refuses_a_newer_one(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    add(SETS[:1], db)
    with connect(db, write=True) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == \
            str(STORE_SCHEMA_VERSION)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(STORE_SCHEMA_VERSION + 1)])
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="newer"):
        load_from_store(str(db))


def test_concurrent_adders_wait_their_turn(tmp_path: Path) -> None:
    folders = []
    for n, path in enumerate(SETS):
        folder = tmp_path / f"node-{n}"
        folder.mkdir()
        shutil.copytree(path, folder / path.name)
        folders.append(folder)
    db = tmp_path / "fleet.duckdb"
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "store", "add", str(f), "--db", str(db)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for f in folders]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    assert sorted(s.name for s in load_from_store(str(db))) == sorted(p.name for p in SETS)


def test_readers_take_the_store_and_one_name_in_it(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    add(SETS, db)
    run = [sys.executable, "-m", "bench"]
    table = subprocess.run([*run, "table", f"{db}::nightly-1", "--format", "json"], capture_output=True, text=True,
                           cwd=REPO)
    assert table.returncode == 0, table.stderr
    rows = json.loads(table.stdout)["rows"]
    assert sorted(r["cell_id"] for r in rows) == sorted(c.id for c in load_result_set(SETS[1]).cells)
    compare = subprocess.run([*run, "compare", f"{db}::nightly-1", f"{db}::nightly-2", "--format", "json"],
                             capture_output=True, text=True, cwd=REPO)
    assert compare.returncode in (0, 1), compare.stderr
    history = subprocess.run([*run, "history", str(db), "--format", "json"], capture_output=True, text=True, cwd=REPO)
    assert history.returncode == 0, history.stderr
    from_dirs = subprocess.run([*run, "history", *map(str, SETS), "--format", "json"], capture_output=True,
                               text=True, cwd=REPO)
    assert json.loads(history.stdout)["rows"] == json.loads(from_dirs.stdout)["rows"]
    assert len(load_result_sets([str(db)])) == len(SETS)
    import bench

    frame = bench.load(str(db))
    assert len(frame) == sum(len(load_result_set(p).cells) for p in SETS)
    missing = subprocess.run([*run, "table", f"{db}::no-such-run"], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "no-such-run" in missing.stderr


def test_export_writes_each_table_as_parquet(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "fleet.duckdb"
    add(SETS[:2], db)
    written = export_parquet(db, tmp_path / "parquet")
    counts = {p.stem: duckdb.connect().execute(f"SELECT count(*) FROM '{p}'").fetchall()[0][0] for p in written}
    assert counts["result_sets"] == 2 and counts["cells"] == sum(len(load_result_set(p).cells) for p in SETS[:2])
    assert counts["records"] > 0
