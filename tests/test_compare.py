"""compare and table on real result sets made by the suite (tests/data/README.md says how):
nightly-1 and nightly-2 are the same profile run twice; nightly-3-contended is the same profile run
while two busy-loop processes held both cores: a real slowdown with the same cell ids."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.readers.compare import compare, parse_fail_on, split_metric
from bench.readers.printing import render
from bench.readers.tables import cell_rows

DATA = Path(__file__).parent / "data"
BASE, REPEAT, SLOW = DATA / "nightly-1", DATA / "nightly-2", DATA / "nightly-3-contended"
GATE = "decode_tok_s:-10%,output_tok_s:-10%,ttft_p50:+25%"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=120)


def test_planted_regression_fails_the_gate_naming_cell_and_metric() -> None:
    done = cli("compare", str(BASE), str(SLOW), "--fail-on", GATE)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REGRESSION tiny-llama" in done.stdout and "decode_tok_s" in done.stdout


def test_repeated_runs_pass_the_gate() -> None:
    done = cli("compare", str(BASE), str(REPEAT), "--fail-on", GATE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 regression(s)" in done.stdout


def test_every_cell_is_matched_or_listed_with_a_reason(tmp_path: Path) -> None:
    result = compare(BASE, SLOW)
    assert len(result.cells) == 2 and result.unmatched == [] and result.same_machine
    copy = tmp_path / "copy"
    shutil.copytree(REPEAT, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    dropped = manifest["cells"].pop()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = compare(BASE, copy)
    assert [u["cell"] for u in result.unmatched] == [dropped["id"]] and "only in A" in result.unmatched[0]["reason"]


def test_bad_gate_and_metric_names_exit_2() -> None:
    for args in (("--fail-on", "decode_tok_s:5"), ("--fail-on", "speed:-5%"), ("--metric", "output_tok_s_p99")):
        done = cli("compare", str(BASE), str(REPEAT), *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, args
    with pytest.raises(BenchError):
        parse_fail_on("")
    assert split_metric("ttft_p99") == ("ttft", "p99") and split_metric("decode_tok_s") == ("decode_tok_s", None)


def test_tables_in_every_format() -> None:
    metrics = ["decode_tok_s", "ttft_p99"]
    rows = cell_rows([DATA], metrics)
    assert len(rows) >= 6 and all(r["decode_tok_s"] > 0 for r in rows if r["status"] == "COMPLETED")
    columns = ["cell", *metrics]
    headings = {"decode_tok_s": "decode_tok_s (tok/s)", "ttft_p99": "ttft_p99 (ms)"}
    parsed = list(csv.reader(io.StringIO(render(rows, columns, "csv", headings))))
    assert parsed[0] == ["cell", "decode_tok_s (tok/s)", "ttft_p99 (ms)"] and len(parsed) == len(rows) + 1
    markdown = render(rows, columns, "markdown", headings).splitlines()
    assert markdown[1] == "|---|---|---|" and len(markdown) == len(rows) + 2
    latex = render(rows, columns, "latex", headings)
    assert latex.startswith(r"\begin{tabular}{lrr}") and r"\toprule" in latex and r"\bottomrule" in latex
    assert r"decode\_tok\_s" in latex and latex.count(r"\\") == len(rows) + 1
    assert json.loads(render(rows, columns, "json", headings))["rows"][0]["cell"] == rows[0]["cell"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_table_compiles(tmp_path: Path) -> None:
    table = cli("table", str(BASE), "--format", "latex").stdout
    (tmp_path / "t.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + table
                                    + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True,
                          timeout=120)
    assert done.returncode == 0 and (tmp_path / "t.pdf").exists()


def test_a_p99_from_fifty_samples_is_not_compared() -> None:
    """p99 needs 1000 samples per side (10 beyond it), as the validity rules ask."""
    result = compare(BASE, REPEAT, ["ttft_p99", "ttft_p50"])
    for cell in result.cells:
        p99, p50 = cell.metrics
        assert p99.verdict.call == "insufficient data" and p99.a is not None
        assert p50.verdict.call != "insufficient data"
