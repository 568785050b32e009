"""The one door to result sets: every reader (compare, tables, dataframe, report, history, rerun, plan,
project, fit) gets its result sets, cells and records from here.

`load_result_sets(sources)` takes result-set directories, folders holding them, or sets already
loaded (passed through, so one `report` reads each set once) and returns `LoadedResultSet`s: the
manifest (upgraded on read, bench/results/upgrade.py) and its cells in manifest order, each a
`LoadedCell` with its cell summary (upgraded too) and typed accessors for what readers use often.
A cell's raw records and telemetry samples are read only when asked for, and once.

Metrics are read by name through the metric registry (bench/measure/metric_registry.py) from the
stored summary; a metric the summary's schema version did not store yet is computed from the
records by the same registry, so an old result set shows every metric a new one does.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.errors import ResultSetError
from bench.measure.metric_registry import METRICS, split_metric
from bench.results.records import RequestRecord, read_records
from bench.results.resultset import MANIFEST, ResultSet
from bench.results.upgrade import UPGRADED_FROM


def find_result_sets(root: Path) -> list[Path]:
    """The result sets directly below a folder, by name."""
    return sorted(p.parent for p in Path(root).glob(f"*/{MANIFEST}"))


def result_set_paths(paths: Iterable[Path]) -> list[Path]:
    """Each path that is a result set, or the result sets directly below it."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += [path] if (path / MANIFEST).exists() else find_result_sets(path)
    return found


@dataclass(eq=False)
class LoadedCell:
    """One cell of a loaded result set: its manifest entry, its summary (None when the cell never
    finished or its cell.json is unreadable) and, on demand, its records."""

    result_set: LoadedResultSet = field(repr=False)
    entry: dict[str, Any] = field(repr=False)
    summary: dict[str, Any] | None = field(repr=False)
    _computed: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return str(self.entry["id"])

    @property
    def label(self) -> str:
        return str((self.summary or {}).get("label") or self.entry.get("label") or self.id)

    @property
    def status(self) -> str:
        """COMPLETED or FAILED from the summary; the manifest's word (PENDING...) when there is none."""
        return str((self.summary or {}).get("status") or self.entry.get("status") or "PENDING")

    @property
    def reason(self) -> str | None:
        return (self.summary or {}).get("reason") or self.entry.get("reason")

    @property
    def completed(self) -> bool:
        """Done only when its cell.json says so (the manifest's word alone is not enough)."""
        return (self.summary or {}).get("status") == "COMPLETED"

    @property
    def directory(self) -> Path:
        return self.result_set.path / "cells" / self.id

    @property
    def config(self) -> dict[str, Any]:
        return (self.summary or {}).get("config") or {}

    @property
    def scenario(self) -> dict[str, Any]:
        return self.config.get("scenario") or {}

    @property
    def scenario_kind(self) -> str | None:
        return self.scenario.get("kind")

    @property
    def served(self) -> bool:
        """Whether the cell measured a server through the streaming client (its records are one request each)."""
        from bench.profile.spec import SERVED_SCENARIOS

        return self.scenario_kind in SERVED_SCENARIOS

    @property
    def model_name(self) -> str | None:
        model = self.config.get("model") or {}
        return model.get("name") or model.get("card") or model.get("path")

    @property
    def engine_kind(self) -> str | None:
        return (self.config.get("engine") or {}).get("kind")

    @property
    def engine_label(self) -> str | None:
        """`transformers/bfloat16/cpu`, as in the cell's label."""
        from bench.profile.cells import engine_label

        engine = self.config.get("engine")
        return engine_label(engine) if engine else None

    @property
    def point_label(self) -> str | None:
        """The scenario point as in the cell's label: `offline b=4`, `concurrency u=16`..."""
        from bench.profile.cells import point_label

        return point_label(self.scenario) if self.scenario else None

    @property
    def workload(self) -> str | None:
        return (self.config.get("workload") or {}).get("name")

    @property
    def verdict(self) -> str | None:
        """VALID or INVALID under the cell's validity rules; None without a summary."""
        return ((self.summary or {}).get("validity") or {}).get("verdict")

    # --- metrics ---------------------------------------------------------------------------------

    def metric_entry(self, base: str) -> dict[str, Any] | None:
        """A metric's headline entry: as stored, or (a metric its schema version did not store) from
        the records through the registry. None for a cell that did not complete."""
        stored = ((self.summary or {}).get("metrics") or {}).get(base)
        if stored is not None or not self.completed or base not in METRICS:
            return stored
        if base not in self._computed:
            records = [r for r in self.records if not r.warmup]
            repetitions = sorted({r.repetition for r in records})
            metric = METRICS[base]
            self._computed[base] = metric.headline(metric.compute(records), repetitions) if records else None
        return self._computed[base]

    def metric(self, name: str) -> float | None:
        """A metric's figure by name as users write it (`decode_tok_s`, `ttft_p99`), in its unit (s, tok/s)."""
        base, stat = split_metric(name)
        return METRICS[base].stored(self.metric_entry(base), stat)

    @property
    def metrics(self) -> dict[str, Any]:
        """Every stored metric, and every registry metric the summary did not store, from the records."""
        stored = dict((self.summary or {}).get("metrics") or {})
        for base in METRICS:
            if base not in stored and (entry := self.metric_entry(base)) is not None:
                stored[base] = entry
        return stored

    def samples(self, base: str) -> list[Any]:
        """A metric's samples from the records (warm-up excluded), as `compare` and `history` test them."""
        return METRICS[base].samples(self.records)

    # --- raw data, read on demand ----------------------------------------------------------------

    @cached_property
    def records(self) -> list[RequestRecord]:
        """Every raw record of the cell, warm-up included ([] when there is no records file)."""
        path = self.directory / "records.jsonl.gz"
        if not path.exists():
            return []
        return list(read_records(path))  # a corrupt file is a ResultSetError naming it

    @cached_property
    def telemetry_samples(self) -> list[dict[str, Any]]:
        """The raw telemetry samples ([] when there are none)."""
        return self._samples("telemetry.jsonl.gz")

    @cached_property
    def server_samples(self) -> list[dict[str, Any]]:
        """Served cells: the server's /metrics samples ([] when there are none; bench/telemetry/server_metrics.py)."""
        return self._samples("server-metrics.jsonl.gz")

    def _samples(self, name: str) -> list[dict[str, Any]]:
        path = self.directory / name
        if not path.exists():
            return []
        try:
            with gzip.open(path, "rt", encoding="utf-8") as src:
                return [json.loads(line) for line in src if line.strip()]
        except (OSError, EOFError, zlib.error, json.JSONDecodeError) as exc:
            raise ResultSetError(f"{path}: unreadable samples ({exc})") from None


