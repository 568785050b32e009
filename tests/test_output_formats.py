"""Every verb that prints a table, run for real with --format json: stdout parses as one JSON
envelope (docs/output-formats.md) and holds the figures the verb computed; progress and messages
went to stderr. The printers' other formats are checked on a table of their own."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import bench
from bench.readers.printing import JSON_FORMAT, Column, Output, Table, document, fixed
from bench.readers.tables import cell_rows
from conftest import tiny_profile

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
NIGHTS = [DATA / "nightly-1", DATA / "nightly-2", DATA / "nightly-3-contended"]
ENVELOPE = ["lokaal_bench", "format", "kind", "title", "caption", "columns", "rows", "notes", "tables", "data"]


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def envelope(done: subprocess.CompletedProcess[str], kind: str, code: int = 0) -> dict[str, Any]:
    """The parsed stdout, checked: the version fields, the verb's kind, rows keyed by the columns."""
    assert done.returncode == code, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert list(doc) == ENVELOPE
    assert doc["lokaal_bench"] == bench.__version__ and doc["format"] == JSON_FORMAT and doc["kind"] == kind
    for part in [doc, *doc["tables"]]:
        names = [c["name"] for c in part["columns"]]
        assert len(set(names)) == len(names) and all(set(c) == {"name", "heading", "unit", "numeric"}
                                                     for c in part["columns"])
        assert all(list(row) == names for row in part["rows"])
    return doc


