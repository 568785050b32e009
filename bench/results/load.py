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

Campaigns (bench/fleet/campaign.py): the shards of one campaign on one machine kind are read as one
run, a `CampaignRun`, in every reader: its cells are the shards' cells in the profile's order, each
once. A campaign directory (it holds campaign.json) is found below a folder like a result set is.
A results store (bench/fleet/store.py: `fleet.duckdb`, or `fleet.duckdb::NAME` for one run in it)
is a source like a directory: its sets come back as the same typed objects, read from the database.
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

CAMPAIGN_FILE = "campaign.json"  # bench/fleet/campaign.py writes it; a folder holding one is a campaign directory
STORE_SUFFIX = ".duckdb"  # bench/fleet/store.py
STORE_SEPARATOR = "::"  # fleet.duckdb::NAME: one result set or campaign run of a store


def find_result_sets(root: Path) -> list[Path]:
    """The result sets directly below a folder and directly below the campaign directories in it, by name."""
    root = Path(root)
    found = [p.parent for p in root.glob(f"*/{MANIFEST}")]
    for campaign in root.glob(f"*/{CAMPAIGN_FILE}"):
        found += [p.parent for p in campaign.parent.glob(f"*/{MANIFEST}")]
    return sorted(found)


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

    @property
    def campaign(self) -> dict[str, Any] | None:
        """The shard's campaign record (bench/fleet/campaign.py), or None for a set run on its own."""
        return self.manifest.get("campaign")


@dataclass(eq=False)
class CampaignRun(LoadedResultSet):
    """The shards of one campaign on one machine kind, read as one run. Its manifest is the first shard's
    with the cells of all of them (each cell once: a completed one before another, then the newest),
    their counts, the earliest start and the last finish; `campaign` adds the shards and the cells no
    shard has yet (`missing_cell_ids`). Each cell still belongs to its own shard (its records are there)."""

    shards: list[LoadedResultSet] = field(default_factory=list, repr=False)
    merged_cells: list[LoadedCell] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest.get("run_id"))

    @cached_property
    def cells(self) -> list[LoadedCell]:
        return self.merged_cells


def _merge_shards(shards: list[LoadedResultSet], name: str) -> CampaignRun:
    shards = sorted(shards, key=lambda s: ((s.campaign or {})["shard"]["index"], s.created, s.name))
    record = dict(shards[0].campaign or {})
    order = {cell_id: n for n, cell_id in enumerate(record.get("cell_ids") or [])}
    chosen: dict[str, LoadedCell] = {}
    duplicates = 0
    for shard in shards:
        for cell in shard.cells:
            held = chosen.get(cell.id)
            duplicates += held is not None
            if held is None or (cell.completed, shard.created) > (held.completed, held.result_set.created):
                chosen[cell.id] = cell
    cells = sorted(chosen.values(), key=lambda c: (order.get(c.id, len(order)), c.id))
    counts = {"total": len(cells), "COMPLETED": 0, "FAILED": 0, "PENDING": 0}
    for cell in cells:
        counts[cell.status if cell.status in counts else "PENDING"] += 1
    statuses = {s.manifest.get("status") for s in shards}
    missing = [c for c in record.get("cell_ids") or [] if c not in chosen]
    machine_ids = {s.machine_id for s in shards}
    finished = [s.manifest.get("finished") for s in shards]
    manifest = {k: v for k, v in shards[0].manifest.items() if k != "integrity"}
    manifest.update(
        run_id=name, created=min(s.created for s in shards),
        finished=None if None in finished or missing else max(str(f) for f in finished),
        status="complete" if statuses == {"complete"} and not missing else
        "running" if "running" in statuses else "interrupted",
        machine_id=machine_ids.pop() if len(machine_ids) == 1 else f"kind-{record.get('machine_kind_id')}",
        probes=next((s.probes for s in shards if s.probes), {}),
        cells=[c.entry for c in cells], counts=counts,
        campaign={**{k: v for k, v in record.items() if k != "shard"}, "missing_cell_ids": missing,
                  "duplicate_cells": duplicates,
                  "shards": [{"result_set": s.name, "path": str(s.path), **(s.campaign or {})["shard"],
                              "status": s.manifest.get("status"), "counts": s.manifest.get("counts")}
                             for s in shards]})
    upgraded = [s.upgraded_from for s in shards if s.upgraded_from is not None]
    if upgraded:
        manifest[UPGRADED_FROM] = min(upgraded)
    parents = {s.path.parent for s in shards}
    return CampaignRun(parents.pop() if len(parents) == 1 else shards[0].path, manifest, shards, cells)


