"""The command line: parses arguments, calls one function per verb, maps errors to exit codes.

Exit codes: 0 success, 1 a run finished with FAILED cells, 2 bad input (message, no traceback),
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bench import __version__
from bench.errors import BenchError

EXIT_OK, EXIT_FAILED_CELLS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _execute_run(profile_path: Path, args: argparse.Namespace, console: Console,
                 source: str | None = None) -> tuple[int, Path]:
    """Plan, run with progress, print the summary; returns the exit code and the result set's path."""
    from bench.run.display import RunDisplay, summary_table
    from bench.run.environment import collect_environment
    from bench.run.runner import Runner, RunObserver, plan_run

    environment = collect_environment()
    plan = plan_run(profile_path, Path(args.results_dir), Path(args.output) if args.output else None,
                    Path(args.resume) if getattr(args, "resume", None) else None, environment["machine_id"],
                    source=source)
    console.print(f"profile {profile_path} ({plan.profile.name}): {len(plan.cells)} cell(s)")
    with RunDisplay(console) as display:
        observer = RunObserver(display.run_started, display.cell_started, display.cell_event,
                               display.cell_finished, display.message, display.model_progress)
        runner = Runner(plan, environment, observer)
        try:
            manifest = runner.run()
        except KeyboardInterrupt:
            console.print(f"\ninterrupted; completed cells are kept. Resume with:\n  lokaal-bench run "
                          f"{profile_path} --resume {plan.result_set.path}")
            return EXIT_INTERRUPTED, plan.result_set.path
    summaries = [runner.summaries[c.id] for c in plan.cells if c.id in runner.summaries]
    table, failures = summary_table(summaries)
    console.print(table)
    for failure in failures:
        console.print(failure, markup=False, highlight=False)
    counts = manifest["counts"]
    refused = manifest["offline"]["refused"]
    if refused:
        console.print(f"[red]{len(refused)} outbound connection attempt(s) refused[/] (see manifest offline.refused)")
    console.print(f"{counts['COMPLETED']} completed, {counts['FAILED']} failed; result set: "
                  f"[bold]{plan.result_set.path}[/]")
    return (EXIT_FAILED_CELLS if counts["FAILED"] else EXIT_OK), plan.result_set.path


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from bench.run.runner import default_profile

    code, _ = _execute_run(Path(args.profile) if args.profile else default_profile(), args, console)
    return code