@dataclass(eq=False)
class LoadedResultSet:
    """One result set: its manifest (read and upgraded when loaded) and its cells (read on first use)."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def machine_id(self) -> str | None:
        return self.manifest.get("machine_id")

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))

    @property
    def environment(self) -> dict[str, Any]:
        return self.manifest.get("environment") or {}

    @property
    def probes(self) -> dict[str, Any]:
        return self.manifest.get("probes") or {}

    @property
    def cpu(self) -> str | None:
        return (self.environment.get("cpu") or {}).get("model_name")

    @property
    def upgraded_from(self) -> int | None:
        """The older schema version the set was written with, or None."""
        return self.manifest.get(UPGRADED_FROM)

    @cached_property
    def cells(self) -> list[LoadedCell]:
        """The cells in manifest order, each summary read (and upgraded) once."""
        store = ResultSet(self.path)
        return [LoadedCell(self, entry, store.read_cell_summary(entry["id"]))
                for entry in self.manifest.get("cells", [])]

    def cell(self, cell_id: str) -> LoadedCell | None:
        return next((c for c in self.cells if c.id == cell_id), None)


Source = str | Path | LoadedResultSet


def load_result_set(path: str | Path) -> LoadedResultSet:
    """One result set; ResultSetError naming the path when it is none, is corrupt or too new."""
    path = Path(path)
    return LoadedResultSet(path, ResultSet(path).read_manifest())


def load_result_sets(sources: Source | Iterable[Source]) -> list[LoadedResultSet]:
    """Result sets from directories, folders of them and loaded sets (passed through as they are)."""
    items: Iterable[Source] = [sources] if isinstance(sources, str | Path | LoadedResultSet) else sources
    loaded: list[LoadedResultSet] = []
    for item in items:
        if isinstance(item, LoadedResultSet):
            loaded.append(item)
        else:
            loaded += [load_result_set(p) for p in result_set_paths([Path(item)])]
    return loaded
