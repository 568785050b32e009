"""The measurement plan (bench/measure/sizing.py): floors of time and count from the profile and the rules,
auto repetitions and their precision, the time estimate; and the request streams that a longer run
continues, so the first requests are the same on every machine."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from scipy import stats

from bench.measure import slo
from bench.measure.metric_registry import span
from bench.measure.sizing import (
    RepetitionPlan,
    estimate_run,
    plan_measurement,
    precise_enough,
    relative_half_width,
    sizing_summary,
    steady,
)
from bench.profile.cells import expand
from bench.profile.loading import load_profile
from bench.profile.points import ScenarioPoint
from bench.profile.run_settings import RunSettings
from bench.profile.workload_specs import WorkloadSpec
from bench.profile.workloads import TokenSpace, file_requests, request_stream, synthetic_requests
from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext
from bench.scenarios.served import arrival_stream, arrival_times
from conftest import REPO

SINGLE = {"kind": "single-stream", "requests": 4, "batch_size": 1}


def plan_of(run: dict, point: dict):  # the typed settings and point a cell carries, from plain data
    return plan_measurement(RunSettings.model_validate(run), TypeAdapter(ScenarioPoint).validate_python(point))


def test_nightly_floors_apply_without_the_profile_saying_so() -> None:
    plan = plan_of({"repetitions": 3, "rules": "nightly"}, SINGLE)
    assert plan.min_duration_s == 1.0 and plan.min_duration_per_repetition_s == pytest.approx(1 / 3)
    assert plan.min_requests_per_repetition == 4  # 10 samples for p90 over 3 repetitions: the profile's 4 suffice
    assert "nightly rules" in plan.why["min_duration_s"]
    one = plan_of({"repetitions": 1, "rules": "nightly"}, SINGLE)
    assert one.min_requests_per_repetition == 10 and "10 samples for p90" in one.why["min_requests_per_repetition"]


def test_procurement_needs_600_s_and_p99_samples_spread_over_repetitions() -> None:
    plan = plan_of({"repetitions": "auto", "rules": "procurement"}, SINGLE)
    assert plan.repetitions == RepetitionPlan("auto", 3, 10, 0.02)
    assert plan.min_duration_s == 600 and plan.min_duration_per_repetition_s == 200
    assert plan.min_requests_per_repetition == 334  # ceil(1000 / 3)
    assert plan.minimum_measured_s() == 600
    # a profile asking for less than the rules is overruled, and the record says so
    lower = plan_of({"repetitions": 3, "rules": "procurement", "min_duration_s": 60}, SINGLE)
    assert lower.min_duration_s == 600 and "above run.min_duration_s 60 s" in lower.why["min_duration_s"]
    higher = plan_of({"repetitions": 3, "rules": "procurement", "min_duration_s": 900}, SINGLE)
    assert higher.min_duration_s == 900 and higher.why["min_duration_s"] == "run.min_duration_s 900 s"


def test_counts_round_up_to_whole_batches_and_runs() -> None:
    offline = plan_of({"repetitions": 1}, {"kind": "offline", "batch_size": 8, "requests": 8})
    assert offline.min_requests_per_repetition == 16  # 10 samples -> two batches of 8
    runs = plan_of({"repetitions": 1}, {"kind": "prefill-decode", "batch_size": 4, "requests": 1,
                                                 "depth": 0, "prompt_tokens": 8, "gen_tokens": 4})
    assert runs.min_requests_per_repetition == 12  # three runs of 4 rows


def test_a_capacity_probe_measures_the_whole_floor() -> None:
    point = {"kind": "capacity", "search": "rate", "start": 1, "max": 8, "steps": 1,
             "slo": {"percentile": 90, "ttft_s": 1}}
    plan = plan_of({"repetitions": 3, "min_duration_s": 5}, point)
    assert plan.repetitions.maximum == 1 and plan.min_duration_per_repetition_s == 5
    assert plan.min_requests_per_repetition == slo.min_requests(90) > 10  # 10 beyond p90 for the SLO


def test_the_cell_timeout_follows_from_the_plan_unless_set() -> None:
    derived = plan_of({"repetitions": "auto", "rules": "procurement"}, SINGLE)
    assert derived.cell_timeout_s == 1800 + 2 * 10 * 200
    assert "start-up allowance" in derived.why["cell_timeout_s"]
    given = plan_of({"repetitions": "auto", "cell_timeout_s": 99}, SINGLE)
    assert given.cell_timeout_s == 99 and given.why["cell_timeout_s"] == "run.cell_timeout_s"


def test_half_width_is_students_t_over_the_mean() -> None:
    values = [100.0, 104.0, 98.0, 101.0]
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    expected = stats.t.ppf(0.975, 3) * sd / len(values) ** 0.5 / mean
    assert relative_half_width(values) == pytest.approx(expected)
    assert relative_half_width([5.0]) is None
    auto = RepetitionPlan("auto", 3, 10, 0.02)
    assert not precise_enough([100.0, 100.5], auto)  # below the minimum
    assert precise_enough([100.0, 100.5, 100.2], auto)
    assert not precise_enough([100.0, 110.0, 90.0, 105.0], auto)
    assert precise_enough([100.0], RepetitionPlan("fixed", 1, 1, None))


def test_warm_up_is_steady_when_two_batches_agree() -> None:
    assert not steady([100.0], 0.1)
    assert not steady([50.0, 100.0], 0.1)
    assert steady([50.0, 95.0, 100.0], 0.1)


def test_a_longer_stream_begins_with_the_same_requests() -> None:
    space = TokenSpace(512, frozenset({0}))
    workload = WorkloadSpec(name="w", seed=7, input_tokens={"dist": "uniform", "min": 4, "max": 40},
                            output_tokens={"dist": "fixed", "value": 5}, shared_prefix_tokens=2)
    long = list(itertools.islice(request_stream(workload, space, stream=2), 200))
    assert long[:30] == synthetic_requests(workload, 30, space, stream=2)
    assert [r.index for r in long] == list(range(200))
    endless = arrival_stream(3.0, "poisson", 1.0, 4)
    assert arrival_times(25, 3.0, "poisson", 1.0, 4) == list(itertools.islice(endless, 25))


def test_a_prompt_file_stream_keeps_its_cycle_from_the_minimum_count(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "text {i}"}}\n' for i in range(7)))
    workload = WorkloadSpec(name="w", seed=1, prompts_file=str(prompts), output_tokens={"dist": "fixed", "value": 3})

    def encode(text: str) -> list[int]:
        return [ord(c) for c in text]

    for stream in (0, 1, 3):
        expected = file_requests(workload, 5, encode, stream)
        longer = list(itertools.islice(request_stream(workload, TokenSpace(1), stream, encode, anchor=5), 12))
        assert longer[:5] == expected


def test_the_sizing_summary_reports_the_precision_from_the_measured_repetitions() -> None:
    plan = plan_of({"repetitions": "auto"}, SINGLE)
    report = {"plan": plan.to_json(), "repetitions_done": 4, "warmup": {"batches": 2, "steady": True},
              "per_repetition": [{"requests": 9, "seconds": 0.5, "bound": "duration"}]}
    metrics = {"output_tok_s": {"per_repetition": [100.0, 101.0, 99.0, 100.0]}}
    summary = sizing_summary(report, metrics)
    assert summary["repetitions"]["done"] == 4 and summary["repetitions"]["met"] is True
    assert summary["repetitions"]["precision"] == pytest.approx(relative_half_width([100.0, 101.0, 99.0, 100.0]))
    assert summary["warmup"]["mode"] == "fixed" and summary["warmup"]["batches"] == 2


def test_the_shipped_profiles_keep_their_cell_ids_and_estimate_their_time() -> None:
    for name in ("quickstart", "cpu-server", "serve-cpu", "vllm-cpu"):
        path = REPO / "profiles" / f"{name}.yaml"
        cells = expand(load_profile(path), path)
        estimate = estimate_run(cells)
        assert len(estimate.cells) == len(cells) and estimate.minimum_s > 0
        assert "estimated total: at least" in estimate.describe()


@pytest.mark.parametrize("result_set", ["results/examples/quickstart-2core-epyc-vm", "tests/data/nightly-1",
                                        "tests/data/nightly-2", "tests/data/nightly-3-contended",
                                        "tests/data/calibration-cpu"])
def test_the_committed_result_sets_profiles_still_expand_to_their_cell_ids(result_set: str) -> None:
    """Nightly history survives: the profile stored in an old result set expands to the same cells today."""
    from bench.profile.loading import profile_from_text
    from bench.results.resultset import ResultSet

    manifest = ResultSet(REPO / result_set).read_manifest()
    anchor = REPO / result_set / "profile.yaml"  # relative paths in these profiles resolve beside the set
    cells = expand(profile_from_text(manifest["profile"]["source"], anchor), anchor)
    assert sorted(c.id for c in cells) == sorted(c["id"] for c in manifest["cells"])


def test_validate_prints_each_cells_plan_and_the_total() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "validate", str(REPO / "profiles" / "quickstart.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "auto 3-8" in text and "measured at least" in text and "estimated total: at least" in text


def test_a_sequential_repetitions_time_floor_holds_on_its_records_own_span() -> None:
    """Each batch ends at once, then its bookkeeping takes 40 ms: the wall clock at the check runs past the
    records' last end every time. The repetition must go on until the records' own span (first submit to
    last end, what validity measures) holds the floor, not stop when the wall clock alone does."""
    plan = plan_of({"repetitions": 1}, SINGLE)  # the nightly floors: 1 s and 10 requests
    t0 = time.perf_counter()
    ctx = ScenarioContext(engine=None, scenario=SINGLE, workload=None, plan=plan, t0=t0,  # type: ignore[arg-type]
                          progress=lambda *a: None)

    def run_batch(index: int) -> list[RequestRecord]:
        now = time.perf_counter() - t0
        record = RequestRecord(index, 0, index, 1, 8, 1, submit_time=now, first_token_time=now, end_time=now,
                               output_tokens=1)
        time.sleep(0.04)
        return [record]

    records = ctx.sequential_repetition(0, run_batch)
    assert span(records) >= plan.min_duration_per_repetition_s == 1.0
    assert ctx.issued[0]["bound"] == "duration" and ctx.issued[0]["requests"] == len(records) > 10
