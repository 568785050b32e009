"""The command line: parses arguments and dispatches each verb to the one function that owns it
(bench/run/commands.py, bench/readers/commands.py, ...), which prints through an Output and returns
the exit code. Verbs that print a table take --format terminal|markdown|csv|latex|json
(docs/output-formats.md); in every format but terminal, stdout holds only the document.

Exit codes: 0 success, 1 a run finished with FAILED cells (or a regression, a disagreement, a failed
verification), 2 bad input (message, no traceback), 130 interrupted: by Ctrl-C, or by a full disk
(the completed cells are kept; --resume completes it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from bench import __version__
from bench.errors import EXIT_INTERRUPTED, BenchError
from bench.readers.printing.printers import FORMATS


def _formats(parser: argparse.ArgumentParser, json_flag: bool = False) -> None:
    parser.add_argument("--format", dest="output_format", default="terminal", choices=FORMATS,
                        help="how to print: terminal (default), markdown, csv, latex or json (docs/output-formats.md)")
    if json_flag:
        parser.add_argument("--json", dest="output_format", action="store_const", const="json",
                            help="the same as --format json")


def _verb(parser: argparse.ArgumentParser, handler: str) -> None:
    """`handler` is "module:function", imported only when the verb runs: `import bench.cli` stays light."""
    parser.set_defaults(handler=handler)


def _quantization(value: str) -> str:
    from bench.models.gguf_types import normalise_quantization

    try:
        return normalise_quantization(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gguf_options(parser: argparse.ArgumentParser, what: str) -> None:
    """llama.cpp's quantised weights and KV cache, for fit and project."""
    parser.add_argument("--quantization", type=_quantization, help=f"a GGUF type for llama.cpp (Q4_K_M, Q8_0, ...): "
                        f"{what}")
    parser.add_argument("--kv-cache-type", choices=["f16", "q8_0", "q4_0", "bf16", "f32"],
                        help="llama.cpp's KV-cache type with --quantization (default f16)")


def _resolve(handler: str) -> Callable[..., int]:
    module, _, name = handler.partition(":")
    return getattr(importlib.import_module(module), name)


