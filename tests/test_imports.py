"""`import bench` and the command line's light paths never import torch, transformers or vLLM."""

from __future__ import annotations

import subprocess
import sys

LIGHT = [
    "bench",
    "bench.cli",
    "bench.profile.spec",
    "bench.profile.cells",
    "bench.measure.metrics",
    "bench.results.records",
    "bench.results.resultset",
    "bench.run.runner",
    "bench.run.display",
    "bench.models",
    "bench.run.environment",
    "bench.telemetry",
    "bench.netguard",
    "bench.readers.printing",
    "bench.run.commands",
    "bench.run.machine_commands",
    "bench.run.environment_view",
    "bench.readers.commands",
    "bench.planning.commands",
    "bench.results.commands",
]


def test_light_modules_import_no_heavy_libraries() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in LIGHT)
            + "heavy = sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules)\nprint(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_help_and_version() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "validate" in done.stdout and "models" in done.stdout
    done = subprocess.run([sys.executable, "-m", "bench", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("lokaal-bench ")


def test_every_verb_dispatches_to_a_function() -> None:
    """cli.py names each verb's function as "module:function": each must exist."""
    import argparse

    from bench.cli import _resolve, build_parser

    def leaves(parser: argparse.ArgumentParser, name: str):  # `submit slurm`, `store add`: verbs of verbs
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            yield name, parser
        for action in nested:
            for sub, child in action.choices.items():
                yield from leaves(child, f"{name} {sub}".strip())

    found = list(leaves(build_parser(), ""))
    assert {"run", "submit slurm", "submit k8s", "status", "store add"} <= {n for n, _ in found}
    for name, parser in found:
        assert callable(_resolve(parser.get_default("handler"))), name
