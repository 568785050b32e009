"""The one door to result sets (bench/results/load.py): typed cells from the committed sets, each set
read once by a whole report, clear errors; and on a result set written by the runner with records
shaped like vLLM's (tests/vllm_shaped_set.py), `compare` and the table agree on every metric, the
served cell's two decode rates differ as they should, and a set stored before schema v3 still reads
the same numbers under the same names."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ResultSetError
from bench.measure.metric_registry import METRICS, split_metric
from bench.readers.compare import compare
from bench.readers.tables import cell_rows
from bench.results.load import LoadedResultSet, load_result_set, load_result_sets
from bench.results.resultset import ResultSet

DATA = Path(__file__).parent / "data"
HERE = Path(__file__).parent
EVERY = [name if m.kind != "latency" else f"{name}_{stat}" for name, m in METRICS.items()
         for stat in (("p50", "p99", "mean") if m.kind == "latency" else (None,))]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vllm-shaped")
    done = subprocess.run([sys.executable, str(HERE / "vllm_shaped_set.py"), str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "result"


def by_kind(result_set: LoadedResultSet, kind: str):  # type: ignore[no-untyped-def]
    (cell,) = [c for c in result_set.cells if c.engine_kind == kind]
    return cell


def test_typed_cells_of_a_committed_set() -> None:
    (loaded,) = load_result_sets(DATA / "nightly-1")
    assert loaded.name == "nightly-1" and loaded.upgraded_from == 1 and loaded.machine_id
    manifest = json.loads((DATA / "nightly-1" / "manifest.json").read_text())
    assert [c.id for c in loaded.cells] == [e["id"] for e in manifest["cells"]]  # manifest order
    single, offline = loaded.cells
    assert (single.model_name, single.engine_label, single.workload) == ("tiny-llama", "transformers/float32/cpu", "w")
    assert (single.point_label, offline.point_label) == ("single-stream", "offline b=4")
    assert single.completed and single.verdict in ("VALID", "INVALID") and not single.served
    assert single.metric("decode_tok_s") == single.summary["metrics"]["decode_tok_s"]["value"]
    assert single.metric("ttft_p99") == single.summary["metrics"]["ttft"]["p99"]
    # not stored in schema v1: from the records, through the registry
    assert "stream_decode_tok_s" not in single.summary["metrics"]
    stream = METRICS["stream_decode_tok_s"]
    assert single.metric("stream_decode_tok_s") == stream.figure(stream.samples(single.records)) > 0
    assert len(single.records) == 24 + 1 and len(single.telemetry_samples) > 0  # warm-up included


def test_folders_lists_and_loaded_sets() -> None:
    folder = load_result_sets(DATA)
    assert [s.name for s in folder] == ["calibration-cpu", "nightly-1", "nightly-2", "nightly-3-contended"]
    again = load_result_sets([folder[1], DATA / "nightly-2"])
    assert again[0] is folder[1] and again[1].name == "nightly-2"
    assert load_result_sets(Path(__file__).parent / "no-such-folder") == []


def test_a_whole_report_reads_each_set_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bench.results.load as load
    from bench.readers.report import render_report

    reads: dict[str, int] = {}

    def counting(method, key):  # type: ignore[no-untyped-def]
        def wrapped(self, *args):  # type: ignore[no-untyped-def]
            name = f"{key}:{self.path}:{args}"
            reads[name] = reads.get(name, 0) + 1
            return method(self, *args)
        return wrapped

    monkeypatch.setattr(ResultSet, "read_manifest", counting(ResultSet.read_manifest, "manifest"))
    monkeypatch.setattr(ResultSet, "read_cell_summary", counting(ResultSet.read_cell_summary, "cell"))
    real_records = load.read_records
    records: dict[str, int] = {}

    def read_records(path):  # type: ignore[no-untyped-def]
        records[str(path)] = records.get(str(path), 0) + 1
        return real_records(path)

    monkeypatch.setattr(load, "read_records", read_records)
    html = render_report([DATA / "nightly-1", DATA / "calibration-cpu"])
    assert "Hardware side by side" in html
    manifests = [k for k in reads if k.startswith("manifest")]
    cells = [k for k in reads if k.startswith("cell")]
    assert len(manifests) == 2 and len(cells) == 2 + 9
    assert set(reads.values()) == {1}, {k: v for k, v in reads.items() if v > 1}
    assert records and set(records.values()) == {1}  # the per-request frame read each records file once


def test_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ResultSetError, match=f"{tmp_path}: not a result set"):
        load_result_set(tmp_path)
    copy = tmp_path / "set"
    shutil.copytree(DATA / "nightly-1", copy)
    (cell,) = [c for c in load_result_set(copy).cells if c.point_label == "single-stream"]
    (cell.directory / "records.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(ResultSetError, match=r"records\.jsonl\.gz: corrupt records"):
        _ = cell.records
    done = cli("table", str(copy), "--metric", "stream_decode_tok_s")  # needs the records of a v1 set
    assert done.returncode == 2 and "corrupt records" in done.stderr and "Traceback" not in done.stderr


def test_compare_and_the_table_agree_on_every_metric_for_vllm_records(shaped: Path) -> None:
    loaded = load_result_set(shaped)
    vllm = by_kind(loaded, "vllm")
    assert vllm.completed and vllm.summary["schema_version"] == 3
    rows = {r["cell_id"]: r for r in cell_rows([loaded], EVERY)}
    result = compare(loaded, loaded, EVERY)
    for cell in result.cells:
        for metric in cell.metrics:
            base, _ = split_metric(metric.metric)
            shown = rows[cell.cell_id][metric.metric]
            assert metric.a == metric.b and shown == pytest.approx(metric.a * METRICS[base].scale, rel=1e-12), metric
    # ... and the command line's table says the same decode rate the stored headline does
    table = json.loads(cli("table", str(shaped), "--format", "json").stdout)["rows"]  # the envelope's rows
    (row,) = [r for r in table if r["cell_id"] == vllm.id]
    assert row["decode_tok_s"] == vllm.summary["metrics"]["decode_tok_s"]["value"]
    assert row["decode_tok_s"] == pytest.approx(next(m.a for c in result.cells if c.cell_id == vllm.id
                                                     for m in c.metrics if m.metric == "decode_tok_s"), rel=1e-12)
    assert cli("verify", str(shaped)).returncode == 0


def test_the_vllm_rows_overlap_and_the_old_formula_would_not_agree(shaped: Path) -> None:
    vllm = by_kind(load_result_set(shaped), "vllm")
    measured = [r for r in vllm.records if not r.warmup]
    batches: dict[tuple[int, int], list] = {}
    for r in measured:
        batches.setdefault((r.repetition, r.batch_index), []).append(r)
    assert len(batches) == 6
    assert all(len({round(r.first_token_time, 6) for r in rows}) == 2 for rows in batches.values())  # two waves
    windows = [max(r.end_time for r in rows) - max(r.first_token_time for r in rows) for rows in batches.values()]
    old = sum(r.output_tokens - 1 for r in measured) / sum(windows)
    assert old > 1.05 * vllm.metric("decode_tok_s")


def test_served_cells_have_both_decode_rates_and_say_so(shaped: Path) -> None:
    served = by_kind(load_result_set(shaped), "openai")
    assert served.served
    system, stream = served.metric("decode_tok_s"), served.metric("stream_decode_tok_s")
    assert 3 * stream < system < 4 * stream  # four streams decode at once
    done = cli("table", str(shaped), "--metric", "decode_tok_s")
    assert done.returncode == 0 and "decode_tok_s of served cells is the system-wide rate" in done.stderr


def _as_v2(source: Path, target: Path) -> None:
    """The same result set as schema v2 stored it: a served cell's decode_tok_s was one stream's rate,
    and no cell stored stream_decode_tok_s."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 2}))
    for entry in manifest["cells"]:
        path = target / entry["dir"] / "cell.json"
        summary = json.loads(path.read_text())
        metrics = summary["metrics"]
        stream = metrics.pop("stream_decode_tok_s")
        if summary["config"]["engine"]["kind"] == "openai":
            metrics["decode_tok_s"] = stream
        path.write_text(json.dumps({**summary, "schema_version": 2}))


