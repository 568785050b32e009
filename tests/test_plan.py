"""plan: nodes, headroom and energy per day from real capacity cells (the calibration endpoint with a
known capacity, measured by the real pipeline), and the SLO of the question checked against the SLO
the cells were measured under."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.measure import capacity_search as capacity
from bench.planning.capacity_plan import compare_slo, parse_slo, plan
from bench.planning.power import catalogue_entry, measured
from bench.profile.run_settings import SLOSpec
from bench.results.records import read_records
from bench.results.resultset import ResultSet
from conftest import CAPACITY_SLOTS

EPYC_9654 = "AMD EPYC 9654 96-Core Processor"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=120)


def cells(path: Path) -> dict[str, dict]:
    """The capacity cells of a result set by their search: 'concurrency' and 'rate'."""
    result_set = ResultSet(path)
    summaries = [result_set.read_cell_summary(c["id"]) for c in result_set.read_manifest()["cells"]]
    return {s["capacity"]["search"]: s for s in summaries}


@pytest.fixture(scope="module")
def two_kinds(capacity_result_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real result set, and a copy whose manifest names another CPU: a second machine kind, one
    the hardware catalogue knows (so its power comes from the published figure)."""
    root = tmp_path_factory.mktemp("kinds")
    shutil.copytree(capacity_result_set, root / capacity_result_set.name)
    other = root / "capacity-epyc-9654"
    shutil.copytree(capacity_result_set, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["environment"]["cpu"]["model_name"] = EPYC_9654
    (other / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_nodes_and_headroom_from_a_concurrency_search(capacity_result_set: Path) -> None:
    measured_users = cells(capacity_result_set)["concurrency"]["capacity"]["best"]["load"]
    assert measured_users == CAPACITY_SLOTS  # the endpoint's known capacity
    rows = plan([capacity_result_set], "tiny-llama", 10, parse_slo("ttft_p90<=50ms"))
    row = next(r for r in rows if r["search"] == "concurrency")
    assert row["users_per_node"] == 4 and row["basis"] == "concurrency search"
    assert row["nodes"] == math.ceil(10 / 4) == 3
    assert row["headroom"] == pytest.approx((3 * 4 - 10) / (3 * 4))
    assert row["slo_check"] == "stricter" and row["answer"].startswith("conservative")
    exact = plan([capacity_result_set], "tiny-llama", 8, parse_slo("ttft_p90<=35ms"))
    row = next(r for r in exact if r["search"] == "concurrency")
    assert row["nodes"] == 2 and row["headroom"] == 0 and row["slo_check"] == "equal"


def test_a_rate_search_gives_users_by_littles_law_from_the_raw_records(capacity_result_set: Path) -> None:
    cell = cells(capacity_result_set)["rate"]
    records = read_records(ResultSet(capacity_result_set).cell_dir(cell["cell_id"]) / "records.jsonl.gz")
    objectives = SLOSpec.model_validate(cell["config"]["scenario"]["slo"])
    met = [p for p in capacity.probes(records, objectives) if p["verdict"] == "MET"]
    best = max(met, key=lambda p: p["load"])
    users = best["load"] * best["mean_e2e_s"]  # requests/s x mean time in the system
    assert 1 < users < CAPACITY_SLOTS  # below the slots: constant arrivals at the best rate never queue
    row = next(r for r in plan([capacity_result_set], "tiny-llama", 100, parse_slo("ttft_p90<=1s"))
               if r["search"] == "rate")
    assert row["users_per_node"] == pytest.approx(users) and "Little's law" in row["basis"]
    assert row["nodes"] == math.ceil(100 / users)
    assert row["headroom"] == pytest.approx((row["nodes"] * users - 100) / (row["nodes"] * users))


def test_a_cell_measured_under_a_looser_slo_cannot_answer(capacity_result_set: Path) -> None:
    rows = plan([capacity_result_set], "tiny-llama", 2000, parse_slo("ttft_p95<=2s,itl_p95<=100ms"))
    assert len(rows) == 2
    for row in rows:
        assert row["slo_check"] == "looser" and row["nodes"] is None and row["energy_kwh_per_day"] is None
        assert "TTFT was held at p90, asked p95" in row["answer"] and "ITL was not an objective" in row["answer"]
    tighter = plan([capacity_result_set], "tiny-llama", 10, parse_slo("ttft_p90<=20ms"))
    assert all("held within 35 ms, asked 20 ms" in r["answer"] for r in tighter)


def test_two_machine_kinds_with_energy_per_day(two_kinds: Path, capacity_result_set: Path) -> None:
    rows = [r for r in plan([two_kinds], "tiny-llama", 10, parse_slo("ttft_p90<=50ms")) if r["search"] == "concurrency"]
    by_machine = {r["machine"]: r for r in rows}
    assert len(by_machine) == 2 and EPYC_9654 in by_machine
    telemetry = cells(capacity_result_set)["concurrency"]["telemetry"]
    for machine, row in by_machine.items():
        assert row["nodes"] == 3
        power = measured(telemetry)  # a machine with RAPL or NVML measures its own draw
        if power is not None:
            assert row["power_source"].startswith("measured") and row["power_w"] == pytest.approx(power.watts)
        elif machine == EPYC_9654:
            assert row["power_source"] == "catalogue spec: amd-epyc-9654 360 W" and row["power_w"] == 360
        elif catalogue_entry(machine, "cpu") is None:
            assert row["power_source"].startswith("unknown") and row["energy_kwh_per_day"] is None
            continue
        assert row["energy_kwh_per_day"] == pytest.approx(row["power_w"] * 24 * 3 / 1000)


def test_power_is_measured_from_energy_counters_else_looked_up() -> None:
    telemetry = {"energy": {"items": [
        {"device": "gpu", "index": 0, "joules": 3000.0, "source": "nvml_energy_counter", "covered_s": 10.0},
        {"device": "cpu", "zone": "0", "domain": "package", "joules": 1200.0, "source": "rapl", "covered_s": 12.0},
        {"device": "cpu", "zone": "0:0", "domain": "core", "joules": 900.0, "source": "rapl", "covered_s": 12.0}]}}
    power = measured(telemetry)
    assert power is not None and power.watts == pytest.approx(300 + 100)  # core lies inside package
    assert measured({"energy": {"items": []}}) is None
    names = {"NVIDIA H100 80GB HBM3": "nvidia-h100-sxm", "NVIDIA H100 PCIe": "nvidia-h100-pcie",
             "NVIDIA H200": "nvidia-h200", "NVIDIA L4": "nvidia-l4", "NVIDIA L40S": "nvidia-l40s",
             "NVIDIA A100-SXM4-80GB": "nvidia-a100-80gb", "NVIDIA A100-SXM4-40GB": None}
    for name, key in names.items():
        found = catalogue_entry(name, "gpu")
        assert (found and found[0]) == key, name
    assert catalogue_entry("Intel(R) Xeon(R) 6980P", "cpu")[0] == "intel-xeon-6980p"
    assert catalogue_entry("AMD EPYC", "cpu") is None


def test_slo_parsing_and_comparison() -> None:
    question = parse_slo("ttft_p95<=2s, ITL_P95<=100ms,errors<=1%")
    assert [(o.metric, o.percentile, o.limit_s) for o in question.objectives] == [("ttft", 95, 2.0), ("itl", 95, 0.1)]
    assert question.max_error_rate == pytest.approx(0.01)
    held = {"percentile": 99, "ttft_s": 1.0, "itl_s": 0.1, "max_error_rate": 0.0}
    assert compare_slo(question, held)[0] == "stricter"
    assert compare_slo(parse_slo("ttft_p99<=1s,itl_p99<=100ms"), held) == ("equal", [])
    for bad in ("ttft_p95<2s", "ttft_p95<=2", "ttft_p95<=2s,foo", "ttft_p100<=2s", "errors<=1%"):
        with pytest.raises(BenchError, match="--slo"):
            parse_slo(bad)


def test_cli_formats_and_errors(two_kinds: Path) -> None:
    done = cli("plan", str(two_kinds), "--model", "TINY LLAMA (SYNTHETIC)", "--users", "10", "--slo", "ttft_p90<=50ms",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]  # the rows of the JSON envelope (docs/output-formats.md)
    assert len(rows) == 4 and {r["nodes"] for r in rows if r["search"] == "concurrency"} == {3}
    done = cli("plan", str(two_kinds), "--model", "tiny-llama", "--users", "10", "--slo", "ttft_p90<=50ms",
               "--format", "markdown")
    assert done.returncode == 0 and done.stdout.startswith("| machine |") and EPYC_9654 in done.stdout
    done = cli("plan", str(two_kinds), "--model", "tiny-llama", "--users", "10", "--slo", "ttft_p90<=50ms")
    assert done.returncode == 0 and "plan: 10 concurrent users of tiny-llama" in done.stdout
    bad = cli("plan", str(two_kinds), "--model", "tiny-llama", "--users", "10", "--slo", "ttft_p95<=2s,itl<=1s")
    assert bad.returncode == 2 and "'itl<=1s' is not an objective" in bad.stderr and "Traceback" not in bad.stderr
    unknown = cli("plan", str(two_kinds), "--model", "llama-3.3-70b", "--users", "10", "--slo", "ttft_p95<=2s")
    assert unknown.returncode == 2 and "models with capacity cells: tiny-llama" in unknown.stderr


def test_report_shows_capacity_per_node_and_a_labelled_projection(capacity_result_set: Path) -> None:
    from bench.readers.report import render_report

    calibration = Path(__file__).parent / "data" / "calibration-cpu"
    text = render_report([capacity_result_set, calibration])
    section = text[text.index("<h2>Capacity and projections</h2>"):text.index("<h2>Environment inventories</h2>")]
    assert "concurrency search</td>" in section and "<td class='num'>4.00</td>" in section  # the known 4 users
    assert "Projection: decode tokens/s against model size" in section and "PROJECTION (hollow)" in section
    assert section.count("<svg") == 1 and "<script" not in section
    plain = render_report([Path(__file__).parent / "data" / "nightly-1"])  # no capacity cells, no rooflines
    assert "Capacity and projections" not in plain


def test_project_plot_marks_projections(tmp_path: Path) -> None:
    from bench.planning.projection import calibration_samples, catalogue_limits, size_points

    calibration = Path(__file__).parent / "data" / "calibration-cpu"
    samples = calibration_samples([calibration])
    target = ("nvidia-h200", catalogue_limits("nvidia-h200", "bfloat16"))
    points = size_points([calibration], samples, "transformers", 1, 512, 128, ["qwen2.5-72b"], target)
    measured_models = {p["model"] for p in points if not p["projected"]}
    assert measured_models == {"tiny-llama", "qwen2.5-0.5b", "llama-3.2-1b"}
    projected = {(p["machine"], p["model"]) for p in points if p["projected"]}
    assert {("nvidia-h200", m) for m in [*measured_models, "qwen2.5-72b"]} <= projected
    assert all(p["error"] is not None for p in points if p["projected"])
    done = cli("project", str(calibration), "--hardware", "nvidia-h200", "--model", "qwen2.5-72b",
               "--plot", str(tmp_path / "sizes.svg"))
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "sizes.svg").read_text()
    assert "projected" in svg and "measured" in svg and "nvidia-h200" in svg
