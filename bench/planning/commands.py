"""The planning verbs: `models` (the cards), `fit` (what fits in memory), `project` (a machine or
model not measured) and `plan` (nodes for N users within an SLO). One function per verb, taking the
parsed options and an Output, returning the exit code."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import EXIT_OK, BenchError
from bench.readers.printing import Column, Output, Table, fixed, percent

GIB = 2**30


def _gib(digits: int = 2) -> Any:
    return lambda value, row: "-" if value is None else f"{value / GIB:.{digits}f}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def models_table() -> Table:
    from bench.models import list_cards

    table = Table("models", [
        Column("card"), Column("model"), Column("architecture"),
        Column("parameters", numeric=True, format=lambda v, row: _count(v)),
        Column("float32_bytes", "fp32 GiB", "bytes", numeric=True, format=_gib()),
        Column("bfloat16_bytes", "bf16/fp16 GiB", "bytes", numeric=True, format=_gib()),
        Column("context", unit="tokens", numeric=True, format=lambda v, row: "?" if v is None else f"{v:,}"),
    ], title="architecture cards (published configs; weights are synthetic)")
    for card in list_cards():
        config = card.config
        table.add(card=card.name, model=card.display_name, architecture=config.get("model_type", "?"),
                  parameters=card.parameter_count(), float32_bytes=card.weight_bytes("float32"),
                  bfloat16_bytes=card.weight_bytes("bfloat16"), context=config.get("max_position_embeddings") or None)
    return table


def models_command(args: argparse.Namespace, out: Output) -> int:
    out.table(models_table())
    return EXIT_OK


def fit_command(args: argparse.Namespace, out: Output) -> int:
    """Which cards fit, the longest context and the most sequences; with result sets, the formula
    held against their measured peak memory (a second table, `fit-check`)."""
    from bench.models import list_cards, load_card
    from bench.planning.memory_fit import capacity_of, fit_memory, largest, measured_check
    from bench.run.environment import collect_environment

    capacity = int(args.memory_gib * GIB) if args.memory_gib else capacity_of(collect_environment(), args.device,
                                                                               args.gpus)
    if capacity <= 0:
        raise BenchError(f"no {args.device} memory found on this machine; give --memory-gib")
    cards = [load_card(name) for name in args.card] if args.card else list_cards()
    where = f"{capacity / GIB:.1f} GiB ({args.device}{f' x{args.gpus}' if args.device == 'gpu' else ''})"
    gguf = {"quantization": args.quantization, "kv_cache_type": args.kv_cache_type}
    kind = (f"{args.quantization} (llama.cpp, KV cache {args.kv_cache_type or 'f16'})" if args.quantization
            else args.dtype)
    table = Table("fit", [
        Column("card"),
        *(Column(f"{part}_bytes", f"{heading} GiB", "bytes", numeric=True, format=_gib())
          for part, heading in (("weights", "weights"), ("kv_cache", "KV cache"), ("activations", "activations"),
                                ("needed", "needed"))),
        Column("fits", format=lambda v, row: "yes" if v else "no", style=lambda v, row: "green" if v else "red"),
        Column("longest_context", f"longest context x{args.concurrency}", "tokens", numeric=True, format=fixed(0)),
        Column("most_sequences", f"most sequences @{args.context:,}", numeric=True, format=fixed(0)),
    ], title=f"fit in {where} at context {args.context:,} x {args.concurrency} sequence(s), {kind}",
        data={"capacity_bytes": capacity, "device": args.device, "gpus": args.gpus, "dtype": args.dtype,
              "context": args.context, "concurrency": args.concurrency, **gguf})
    for card in cards:
        result = fit_memory(card, args.dtype, args.context, args.concurrency, capacity, args.device, **gguf)
        table.add(card=card.name, weights_bytes=result.weights, kv_cache_bytes=result.kv_cache,
                  activations_bytes=result.activations, needed_bytes=result.needed, fits=result.fits,
                  longest_context=largest(card, args.dtype, capacity, args.device, concurrency=args.concurrency,
                                          **gguf),
                  most_sequences=largest(card, args.dtype, capacity, args.device, context=args.context, **gguf))
    out.table(table)
    if args.results:
        from bench.results.load import load_result_set

        summaries = [c.summary for d in args.results for c in load_result_set(d).cells if c.summary]
        check = Table("fit-check", [
            Column("cell"), Column("predicted_bytes", "predicted GiB", "bytes", numeric=True, format=_gib()),
            Column("measured_bytes", "measured GiB", "bytes", numeric=True, format=_gib()),
            Column("error", unit="fraction", numeric=True, format=percent(0, signed=True)),
        ], title="the formula against measured peak memory")
        for row in measured_check(summaries):
            check.add(cell=row["cell"], predicted_bytes=row["predicted_bytes"], measured_bytes=row["measured_bytes"],
                      error=row["error"])
        out.table(check)
    return EXIT_OK


def projection_table(result: dict[str, Any], title: str) -> Table:
    """`project`: per batch size, projected rates with their held-out error, latencies, the limit."""
    def with_error(phase: str) -> Any:
        def text(value: Any, row: Any) -> str:
            if value is None:
                return "-"
            error = row[f"{phase}_error"]
            return f"{value:,.1f}" + (f" ±{error:.0%}" if error is not None else "")

        return text

    table = Table("project", [
        Column("batch_size", "batch", numeric=True),
        Column("prefill_tok_s", "prefill tok/s", "tok/s", numeric=True, format=with_error("prefill")),
        Column("prefill_error", unit="fraction", numeric=True, people=False),
        Column("decode_tok_s", "decode tok/s", "tok/s", numeric=True, format=with_error("decode")),
        Column("decode_error", unit="fraction", numeric=True, people=False),
        Column("ttft_ms", "TTFT ms", "ms", numeric=True, format=fixed(0)),
        Column("itl_ms", "ITL ms", "ms", numeric=True, format=fixed(1)),
        Column("prefill_limited_by", people=False),
        Column("decode_limited_by", "decode limited by"),
    ], title=title, data={"projection": result})
    for row in result["rows"]:
        table.add(batch_size=row["batch_size"], prefill_tok_s=row["prefill"]["projected_tok_s"],
                  prefill_error=row["prefill"]["error"], decode_tok_s=row["decode"]["projected_tok_s"],
                  decode_error=row["decode"]["error"],
                  ttft_ms=None if row["ttft_s"] is None else row["ttft_s"] * 1000,
                  itl_ms=None if row["itl_s"] is None else row["itl_s"] * 1000,
                  prefill_limited_by=row["prefill"]["limited_by"], decode_limited_by=row["decode"]["limited_by"])
    held = result["held_out"]
    table.note(f"calibrated on {len(result['calibration_cells'])} measured cell(s); held-out typical error: "
               f"decode {held['decode']['typical_error'] or 0:.0%} ({held['decode']['cells']} cells), prefill "
               f"{held['prefill']['typical_error'] or 0:.0%} ({held['prefill']['cells']} cells)")
    if result["fits"] is False:
        table.note(f"does not fit: needs {result['model_bytes_needed'] / GIB:.0f} GiB for weights and KV cache; "
                   "use more devices (--devices)", "red")
    table.note(result["caveat"], "yellow")
    return table


def project_command(args: argparse.Namespace, out: Output) -> int:
    from bench.measure.roofline import hardware_limits
    from bench.models import load_card
    from bench.planning.projection import calibration_samples, catalogue_limits, project
    from bench.results.load import load_result_set, load_result_sets

    sets = load_result_sets([Path(p) for p in args.results])  # read once: calibration and the plot
    samples = calibration_samples(sets)
    if not samples:
        raise BenchError(f"no completed cells with a roofline in {', '.join(args.results)}: nothing to calibrate on")
    # llama.cpp's quantised kernels: the float32 FLOP/s stand in on the CPU, as in its cells' rooflines
    compute = "float32" if args.quantization and args.device == "cpu" else args.dtype
    if Path(args.hardware).is_dir():  # a measured machine: its probes stand in for the catalogue
        probes = load_result_set(args.hardware).probes
        limits = hardware_limits(probes, "cpu" if args.device == "cpu" else "cuda:0", compute)
        if limits is None:
            raise BenchError(f"{args.hardware}: no probes for {args.device}/{compute} in that result set")
    else:
        limits = catalogue_limits(args.hardware, compute, args.devices)
    result = project(samples, load_card(args.model).config, limits, args.engine, args.batch or [1, 8, 32],
                     args.prompt, args.output_tokens, quantization=args.quantization,
                     kv_cache_type=args.kv_cache_type)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    where = f"{args.hardware}" + (f" x{args.devices}" if args.devices > 1 else "")
    weights = args.quantization or args.dtype
    out.table(projection_table(result, f"PROJECTION: {args.model} ({weights}) on {where} with {args.engine}, "
                                       f"{args.prompt} prompt + {args.output_tokens} output tokens"))
    if args.plot:
        from bench.planning.projection import size_points
        from bench.readers import plots

        batch = (args.batch or [1])[0]
        source = "measured probes" if Path(args.hardware).is_dir() else "catalogue"
        target = (f"{where} {args.dtype} ({source})", limits)
        points = size_points(sets, samples, args.engine, batch, args.prompt,
                             args.output_tokens, [args.model], target)
        plots.save(plots.projection_vs_size(points, batch), Path(args.plot))
        out.message(f"figure: {args.plot} (measured filled, projected hollow)")
    return EXIT_OK


def plan_table(rows: list[dict[str, Any]], title: str) -> Table:
    """`plan`: one row per capacity cell of the model. People read the answering columns; machines
    get every field plan_row computes, in its order, under its own name."""
    shown = {
        "machine": Column("machine"), "host": Column("host"), "engine": Column("engine"),
        "workload": Column("workload"), "users_per_node": Column("users_per_node", "users/node", numeric=True),
        "basis": Column("basis"), "nodes": Column("nodes", numeric=True),
        "headroom": Column("headroom", numeric=True, format=percent(1)),
        "energy_kwh_per_day": Column("energy_kwh_per_day", "kWh/day", numeric=True),
        "power_w": Column("power_w", "power W", numeric=True,
                          format=lambda v, row: "-" if v is None else str(round(v))),
        "power_source": Column("power_source", "power from"), "answer": Column("answer", "SLO check"),
        "notes": Column("notes"),
    }
    if not any(row["notes"] for row in rows):
        del shown["notes"]
    numeric = {"users_per_node", "nodes", "headroom", "energy_kwh_per_day", "power_w"}
    fields = list(rows[0]) if rows else []
    table = Table("plan", [
        *(replace(column, machines=False) for column in shown.values()),
        *(Column(name, numeric=name in numeric, people=False) for name in fields),
    ], title=title, caption="users/node: concurrent requests in flight (closed loop, no think time); "
                            "kWh/day: mean power at the measured load x 24 h x nodes")
    table.rows = [dict(row) for row in rows]
    return table


def plan_command(args: argparse.Namespace, out: Output) -> int:
    from bench.planning.capacity_plan import parse_slo, plan

    question = parse_slo(args.slo)
    rows = plan([Path(p) for p in args.results], args.model, args.users, question)
    out.table(plan_table(rows, f"plan: {args.users:,} concurrent users of {args.model} within {question.describe()}"))
    return EXIT_OK