def test_a_v2_served_set_reads_the_same_numbers_under_the_new_names(shaped: Path, tmp_path: Path) -> None:
    old = tmp_path / "v2"
    _as_v2(shaped, old)
    now, before = load_result_set(shaped), load_result_set(old)
    assert before.upgraded_from == 2
    for cell in now.cells:
        was = before.cell(cell.id)
        assert was is not None and was.summary["schema_version"] == 3
        for name in ("decode_tok_s", "stream_decode_tok_s", "output_tok_s", "ttft_p50"):
            assert was.metric(name) == pytest.approx(cell.metric(name), rel=1e-12), (cell.label, name)
    served = by_kind(before, "openai")
    assert "stream_decode_tok_s" in served.summary["metrics"]  # moved by the upgrader, not recomputed
    assert "decode_tok_s" not in served.summary["metrics"]  # the system-wide rate: from the records
    gate = cli("compare", str(old), str(shaped), "--fail-on", "decode_tok_s:-5%,stream_decode_tok_s:-5%")
    assert gate.returncode == 0 and "0 regression(s)" in gate.stdout, gate.stdout + gate.stderr
    assert "upgraded to v3 on read" in gate.stderr


def test_records_are_read_on_demand_once(tmp_path: Path) -> None:
    (loaded,) = load_result_sets(DATA / "nightly-1")
    cell = loaded.cells[0]
    assert "records" not in cell.__dict__  # nothing read yet
    first = cell.records
    assert cell.records is first
    path = cell.directory / "records.jsonl.gz"
    with gzip.open(path, "rt") as src:
        assert len(first) == sum(1 for line in src if line.strip())