def merge_campaigns(sets: list[LoadedResultSet]) -> list[LoadedResultSet]:
    """Shards of one campaign on one machine kind become one CampaignRun, in the place of the first;
    other sets pass as they are. A campaign on several kinds names each run `ID@KIND`."""
    groups: dict[tuple[str, str], list[LoadedResultSet]] = {}
    for one in sets:
        if one.campaign and not isinstance(one, CampaignRun):
            groups.setdefault((str(one.campaign["id"]), str(one.campaign.get("machine_kind_id"))), []).append(one)
    kinds: dict[str, int] = {}
    for campaign_id, _ in groups:
        kinds[campaign_id] = kinds.get(campaign_id, 0) + 1
    merged: list[LoadedResultSet] = []
    for one in sets:
        if not one.campaign or isinstance(one, CampaignRun):
            merged.append(one)
            continue
        key = (str(one.campaign["id"]), str(one.campaign.get("machine_kind_id")))
        if key in groups:
            name = key[0] if kinds[key[0]] == 1 else f"{key[0]}@{key[1]}"
            merged.append(_merge_shards(groups.pop(key), name))
    return merged


Source = str | Path | LoadedResultSet


def is_store(source: str | Path) -> bool:
    """A results store: `fleet.duckdb` or `fleet.duckdb::NAME`."""
    text = str(source)
    return STORE_SEPARATOR in text or text.endswith(STORE_SUFFIX)


def _read_one(path: Path) -> LoadedResultSet:
    return LoadedResultSet(path, ResultSet(path).read_manifest())


def load_result_set(source: str | Path) -> LoadedResultSet:
    """One run: a result set, a campaign directory (its shards as one run), a folder holding exactly one run,
    or `STORE::NAME`. ResultSetError naming the path when it is none, is corrupt or too new."""
    path = Path(source)
    if not is_store(source) and not (path / MANIFEST).exists() and not result_set_paths([path]):
        raise ResultSetError(f"{path}: not a result set (no {MANIFEST})")
    runs = load_result_sets([source])
    if len(runs) != 1:
        names = ", ".join(r.name for r in runs[:5]) + (" ..." if len(runs) > 5 else "")
        raise ResultSetError(f"{source}: holds {len(runs)} runs ({names}); give one of them")
    return runs[0]


def load_result_sets(sources: Source | Iterable[Source], merge: bool = True,
                     samples_of: Iterable[str] = ()) -> list[LoadedResultSet]:
    """Result sets from directories, folders of them, campaign directories, stores and loaded sets (passed
    through as they are); with `merge` (the default) a campaign's shards on one machine kind are one run.
    `samples_of` names the metrics whose samples the caller will read: a store fetches them at once."""
    items: Iterable[Source] = [sources] if isinstance(sources, str | Path | LoadedResultSet) else sources
    samples_of = tuple(samples_of)
    loaded: list[LoadedResultSet] = []
    for item in items:
        if isinstance(item, LoadedResultSet):
            loaded.append(item)
        elif is_store(item):
            from bench.fleet.store import load_from_store

            loaded += load_from_store(str(item), samples_of)
        else:
            loaded += [_read_one(p) for p in result_set_paths([Path(item)])]
    return merge_campaigns(loaded) if merge else loaded