def _cmd_rerun(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bench.readers.rerun import agreement, stored_profile

    first = Path(args.result_dir)
    anchor, source = stored_profile(first)
    code, second = _execute_run(anchor, args, console, source=source)
    if code == EXIT_INTERRUPTED:
        return code
    rows = agreement(first, second, args.tolerance)
    table = Table(title=f"reproducibility: {first} against {second} (tolerance ±{args.tolerance:.0%})")
    for heading in ("cell", "output tok/s", "decode tok/s", "same outputs", "agree"):
        table.add_column(heading)
    for row in rows:
        diffs = row["differences"]
        changes = [f"{diffs[m]:+.1%}" if m in diffs else "-" for m in ("output_tok_s", "decode_tok_s")]
        same = {True: "yes", False: "no", None: "-"}[row.get("same_outputs")]
        table.add_row(row["label"], *changes, same, "yes" if row["agree"] else "NO: " + "; ".join(row["reasons"]))
    console.print(table)
    agreeing = sum(row["agree"] for row in rows)
    console.print(f"{agreeing} of {len(rows)} cell(s) agree within ±{args.tolerance:.0%}")
    return code if agreeing == len(rows) else EXIT_FAILED_CELLS


def _cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bench.measure.sizing import estimate_run, format_duration
    from bench.profile.cells import expand
    from bench.profile.spec import load_profile

    path = Path(args.profile)
    profile = load_profile(path)
    cells = expand(profile, path)
    estimate = estimate_run(cells)
    table = Table(title=f"{path}: valid, {len(cells)} cell(s)")
    for heading in ("cell id", "label", "repetitions", "at least", "measured at least", "up to"):
        table.add_column(heading, justify="right" if heading in ("measured at least", "up to") else "left")
    for cell, planned in zip(cells, estimate.cells, strict=True):
        plan = planned.plan
        reps = plan.repetitions
        table.add_row(cell.id, cell.label,
                      str(reps.minimum) if reps.mode == "fixed" else f"auto {reps.minimum}-{reps.maximum}",
                      f"{plan.min_requests_per_repetition} req, {plan.min_duration_per_repetition_s:.3g} s"
                      + (" per probe" if planned.probes > 1 else " per rep."),
                      format_duration(planned.minimum_measured_s),
                      format_duration(planned.maximum_measured_s) if planned.maximum_measured_s is not None else "-")
    console.print(table)
    console.print(estimate.describe(), highlight=False)
    return EXIT_OK


def _cmd_models(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bench.models import list_cards

    table = Table(title="architecture cards (published configs; weights are synthetic)")
    for heading in ("card", "model", "architecture", "parameters", "fp32 GiB", "bf16/fp16 GiB", "context"):
        table.add_column(heading, justify="right" if heading not in ("card", "model", "architecture") else "left")
    for card in list_cards():
        config = card.config
        table.add_row(
            card.name,
            card.display_name,
            config.get("model_type", "?"),
            _count(card.parameter_count()),
            f"{card.weight_bytes('float32') / 2**30:.2f}",
            f"{card.weight_bytes('bfloat16') / 2**30:.2f}",
            f"{config.get('max_position_embeddings', '?'):,}" if config.get("max_position_embeddings") else "?",
        )
    console.print(table)
    return EXIT_OK


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _cmd_env(args: argparse.Namespace, console: Console) -> int:
    import json

    from bench.run.environment import collect_environment, format_environment

    environment = collect_environment()
    if args.json:
        sys.stdout.write(json.dumps(environment, indent=2, default=str) + "\n")
    else:
        console.print(format_environment(environment))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, console: Console) -> int:
    from bench.results.integrity import describe, verify

    outcome = verify(Path(args.result_dir), Path(args.public_key) if args.public_key else None)
    if outcome.ok:
        console.print(f"{args.result_dir}: OK, {outcome.files_checked} file(s) match their recorded SHA-256; "
                      f"signature {outcome.signature}", highlight=False)
        if outcome.upgraded_from is not None:
            from bench.results.upgrade import SCHEMA_VERSION

            console.print(f"written with result-set schema v{outcome.upgraded_from}: readers upgrade it to "
                          f"v{SCHEMA_VERSION} on read, the files stay as sealed", highlight=False)
        return EXIT_OK
    console.print(f"{args.result_dir}: FAILED verification: {describe(outcome)}", highlight=False, markup=False)
    return EXIT_FAILED_CELLS


def _cmd_sign(args: argparse.Namespace, console: Console) -> int:
    from bench.results.integrity import sign

    path = sign(Path(args.result_dir), Path(args.key))
    console.print(f"signed: {path}", highlight=False)
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace, console: Console) -> int:
    from bench.results.integrity import generate_keypair

    generate_keypair(Path(args.private), Path(args.public))
    console.print(f"Ed25519 key pair: private {args.private} (keep it secret), public {args.public} (share it)",
                  highlight=False)
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from bench.netguard import apply_offline_env
    from bench.run.probes import probe_in_subprocess

    apply_offline_env()
    with console.status("probing (memory bandwidth, matrix multiply per dtype, disk, GPUs)..."):
        probes = probe_in_subprocess(quick=args.quick, model_dirs=[Path(d) for d in args.model_dir])
    if args.json or probes.get("error"):
        sys.stdout.write(json.dumps(probes, indent=2) + "\n")
        return EXIT_FAILED_CELLS if probes.get("error") else EXIT_OK
    table = Table(title=f"probes ({probes['seconds']:.1f} s)")
    table.add_column("device")
    table.add_column("measure")
    table.add_column("value", justify="right")

    def add_matmul(device: str, matmul: dict) -> None:
        for name in ("float32", "bfloat16", "float16"):
            rate = matmul.get(f"{name}_tflops")
            table.add_row(device, f"matmul {name}", "-" if rate is None else f"{rate * 1000:,.1f} GFLOP/s")
        rate = matmul.get("int8_tops")
        table.add_row(device, "matmul int8", "-" if rate is None else f"{rate * 1000:,.1f} GOP/s")

    table.add_row("host", "memory read bandwidth", f"{probes['host_memory']['read_gb_s']:.1f} GB/s")
    add_matmul("host", probes["host_matmul"])
    for disk in probes["disk"]:
        table.add_row("disk", f"read {disk['directory']}", f"{disk['read_gb_s']:.2f} GB/s")
    for gpu in probes["gpus"]:
        device = f"GPU {gpu['index']} {gpu['name']}"
        table.add_row(device, "memory bandwidth (copy)", f"{gpu['memory_bandwidth_gb_s']:.0f} GB/s")
        table.add_row(device, "host to device / device to host", f"{gpu['h2d_gb_s']:.1f} / {gpu['d2h_gb_s']:.1f} GB/s")
        add_matmul(device, gpu["matmul"])
    if probes.get("all_reduce"):
        reduce = probes["all_reduce"]
        table.add_row(f"{reduce['gpus']} GPUs", "all-reduce bus bandwidth", f"{reduce['bus_bandwidth_gb_s']:.1f} GB/s")
    console.print(table)
    return EXIT_OK


