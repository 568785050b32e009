"""The acceptance run's steps, in order, inside one time budget (see bench/acceptance/__init__.py).

Each step gets its own limit, cut so that the steps after it keep at least their floor of the
budget; the page and the archive are rewritten after every step (the page also before it), so
a run stopped anywhere still says what it saw.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.acceptance import steps, summary, wheels
from bench.acceptance.checks import all_checks

ROOT = Path(__file__).resolve().parents[2]
PROFILE = Path("profiles/gpu-acceptance.yaml")
EXAMPLE_RESULT_SET = Path("results/examples/quickstart-2core-epyc-vm")
ARCHIVE = "gpu-acceptance.tar.gz"
PACK_S = 10.0  # kept at the end of the budget for the last page and archive


@dataclass(frozen=True)
class StepSpec:
    name: str
    title: str
    timeout_s: float  # its own limit
    floor_s: float  # what it keeps of the budget while the steps before it run


STEPS = (
    StepSpec("install", "install (wheels, imports)", 60, 5),
    StepSpec("env", "lokaal-bench env", 30, 5),
    StepSpec("probe", "lokaal-bench probe", 90, 20),
    StepSpec("models", "materialise the cards", 120, 30),
    StepSpec("profile", f"lokaal-bench run {PROFILE}", 240, 60),
    StepSpec("pytest", "pytest -m gpu", 90, 30),
)


def _say(text: str) -> None:
    """A progress line; a closed stdout (a pipe's reader gone) must not stop the run."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def _last_line(log: Path) -> str:
    """The last thing a command said (its error, usually), for the step's note; the whole log is archived."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    said = [line.strip() for line in lines if line.strip() and not line.startswith(("# exit", "$ "))]
    return (said[-1][:300] if said else "(nothing printed)") + f" (logs/{log.name})"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _envelope_data(document: Any, key: str) -> Any:
    """`data[key]` of a verb's JSON envelope (docs/output-formats.md): env's inventory, probe's figures."""
    return ((document or {}).get("data") or {}).get(key) if isinstance(document, dict) else None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def parse_junit(path: Path) -> dict[str, Any] | None:
    """Counts, failures and skips of a pytest --junitxml report."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (FileNotFoundError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skipped = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
            continue
        message = (outcome.get("message") or "").splitlines()[0][:300] if outcome.get("message") else ""
        if outcome.tag == "skipped":
            counts["skipped"] += 1
            skipped.append((name, message))
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
            failures.append((name, message))
    return {"counts": counts, "failures": failures, "skipped": skipped}


class Acceptance:
    def __init__(self, args: argparse.Namespace):
        self.dry = bool(args.dry_run)
        self.out = Path(args.out or os.environ.get("OUT") or ROOT / "gpu-acceptance").resolve()
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="lokaal-bench-acceptance-"))
        self.work = base / f"gpu-acceptance-{stamp}"
        self.logs = self.work / "logs"
        self.budget_s = float(args.budget_s)
        self.wheels_dir = (ROOT / args.wheels).resolve()
        self.site = Path(args.site).resolve()
        self.profile = (ROOT / args.profile).resolve()
        self.example = (ROOT / args.result_set).resolve()
        self.model_cache = args.model_cache
        self.started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.t0 = time.monotonic()
        self.records = [steps.StepRecord(s.name, s.title) for s in STEPS]
        if self.profile != (ROOT / PROFILE).resolve():  # another profile: the step says which
            self.records[[s.name for s in STEPS].index("profile")].title = f"lokaal-bench run {args.profile}"
        self.commit = args.commit
        self.data: dict[str, Any] = {}
        self.cells: list[dict[str, Any]] = []
        self.env = dict(os.environ)
        self.env.update({"PYTHONUNBUFFERED": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        self._set_pythonpath([ROOT])

    # --- bookkeeping ---------------------------------------------------------------------------

    def _set_pythonpath(self, first: list[Path]) -> None:
        rest = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in map(str, first)]
        self.env["PYTHONPATH"] = os.pathsep.join([*map(str, first), *rest])

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def state(self) -> dict[str, Any]:
        result = self.data.get("result_set")
        return {
            "mode": "dry-run" if self.dry else "gpu",
            "started": self.started,
            "elapsed_s": self.elapsed(),
            "budget_s": self.budget_s,
            "host": socket.gethostname(),
            "commit": self.data.get("commit"),
            "archive": ARCHIVE,
            "steps": [r.to_dict() for r in self.records],
            "install": self.data.get("install"),
            "environment": self.data.get("environment"),
            "probes": self.data.get("probes"),
            "models": self.data.get("models"),
            "result_set": result,
            "pytest": self.data.get("pytest"),
            "checks": [c.to_dict() for c in all_checks(self.data.get("environment"), self.data.get("probes"),
                                                       self.cells if result else None, expect_gpu=not self.dry)],
        }

    def write(self, archive: bool = True) -> dict[str, Any]:
        state = self.state()
        summary.write_page(self.out, state)
        if archive:
            size = summary.write_archive(self.out / ARCHIVE, self.work, [self.out / "summary.md",
                                                                         self.out / "summary.json"])
            self.data["archive_bytes"] = size
        return state

    def command(self, record: steps.StepRecord, argv: list[str], deadline: float, log: str,
                stdout: Path | None = None) -> steps.Outcome:
        record.commands.append(shlex.join(map(str, argv)))
        return steps.run_command(argv, log=self.logs / f"{log}.log", timeout_s=deadline - time.monotonic(),
                                 env=self.env, cwd=ROOT, stdout=stdout)

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data["commit"] = self.commit or _git_commit()
        _say(f"lokaal-bench GPU acceptance ({'dry run' if self.dry else 'GPU'}): budget {self.budget_s:.0f} s, "
              f"page {self.out / 'summary.md'}, work {self.work}")
        handlers: dict[str, Callable[[steps.StepRecord, float], None]] = {
            "install": self.step_install, "env": self.step_env, "probe": self.step_probe,
            "models": self.step_models, "profile": self.step_profile, "pytest": self.step_pytest,
        }
        for index, (spec, record) in enumerate(zip(STEPS, self.records, strict=True)):
            later = sum(s.floor_s for s in STEPS[index + 1:])
            limit = min(spec.timeout_s, self.budget_s - PACK_S - self.elapsed() - later)
            if limit < 1:
                record.status, record.note = "SKIPPED", "no time left in the budget"
                _say(f"[{self.elapsed():6.1f} s] {spec.name}: SKIPPED (no time left)")
                continue
            record.status, record.limit_s = "RUNNING", limit
            self.write(archive=False)
            started = time.monotonic()
            try:
                handlers[spec.name](record, started + limit)
            except Exception as exc:  # a broken step is a FAILED row; the steps after it still run
                record.status, record.note = "FAILED", f"{type(exc).__name__}: {exc}"[:400]
            record.seconds = time.monotonic() - started
            _say(f"[{self.elapsed():6.1f} s] {spec.name}: {record.status} ({record.seconds:.1f} s) {record.note}")
            self.write()
        state = self.write()
        verdict = summary.overall(state)
        _say(summary.render(state))
        _say(f"overall: {verdict}; page {self.out / 'summary.md'}, archive {self.out / ARCHIVE} "
             f"({self.data.get('archive_bytes', 0) / 2**20:.1f} MiB)")
        return 0 if verdict.startswith("PASS") else 1

    @staticmethod
    def _finish(record: steps.StepRecord, outcome: steps.Outcome, ok_note: str, what: str) -> bool:
        if outcome.timed_out:
            record.status, record.note = "TIMEOUT", f"{what}: stopped at its limit; partial results kept"
        elif outcome.returncode != 0:
            record.status, record.note = "FAILED", f"{what}: exit {outcome.returncode}: {_last_line(outcome.log)}"
        else:
            record.status, record.note = "OK", ok_note
        return record.status == "OK"

    # --- the steps -----------------------------------------------------------------------------

    def _check_imports(self, record: steps.StepRecord, deadline: float, log: str) -> dict[str, Any] | None:
        out = self.work / f"{log}.json"
        self.command(record, [sys.executable, "-m", "bench.acceptance.wheels", "--check", str(ROOT)], deadline, log,
                     stdout=out)
        return _read_json(out)

    def step_install(self, record: steps.StepRecord, deadline: float) -> None:
        plan = wheels.plan(self.wheels_dir)
        install = {"plan": plan, "command": shlex.join(wheels.install_command(self.wheels_dir, self.site))}
        self.data["install"] = install
        wheel_note = (f"{len(plan['wheels'])} wheels, {plan['total_bytes'] / 2**20:.1f} MiB in {self.wheels_dir.name}/"
                      + ("" if plan["ok"] else f" ({'; '.join(plan['problems'])})"))
        if self.dry:
            here = self._check_imports(record, deadline, "imports")
            install["check"] = here
            ok = bool(here and here["ok"])
            record.status = "PLANNED" if ok else "FAILED"
            record.note = (f"would run pip --no-index --no-deps --target {self.site} on {wheel_note}; imports here: "
                           + ("ok" if ok else f"FAILED {here and here['failed']}"))
            return
        if plan["wheels"]:  # pip --target of a dozen wheels takes seconds; the import check is what tells
            outcome = self.command(record, wheels.install_command(self.wheels_dir, self.site), deadline, "install")
            if not self._finish(record, outcome, "", "pip install"):
                return
            self._set_pythonpath([self.site, ROOT])
            sys.path.insert(0, str(self.site))  # this process reads result sets too
        after = self._check_imports(record, deadline, "imports")
        install["check"] = after
        if after and after["ok"]:
            record.status = "OK"
            record.note = (f"installed {wheel_note} into {self.site}; every module imports" if plan["wheels"]
                           else "no wheels carried; every module imports")
        else:
            record.status, record.note = "FAILED", f"{wheel_note}; not importable: {after and after['failed']}"

    def step_env(self, record: steps.StepRecord, deadline: float) -> None:
        out = self.work / "env.json"
        outcome = self.command(record, [sys.executable, "-m", "bench", "env", "--json"], deadline, "env", stdout=out)
        self.data["environment"] = _envelope_data(_read_json(out), "environment")
        if self._finish(record, outcome, "", "env --json"):
            self.command(record, [sys.executable, "-m", "bench", "env"], deadline, "env-text",
                         stdout=self.work / "env.txt")
            gpus = (self.data["environment"] or {}).get("gpus") or {}
            names = [str(d.get("name")) for d in gpus.get("devices") or []]
            record.note = ", ".join(names) if names else f"no GPU: {gpus.get('reason')}"

    def step_probe(self, record: steps.StepRecord, deadline: float) -> None:
        out = self.work / "probe.json"
        argv = [sys.executable, "-m", "bench", "probe", "--json", *(["--quick"] if self.dry else [])]
        outcome = self.command(record, argv, deadline, "probe", stdout=out)
        self.data["probes"] = _envelope_data(_read_json(out), "probes")
        if self._finish(record, outcome, "", "probe"):
            gpus = (self.data["probes"] or {}).get("gpus") or []
            record.note = (f"{len(gpus)} GPU(s) probed" if gpus else "host only: torch sees no CUDA device") + \
                (" (quick sizes)" if self.dry else "")

    def _choose_model_cache(self, need: int) -> Path | None:
        """Where the cards go: the given folder, else RAM (/dev/shm) when it has room to spare (the
        GPU machine's disk speed is unknown), else lokaal-bench's default cache."""
        if self.model_cache:
            return Path(self.model_cache)
        if os.environ.get("LOKAAL_BENCH_CACHE"):
            return None
        shm = Path("/dev/shm")
        if shm.is_dir():
            import psutil

            free = shutil.disk_usage(shm).free
            if free > need + 8 * 2**30 and psutil.virtual_memory().total > 4 * need:
                return shm / "lokaal-bench-models"
        return None

    def step_models(self, record: steps.StepRecord, deadline: float) -> None:
        from bench.acceptance.materialise import needed_bytes, profile_models

        need = needed_bytes(profile_models(self.profile))
        cache = self._choose_model_cache(need)
        if cache is not None:
            self.env["LOKAAL_BENCH_CACHE"] = str(cache)
        out = self.work / "models.json"
        argv = [sys.executable, "-m", "bench.acceptance.materialise", str(self.profile), "--json-out", str(out),
                *(["--plan"] if self.dry else [])]
        outcome = self.command(record, argv, deadline, "models")
        models = _read_json(out)
        self.data["models"] = models
        if not self._finish(record, outcome, "", "materialise"):
            return
        where = f"{models['cache_dir']} ({models['free_bytes'] / 1e9:.0f} GB free)"
        if self.dry:
            record.status = "PLANNED"
            record.note = f"would write {models['needed_bytes'] / 1e9:.1f} GB of synthetic weights to {where}"
        else:
            rate = f"{models['gb_s'] * 1000:,.0f} MB/s" if models.get("gb_s") else "-"
            cached = sum(1 for b in models["built"] if b["cached"])
            record.note = (f"{len(models['built'])} card(s) ({cached} already cached), "
                           f"{models['written_bytes'] / 1e9:.2f} GB written in {models['seconds']:.0f} s ({rate}) "
                           f"into {where}")

    def _load_result_set(self, path: Path, title: str) -> None:
        from bench.results.load import load_result_set

        try:
            loaded = load_result_set(path)
        except Exception as exc:  # no manifest yet: the run was stopped before its first write
            self.data["result_set"] = {"title": f"{title}: unreadable ({exc})", "cells": []}
            return
        manifest = loaded.manifest
        self.cells = [c.summary for c in loaded.cells if c.summary]
        self.data["result_set"] = {
            "title": title, "path": str(path), "status": manifest.get("status"), "counts": manifest.get("counts"),
            "cells": [summary.cell_row(s) for s in self.cells],
        }

    def step_profile(self, record: steps.StepRecord, deadline: float) -> None:
        relative = self.profile.relative_to(ROOT) if self.profile.is_relative_to(ROOT) else self.profile
        result = self.work / "result"
        if self.dry:
            outcome = self.command(record, [sys.executable, "-m", "bench", "validate", str(self.profile)], deadline,
                                   "validate", stdout=self.logs / "validate.txt")
            if not self._finish(record, outcome, "", f"validate {relative}"):
                return
            shutil.copytree(self.example, result)
            example = self.example.relative_to(ROOT) if self.example.is_relative_to(ROOT) else self.example
            self._load_result_set(result, f"dry run: the CPU result set {example}")
            record.note = (f"{relative} is valid ({self._count_cells()} cells); summarising the CPU result set "
                           f"{example} in its place")
            return
        outcome = self.command(record, [sys.executable, "-m", "bench", "run", str(self.profile), "--output",
                                        str(result)], deadline, "run")
        self._load_result_set(result, f"{relative} on this machine")
        counts = (self.data.get("result_set") or {}).get("counts") or {}
        done = f"{counts.get('COMPLETED', 0)} of {counts.get('total', '?')} cells completed"
        self._finish(record, outcome, done, f"run ({done})")

    def _count_cells(self) -> str:
        text = (self.logs / "validate.txt").read_text(encoding="utf-8", errors="replace")
        return next((word for line in text.splitlines() if "valid," in line
                     for word in [line.split("valid,")[1].split()[0]]), "?")

    def step_pytest(self, record: steps.StepRecord, deadline: float) -> None:
        # addopts of pyproject need pytest-benchmark, which the GPU machine lacks: replaced here.
        base = [sys.executable, "-m", "pytest", "-m", "gpu", "-o", "addopts=-ra", "-p", "no:cacheprovider"]
        if self.dry:
            listing = self.logs / "pytest-collect.txt"
            outcome = self.command(record, [*base, "--collect-only", "-q"], deadline, "pytest", stdout=listing)
            nodes = [line.strip() for line in listing.read_text(encoding="utf-8", errors="replace").splitlines()
                     if "::" in line]
            self.data["pytest"] = {"collected": nodes}
            if self._finish(record, outcome, "", "pytest --collect-only"):
                record.status = "PLANNED"
                record.note = f"{len(nodes)} gpu test(s) collected; they run on the GPU machine"
            return
        report = self.work / "pytest-gpu.xml"
        outcome = self.command(record, [*base, "-q", f"--junitxml={report}"], deadline, "pytest")
        parsed = parse_junit(report)
        self.data["pytest"] = parsed
        counts = (parsed or {}).get("counts") or {}
        self._finish(record, outcome, ", ".join(f"{k} {v}" for k, v in counts.items()), "pytest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/gpu_acceptance.sh",
                                     description="lokaal-bench's GPU acceptance run (issue 17): install, env, "
                                                 "probe, a short CUDA profile and the gpu tests, in one budget")
    parser.add_argument("--dry-run", action="store_true",
                        help="on a CPU machine: plan the install, validate the profile, run env and probe, and "
                             "write the page and archive from a CPU result set")
    parser.add_argument("--out", help="where the page and archive go (default: $OUT, else gpu-acceptance/)")
    parser.add_argument("--work", help="where the logs and result set are gathered (default: a temporary folder)")
    parser.add_argument("--budget-s", type=float, default=360, help="the whole run's time, s (default 360)")
    parser.add_argument("--wheels", default=".whl", help="the carried wheels (default .whl)")
    parser.add_argument("--site", default="/tmp/lokaal-bench-site", help="where the wheels are installed")
    parser.add_argument("--profile", default=str(PROFILE))
    parser.add_argument("--result-set", default=str(EXAMPLE_RESULT_SET),
                        help="dry run: the CPU result set summarised in place of running the profile")
    parser.add_argument("--commit", help="the commit to name on the page (default: git describe; a copied "
                                          "working tree without .git has none)")
    parser.add_argument("--model-cache", help="where the cards are materialised (default: /dev/shm when it has "
                                              "room, else LOKAAL_BENCH_CACHE or ~/.cache/lokaal-bench/models)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return Acceptance(build_parser().parse_args(argv)).run()
