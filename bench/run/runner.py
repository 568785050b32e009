"""The runner: profile -> cells -> one isolated process per cell -> a result set on disk.

A failing, crashing, hung or memory-hungry cell becomes a FAILED row with its reason and the
sweep goes on. The manifest is rewritten (atomically) after every cell, so a run killed at any
moment leaves a result set that `--resume` completes, redoing only the cells without a result.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import __version__, scrub
from bench.atomic import write_json
from bench.errors import BenchError, ResultSetError
from bench.fleet.shards import Shard
from bench.measure.cell_summary import build_summary
from bench.measure.roofline import for_cell as roofline_for_cell
from bench.measure.sizing import plan_measurement
from bench.measure.validity import judge
from bench.netguard import NetworkGuard, apply_offline_env, read_refusals
from bench.profile.cells import Cell, expand
from bench.profile.engine_specs import runs_gguf
from bench.profile.loading import profile_from_text, read_profile_text
from bench.profile.spec import Profile
from bench.results.records import RequestRecord, read_records
from bench.results.resultset import SCHEMA_VERSION, ResultSet, new_run_id, utc_now
from bench.results.upgrade import UPGRADED_FROM
from bench.run import disk_space as diskspace
from bench.run import memory_limit as memlimit
from bench.run.disk_space import DiskFullError, check_space, estimate
from bench.run.machine_lock import WAIT, InterruptedWhileWaiting, MachineLock
from bench.serving.managed import ServerPool, ServerStartError

GUARD_DESCRIPTION = "python audit hook on socket events (connect, sendto, getaddrinfo): loopback and allow_hosts only"


@dataclass
class RunObserver:
    """What the runner tells its caller (the CLI draws progress from these)."""

    run_started: Callable[[Path, list[Cell], set[str]], None] = lambda path, cells, done: None
    cell_started: Callable[[Cell, int, int], None] = lambda cell, index, total: None
    cell_event: Callable[[Cell, dict[str, Any]], None] = lambda cell, event: None
    cell_finished: Callable[[Cell, dict[str, Any]], None] = lambda cell, summary: None
    message: Callable[[str], None] = lambda text: None
    model_progress: Callable[[str, int, int], None] = lambda name, done, total: None


@dataclass
class RunSetup:
    profile_path: Path
    profile: Profile
    cells: list[Cell]
    result_set: ResultSet
    resume: bool
    source: str  # the profile's text, kept in the manifest so `rerun` can run exactly it again
    skip: set[str] = field(default_factory=set)
    when_busy: str = WAIT  # another run measuring on this machine: wait for it, or mark (bench/run/machine_lock.py)
    all_cell_ids: list[str] = field(default_factory=list)  # the whole profile's, in its order (a shard runs some)
    campaign: dict[str, Any] | None = None  # a shard's campaign record (bench/fleet/campaign.py), kept in the manifest
    invocation: dict[str, Any] = field(default_factory=dict)  # what to add to this invocation's record


def prepare_run(profile_path: Path, results_root: Path, output: Path | None, resume: Path | None,
             machine_id: str, source: str | None = None, when_busy: str = WAIT, shard: Shard | None = None) -> RunSetup:
    """`source`: the profile's text when it does not come from `profile_path` itself (rerun);
    `profile_path` still anchors its relative paths. `shard`: run only its share of the cells
    (bench/fleet/shards.py). Everything that can be checked before running is checked here
    (bench/profile/preflight.py through the profile loader, then the disk space)."""
    if source is None:
        source = read_profile_text(profile_path)
        profile = profile_from_text(source, profile_path)
    else:
        profile = profile_from_text(source, profile_path, f"{profile_path} (as stored in the result set)")
    cells = expand(profile, profile_path)
    all_ids = [c.id for c in cells]
    if shard is not None:
        cells = shard.select(cells)
    if resume is not None:
        result_set = ResultSet(resume)
        manifest = result_set.read_manifest()
        previous = [c["id"] for c in manifest.get("cells", [])]
        if sorted(previous) != sorted(c.id for c in cells):
            raise BenchError(
                f"{resume}: this result set was made from a profile with other cells; "
                f"--resume needs the same profile ({manifest.get('profile', {}).get('path')})"
            )
        done = result_set.completed_cells()
        check_space(estimate([c for c in cells if c.id not in done], resume))
        return RunSetup(profile_path, profile, cells, result_set, True, source, done, when_busy, all_ids)
    if output is not None and (output / "manifest.json").exists():
        raise BenchError(f"{output} already holds a result set; choose another --output or use --resume")
    check_space(estimate(cells, output or results_root))
    return RunSetup(profile_path, profile, cells, ResultSet(output or _claim_run_dir(results_root, profile.name,
                                                                                    machine_id)),
                   False, source, when_busy=when_busy, all_cell_ids=all_ids)


def _claim_run_dir(results_root: Path, profile_name: str, machine_id: str) -> Path:
    """A new result set directory, made here so that no other run (started in the same second) takes it."""
    for _ in range(100):
        path = results_root / new_run_id(profile_name, machine_id)
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise BenchError(f"{results_root}: could not find a free run id")


def _profile_record(plan: RunSetup) -> dict[str, Any]:
    text = plan.source
    return {
        "name": plan.profile.name,
        "path": str(plan.profile_path),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "source": text,
        "resolved": plan.profile.model_dump(mode="json"),
    }


class Runner:
    def __init__(self, plan: RunSetup, environment: dict[str, Any], observer: RunObserver | None = None):
        self.plan = plan
        self.environment = environment
        self.observer = observer or RunObserver()
        self.result_set = plan.result_set
        self.summaries: dict[str, dict[str, Any]] = {}
        self.manifest: dict[str, Any] = {}
        self.model_dirs: dict[str, Path] = {}  # name/dtype -> directory, for the weights' hashes
        self.model_paths: dict[tuple[Any, ...], Path] = {}  # _model_key -> directory, for managed servers
        # Managed servers (engine openai with `server:`): started before their first cell, stopped in run().
        self.servers = ServerPool(self.result_set.path / "servers")
        # No secret the profile points at (API keys, a server's tokens) is written by this process.
        scrub.register_engines(cell.to_dict()["engine"] for cell in plan.cells)
        self.lock = MachineLock(self.result_set.path, plan.when_busy)

    # --- manifest ------------------------------------------------------------------------------

    def _start_manifest(self) -> None:
        now = utc_now()
        if self.plan.resume:
            self.manifest = self.result_set.read_manifest()
            # A resumed older result set is written (and sealed) in the current schema from here on.
            self.manifest.pop(UPGRADED_FROM, None)
            interruption = self.manifest.pop("interruption", None)  # what stopped it last time: in its invocation
            if interruption and self.manifest.get("invocations"):
                self.manifest["invocations"][-1]["interruption"] = interruption
            self.manifest.setdefault("invocations", []).append({"started": now, "resume": True})
            for cell_id in self.plan.skip:
                summary = self.result_set.read_cell_summary(cell_id)
                if summary:
                    self.summaries[cell_id] = summary
        else:
            self.manifest = {
                "schema_version": SCHEMA_VERSION,
                "kind": "lokaal-bench-result-set",
                "run_id": self.result_set.path.name,
                "lokaal_bench_version": __version__,
                "created": now,
                "finished": None,
                "status": "running",
                "profile": _profile_record(self.plan),
                "machine_id": self.environment.get("machine_id"),
                "environment": self.environment,
                "offline": {},
                "invocations": [{"started": now, "resume": False}],
                "cells": [],
            }
        self.manifest["status"] = "running"
        self.manifest["invocations"][-1].update(self.plan.invocation)
        if self.plan.campaign is not None:
            self.manifest["campaign"] = self.plan.campaign
        # Privacy: whether any cell of this set kept prompt and response text (a resume may have turned it on).
        stored = bool((self.manifest.get("privacy") or {}).get("store_text"))
        self.manifest["privacy"] = {"store_text": stored or self.plan.profile.run.store_text}
        self.manifest["offline"] = {
            "offline": True,
            "env": apply_offline_env(),
            "guard": GUARD_DESCRIPTION,
            "allowed_hosts": self.plan.profile.run.allow_hosts,
            "refused": self.manifest.get("offline", {}).get("refused", []),
        }
        self._write_manifest()

    def _cell_index(self) -> list[dict[str, Any]]:
        index = []
        for cell in self.plan.cells:
            summary = self.summaries.get(cell.id)
            index.append({
                "id": cell.id,
                "label": cell.label,
                "dir": f"cells/{cell.id}",
                "status": summary["status"] if summary else "PENDING",
                "reason": summary.get("reason") if summary else None,
                "synthetic_weights": summary.get("synthetic_weights") if summary else None,
            })
        return index

    def _write_manifest(self) -> None:
        self.manifest["cells"] = self._cell_index()
        counts = {"total": len(self.plan.cells), "COMPLETED": 0, "FAILED": 0, "PENDING": 0}
        for entry in self.manifest["cells"]:
            counts[entry["status"]] += 1
        self.manifest["counts"] = counts
        self.result_set.write_manifest(self.manifest)

    # --- cells ---------------------------------------------------------------------------------

    def _prepare_models(self) -> dict[tuple[Any, ...], str]:
        """Materialise every card/dtype once, before any cell, so load time measures loading."""
        from bench.models import resolve_model

        failures: dict[tuple[Any, ...], str] = {}
        seen: set[tuple[Any, ...]] = set()
        for cell in self.plan.cells:
            if cell.id in self.plan.skip:
                continue
            key = _model_key(cell)
            if key in seen:
                continue
            seen.add(key)
            model = cell.model
            name = f"{model.card or model.path} ({key[2]})"
            self.observer.message(f"preparing model {name}")
            try:
                resolved = resolve_model(
                    card=model.card,
                    path=model.resolved_path or model.path,
                    dtype=key[2],
                    seed=model.seed,
                    cache_dir=_cache_dir(cell),
                    allow_pickle=model.allow_pickle,
                    weights=key[4],
                    progress=lambda done, total, name=name: self.observer.model_progress(name, done, total),
                    gguf=key[5][0],
                    quantization=key[5][1],
                )
                dummy = "/dummy-weights" if resolved.weights == "dummy" else ""  # weightless: no files to hash
                self.model_dirs[f"{resolved.name}/{resolved.dtype}{dummy}"] = resolved.path
                self.model_paths[key] = resolved.path
            except Exception as exc:  # the cells of this model fail; the others still run
                failures[key] = f"model could not be prepared: {type(exc).__name__}: {exc}"
        return failures

    def _probe(self) -> None:
        """The machine's limits, once per result set (a resume keeps the first run's), for rooflines."""
        from bench.run.probes import probe_in_subprocess

        if not self.plan.profile.run.probes or self.manifest.get("probes"):
            return
        self.observer.message("probing memory bandwidth and matrix-multiply throughput")
        self.manifest["probes"] = probe_in_subprocess(quick=True, model_dirs=list(self.model_dirs.values()))
        self._write_manifest()

    def _fail_without_running(self, cell: Cell, reason: str) -> dict[str, Any]:
        from bench.run.isolation import Outcome

        now = utc_now()
        self.result_set.cell_dir(cell.id).mkdir(parents=True, exist_ok=True)
        return build_summary(cell, Outcome(None, reason, 0.0), None, [], {}, {}, now, now)

    def _run_cell(self, cell: Cell, index: int, total: int) -> dict[str, Any]:
        from bench.run.isolation import run_isolated
        from bench.telemetry import summarise_telemetry

        cell_dir = self.result_set.cell_dir(cell.id)
        cell_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("result.json", "records.jsonl.gz", "network.jsonl", "server-metrics.jsonl.gz"):
            (cell_dir / stale).unlink(missing_ok=True)
        spec_path = cell_dir / "spec.json"
        plan = plan_measurement(cell.run, cell.scenario)
        spec: dict[str, Any] = {"cell": cell.to_dict(), "plan": plan.to_json(), "lokaal_bench_version": __version__}
        server = getattr(cell.engine, "server", None)
        if server is not None:  # the cell's client gets the managed server's URL (not part of its id)
            model_dir = self.model_paths[_model_key(cell)]
            if not self.servers.started(server, model_dir):
                self.observer.message(f"starting the {server.kind} server (once per server and model)")
            try:
                spec["managed_base_urls"] = [self.servers.url_for(server, model_dir)]
            except ServerStartError as exc:
                return self._fail_without_running(cell, str(exc).splitlines()[0])
        if cell.run.client_processes == "auto":  # the cell sizes its client from this machine's ceiling
            spec["load_generator_calibration"] = self.manifest.get("load_generator_calibration")
        write_json(spec_path, spec)
        run = self.plan.profile.run
        limit = memlimit.prepare(*memlimit.resolve(run.memory_limit_gib))
        started = utc_now()
        started_wall = time.time()
        outcome = run_isolated(
            spec_path,
            cell_dir,
            timeout_s=plan.cell_timeout_s,
            memory_limit=limit,
            telemetry_interval_s=run.telemetry_interval_s,
            on_event=lambda event: self.observer.cell_event(cell, event),
            server_metrics_url=_server_metrics_url(cell, spec),
            allowed_hosts=cell.run.allow_hosts,
        )
        finished = utc_now()
        scrub.file(cell_dir / "cell.log")  # the cell's own output: whatever a library printed
        result = _read_json(cell_dir / "result.json")
        records = _read_records_safely(cell_dir / "records.jsonl.gz")
        window = (result or {}).get("clock", {}).get("measured_window_wall")
        telemetry = summarise_telemetry(outcome.samples, tuple(window) if window else None)
        whole = summarise_telemetry(outcome.samples, None)
        self.result_set.write_samples(cell.id, outcome.samples)
        server_view = None
        if outcome.server_metrics is not None:  # the server's own view, beside the client's
            from bench.telemetry.server_metrics import summarise_server_metrics

            scraped = outcome.server_metrics
            self.result_set.write_samples(cell.id, scraped["samples"], "server-metrics.jsonl.gz")
            server_view = summarise_server_metrics(scraped["samples"], tuple(window) if window else None,
                                                   scraped["url"], scraped["reason"])
        summary = build_summary(cell, outcome, result, records, telemetry, whole, started, finished, server_view)
        summary["memory_limit"] = limit.record()
        others = self.lock.others_during(started_wall, time.time())
        if others:  # another run measured during this cell: its numbers are not this machine's alone
            summary["concurrent_runs"] = others
            summary["validity"] = judge(summary, cell.run.rules)
        if summary["status"] == "FAILED" and (diskspace.says_disk_full(summary["reason"])
                                              or shutil.disk_usage(cell_dir).free < diskspace.CELL_FLOOR_BYTES):
            # The cell died of the full disk, not of itself: no FAILED row; a resume redoes it.
            raise OSError(errno.ENOSPC, "No space left on device (in the cell process)", str(cell_dir))
        summary["roofline"] = roofline_for_cell(summary, self.manifest.get("probes") or {})
        refused = read_refusals(cell_dir / "network.jsonl")
        summary["network_refused"] = refused
        if refused:
            self.manifest["offline"]["refused"].extend({"cell": cell.id, **r} for r in refused)
        return summary

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        # Before anything is written: a run that waits for another one has not started yet.
        try:
            self.lock.acquire(self.observer.message)
        except InterruptedWhileWaiting:
            with contextlib.suppress(OSError):  # the directory claimed for it, still empty
                self.result_set.path.rmdir()
            raise
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> dict[str, Any]:
        self.result_set.path.mkdir(parents=True, exist_ok=True)
        guard = NetworkGuard.install(self.plan.profile.run.allow_hosts, self.result_set.path / "network.jsonl")
        try:
            diskspace.make_reserve(self.result_set.path)
            self._start_manifest()
            self.observer.run_started(self.result_set.path, self.plan.cells, self.plan.skip)
            model_failures = self._prepare_models()
            self._probe()
            self._record_loadgen_calibration()
            todo = [c for c in self.plan.cells if c.id not in self.plan.skip]
            for number, cell in enumerate(todo, start=1):
                self.observer.cell_started(cell, number, len(todo))
                failure = model_failures.get(_model_key(cell))
                summary = scrub.data(self._fail_without_running(cell, failure) if failure
                                     else self._run_cell(cell, number, len(todo)))
                self.result_set.write_cell_summary(cell.id, summary)
                self.summaries[cell.id] = summary
                self._write_manifest()
                self.lock.heartbeat()
                self.observer.cell_finished(cell, summary)
        except KeyboardInterrupt:
            self._stop_servers()
            self.manifest["status"] = "interrupted"
            self.manifest["offline"]["refused"].extend(guard.refused)
            self._write_manifest()
            diskspace.free_reserve(self.result_set.path)
            self._seal()
            raise
        except OSError as exc:
            if not diskspace.is_disk_full(exc):
                raise
            self._stop_for_full_disk(diskspace.where_it_failed(exc, self.result_set.path), guard.refused)
        finally:
            self._stop_servers()  # whatever happened: no server outlives the run
        self.manifest["offline"]["refused"].extend({"cell": None, **r} for r in guard.refused)
        guard.refused.clear()
        self.manifest["status"] = "complete"
        self.manifest["finished"] = utc_now()
        self.manifest["invocations"][-1]["finished"] = self.manifest["finished"]
        self._write_manifest()
        diskspace.free_reserve(self.result_set.path)
        self._seal()
        return self.manifest

    def _stop_for_full_disk(self, where: Path, refused: list[dict[str, Any]]) -> None:
        """The disk filled: give back the reserve, mark the result set interrupted (why, where) and seal
        it if there is room now, then stop with DiskFullError (exit 130; the completed cells stay)."""
        diskspace.free_reserve(self.result_set.path)
        self._stop_servers()
        if self.manifest:
            self.manifest["status"] = "interrupted"
            self.manifest["interruption"] = {"reason": "disk full", "where": str(where), "at": utc_now()}
            with contextlib.suppress(OSError):  # still no room: the manifest on disk already says "running"
                self.manifest["offline"]["refused"].extend(refused)
                self._write_manifest()
                self._seal()
        resume = f"lokaal-bench run {self.plan.profile_path} --resume {self.result_set.path}"
        raise DiskFullError(where, self.result_set.path, resume)

    def _record_loadgen_calibration(self) -> None:
        """Served cells: how far this machine's load generator can be trusted (`lokaal-bench calibrate`)."""
        from bench.serving.calibrate import latest_for

        if any(c.served for c in self.plan.cells):
            found = latest_for(self.manifest.get("machine_id") or "")
            self.manifest["load_generator_calibration"] = found or {
                "missing": "no `lokaal-bench calibrate` result for this machine: run it to know the client's ceiling"}
            self._write_manifest()

    def _stop_servers(self) -> None:
        """Stop every managed server (idempotent) and record them: command, version, log, exit status."""
        self.servers.close()
        for server in self.servers.servers.values():
            scrub.file(server.log_path)  # a server may log the headers it was sent
        if self.servers.servers:
            self.manifest["servers"] = {**self.manifest.get("servers", {}), **self.servers.records()}

    def _seal(self) -> None:
        """Hash every file into the manifest (see bench.results.integrity); kept hashes of earlier runs'
        models survive a resume, whose prepared models are only those of the redone cells."""
        from bench.results.integrity import model_weight_hashes, seal

        models = dict((self.manifest.get("integrity") or {}).get("model_weights") or {})
        for name, path in self.model_dirs.items():
            models[name] = model_weight_hashes(path)
        self.manifest = seal(self.result_set.path, self.manifest, models)


