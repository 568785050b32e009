"""Projections: what a machine not measured, or a model not run, would most likely deliver.

The performance model is the roofline (bench/measure/roofline.py) plus what the software costs, fitted
per engine and phase on measured cells: a step takes slowdown x its roofline time + a fixed
overhead (see StepModel). A projection applies that to the roofline of the target (a card on a
machine from the hardware catalogue, or on a measured machine's probes). Its error bar is the
error the model makes on measured cells held out of the calibration one at a time; it cannot see
the extra uncertainty of extrapolating to other hardware or far larger models, and the output says
so. Projections are labelled as such wherever they appear.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bench.errors import BenchError
from bench.measure.roofline import bounds, cell_shape, for_cell, model_inputs
from bench.results.load import Source, load_result_sets

PHASES = ("decode", "prefill")


@dataclass(frozen=True)
class Sample:
    """One measured cell's phase: its engine, its bound on its own machine, what it achieved, and how
    many tokens one step of that phase handles (a decode step: batch; a prefill: batch x prompt)."""

    label: str
    engine: str
    phase: str
    bound: float
    measured: float
    tokens_per_step: float
    batch: int = 1

    @property
    def bound_step_s(self) -> float:
        return self.tokens_per_step / self.bound

    @property
    def measured_step_s(self) -> float:
        return self.tokens_per_step / self.measured


@dataclass(frozen=True)
class StepModel:
    """Measured step time = slowdown x roofline step time + fixed overhead per step. The overhead
    (Python, kernel launches, scheduling) is what makes small models far from their roofline; the
    slowdown is how far the kernels are from the hardware's limit. Both are fitted per engine and
    phase by least squares; with too little spread in the calibration cells to tell them apart,
    the overhead is taken as zero and the slowdown as the median ratio."""

    slowdown: float
    overhead_s: float

    def tok_s(self, bound_tok_s: float, tokens_per_step: float) -> float:
        return tokens_per_step / (self.slowdown * tokens_per_step / bound_tok_s + self.overhead_s)


def fit_step_model(samples: list[Sample]) -> StepModel | None:
    if not samples:
        return None
    xs = [s.bound_step_s for s in samples]
    ys = [s.measured_step_s for s in samples]
    ratio = StepModel(max(1.0, statistics.median(y / x for x, y in zip(xs, ys, strict=True))), 0.0)
    if len(samples) < 3 or max(xs) < 2 * min(xs):
        return ratio
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    intercept = mean_y - slope * mean_x
    if slope < 1.0 or intercept < 0:  # nothing beats the roofline; no negative overhead: keep it simple
        return ratio
    return StepModel(slope, intercept)


def catalogue() -> dict[str, dict[str, Any]]:
    text = resources.files("bench.planning.hardware").joinpath("catalogue.json").read_text(encoding="utf-8")
    return json.loads(text)["entries"]


def catalogue_limits(name: str, dtype: str, devices: int = 1) -> dict[str, Any]:
    entries = catalogue()
    if name not in entries:
        raise BenchError(f"unknown hardware {name!r}; the catalogue has: {', '.join(sorted(entries))}")
    entry = entries[name]
    tflops = entry["tflops"].get(dtype)
    if tflops is None:
        raise BenchError(f"{name}: no published {dtype} throughput in the catalogue")
    # Tensor parallelism splits weights and work over devices: aggregate bandwidth and FLOP/s.
    return {"device": name, "dtype": dtype, "bandwidth_bytes_s": entry["memory_bandwidth_gb_s"] * 1e9 * devices,
            "flops_s": tflops * 1e12 * devices, "memory_bytes": entry["memory_gib"] * 2**30 * devices,
            "entry": entry, "devices": devices}


def calibration_samples(result_dirs: Source | Iterable[Source]) -> list[Sample]:
    """Every completed cell with a roofline in the given result sets (or the sets below a folder)."""
    samples = []
    for result_set in load_result_sets(result_dirs):
        for cell in result_set.cells:
            summary = cell.summary
            if not summary:
                continue
            roof = summary.get("roofline") or for_cell(summary, result_set.probes)
            if not roof:
                continue
            engine = summary["config"]["engine"]["kind"]
            shape = cell_shape(summary)
            steps = {"decode": shape["batch"], "prefill": shape["batch"] * shape["prompt"]}
            for phase in PHASES:
                part = roof.get(phase) or {}
                if part.get("measured_tok_s") and part.get("bound_tok_s"):
                    samples.append(Sample(summary["label"], engine, phase, part["bound_tok_s"],
                                          part["measured_tok_s"], steps[phase], int(shape["batch"])))
    return samples


def step_model(samples: list[Sample], engine: str, phase: str, batch: int,
               exclude: Sample | None = None) -> StepModel | None:
    """The step model of an engine in a phase, fitted on the cells whose batch size is nearest to
    `batch` (kernels' efficiency changes with the batch: a CPU decoding 4 rows is not 4 times a
    row), of all engines when that one was never measured."""
    import math

    pool = [s for s in samples if s.phase == phase and s is not exclude]
    pool = [s for s in pool if s.engine == engine] or pool
    if not pool:
        return None
    nearest = min(abs(math.log(s.batch / batch)) for s in pool)
    return fit_step_model([s for s in pool if abs(math.log(s.batch / batch)) == nearest])


def held_out_errors(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """Per phase: predict each measured cell from the others; the typical error is the median
    absolute relative error, p90 the error nine in ten projections stay within."""
    out = {}
    for phase in PHASES:
        errors = []
        for sample in (s for s in samples if s.phase == phase):
            model = step_model(samples, sample.engine, phase, sample.batch, exclude=sample)
            if model is not None:
                errors.append(abs(model.tok_s(sample.bound, sample.tokens_per_step) / sample.measured - 1))
        errors.sort()
        out[phase] = {
            "cells": len(errors),
            "typical_error": statistics.median(errors) if errors else None,
            "p90_error": errors[min(len(errors) - 1, int(0.9 * len(errors)))] if errors else None,
        }
    return out


def project(samples: list[Sample], card_config: dict[str, Any], limits: dict[str, Any], engine: str,
            batch_sizes: list[int], prompt: int, output: int, quantization: str | None = None,
            kv_cache_type: str | None = None) -> dict[str, Any]:
    """Projected prefill and decode tok/s, TTFT and ITL per batch size, with held-out error bars.
    `quantization` (a GGUF type): the weights at its estimated size, the KV cache at `kv_cache_type`."""
    gguf = None
    if quantization is not None:
        from bench.models.cards import Card
        from bench.models.gguf_types import weight_bytes_estimate

        card = Card("model", "model", None, "", "", card_config)
        total = weight_bytes_estimate(card.parameter_count(), quantization)
        # an input embedding beside a separate output matrix is looked up, not read, per step
        tied = bool(card_config.get("tie_word_embeddings", card_config.get("model_type") == "gemma2"))
        embedding = 0 if tied else weight_bytes_estimate(
            int(card_config["vocab_size"]) * int(card_config["hidden_size"]), quantization)
        gguf = {"tensor_bytes": total, "decode_read_bytes": total - embedding, "file_type": quantization}
    inputs = model_inputs(card_config, limits["dtype"], gguf=gguf, kv_cache_type=kv_cache_type)
    if inputs is None:
        raise BenchError("the analytic size formulas do not know this model's architecture")
    errors = held_out_errors(samples)
    rows = []
    for batch in batch_sizes:
        phase_bounds = bounds(inputs, limits, batch, prompt, output)
        row: dict[str, Any] = {"batch_size": batch}
        steps = {"decode": batch, "prefill": batch * prompt}
        for phase in PHASES:
            limited_by = min(phase_bounds[phase], key=phase_bounds[phase].__getitem__)
            bound = phase_bounds[phase][limited_by]
            model = step_model(samples, engine, phase, batch)
            value = None if model is None else model.tok_s(bound, steps[phase])
            row[phase] = {"bound_tok_s": bound, "limited_by": limited_by, "projected_tok_s": value,
                          "slowdown": model and model.slowdown, "overhead_s_per_step": model and model.overhead_s,
                          "error": errors[phase]["typical_error"]}
        decode, prefill = row["decode"]["projected_tok_s"], row["prefill"]["projected_tok_s"]
        row["itl_s"] = batch / decode if decode else None
        row["ttft_s"] = batch * prompt / prefill if prefill else None
        rows.append(row)
    needed = inputs["weight_bytes"] + max(batch_sizes) * (prompt + output) * inputs["kv_cache_bytes_per_token"]
    return {
        "label": "PROJECTION",
        "engine": engine,
        "hardware": {k: v for k, v in limits.items() if k != "entry"},
        "model_bytes_needed": needed,
        "fits": None if "memory_bytes" not in limits else needed <= limits["memory_bytes"],
        "rows": rows,
        "held_out": errors,
        "calibration_cells": sorted({s.label for s in samples}),
        "caveat": "error bars are held-out errors on the measured cells; extrapolating to other hardware or "
                  "much larger models adds uncertainty they cannot show",
    }


def size_points(result_dirs: Source | Iterable[Source], samples: list[Sample], engine: str, batch: int,
                prompt: int, output: int, cards: list[str],
                target: tuple[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Decode tok/s against model size, per machine: what each measured machine's cells achieved at
    `batch`, and the projection for every measured card plus `cards` on that machine (from its probes)
    and on `target` (a name and its limits), each projection with its held-out error."""
    from bench.measure.roofline import hardware_limits
    from bench.models import UnknownCardError, load_card
    from bench.planning.capacity_plan import machine_kind

    points: list[dict[str, Any]] = []
    machines: list[tuple[str, dict[str, Any]]] = []
    names = list(dict.fromkeys(cards))
    for result_set in load_result_sets(result_dirs):
        machine = machine_kind(result_set.environment)
        devices = []
        for cell in result_set.cells:
            summary = cell.summary or {}
            decode = ((summary.get("roofline") or {}).get("decode") or {}).get("measured_tok_s")
            if not decode or cell_shape(summary)["batch"] != batch:
                continue
            model = summary.get("model") or {}
            points.append({"machine": machine, "model": model.get("name"), "decode_tok_s": decode,
                           "parameters": model.get("parameter_count"), "projected": False, "error": None})
            engine = summary["engine"]  # llama.cpp names the FLOP/s that stand in for its quantised kernels
            devices.append((str(engine.get("device", "cpu")), str(engine.get("compute_dtype") or engine.get("dtype"))))
            if summary["config"]["model"].get("card"):
                names.append(summary["config"]["model"]["card"])
        if devices and (limits := hardware_limits(result_set.probes, *max(devices, key=devices.count))):
            machines.append((machine, limits))
    if target is not None:
        machines.append(target)
    for machine, limits in machines:
        for name in dict.fromkeys(names):
            try:
                card = load_card(name)
            except UnknownCardError:
                continue
            row = project(samples, card.config, limits, engine, [batch], prompt, output)["rows"][0]["decode"]
            if row["projected_tok_s"]:
                points.append({"machine": machine, "model": name, "parameters": card.parameter_count(),
                               "decode_tok_s": row["projected_tok_s"], "projected": True, "error": row["error"]})
    return points