def _when_busy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--when-busy", choices=["wait", "mark"], default="wait",
                        help="another lokaal-bench run measuring on this machine: wait until it is done (default), "
                             "or measure alongside and mark the overlapping cells INVALID")


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
    run.add_argument("--shard", metavar="I/N", help="run shard I of N (0 <= I < N; auto/N: I from the scheduler) "
                     "into results-dir/CAMPAIGN/; run again, it resumes (docs/fleet.md)")
    run.add_argument("--campaign", help="the campaign a shard belongs to (default: the profile's name and hash)")
    run.add_argument("--group", help="a shard's machine group: its Slurm partition (default), k8s, local")
    _when_busy(run)
    _formats(run)
    _verb(run, "bench.run.commands:run_command")

    rerun = verbs.add_parser("rerun", help="run a result set's stored profile again and check that the runs agree")
    rerun.add_argument("result_dir")
    rerun.add_argument("--results-dir", default="results", help="where the new result set goes (default: results/)")
    rerun.add_argument("--output", help="exact directory for the new result set")
    rerun.add_argument("--tolerance", type=float, default=0.10, help="largest relative difference that agrees")
    _when_busy(rerun)
    _formats(rerun)
    _verb(rerun, "bench.run.commands:rerun_command")

    validate = verbs.add_parser("validate", help="check a profile and list its cells, without running")
    validate.add_argument("profile")
    _formats(validate)
    _verb(validate, "bench.run.commands:validate_command")

    submit = verbs.add_parser("submit", help="run a profile as a campaign of shards on Slurm or Kubernetes "
                              "(docs/fleet.md)")
    schedulers = submit.add_subparsers(dest="scheduler", metavar="SCHEDULER", required=True)
    sl = schedulers.add_parser("slurm", help="one sbatch job array per partition; prints the job ids")
    sl.add_argument("profile", nargs="?", help="profile YAML")
    sl.add_argument("--shards", type=int, default=1, help="array tasks per partition (default 1)")
    sl.add_argument("--partition", action="append", default=[],
                    help="a partition (machine kind); several give one array each (default: the cluster's)")
    sl.add_argument("--constraint", help="sbatch --constraint (node features)")
    sl.add_argument("--gres", help="sbatch --gres, e.g. gpu:4")
    sl.add_argument("--time", help="sbatch --time (default: from the plan's estimate of the largest shard)")
    sl.add_argument("--account", help="sbatch --account")
    sl.add_argument("--qos", help="sbatch --qos")
    sl.add_argument("--shared", action="store_true", help="do not ask for whole nodes (default: --exclusive)")
    sl.add_argument("--results", default="results", help="where the campaign directory goes (default: results/)")
    sl.add_argument("--campaign", help="the campaign id (default: profile name, UTC time, a random suffix)")
    sl.add_argument("--resume", metavar="CAMPAIGN_DIR",
                    help="resubmit the campaign's shards that stopped, never ran or hold FAILED cells")
    sl.add_argument("--wait", action="store_true", help="wait until the campaign is over; exit as `status` does")
    sl.add_argument("--schedule", metavar="CRON", help='submit on this schedule, e.g. "0 2 * * *" (a scrontab entry)')
    _verb(sl, "bench.fleet.slurm_commands:submit_slurm_command")

    k8s = schedulers.add_parser("k8s", help="an Indexed Job (or a CronJob) of the shards, one pod per node")
    k8s.add_argument("profile", help="profile YAML (it travels in a ConfigMap)")
    k8s.add_argument("--shards", type=int, default=1, help="pods, one shard each (default 1)")
    k8s.add_argument("--image", required=True, help="the lokaal-bench image (Containerfile), in the cluster's registry")
    k8s.add_argument("--namespace", default="default")
    k8s.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE",
                     help="only nodes of this machine kind (repeatable)")
    k8s.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu per pod")
    k8s.add_argument("--cpus", type=int, default=4, help="whole cores per pod, requests = limits (default 4)")
    k8s.add_argument("--memory", default="16Gi", help="memory per pod, requests = limits (default 16Gi)")
    k8s.add_argument("--pvc", default="lokaal-bench-results", help="the ReadWriteMany claim for results and cache")
    k8s.add_argument("--storage", default="100Gi", help="the claim's size, when this creates it (default 100Gi)")
    k8s.add_argument("--schedule", metavar="CRON", help='a CronJob on this schedule, e.g. "0 2 * * *"')
    k8s.add_argument("--results", default="results", help="where the campaign directory goes (default: results/)")
    k8s.add_argument("--campaign", help="the campaign (Job) name (default: profile name, UTC time, a suffix)")
    k8s.add_argument("--apply", action="store_true", help="kubectl apply the manifests")
    _verb(k8s, "bench.fleet.k8s_commands:submit_k8s_command")

    status = verbs.add_parser("status", help="a campaign's shards: done, failed, running, queued; exit 0 when "
                              "it completed cleanly, 1 when over but not clean, 3 while not over")
    status.add_argument("campaign", help="the campaign directory (results/CAMPAIGN)")
    _formats(status)
    _verb(status, "bench.fleet.slurm_commands:status_command")

    store = verbs.add_parser("store", help="one DuckDB results store for a fleet: add result sets, export Parquet; "
                             "readers take STORE.duckdb like a folder (docs/fleet.md)")
    actions = store.add_subparsers(dest="store_action", metavar="ACTION", required=True)
    st_add = actions.add_parser("add", help="add result sets (by seal: those already in are skipped, tampered refused)")
    st_add.add_argument("results", nargs="+", help="result sets, campaign directories or folders of them")
    st_add.add_argument("--db", required=True, help="the store, e.g. fleet.duckdb (created when missing)")
    _verb(st_add, "bench.fleet.store_commands:store_add_command")
    st_exp = actions.add_parser("export", help="write each table of the store as a Parquet file")
    st_exp.add_argument("--db", required=True)
    st_exp.add_argument("--parquet", required=True, metavar="DIR")
    _verb(st_exp, "bench.fleet.store_commands:store_export_command")
    st_list = actions.add_parser("list", help="the result sets in the store")
    st_list.add_argument("--db", required=True)
    _formats(st_list)
    _verb(st_list, "bench.fleet.store_commands:store_list_command")

    models = verbs.add_parser("models", help="list the shipped architecture cards")
    _formats(models)
    _verb(models, "bench.planning.commands:models_command")

    verify = verbs.add_parser("verify", help="check that no file of a result set changed (and its signature)")
    verify.add_argument("result_dir")
    verify.add_argument("--public-key", help="Ed25519 public key (PEM) to check manifest.json.sig against")
    verify.add_argument("--upgrade-seal", action="store_true",
                        help="a result set sealed before byte seals: check it, then seal manifest.json's bytes too")
    _verb(verify, "bench.results.commands:verify_command")

    sign = verbs.add_parser("sign", help="sign a result set with the organisation's Ed25519 private key")
    sign.add_argument("result_dir")
    sign.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    _verb(sign, "bench.results.commands:sign_command")

    keygen = verbs.add_parser("keygen", help="make an Ed25519 key pair for signing result sets")
    keygen.add_argument("--private", required=True)
    keygen.add_argument("--public", required=True)
    _verb(keygen, "bench.results.commands:keygen_command")

    probe = verbs.add_parser("probe", help="measure this machine's limits: memory bandwidth, FLOP/s, disk, GPUs")
    probe.add_argument("--quick", action="store_true", help="smaller sizes (what a run does at its start)")
    probe.add_argument("--model-dir", action="append", default=[], help="also time reading this model directory")
    _formats(probe, json_flag=True)
    _verb(probe, "bench.run.machine_commands:probe_command")

    fit = verbs.add_parser("fit", help="which cards fit in this machine's memory, and the longest context / batch")
    fit.add_argument("results", nargs="*", help="result sets whose measured memory to check the formula against")
    fit.add_argument("--card", action="append", default=[], help="only these cards (default: all)")
    fit.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    fit.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    fit.add_argument("--concurrency", type=int, default=1, help="sequences held at once (default 1)")
    fit.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    fit.add_argument("--gpus", type=int, default=1, help="GPUs the model is spread over (tensor parallel)")
    fit.add_argument("--memory-gib", type=float, help="capacity to plan for instead of this machine's")
    _gguf_options(fit, "weights at its size instead of --dtype's")
    _formats(fit)
    _verb(fit, "bench.planning.commands:fit_command")

    proj = verbs.add_parser("project", help="project throughput and latency for a machine or model not measured")
    proj.add_argument("results", nargs="+", help="result sets (or folders of them) to calibrate on")
    proj.add_argument("--hardware", required=True, help="a catalogue entry (e.g. nvidia-h200) or a result set")
    proj.add_argument("--model", required=True, help="an architecture card")
    proj.add_argument("--engine", default="transformers")
    proj.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    _gguf_options(proj, "the weights' size")
    proj.add_argument("--devices", type=int, default=1, help="devices in tensor parallel (catalogue hardware)")
    proj.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="for a result set's probes")
    proj.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 8, 32)")
    proj.add_argument("--prompt", type=int, default=512)
    proj.add_argument("--output-tokens", type=int, default=128)
    proj.add_argument("--json-out", help="also write the projection (with its error bars) to this JSON file")
    proj.add_argument("--plot", metavar="FILE", help="a figure (.png, .svg, .pdf): measured and projected decode "
                      "tok/s against model size per machine, at the first --batch")
    _formats(proj)
    _verb(proj, "bench.planning.commands:project_command")

    pln = verbs.add_parser("plan", help="how many nodes of each measured machine kind serve N users within an SLO")
    pln.add_argument("results", nargs="+", help="result sets (or folders of them) with capacity cells")
    pln.add_argument("--model", required=True, help="the model: card, name or display name (any case)")
    pln.add_argument("--users", type=int, required=True, help="concurrent users the service must carry")
    pln.add_argument("--slo", required=True, help='objectives, e.g. "ttft_p95<=2s,itl_p95<=100ms[,errors<=1%%]"')
    _formats(pln)
    _verb(pln, "bench.planning.commands:plan_command")

    cmp = verbs.add_parser("compare", help="compare two result sets cell by cell; gate on regressions")
    cmp.add_argument("a", help="the baseline result set")
    cmp.add_argument("b", help="the result set to judge")
    cmp.add_argument("--metric", action="append", help="metrics to compare (default: throughput and latencies)")
    cmp.add_argument("--fail-on", help='exit 1 on a significant change beyond e.g. "decode_tok_s:-5%%,ttft_p99:+10%%"')
    cmp.add_argument("--min-effect", type=float, default=0.02, help="smallest relative change called (default 0.02)")
    cmp.add_argument("--alpha", type=float, default=0.05, help="significance level of the Mann-Whitney U test")
    _formats(cmp)
    _verb(cmp, "bench.readers.commands:compare_command")

    tab = verbs.add_parser("table", help="a table of the cells of result sets (terminal, markdown, csv, latex, json)")
    tab.add_argument("results", nargs="+", help="result sets or folders of them")
    _formats(tab)
    tab.add_argument("--metric", action="append", help="columns (default: throughput and key latencies)")
    _verb(tab, "bench.readers.commands:table_command")

    rep = verbs.add_parser("report", help="one self-contained HTML report of result sets (opens offline)")
    rep.add_argument("results", nargs="+", help="result sets or folders of them")
    rep.add_argument("-o", "--output", default="report.html")
    rep.add_argument("--title")
    _verb(rep, "bench.readers.commands:report_command")

    plot = verbs.add_parser("plot", help="figures of result sets as PNG, SVG or PDF")
    plot.add_argument("results", nargs="+", help="result sets or folders of them")
    plot.add_argument("-o", "--output-dir", default="figures")
    plot.add_argument("--format", default="png", choices=["png", "svg", "pdf"])
    _verb(plot, "bench.readers.commands:plot_command")

    hist = verbs.add_parser("history", help="a metric's trend per cell over many result sets, change points marked")
    hist.add_argument("results", nargs="+", help="result sets or folders of them")
    hist.add_argument("--metric", default="output_tok_s")
    hist.add_argument("--cell", help="one cell (id or label); default every cell")
    hist.add_argument("-o", "--output", help="the trend figure (.png, .svg, .pdf)")
    hist.add_argument("--pytest-benchmark", metavar="FILE", help="export the newest values as pytest-benchmark JSON")
    hist.add_argument("--prometheus", metavar="FILE", help="export them as Prometheus text (node_exporter textfile)")
    _formats(hist)
    _verb(hist, "bench.readers.commands:history_command")

    cal = verbs.add_parser("calibrate", help="how far can this machine's load generator be trusted?")
    cal.add_argument("--ttft", type=float, default=0.05, help="the endpoint's time to first token, s (0.05)")
    cal.add_argument("--itl", type=float, default=0.01, help="the endpoint's inter-token latency, s (0.01)")
    cal.add_argument("--users", type=int, action="append", help="concurrent streams (default 1 16 64 128 256)")
    cal.add_argument("--tokens", type=int, default=32, help="tokens per response")
    cal.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    cal.add_argument("--output", help="write the result as JSON")
    _formats(cal)
    _verb(cal, "bench.run.machine_commands:calibrate_command")

    env = verbs.add_parser("env", help="print this machine's environment inventory")
    _formats(env, json_flag=True)
    _verb(env, "bench.run.machine_commands:env_command")
    return parser


def _when_busy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--when-busy", choices=["wait", "mark"], default="wait",
                        help="another lokaal-bench run measuring on this machine: wait until it is done (default), "
                             "or measure alongside and mark the overlapping cells INVALID")


def main(argv: list[str] | None = None) -> int:
    from bench.readers.printing import Output

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        args = parser.parse_args(["run", *(argv or [])])
    try:
        with Output(getattr(args, "output_format", "terminal"), kind=args.verb) as out:
            return _resolve(args.handler)(args, out)
    except BenchError as exc:
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