def _server_metrics_url(cell: Cell, spec: dict[str, Any]) -> str | None:
    """Where a served cell's server publishes its Prometheus metrics (its first endpoint's /metrics)."""
    from bench.telemetry.server_metrics import metrics_url

    urls = spec.get("managed_base_urls") or getattr(cell.engine, "base_urls", None) or []
    return metrics_url(urls[0]) if cell.served and cell.run.server_metrics and urls else None


def _model_key(cell: Cell) -> tuple[Any, ...]:
    model = cell.model
    gguf = runs_gguf(cell.engine)  # llama.cpp cells: a GGUF file, at the engine's (or server's) quantisation
    return (model.card, model.resolved_path or model.path, cell.engine.weights_dtype, model.seed,
            cell.engine.weights_source, gguf)


def _cache_dir(cell: Cell) -> Path | None:
    configured = cell.run.model_cache_dir
    return Path(configured).expanduser() if configured else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _read_records_safely(path: Path) -> list[RequestRecord]:
    """Records of a finished cell; a cell that died before writing them has none."""
    try:
        return list(read_records(path))
    except (OSError, ResultSetError):
        return []


def default_profile() -> Path:
    """profiles/quickstart.yaml beside the package (editable install) or in the working directory."""
    beside_package = Path(__file__).resolve().parent.parent / "profiles" / "quickstart.yaml"
    if beside_package.is_file():
        return beside_package
    return Path(os.getcwd()) / "profiles" / "quickstart.yaml"
