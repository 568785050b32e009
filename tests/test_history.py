"""History over the committed nightly runs: the contended night is marked, the repeat is not; the
exports parse as the tools that read them expect."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.readers.history import collect

DATA = Path(__file__).parent / "data"
NIGHTS = [DATA / "nightly-1", DATA / "nightly-2", DATA / "nightly-3-contended"]


def test_change_points_mark_the_slow_night_only() -> None:
    series = collect(NIGHTS, "decode_tok_s")
    assert len(series) == 2
    for one in series:
        assert [p.result_set for p in one.points] == ["nightly-1", "nightly-2", "nightly-3-contended"]
        assert [p.change for p in one.points] == [None, None, "worse"]


def test_history_command_draws_and_exports(tmp_path: Path) -> None:
    trend, bench_json, prom = tmp_path / "trend.png", tmp_path / "bench.json", tmp_path / "metrics.prom"
    done = subprocess.run([sys.executable, "-m", "bench", "history", *map(str, NIGHTS), "--metric", "output_tok_s",
                           "-o", str(trend), "--pytest-benchmark", str(bench_json), "--prometheus", str(prom)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "worse at nightly-3-contended" in done.stdout and trend.stat().st_size > 10_000
    exported = json.loads(bench_json.read_text())
    assert len(exported["benchmarks"]) == 2
    for benchmark in exported["benchmarks"]:
        stats = benchmark["stats"]
        assert stats["min"] <= stats["median"] <= stats["max"] and stats["ops"] > 0 and stats["rounds"] > 0
    sample = re.compile(r'^lokaal_bench_output_tok_s\{cell_id="[0-9a-f]{16}",cell="[^"]+",'
                        r'result_set="nightly-3-contended",machine_id="[0-9a-f]*"\} [0-9.e+-]+$')
    lines = prom.read_text().splitlines()
    assert lines[0].startswith("# HELP lokaal_bench_output_tok_s") and lines[1].endswith("gauge")
    assert len([line for line in lines if sample.match(line)]) == 2