def _cmd_fit(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bench.models import list_cards, load_card
    from bench.planning.memory_fit import capacity_of, fit, largest, measured_check
    from bench.run.environment import collect_environment

    capacity = int(args.memory_gib * 2**30) if args.memory_gib else capacity_of(collect_environment(), args.device,
                                                                                   args.gpus)
    if capacity <= 0:
        raise BenchError(f"no {args.device} memory found on this machine; give --memory-gib")
    cards = [load_card(name) for name in args.card] if args.card else list_cards()
    where = f"{capacity / 2**30:.1f} GiB ({args.device}{f' x{args.gpus}' if args.device == 'gpu' else ''})"
    table = Table(title=f"fit in {where} at context {args.context:,} x {args.concurrency} sequence(s), {args.dtype}")
    for heading in ("card", "weights GiB", "KV cache GiB", "activations GiB", "needed GiB", "fits",
                    f"longest context x{args.concurrency}", f"most sequences @{args.context:,}"):
        table.add_column(heading, justify="left" if heading in ("card", "fits") else "right")
    for card in cards:
        result = fit(card, args.dtype, args.context, args.concurrency, capacity, args.device)
        table.add_row(
            card.name, f"{result.weights / 2**30:.2f}", f"{result.kv_cache / 2**30:.2f}",
            f"{result.activations / 2**30:.2f}", f"{result.needed / 2**30:.2f}",
            "[green]yes[/]" if result.fits else "[red]no[/]",
            f"{largest(card, args.dtype, capacity, args.device, concurrency=args.concurrency):,}",
            f"{largest(card, args.dtype, capacity, args.device, context=args.context):,}",
        )
    console.print(table)
    if args.results:
        from bench.results.load import load_result_set

        summaries = [c.summary for d in args.results for c in load_result_set(d).cells if c.summary]
        check = Table(title="the formula against measured peak memory")
        for heading in ("cell", "predicted GiB", "measured GiB", "error"):
            check.add_column(heading, justify="left" if heading == "cell" else "right")
        for row in measured_check(summaries):
            check.add_row(row["cell"], f"{row['predicted_bytes'] / 2**30:.2f}", f"{row['measured_bytes'] / 2**30:.2f}",
                          f"{row['error']:+.0%}")
        console.print(check)
    return EXIT_OK


def _cmd_project(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from bench.measure.roofline import hardware_limits
    from bench.models import load_card
    from bench.planning.projection import calibration_samples, catalogue_limits, project
    from bench.results.load import load_result_set, load_result_sets

    sets = load_result_sets([Path(p) for p in args.results])  # read once: calibration and the plot
    samples = calibration_samples(sets)
    if not samples:
        raise BenchError(f"no completed cells with a roofline in {', '.join(args.results)}: nothing to calibrate on")
    if Path(args.hardware).is_dir():  # a measured machine: its probes stand in for the catalogue
        probes = load_result_set(args.hardware).probes
        limits = hardware_limits(probes, "cpu" if args.device == "cpu" else "cuda:0", args.dtype)
        if limits is None:
            raise BenchError(f"{args.hardware}: no probes for {args.device}/{args.dtype} in that result set")
    else:
        limits = catalogue_limits(args.hardware, args.dtype, args.devices)
    result = project(samples, load_card(args.model).config, limits, args.engine, args.batch or [1, 8, 32],
                     args.prompt, args.output_tokens)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    where = f"{args.hardware}" + (f" x{args.devices}" if args.devices > 1 else "")
    table = Table(title=f"PROJECTION: {args.model} ({args.dtype}) on {where} with {args.engine}, "
                        f"{args.prompt} prompt + {args.output_tokens} output tokens")
    for heading in ("batch", "prefill tok/s", "decode tok/s", "TTFT ms", "ITL ms", "decode limited by"):
        table.add_column(heading, justify="right")

    def with_error(value: float | None, error: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:,.1f}" + (f" ±{error:.0%}" if error is not None else "")

    for row in result["rows"]:
        table.add_row(str(row["batch_size"]), with_error(row["prefill"]["projected_tok_s"], row["prefill"]["error"]),
                      with_error(row["decode"]["projected_tok_s"], row["decode"]["error"]),
                      "-" if row["ttft_s"] is None else f"{row['ttft_s'] * 1000:,.0f}",
                      "-" if row["itl_s"] is None else f"{row['itl_s'] * 1000:,.1f}", row["decode"]["limited_by"])
    console.print(table)
    held = result["held_out"]
    console.print(f"calibrated on {len(result['calibration_cells'])} measured cell(s); held-out typical error: "
                  f"decode {held['decode']['typical_error'] or 0:.0%} ({held['decode']['cells']} cells), prefill "
                  f"{held['prefill']['typical_error'] or 0:.0%} ({held['prefill']['cells']} cells)", highlight=False)
    if result["fits"] is False:
        console.print(f"[red]does not fit[/]: needs {result['model_bytes_needed'] / 2**30:.0f} GiB for weights and KV "
                      f"cache; use more devices (--devices)")
    console.print(f"[yellow]{result['caveat']}[/]")
    if args.plot:
        from bench.planning.projection import size_points
        from bench.readers import plots

        batch = (args.batch or [1])[0]
        source = "measured probes" if Path(args.hardware).is_dir() else "catalogue"
        target = (f"{where} {args.dtype} ({source})", limits)
        points = size_points(sets, samples, args.engine, batch, args.prompt,
                             args.output_tokens, [args.model], target)
        plots.save(plots.projection_vs_size(points, batch), Path(args.plot))
        console.print(f"figure: {args.plot} (measured filled, projected hollow)", highlight=False)
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from bench.planning.capacity_plan import parse_slo, plan
    from bench.readers.tables import render, terminal_table

    question = parse_slo(args.slo)
    rows = plan([Path(p) for p in args.results], args.model, args.users, question)
    if args.format in ("csv", "json"):
        sys.stdout.write(render(rows, list(rows[0]), args.format, {}))
        return EXIT_OK
    shown = [{**row, "headroom": None if row["headroom"] is None else f"{row['headroom']:.1%}",
              "power_w": None if row["power_w"] is None else round(row["power_w"])} for row in rows]
    columns = ["machine", "host", "engine", "workload", "users_per_node", "basis", "nodes", "headroom",
               "energy_kwh_per_day", "power_w", "power_source", "answer"]
    columns += ["notes"] if any(row["notes"] for row in rows) else []
    headings = {"users_per_node": "users/node", "energy_kwh_per_day": "kWh/day", "power_w": "power W",
                "power_source": "power from", "answer": "SLO check"}
    title = f"plan: {args.users:,} concurrent users of {args.model} within {question.describe()}"
    if args.format != "terminal":
        sys.stdout.write(render(shown, columns, args.format, headings))
        return EXIT_OK
    numeric = {"users_per_node", "nodes", "headroom", "energy_kwh_per_day", "power_w"}
    console.print(terminal_table(shown, columns, headings, title, numeric,
                                 caption="users/node: concurrent requests in flight (closed loop, no think time); "
                                         "kWh/day: mean power at the measured load x 24 h x nodes"))
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bench.readers.compare import compare, parse_fail_on, regressions

    thresholds = parse_fail_on(args.fail_on) if args.fail_on else []
    metrics = args.metric or None
    if thresholds:  # every gated metric is compared, whatever --metric says
        metrics = list(dict.fromkeys([*(metrics or []), *(t.metric for t in thresholds)])) if metrics else None
        if metrics is None:
            from bench.readers.compare import DEFAULT_METRICS

            metrics = list(dict.fromkeys([*DEFAULT_METRICS, *(t.metric for t in thresholds)]))
    result = compare(Path(args.a), Path(args.b), metrics, min_effect=args.min_effect, alpha=args.alpha)
    where = "same machine" if result.same_machine else "different machines: matched on everything but hardware"
    table = Table(title=f"A {args.a}  ->  B {args.b} ({where})")
    for heading in ("cell", "metric", "A", "B", "change", "p", "noise (CV) A/B", "verdict"):
        table.add_column(heading, justify="left" if heading in ("cell", "metric", "verdict") else "right")
    colours = {"better": "green", "worse": "red", "no change": "", "insufficient data": "yellow"}
    for cell in result.cells:
        for index, metric in enumerate(cell.metrics):
            scale, unit = (1000.0, "ms") if metric.unit == "s" else (1.0, metric.unit)

            def shown_value(value: float | None, estimate: object, scale: float = scale, unit: str = unit) -> str:
                """The figure, with the bootstrap 95% interval of a median where one was computed."""
                if value is None:
                    return "-"
                low, high = getattr(estimate, "low", None), getattr(estimate, "high", None)
                interval = f" [{low * scale:,.1f}-{high * scale:,.1f}]" if low is not None and high is not None else ""
                return f"{value * scale:,.2f}{interval} {unit}"

            a = shown_value(metric.a, metric.verdict.a)
            b = shown_value(metric.b, metric.verdict.b)
            cvs = [getattr(e, "cv", None) for e in (metric.verdict.a, metric.verdict.b)]
            noise = "/".join("-" if cv is None else f"{cv:.0%}" for cv in cvs)
            change = "-" if metric.change is None else f"{metric.change:+.1%}"
            p = "-" if metric.verdict.p_value is None else f"{metric.verdict.p_value:.2g}"
            call = metric.verdict.call
            shown = f"[{colours[call]}]{call}[/]" if colours[call] else call
            table.add_row(cell.label if index == 0 else "", metric.metric, a, b, change, p, noise, shown)
        for note in cell.notes:
            table.add_row("", "[yellow]note[/]", "", "", "", "", "", note)
    console.print(table)
    for entry in result.unmatched:
        console.print(f"not compared: {entry['label']} [{entry['cell']}]: {entry['reason']}", markup=False,
                      highlight=False)
    if not thresholds:
        return EXIT_OK
    found = regressions(result, thresholds)
    for line in found:
        console.print(f"REGRESSION {line}", markup=False, highlight=False)
    console.print(f"{len(found)} regression(s) beyond --fail-on {args.fail_on}", highlight=False)
    return EXIT_FAILED_CELLS if found else EXIT_OK


def _cmd_table(args: argparse.Namespace, console: Console) -> int:
    from bench.readers.tables import DEFAULT_COLUMNS, cell_rows, heading, render, terminal_table

    metrics = args.metric or DEFAULT_COLUMNS
    rows = cell_rows([Path(p) for p in args.results], metrics)
    if not rows:
        raise BenchError(f"no result sets found in {', '.join(args.results)}")
    columns = ["cell", "machine", *metrics, "validity"]
    headings = {m: heading(m) for m in metrics}
    if args.format != "terminal":
        sys.stdout.write(render(rows, columns, args.format, headings))
        return EXIT_OK
    title = f"{len(rows)} cell(s) from {len({r['result_set'] for r in rows})} result set(s)"
    console.print(terminal_table(rows, columns, headings, title, set(metrics)))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from bench.readers.report import write_report
    from bench.results.load import load_result_sets

    sets = load_result_sets([Path(p) for p in args.results])
    if not sets:
        raise BenchError(f"no result sets found in {', '.join(args.results)}")
    out = write_report(sets, Path(args.output), args.title)
    console.print(f"report: {out} (one self-contained file; opens offline)", highlight=False)
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace, console: Console) -> int:
    import bench
    from bench.readers import plots
    from bench.results.load import load_result_sets

    sets = load_result_sets([Path(p) for p in args.results])
    if not sets:
        raise BenchError(f"no result sets found in {', '.join(args.results)}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = bench.load(sets)
    written = [plots.save(fn(cells), out / f"{name}.{args.format}") for name, fn in plots.FIGURES.items()]
    written.append(plots.save(plots.latency_distributions(bench.load(sets, per="request")),
                              out / f"distributions.{args.format}"))
    console.print(f"{len(written)} figure(s) in {out}: " + ", ".join(p.name for p in written), highlight=False)
    return EXIT_OK


def _cmd_history(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bench.readers import plots
    from bench.readers.history import collect, prometheus_text, pytest_benchmark_json, trend_figure

    series = collect([Path(p) for p in args.results], args.metric, args.cell)
    if not series:
        raise BenchError(f"no completed cell{' ' + args.cell if args.cell else ''} in {', '.join(args.results)}")
    table = Table(title=f"{args.metric} over {max(len(s.points) for s in series)} result set(s)")
    table.add_column("cell")
    table.add_column("trend (oldest first)")
    table.add_column("changes")
    scale = 1000.0 if series[0].unit == "s" else 1.0
    for one in series:
        values = " ".join("-" if p.value is None else f"{p.value * scale:.4g}" for p in one.points)
        changes = ", ".join(f"{p.change} at {p.result_set}" for p in one.points if p.change) or "none"
        table.add_row(one.label, values, changes)
    console.print(table)
    if args.output:
        plots.save(trend_figure(series), Path(args.output))
        console.print(f"trend: {args.output}", highlight=False)
    if args.pytest_benchmark:
        pytest_benchmark_json(series, Path(args.pytest_benchmark))
    if args.prometheus:
        prometheus_text(series, Path(args.prometheus))
    return EXIT_OK


def _cmd_calibrate(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from bench.netguard import NetworkGuard, apply_offline_env
    from bench.serving.calibrate import calibrate

    apply_offline_env()
    NetworkGuard.install([], None)  # the load generator talks to loopback only
    levels = args.users or [1, 16, 64, 128, 256]
    with console.status("calibrating the load generator") as status:
        result = calibrate(args.ttft, args.itl, levels, args.tokens, args.duration,
                           progress=lambda users: status.update(f"{users} concurrent stream(s)"))
    table = Table(title=f"load generator against an endpoint answering TTFT {args.ttft * 1000:g} ms, "
                        f"ITL {args.itl * 1000:g} ms")
    for heading in ("streams", "req/s", "tok/s", "TTFT error p50/p99 ms", "ITL error p50/p99 ms", "client CPU",
                    "trusted"):
        table.add_column(heading, justify="right")
    for level in result["levels"]:
        ttft, itl = level["ttft_error_s"], level["itl_error_s"]
        table.add_row(str(level["users"]), f"{level['requests_per_s']:,.1f}", f"{level['tokens_per_s']:,.0f}",
                      f"{ttft['p50'] * 1000:+.2f} / {ttft['p99'] * 1000:+.2f}",
                      f"{itl['p50'] * 1000:+.2f} / {itl['p99'] * 1000:+.2f}",
                      f"{level['client_cpu_fraction']:.0%}", "yes" if level["trustworthy"] else "no")
    console.print(table)
    ceiling = result["ceiling"]
    if ceiling:
        console.print(f"ceiling: {ceiling['requests_per_s']:,.1f} requests/s, {ceiling['tokens_per_s']:,.0f} streamed "
                      f"tokens/s at {ceiling['users']} streams with p99 timing errors within "
                      f"{result['error_bound_s'] * 1000:g} ms", highlight=False)
    else:
        console.print("[red]no level kept its p99 timing errors within bounds[/]")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    from bench.run.environment import collect_environment
    from bench.serving.calibrate import save_latest

    saved = save_latest(result, collect_environment()["machine_id"])  # served runs record it in their manifest
    console.print(f"saved for this machine's result sets: {saved}", highlight=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lokaal-bench",
        description="Benchmark open-weight AI models on your own hardware, offline.",
    )
    parser.add_argument("--version", action="version", version=f"lokaal-bench {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    run = verbs.add_parser("run", help="run a profile and write a result set (default: profiles/quickstart.yaml)")
    run.add_argument("profile", nargs="?", help="profile YAML (default: the built-in quickstart)")
    run.add_argument("--results-dir", default="results", help="where new result sets go (default: results/)")
    run.add_argument("--output", help="exact directory for this result set")
    run.add_argument("--resume", metavar="RUN_DIR", help="complete a killed or failed run: redo only unfinished cells")
    run.set_defaults(handler=_cmd_run)

    rerun = verbs.add_parser("rerun", help="run a result set's stored profile again and check that the runs agree")
    rerun.add_argument("result_dir")
    rerun.add_argument("--results-dir", default="results", help="where the new result set goes (default: results/)")
    rerun.add_argument("--output", help="exact directory for the new result set")
    rerun.add_argument("--tolerance", type=float, default=0.10, help="largest relative difference that agrees")
    rerun.set_defaults(handler=_cmd_rerun)

    validate = verbs.add_parser("validate", help="check a profile and list its cells, without running")
    validate.add_argument("profile")
    validate.set_defaults(handler=_cmd_validate)

    models = verbs.add_parser("models", help="list the shipped architecture cards")
    models.set_defaults(handler=_cmd_models)

    verify = verbs.add_parser("verify", help="check that no file of a result set changed (and its signature)")
    verify.add_argument("result_dir")
    verify.add_argument("--public-key", help="Ed25519 public key (PEM) to check manifest.json.sig against")
    verify.set_defaults(handler=_cmd_verify)

    sign = verbs.add_parser("sign", help="sign a result set with the organisation's Ed25519 private key")
    sign.add_argument("result_dir")
    sign.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    sign.set_defaults(handler=_cmd_sign)

    keygen = verbs.add_parser("keygen", help="make an Ed25519 key pair for signing result sets")
    keygen.add_argument("--private", required=True)
    keygen.add_argument("--public", required=True)
    keygen.set_defaults(handler=_cmd_keygen)

    probe = verbs.add_parser("probe", help="measure this machine's limits: memory bandwidth, FLOP/s, disk, GPUs")
    probe.add_argument("--quick", action="store_true", help="smaller sizes (what a run does at its start)")
    probe.add_argument("--model-dir", action="append", default=[], help="also time reading this model directory")
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(handler=_cmd_probe)

    fit = verbs.add_parser("fit", help="which cards fit in this machine's memory, and the longest context / batch")
    fit.add_argument("results", nargs="*", help="result sets whose measured memory to check the formula against")
    fit.add_argument("--card", action="append", default=[], help="only these cards (default: all)")
    fit.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    fit.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    fit.add_argument("--concurrency", type=int, default=1, help="sequences held at once (default 1)")
    fit.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    fit.add_argument("--gpus", type=int, default=1, help="GPUs the model is spread over (tensor parallel)")
    fit.add_argument("--memory-gib", type=float, help="capacity to plan for instead of this machine's")
    fit.set_defaults(handler=_cmd_fit)

    proj = verbs.add_parser("project", help="project throughput and latency for a machine or model not measured")
    proj.add_argument("results", nargs="+", help="result sets (or folders of them) to calibrate on")
    proj.add_argument("--hardware", required=True, help="a catalogue entry (e.g. nvidia-h200) or a result set")
    proj.add_argument("--model", required=True, help="an architecture card")
    proj.add_argument("--engine", default="transformers")
    proj.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    proj.add_argument("--devices", type=int, default=1, help="devices in tensor parallel (catalogue hardware)")
    proj.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="for a result set's probes")
    proj.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 8, 32)")
    proj.add_argument("--prompt", type=int, default=512)
    proj.add_argument("--output-tokens", type=int, default=128)
    proj.add_argument("--json-out", help="also write the projection (with its error bars) to this JSON file")
    proj.add_argument("--plot", metavar="FILE", help="a figure (.png, .svg, .pdf): measured and projected decode "
                      "tok/s against model size per machine, at the first --batch")
    proj.set_defaults(handler=_cmd_project)

    pln = verbs.add_parser("plan", help="how many nodes of each measured machine kind serve N users within an SLO")
    pln.add_argument("results", nargs="+", help="result sets (or folders of them) with capacity cells")
    pln.add_argument("--model", required=True, help="the model: card, name or display name (any case)")
    pln.add_argument("--users", type=int, required=True, help="concurrent users the service must carry")
    pln.add_argument("--slo", required=True, help='objectives, e.g. "ttft_p95<=2s,itl_p95<=100ms[,errors<=1%%]"')
    pln.add_argument("--format", default="terminal", choices=["terminal", "markdown", "csv", "latex", "json"])
    pln.set_defaults(handler=_cmd_plan)

    cmp = verbs.add_parser("compare", help="compare two result sets cell by cell; gate on regressions")
    cmp.add_argument("a", help="the baseline result set")
    cmp.add_argument("b", help="the result set to judge")
    cmp.add_argument("--metric", action="append", help="metrics to compare (default: throughput and latencies)")
    cmp.add_argument("--fail-on", help='exit 1 on a significant change beyond e.g. "decode_tok_s:-5%%,ttft_p99:+10%%"')
    cmp.add_argument("--min-effect", type=float, default=0.02, help="smallest relative change called (default 0.02)")
    cmp.add_argument("--alpha", type=float, default=0.05, help="significance level of the Mann-Whitney U test")
    cmp.set_defaults(handler=_cmd_compare)

    tab = verbs.add_parser("table", help="a table of the cells of result sets (terminal, markdown, csv, latex, json)")
    tab.add_argument("results", nargs="+", help="result sets or folders of them")
    tab.add_argument("--format", default="terminal", choices=["terminal", "markdown", "csv", "latex", "json"])
    tab.add_argument("--metric", action="append", help="columns (default: throughput and key latencies)")
    tab.set_defaults(handler=_cmd_table)

    rep = verbs.add_parser("report", help="one self-contained HTML report of result sets (opens offline)")
    rep.add_argument("results", nargs="+", help="result sets or folders of them")
    rep.add_argument("-o", "--output", default="report.html")
    rep.add_argument("--title")
    rep.set_defaults(handler=_cmd_report)

    plot = verbs.add_parser("plot", help="figures of result sets as PNG, SVG or PDF")
    plot.add_argument("results", nargs="+", help="result sets or folders of them")
    plot.add_argument("-o", "--output-dir", default="figures")
    plot.add_argument("--format", default="png", choices=["png", "svg", "pdf"])
    plot.set_defaults(handler=_cmd_plot)

    hist = verbs.add_parser("history", help="a metric's trend per cell over many result sets, change points marked")
    hist.add_argument("results", nargs="+", help="result sets or folders of them")
    hist.add_argument("--metric", default="output_tok_s")
    hist.add_argument("--cell", help="one cell (id or label); default every cell")
    hist.add_argument("-o", "--output", help="the trend figure (.png, .svg, .pdf)")
    hist.add_argument("--pytest-benchmark", metavar="FILE", help="export the newest values as pytest-benchmark JSON")
    hist.add_argument("--prometheus", metavar="FILE", help="export them as Prometheus text (node_exporter textfile)")
    hist.set_defaults(handler=_cmd_history)

    cal = verbs.add_parser("calibrate", help="how far can this machine's load generator be trusted?")
    cal.add_argument("--ttft", type=float, default=0.05, help="the endpoint's time to first token, s (0.05)")
    cal.add_argument("--itl", type=float, default=0.01, help="the endpoint's inter-token latency, s (0.01)")
    cal.add_argument("--users", type=int, action="append", help="concurrent streams (default 1 16 64 128 256)")
    cal.add_argument("--tokens", type=int, default=32, help="tokens per response")
    cal.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    cal.add_argument("--output", help="write the result as JSON")
    cal.set_defaults(handler=_cmd_calibrate)

    env = verbs.add_parser("env", help="print this machine's environment inventory")
    env.add_argument("--json", action="store_true", help="as JSON")
    env.set_defaults(handler=_cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Logs of unattended runs are read in editors, not 80-column terminals: keep table rows whole.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if not getattr(args, "handler", None):
        args = parser.parse_args(["run", *(argv or [])])
    try:
        return args.handler(args, console)
    except BenchError as exc:
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