def column(doc: dict[str, Any], name: str) -> list[Any]:
    return [row[name] for row in doc["rows"]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("formats")
    profile = root / "profile.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile(), sort_keys=False))
    out = root / "result"
    return profile, out, cli("run", profile, "--output", out, "--format", "json", timeout=900)


def test_run_prints_only_its_summary_on_stdout(tiny_run: tuple[Path, Path, Any]) -> None:
    _, out, done = tiny_run
    doc = envelope(done, "run")
    (row,) = doc["rows"]
    manifest = json.loads((out / "manifest.json").read_text())
    summary = json.loads((out / manifest["cells"][0]["dir"] / "cell.json").read_text())
    assert row["cell_id"] == summary["cell_id"] and row["status"] == "COMPLETED"
    assert row["output_tok_s"] == summary["metrics"]["output_tok_s"]["value"] > 0
    assert row["ttft_p50"] == pytest.approx(summary["metrics"]["ttft"]["p50"] * 1000)  # its column's unit: ms
    assert doc["data"]["result_set"] == str(out) and doc["data"]["counts"]["COMPLETED"] == 1
    assert doc["notes"][-1] == f"1 completed, 0 failed; result set: {out}"
    assert "[1/1]" in done.stderr and "result set:" in done.stderr  # progress and per-cell lines went to stderr


def test_validate_lists_the_cells_the_run_ran(tiny_run: tuple[Path, Path, Any]) -> None:
    profile, out, _ = tiny_run
    doc = envelope(cli("validate", profile, "--format", "json"), "validate")
    (row,) = doc["rows"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert row["cell_id"] == manifest["cells"][0]["id"] and row["repetitions_min"] == 2
    assert row["minimum_measured_s"] >= 0 and doc["notes"][0].startswith("estimated total: at least")
    assert doc["data"]["minimum_s"] >= row["minimum_measured_s"]


def test_rerun_carries_both_tables(tiny_run: tuple[Path, Path, Any], tmp_path: Path) -> None:
    _, out, _ = tiny_run
    second = tmp_path / "again"
    done = cli("rerun", out, "--output", second, "--tolerance", "0.9", "--format", "json", timeout=900)
    agree = json.loads(done.stdout)["rows"][0]["agree"] if done.stdout else None
    doc = envelope(done, "rerun", code=0 if agree else 1)
    (row,) = doc["rows"]
    assert row["cell_id"] == json.loads((out / "manifest.json").read_text())["cells"][0]["id"]
    assert isinstance(row["output_tok_s_change"], float) and row["agree"] == (row["reasons"] == [])
    (summary,) = doc["tables"]
    assert summary["kind"] == "run" and summary["rows"][0]["cell_id"] == row["cell_id"]
    assert doc["data"] == {"first": str(out), "second": str(second), "tolerance": 0.9}


def test_table_holds_every_cell_in_display_units() -> None:
    doc = envelope(cli("table", DATA, "--format", "json"), "table")
    expected = cell_rows([DATA], ["output_tok_s", "ttft_p50"])
    assert len(doc["rows"]) == len(expected) >= 6
    by_cell = {(r["result_set"], r["cell_id"]): r for r in doc["rows"]}
    for row in expected:
        shown = by_cell[(row["result_set"], row["cell_id"])]
        assert shown["output_tok_s"] == row["output_tok_s"] and shown["ttft_p50"] == row["ttft_p50"]
    units = {c["name"]: c["unit"] for c in doc["columns"]}
    assert units["ttft_p50"] == "ms" and units["output_tok_s"] == "tok/s"


def test_compare_gates_and_says_so_in_json() -> None:
    done = cli("compare", NIGHTS[0], NIGHTS[2], "--fail-on", "decode_tok_s:-10%", "--format", "json")
    doc = envelope(done, "compare", code=1)
    assert doc["data"]["regressions"] and all("decode_tok_s" in line for line in doc["data"]["regressions"])
    assert doc["notes"][-1] == f"{len(doc['data']['regressions'])} regression(s) beyond --fail-on decode_tok_s:-10%"
    decode = [r for r in doc["rows"] if r["metric"] == "decode_tok_s"]
    assert len(decode) == 2 and all(r["verdict"] == "worse" and r["b"] < r["a"] for r in decode)
    assert any(r["metric"] == "note" and "INVALID" in r["note"] for r in doc["rows"])
    assert "REGRESSION" not in done.stdout.split('"notes"')[0]  # the lines are notes, not text before the JSON


def test_history_marks_the_contended_night() -> None:
    doc = envelope(cli("history", *NIGHTS, "--metric", "output_tok_s", "--format", "json"), "history")
    assert len(doc["rows"]) == 2
    for row in doc["rows"]:
        assert row["result_sets"] == [p.name for p in NIGHTS] and row["changes"] == [None, None, "worse"]
        assert row["values"][2] < row["values"][0] and row["unit"] == "tok/s"


def test_fit_and_its_check_against_measured_memory() -> None:
    doc = envelope(cli("fit", DATA / "calibration-cpu", "--memory-gib", "24", "--context", "8192", "--format",
                       "json"), "fit")
    fits = dict(zip(column(doc, "card"), column(doc, "fits"), strict=True))
    assert fits["llama-3.3-70b"] is False and fits["qwen2.5-0.5b"] is True
    assert doc["data"]["capacity_bytes"] == 24 * 2**30
    (check,) = doc["tables"]
    assert check["kind"] == "fit-check" and check["rows"] and all(r["measured_bytes"] > 0 for r in check["rows"])


def test_project_carries_the_projection() -> None:
    doc = envelope(cli("project", DATA / "calibration-cpu", "--hardware", "nvidia-h200", "--model", "llama-3.3-70b",
                       "--format", "json"), "project")
    assert column(doc, "batch_size") == [1, 8, 32]
    projection = doc["data"]["projection"]
    assert projection["label"] == "PROJECTION"
    assert column(doc, "decode_tok_s") == [r["decode"]["projected_tok_s"] for r in projection["rows"]]
    assert any("does not fit" in note for note in doc["notes"])


def test_plan_answers_in_json(capacity_result_set: Path) -> None:
    doc = envelope(cli("plan", capacity_result_set, "--model", "tiny-llama", "--users", "10", "--slo",
                       "ttft_p90<=50ms", "--format", "json"), "plan")
    row = next(r for r in doc["rows"] if r["search"] == "concurrency")
    assert row["nodes"] == 3 and row["users_per_node"] == 4 and row["cell_id"]


def test_models_lists_the_cards() -> None:
    doc = envelope(cli("models", "--format", "json"), "models")
    cards = {row["card"]: row for row in doc["rows"]}
    assert cards["tiny-llama"]["parameters"] > 0 and cards["llama-3.3-70b"]["bfloat16_bytes"] > 100 * 2**30


def test_env_json_is_the_inventory_and_json_is_its_alias() -> None:
    doc = envelope(cli("env", "--format", "json"), "env")
    inventory = doc["data"]["environment"]
    assert {"machine_id", "cpu", "memory", "gpus"} <= set(inventory)
    assert {"section": "Machine", "field": "machine id", "value": inventory["machine_id"]} in doc["rows"]
    alias = envelope(cli("env", "--json"), "env")
    assert alias["data"]["environment"]["machine_id"] == inventory["machine_id"]


def test_probe_quick_in_json() -> None:
    doc = envelope(cli("probe", "--quick", "--format", "json"), "probe")
    probes = doc["data"]["probes"]
    bandwidth = next(r for r in doc["rows"] if r["measure"] == "memory read bandwidth")
    assert bandwidth["value"] == probes["host_memory"]["read_gb_s"] > 0 and bandwidth["unit"] == "GB/s"


def test_calibrate_in_json(tmp_path: Path) -> None:
    done = cli("calibrate", "--users", "1", "--users", "4", "--duration", "1", "--tokens", "8", "--format", "json",
               env={"XDG_CACHE_HOME": str(tmp_path)})
    doc = envelope(done, "calibrate")
    assert column(doc, "users") == [1, 4] and all(r["requests_per_s"] > 0 for r in doc["rows"])
    assert doc["data"]["calibration"]["levels"][0]["users"] == 1
    assert Path(doc["data"]["saved"]).is_file() and str(tmp_path) in doc["data"]["saved"]


# --- the printers' other formats, on one table --------------------------------------------------


def small_table() -> Table:
    table = Table("demo", [Column("cell"), Column("rate", "rate\ntok/s", "tok/s", numeric=True, format=fixed(1)),
                           Column("shown", "status", machines=False, style=lambda value, row: "bold"),
                           Column("cell_id", people=False)],
                  title="two cells", row_style=lambda row: "strike" if row["shown"] == "INVALID" else None)
    table.add(cell="a | b", rate=1234.56, shown="VALID", cell_id="x1")
    table.add(cell="c_d", rate=None, shown="INVALID", cell_id="x2")
    table.note("50% of the cells are INVALID")
    return table


def test_markdown_latex_and_csv_of_one_table() -> None:
    markdown = document([small_table()], "markdown").splitlines()
    assert markdown[:2] == ["| cell | rate tok/s | status |", "|---|---|---|"]
    # an INVALID row is struck through, but for its status (a column with a style of its own)
    assert markdown[2] == "| a \\| b | 1,234.6 | VALID |" and markdown[3] == "| ~~c_d~~ | - | INVALID |"
    assert markdown[5:] == ["Table: two cells", "- 50% of the cells are INVALID"]
    latex = document([small_table()], "latex")
    assert latex.startswith("\\begin{tabular}{lrl}\n\\toprule\ncell & rate tok/s & status \\\\")
    assert "c\\_d & - & INVALID \\\\" in latex and latex.rstrip().endswith("% 50\\% of the cells are INVALID")
    rows = list(csv.reader(io.StringIO(document([small_table()], "csv"))))
    assert rows == [["cell", "rate (tok/s)", "cell_id"], ["a | b", "1234.56", "x1"], ["c_d", "", "x2"]]


def test_csv_notes_go_to_stderr_and_nothing_is_written_after_an_error() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    with Output("csv", "demo", stdout=stdout, stderr=stderr) as out:
        out.table(small_table())
        out.message("a message")
    assert stdout.getvalue().startswith("cell,rate (tok/s),cell_id") and "INVALID" not in stdout.getvalue()
    assert "50% of the cells are INVALID" in stderr.getvalue() and "a message" in stderr.getvalue()
    failed = io.StringIO()
    with pytest.raises(RuntimeError), Output("json", "demo", stdout=failed, stderr=io.StringIO()) as out:
        out.table(small_table())
        raise RuntimeError("the verb failed")
    assert failed.getvalue() == ""


def test_json_is_strict() -> None:
    table = small_table()
    table.add(cell="nan", rate=float("nan"), shown="VALID", cell_id=("x", 3))
    table.data = {"inf": float("inf"), "path": Path("/tmp")}
    doc = json.loads(document([table], "json"), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert doc["rows"][2] == {"cell": "nan", "rate": None, "cell_id": ["x", 3]}
    assert doc["data"] == {"inf": None, "path": "/tmp"} and doc["notes"] == ["50% of the cells are INVALID"]
