"""The verbs about this machine: `env` (its inventory), `probe` (its limits) and `calibrate` (how
far its load generator can be trusted). One function per verb, taking the parsed options and an
Output, returning the exit code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.errors import EXIT_FAILED_CELLS, EXIT_OK
from bench.readers.printing import Column, Output, Table, fixed, yes_no


def env_command(args: argparse.Namespace, out: Output) -> int:
    from bench.run.environment import collect_environment
    from bench.run.environment_view import environment_table, format_environment

    environment = collect_environment()
    if out.for_people:  # panels read better than a three-column table
        out.console.print(format_environment(environment))
    else:
        out.table(environment_table(environment))
    return EXIT_OK


def probe_table(probes: dict[str, Any]) -> Table:
    """One row per measured figure: device, measure, value and unit (people read them together)."""
    def shown(value: Any, row: Any) -> str:
        if value is None:
            return "-"
        return f"{value:,.{row['digits']}f} {row['unit']}"

    seconds = probes.get("seconds")
    table = Table("probe", [Column("device"), Column("measure"),
                            Column("value", numeric=True, format=shown), Column("unit", people=False)],
                  title=f"probes ({seconds:.1f} s)" if seconds is not None else "probes", data={"probes": probes})

    def add(device: str, measure: str, value: float | None, unit: str, digits: int = 1) -> None:
        table.add(device=device, measure=measure, value=value, unit=unit, digits=digits)

    def add_matmul(device: str, matmul: dict[str, Any]) -> None:
        for name in ("float32", "bfloat16", "float16"):
            rate = matmul.get(f"{name}_tflops")
            add(device, f"matmul {name}", None if rate is None else rate * 1000, "GFLOP/s")
        rate = matmul.get("int8_tops")
        add(device, "matmul int8", None if rate is None else rate * 1000, "GOP/s")

    if probes.get("error"):
        table.note(f"the probes failed: {probes['error']}", "red")
        return table
    add("host", "memory read bandwidth", probes["host_memory"]["read_gb_s"], "GB/s")
    add_matmul("host", probes["host_matmul"])
    for disk in probes["disk"]:
        add("disk", f"read {disk['directory']}", disk["read_gb_s"], "GB/s", 2)
    for gpu in probes["gpus"]:
        device = f"GPU {gpu['index']} {gpu['name']}"
        add(device, "memory bandwidth (copy)", gpu["memory_bandwidth_gb_s"], "GB/s", 0)
        add(device, "host to device", gpu["h2d_gb_s"], "GB/s")
        add(device, "device to host", gpu["d2h_gb_s"], "GB/s")
        add_matmul(device, gpu["matmul"])
    if probes.get("all_reduce"):
        reduce = probes["all_reduce"]
        add(f"{reduce['gpus']} GPUs", "all-reduce bus bandwidth", reduce["bus_bandwidth_gb_s"], "GB/s")
    return table


def probe_command(args: argparse.Namespace, out: Output) -> int:
    from bench.netguard import apply_offline_env
    from bench.run.probes import probe_in_subprocess

    apply_offline_env()
    with out.status("probing (memory bandwidth, matrix multiply per dtype, disk, GPUs)..."):
        probes = probe_in_subprocess(quick=args.quick, model_dirs=[Path(d) for d in args.model_dir])
    out.table(probe_table(probes))
    return EXIT_FAILED_CELLS if probes.get("error") else EXIT_OK


def calibration_table(result: dict[str, Any], ttft: float, itl: float) -> Table:
    """One row per load level: throughput, the timing errors the client adds, and whether to trust it."""
    def errors(name: str) -> Any:
        return lambda value, row: f"{row[name + '_p50_ms']:+.2f} / {row[name + '_p99_ms']:+.2f}"

    def ms(name: str) -> Column:
        return Column(name, unit="ms", numeric=True, people=False)

    table = Table("calibrate", [
        Column("users", "streams", numeric=True),
        Column("requests_per_s", "req/s", "1/s", numeric=True, format=fixed(1)),
        Column("tokens_per_s", "tok/s", "tok/s", numeric=True, format=fixed(0)),
        Column("ttft_error", "TTFT error p50/p99 ms", numeric=True, format=errors("ttft_error"), machines=False),
        Column("itl_error", "ITL error p50/p99 ms", numeric=True, format=errors("itl_error"), machines=False),
        ms("ttft_error_p50_ms"), ms("ttft_error_p99_ms"), ms("itl_error_p50_ms"), ms("itl_error_p99_ms"),
        Column("client_cpu_fraction", "client CPU", "fraction", numeric=True,
               format=lambda v, row: "-" if v is None else f"{v:.0%}"),
        Column("trustworthy", "trusted", numeric=True, format=yes_no),
    ], title=f"load generator against an endpoint answering TTFT {ttft * 1000:g} ms, ITL {itl * 1000:g} ms",
        data={"calibration": result})
    for level in result["levels"]:
        ttft_error, itl_error = level["ttft_error_s"], level["itl_error_s"]
        table.add(users=level["users"], requests_per_s=level["requests_per_s"], tokens_per_s=level["tokens_per_s"],
                  ttft_error_p50_ms=ttft_error["p50"] * 1000, ttft_error_p99_ms=ttft_error["p99"] * 1000,
                  itl_error_p50_ms=itl_error["p50"] * 1000, itl_error_p99_ms=itl_error["p99"] * 1000,
                  client_cpu_fraction=level["client_cpu_fraction"], trustworthy=level["trustworthy"])
    ceiling = result["ceiling"]
    if ceiling:
        table.note(f"ceiling: {ceiling['requests_per_s']:,.1f} requests/s, {ceiling['tokens_per_s']:,.0f} streamed "
                   f"tokens/s at {ceiling['users']} streams with p99 timing errors within "
                   f"{result['error_bound_s'] * 1000:g} ms")
    else:
        table.note("no level kept its p99 timing errors within bounds", "red")
    return table


def calibrate_command(args: argparse.Namespace, out: Output) -> int:
    from bench.netguard import NetworkGuard, apply_offline_env
    from bench.run.environment import collect_environment
    from bench.serving.calibrate import calibrate, save_latest

    apply_offline_env()
    NetworkGuard.install([], None)  # the load generator talks to loopback only
    levels = args.users or [1, 16, 64, 128, 256]
    with out.status("calibrating the load generator") as status:
        result = calibrate(args.ttft, args.itl, levels, args.tokens, args.duration,
                           progress=lambda users: status.update(f"{users} concurrent stream(s)"))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    saved = save_latest(result, collect_environment()["machine_id"])  # served runs record it in their manifest
    table = calibration_table(result, args.ttft, args.itl)
    table.note(f"saved for this machine's result sets: {saved}")
    table.data["saved"] = str(saved)
    out.table(table)
    return EXIT_OK
