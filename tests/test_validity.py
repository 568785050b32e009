"""Validity verdicts: each rule checked on cell summaries built by hand, then the presets' sizes."""

from __future__ import annotations

import copy

import pytest

from bench.measure.validity import RULES, judge, required_samples


def clean_summary(n: int = 1200, reps: tuple[float, ...] = (100.0, 101.0, 99.0), duration: float = 900.0) -> dict:
    return {
        "status": "COMPLETED",
        "reason": None,
        "config": {"engine": {"kind": "transformers"}},
        "metrics": {
            "ttft": {"unit": "s", "n": n}, "e2e_latency": {"unit": "s", "n": n},
            "duration_s": {"unit": "s", "value": duration},
            "output_tok_s": {"unit": "tok/s", "value": 100.0, "per_repetition": list(reps)},
            "requests": {"unit": "requests", "total": n, "ok": n, "failed": 0, "errors": {}},
            "error_rate": {"unit": "fraction", "value": 0.0},
        },
        "telemetry": {"host": {"cpu_freq_mean_mhz": 3000.0, "cpu_freq_min_mhz": 2950.0}, "clock_event_reasons": []},
        "output_lengths": {"short": 0, "usage_mismatch": 0},
    }


def test_a_clean_long_cell_is_valid_for_procurement() -> None:
    verdict = judge(clean_summary(), "procurement")
    assert verdict == {"verdict": "VALID", "rules": "procurement", "for_procurement": True, "reasons": [],
                       "notes": []}


def test_p99_needs_a_thousand_samples_under_procurement() -> None:
    assert required_samples(RULES["procurement"]) == 1000
    assert required_samples(RULES["nightly"]) == 10


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(status="FAILED", reason="boom"), "did not complete: boom"),
        (lambda s: s["metrics"]["duration_s"].update(value=30.0), "measured for 30.0 s, less than the 600 s"),
        (lambda s: s["metrics"]["ttft"].update(n=200), "ttft: 200 samples, fewer than the 1000 needed to report p99"),
        (lambda s: s["output_lengths"].update(short=2), "2 request(s) ended early"),
        (lambda s: s["output_lengths"].update(usage_mismatch=1), "server's usage disagrees"),
        (lambda s: s["metrics"]["error_rate"].update(value=0.01), "error rate 1.0% above 0.0%"),
        (lambda s: s["metrics"]["output_tok_s"].update(per_repetition=[100.0, 130.0, 80.0]), "repetitions disagree"),
        (lambda s: s["metrics"]["output_tok_s"].update(per_repetition=[100.0]), "1 repetition(s), fewer than the 3"),
        (lambda s: s["telemetry"].update(clock_event_reasons=["sw_thermal_slowdown"]), "GPU throttled"),
        (lambda s: s["telemetry"]["host"].update(cpu_freq_min_mhz=2000.0), "CPU frequency dropped to 2000 MHz"),
        (lambda s: s.update(load_generator={"client_bound": True, "reason": "send lag p99 40 ms"}),
         "load generator, not the system under test"),
        (lambda s: s.update(engine_stats={"prefix_cache_hits": 12}), "12 prefix-cache hit(s)"),
    ],
)
def test_each_fault_invalidates_with_its_reason(mutate, expected: str) -> None:
    summary = clean_summary()
    mutate(summary)
    verdict = judge(summary, "procurement")
    assert verdict["verdict"] == "INVALID"
    assert any(expected in reason for reason in verdict["reasons"]), verdict["reasons"]


def test_every_reason_is_listed_not_only_the_first() -> None:
    summary = clean_summary(n=50, duration=10.0)
    summary["output_lengths"]["short"] = 1
    assert len(judge(summary, "procurement")["reasons"]) == 4  # duration, ttft n, e2e n, short output


def test_nightly_is_short_and_says_it_is_not_for_procurement() -> None:
    summary = clean_summary(n=20, duration=5.0)
    assert judge(summary, "procurement")["verdict"] == "INVALID"
    verdict = judge(copy.deepcopy(summary), "nightly")
    assert verdict["verdict"] == "VALID" and verdict["for_procurement"] is False


def _auto(summary: dict, precision: float | None, target: float = 0.02, done: int = 10) -> dict:
    summary["sizing"] = {"repetitions": {"mode": "auto", "minimum": 3, "maximum": 10, "done": done,
                                         "target_precision": target, "precision": precision}}
    return summary


def test_auto_repetitions_judge_precision_instead_of_noise() -> None:
    # Noisy repetitions that still reached the target precision (many of them): the noise rule is not asked.
    noisy = _auto(clean_summary(reps=(100.0, 130.0, 80.0)), precision=0.015)
    assert judge(noisy, "procurement")["verdict"] == "VALID"
    assert judge(clean_summary(reps=(100.0, 130.0, 80.0)), "procurement")["verdict"] == "INVALID"  # fixed: noise rule


def test_missing_the_precision_is_a_reason_for_procurement_and_a_note_at_night() -> None:
    missed = _auto(clean_summary(n=20, duration=5.0), precision=0.034)
    procurement = judge(copy.deepcopy(missed), "procurement")
    assert any("precision ±3.4%" in r and "short of the target ±2.0%" in r for r in procurement["reasons"])
    nightly = judge(missed, "nightly")
    assert nightly["verdict"] == "VALID"
    assert nightly["notes"] and "precision ±3.4% (95% half-width) after 10 repetition(s)" in nightly["notes"][0]
    reached = judge(_auto(clean_summary(n=20, duration=5.0), precision=0.019), "nightly")
    assert reached["notes"] == []
