"""Projections: the step model recovers a known software cost; errors come from held-out cells."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.models import load_card
from bench.planning.projection import (
    Sample,
    StepModel,
    catalogue,
    catalogue_limits,
    fit_step_model,
    held_out_errors,
    project,
)


def synthetic(slowdown: float, overhead: float, bounds: list[float], noise: list[float] | None = None) -> list[Sample]:
    """Cells measured on a machine whose software costs exactly `slowdown` and `overhead` (x noise)."""
    noise = noise or [1.0] * len(bounds)
    samples = []
    for i, (bound, factor) in enumerate(zip(bounds, noise, strict=True)):
        measured = StepModel(slowdown, overhead).tok_s(bound, 1) * factor
        samples.append(Sample(f"cell {i}", "transformers", "decode", bound, measured, 1))
    return samples


def test_step_model_recovers_slowdown_and_overhead() -> None:
    model = fit_step_model(synthetic(1.25, 0.006, [1000.0, 200.0, 40.0, 8.0]))
    assert model.slowdown == pytest.approx(1.25) and model.overhead_s == pytest.approx(0.006)


def test_without_spread_the_overhead_is_not_guessed() -> None:
    model = fit_step_model(synthetic(1.25, 0.006, [1000.0, 1100.0, 1200.0]))
    assert model.overhead_s == 0.0 and model.slowdown > 1.25  # the ratio absorbs the overhead


def test_held_out_error_is_the_error_made_on_each_cell_left_out() -> None:
    exact = synthetic(1.25, 0.006, [1000.0, 200.0, 40.0, 8.0])
    assert held_out_errors(exact)["decode"]["typical_error"] == pytest.approx(0.0, abs=1e-9)
    noisy = synthetic(1.25, 0.006, [1000.0, 200.0, 40.0, 8.0, 100.0], noise=[1.1, 0.9, 1.05, 0.95, 1.0])
    errors = held_out_errors(noisy)["decode"]
    assert errors["cells"] == 5 and 0.01 < errors["typical_error"] < 0.5


def test_catalogue_projection_is_labelled_and_bounded() -> None:
    assert {"nvidia-h200", "nvidia-h100-sxm", "amd-epyc-9654"} <= set(catalogue())
    limits = catalogue_limits("nvidia-h200", "bfloat16", devices=2)
    assert limits["bandwidth_bytes_s"] == 2 * 4800e9
    samples = synthetic(1.5, 0.004, [2000.0, 300.0, 50.0, 10.0])
    samples += [Sample(s.label, s.engine, "prefill", s.bound * 50, s.measured * 40, 64) for s in samples]
    result = project(samples, load_card("llama-3.3-70b").config, limits, "transformers", [1, 8], 512, 128)
    assert result["label"] == "PROJECTION" and result["fits"] is True
    one, eight = result["rows"]
    assert 0 < one["decode"]["projected_tok_s"] < one["decode"]["bound_tok_s"]
    assert eight["decode"]["projected_tok_s"] > one["decode"]["projected_tok_s"]
    assert one["itl_s"] == pytest.approx(1 / one["decode"]["projected_tok_s"])


def test_unknown_hardware_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="unknown hardware 'h900'"):
        catalogue_limits("h900", "bfloat16")
