"""One results store for a fleet: any number of result sets in one DuckDB file (an embedded database, the
`[store]` extra), which every reader takes as a source like a directory (bench/results/load.py):
`fleet.duckdb` for all its runs, `fleet.duckdb::NAME` for one (a result set, a run id or a campaign).

`add` loads a set's manifest, its cells' summaries and their per-request records, each in the current
schema (upgraded and checked against the JSON schemas once, here, so readers need not again), and each
metric's samples as the registry derives them from the records (what history and compare test; a
reader whose registry differs, by its fingerprint, derives them from the stored records instead). It is
incremental by seal: a set whose seal the store holds is skipped; a set that was resumed since (same
name, a new seal) replaces its older version; a set that does not verify (tampered, or not sealed yet)
is refused. The store carries its schema version. Writers take an exclusive lock on `DB.lock` and
readers a shared one, so nodes adding at once wait their turn and no reader meets a half-written set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ResultSetError
from bench.results.load import STORE_SEPARATOR, LoadedCell, LoadedResultSet
from bench.results.records import RequestRecord

STORE_SCHEMA_VERSION = 1
TABLES = ("result_sets", "cells", "records", "samples")
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    """CREATE TABLE IF NOT EXISTS result_sets (seal VARCHAR PRIMARY KEY, name VARCHAR, run_id VARCHAR,
       campaign_id VARCHAR, created VARCHAR, machine_id VARCHAR, status VARCHAR, source VARCHAR, added VARCHAR,
       manifest JSON)""",
    """CREATE TABLE IF NOT EXISTS cells (seal VARCHAR, position INTEGER, cell_id VARCHAR, label VARCHAR,
       status VARCHAR, summary JSON, PRIMARY KEY (seal, cell_id))""",
    """CREATE TABLE IF NOT EXISTS records (seal VARCHAR, cell_id VARCHAR, n INTEGER, repetition INTEGER,
       request_id INTEGER, ok BOOLEAN, record JSON)""",
    # Each registry metric's samples per cell (bench/measure/metric_registry.py), derived from the records
    # when the set is added: what history and compare test, read without parsing every record again.
    """CREATE TABLE IF NOT EXISTS samples (seal VARCHAR, cell_id VARCHAR, metric VARCHAR, kind VARCHAR,
       registry VARCHAR, payload JSON)""",
]


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise BenchError("the results store needs DuckDB: pip install 'lokaal-bench[store]' (or pip install duckdb)"
                         ) from None
    return duckdb


@contextlib.contextmanager
def _locked(db: Path, exclusive: bool) -> Iterator[None]:
    """Writers one at a time, readers beside each other but never beside a writer (DuckDB allows one
    writing process per file; this makes the others wait instead of fail)."""
    lock = db.with_name(db.name + ".lock")
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def connect(db: Path, write: bool) -> Iterator[Any]:
    duckdb = _duckdb()
    db = Path(db)
    if not write and not db.is_file():
        raise BenchError(f"{db}: no such results store (lokaal-bench store add RESULTS --db {db})")
    if write:
        db.parent.mkdir(parents=True, exist_ok=True)
    with _locked(db, exclusive=write):
        try:
            con = duckdb.connect(str(db), read_only=not write)
        except duckdb.Error as exc:
            raise BenchError(f"{db}: not a readable DuckDB results store ({exc})") from None
        try:
            if write:
                for statement in _SCHEMA:
                    con.execute(statement)
                version = _version(con, db)
                if version is None:
                    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(STORE_SCHEMA_VERSION)])
            else:
                _version(con, db)
            yield con
        finally:
            con.close()


def _version(con: Any, db: Path) -> int | None:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except Exception:
        raise BenchError(f"{db}: a DuckDB file, but not a lokaal-bench results store (no meta table)") from None
    if row is None:
        return None
    version = int(row[0])
    if version > STORE_SCHEMA_VERSION:
        raise BenchError(f"{db}: store schema version {version} is newer than this lokaal-bench reads "
                         f"({STORE_SCHEMA_VERSION}); upgrade lokaal-bench")
    return version


# --- adding -----------------------------------------------------------------------------------------


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the store, by seal
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def seal_of(manifest: dict[str, Any]) -> str | None:
    integrity = manifest.get("integrity") or {}
    return integrity.get("manifest_bytes_sha256") or integrity.get("manifest_sha256")


def add(sources: Iterable[str | Path], db: Path) -> AddReport:
    from bench.results.integrity import describe, verify
    from bench.results.load import result_set_paths
    from bench.results.resultset import ResultSet

    report = AddReport()
    paths = result_set_paths([Path(s) for s in sources])
    with connect(db, write=True) as con:
        held = {row[0]: row[1] for row in con.execute("SELECT seal, name FROM result_sets").fetchall()}
        for path in paths:
            raw = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
            seal = seal_of(raw)
            if seal is None:
                report.refused.append((str(path), "not sealed (a run still going, or killed): add it once it ends"))
                continue
            if seal in held:
                report.skipped.append(str(path))
                continue
            outcome = verify(path)
            if not outcome.ok:
                report.refused.append((str(path), describe(outcome)))
                continue
            try:
                manifest = ResultSet(path).read_manifest()
                cells = [(n, entry, ResultSet(path).read_cell_summary(entry["id"]))
                         for n, entry in enumerate(manifest.get("cells", []))]
            except ResultSetError as exc:
                report.refused.append((str(path), str(exc)))
                continue
            _insert(con, path, seal, manifest, cells)
            replaced = _replace_older(con, path.name, manifest, seal)
            (report.replaced if replaced else report.added).append(str(path))
            held[seal] = path.name
    return report


def _insert(con: Any, path: Path, seal: str, manifest: dict[str, Any],
            cells: list[tuple[int, dict[str, Any], dict[str, Any] | None]]) -> None:
    import pandas as pd

    from bench.results.records import read_records

    campaign = manifest.get("campaign") or {}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("INSERT INTO result_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            seal, path.name, manifest.get("run_id"), campaign.get("id"), manifest.get("created"),
            manifest.get("machine_id"), manifest.get("status"), str(path.resolve()),
            dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), json.dumps(manifest)])
        rows = [(seal, n, entry["id"], (summary or {}).get("label") or entry.get("label"),
                 (summary or {}).get("status") or entry.get("status"),
                 None if summary is None else json.dumps(summary)) for n, entry, summary in cells]
        if rows:
            con.executemany("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?)", rows)
        records, samples = [], []
        for _, entry, _summary in cells:
            file = path / "cells" / entry["id"] / "records.jsonl.gz"
            if file.exists():
                loaded = list(read_records(file))
                records += [(seal, entry["id"], n, r.repetition, r.request_id, r.ok, json.dumps(r.to_json()))
                            for n, r in enumerate(loaded)]
                samples += [(seal, entry["id"], *row) for row in _samples_rows(loaded)]
        if samples:
            con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", samples)
        if records:
            frame = pd.DataFrame(records, columns=["seal", "cell_id", "n", "repetition", "request_id", "ok", "record"])
            con.register("incoming_records", frame)
            con.execute("INSERT INTO records SELECT * FROM incoming_records")
            con.unregister("incoming_records")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def registry_fingerprint() -> str:
    """Which metric definitions derived the stored samples: this lokaal-bench's version and metric names."""
    import hashlib

    from bench import __version__
    from bench.measure.metric_registry import METRICS

    return hashlib.sha256(f"{__version__}:{sorted(METRICS)}".encode()).hexdigest()[:12]


def _samples_rows(records: list[RequestRecord]) -> list[tuple[str, str, str, str]]:
    from bench.measure.metric_registry import METRICS, RateSample

    fingerprint = registry_fingerprint()
    rows = []
    for base, metric in METRICS.items():
        values = metric.samples(records)
        payload = [[v.repetition, v.amount, v.seconds] if isinstance(v, RateSample) else v for v in values]
        rows.append((base, metric.kind, fingerprint, json.dumps(payload)))
    return rows


def _decode_samples(kind: str, payload: list[Any]) -> list[Any]:
    from bench.measure.metric_registry import RateSample

    return [RateSample(*v) for v in payload] if kind == "rate" else payload


def _replace_older(con: Any, name: str, manifest: dict[str, Any], seal: str) -> bool:
    """A set added before and resumed since (the same name, campaign and start, an older seal): its old
    version goes. Sets that only share a name (shards of two campaigns, two machines' runs) both stay."""
    campaign = (manifest.get("campaign") or {}).get("id")
    older = [row[0] for row in con.execute(
        "SELECT seal FROM result_sets WHERE name = ? AND campaign_id IS NOT DISTINCT FROM ? AND created = ? "
        "AND seal <> ?", [name, campaign, manifest.get("created"), seal]).fetchall()]
    for old in older:
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE seal = ?", [old])  # a fixed table name
    return bool(older)


# --- reading ----------------------------------------------------------------------------------------
# A load reads in one connection (opening one costs about 15 ms, the most of a small history) only what
# every reader needs: each set's name, start, machine, campaign and cell entries, and each cell's scenario
# kind, by DuckDB's JSON functions; and the samples of the metrics the caller names. Manifests and
# summaries are decoded when first used (a history over a hundred sets needs neither), and records when
# first asked for.

_SETS_QUERY = ("SELECT seal, name, created, machine_id, json_extract(manifest, '$.cells'), "
               "json_extract(manifest, '$.campaign'), manifest FROM result_sets")
_CELLS_QUERY = ("SELECT seal, cell_id, summary, json_extract_string(summary, '$.config.scenario.kind') FROM cells "
                "WHERE list_contains(?, seal) ORDER BY seal, position")
_SAMPLES_QUERY = ("SELECT seal, cell_id, kind, payload FROM samples WHERE metric = ? AND registry = ? AND "
                  "list_contains(?, seal)")


def split_source(text: str) -> tuple[Path, str | None]:
    db, _, name = text.partition(STORE_SEPARATOR)
    return Path(db), (name or None)


class _StoredData:
    """The per-request records and metric samples of every set one load read: samples of a metric for all
    cells in one query (in the load's own connection when the caller named the metric), records in one
    query when the first is asked for (history and compare need none where samples are stored)."""

    def __init__(self, db: Path, seals: list[str]):
        self.db, self.seals = db, seals
        self._by_cell: dict[tuple[str, str], list[str]] | None = None
        self._payloads: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}
        self._decoded: dict[tuple[str, str, str], list[Any]] = {}

    def fetch_samples(self, con: Any, bases: Iterable[str]) -> None:
        fingerprint = registry_fingerprint()
        for base in bases:
            self._payloads[base] = {(seal, cell): (kind, payload) for seal, cell, kind, payload in con.execute(
                _SAMPLES_QUERY, [base, fingerprint, self.seals]).fetchall()}

    def of(self, seal: str, cell_id: str) -> list[RequestRecord]:
        if self._by_cell is None:
            self._by_cell = {}
            with connect(self.db, write=False) as con:
                rows = con.execute("SELECT seal, cell_id, record FROM records WHERE list_contains(?, seal) "
                                   "ORDER BY seal, cell_id, n", [self.seals]).fetchall()
            for row_seal, row_cell, record in rows:
                self._by_cell.setdefault((row_seal, row_cell), []).append(record)
        return [RequestRecord.from_json(json.loads(r)) for r in self._by_cell.get((seal, cell_id), [])]

    def samples(self, seal: str, cell_id: str, base: str) -> list[Any] | None:
        """A metric's stored samples; None where they were derived by other metric definitions than this
        reader's (the records then give them)."""
        if base not in self._payloads:
            with connect(self.db, write=False) as con:
                self.fetch_samples(con, [base])
        key = (seal, cell_id, base)
        if key not in self._decoded:
            stored = self._payloads[base].get((seal, cell_id))
            if stored is None:
                return None
            self._decoded[key] = _decode_samples(stored[0], json.loads(stored[1]))
        return self._decoded[key]


@dataclass(eq=False)
class StoredCell(LoadedCell):
    """A cell read from the store; its summary is decoded on first use, its records come from the store."""

    summary: dict[str, Any] | None = field(init=False, repr=False)  # set by __getattr__ when first read
    summary_json: str | None = field(default=None, repr=False)
    stored_scenario_kind: str | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name != "summary":
            raise AttributeError(name)
        self.summary = None if self.summary_json is None else json.loads(self.summary_json)
        return self.summary

    @property
    def scenario_kind(self) -> str | None:
        return self.stored_scenario_kind  # the store's column: `served` and the readers need no summary for it

    @cached_property
    def records(self) -> list[RequestRecord]:
        return self._stored_set.stored_data.of(self._stored_set.seal, self.id)

    def samples(self, base: str) -> list[Any]:
        stored = self._stored_set.stored_data.samples(self._stored_set.seal, self.id, base)
        return super().samples(base) if stored is None else stored

    @cached_property
    def telemetry_samples(self) -> list[dict[str, Any]]:
        return []  # the store keeps summaries and records; raw telemetry samples stay in the result set

    @property
    def _stored_set(self) -> StoredResultSet:
        assert isinstance(self.result_set, StoredResultSet)
        return self.result_set


@dataclass(eq=False)
class StoredResultSet(LoadedResultSet):
    """A result set read from the store; its manifest is decoded on first use."""

    manifest: dict[str, Any] = field(init=False, repr=False)  # set by __getattr__ when first read
    manifest_json: str = field(default="{}", repr=False)
    db: Path = field(default=Path(), repr=False)
    seal: str = ""
    stored_name: str = ""
    stored_created: str | None = None
    stored_machine_id: str | None = None
    stored_campaign: dict[str, Any] | None = field(default=None, repr=False)
    cell_entries: list[dict[str, Any]] = field(default_factory=list, repr=False)
    stored_cells: dict[str, tuple[str | None, str | None]] = field(default_factory=dict, repr=False)
    stored_data: _StoredData = field(default_factory=lambda: _StoredData(Path(), []), repr=False)

    def __getattr__(self, name: str) -> Any:
        if name != "manifest":
            raise AttributeError(name)
        self.manifest = json.loads(self.manifest_json)
        return self.manifest

    @property
    def name(self) -> str:
        return self.stored_name

    @property
    def created(self) -> str:
        return self.stored_created or ""

    @property
    def machine_id(self) -> str | None:
        return self.stored_machine_id

    @property
    def campaign(self) -> dict[str, Any] | None:
        return self.stored_campaign

    @cached_property
    def cells(self) -> list[LoadedCell]:
        cells: list[LoadedCell] = []
        for entry in self.cell_entries:
            summary_json, scenario_kind = self.stored_cells.get(entry["id"], (None, None))
            cells.append(StoredCell(self, entry, summary_json=summary_json, stored_scenario_kind=scenario_kind))
        return cells


def load_from_store(text: str, samples_of: Iterable[str] = ()) -> list[LoadedResultSet]:
    """The store's runs (or the one NAME names: a result set, a run id, or a campaign's shards), oldest
    first; with the samples of the metrics in `samples_of` fetched at once."""
    db, name = split_source(text)
    query, params = _SETS_QUERY, []
    if name:
        query += " WHERE name = ? OR run_id = ? OR campaign_id = ?"
        params = [name, name, name]
    with connect(db, write=False) as con:
        sets = con.execute(query + " ORDER BY created, name", params).fetchall()
        seals = [row[0] for row in sets]
        cells: dict[str, dict[str, tuple[str | None, str | None]]] = {s: {} for s in seals}
        data = _StoredData(db, seals)
        if seals:
            for seal, cell_id, summary, scenario_kind in con.execute(_CELLS_QUERY, [seals]).fetchall():
                cells[seal][cell_id] = (summary, scenario_kind)
            data.fetch_samples(con, samples_of)
    if name and not sets:
        raise ResultSetError(f"{text}: the store holds no result set, run id or campaign named {name!r}")
    return [StoredResultSet(Path(f"{db}{STORE_SEPARATOR}{set_name}"), manifest_json=manifest, db=db, seal=seal,
                            stored_name=set_name, stored_created=created, stored_machine_id=machine_id,
                            stored_campaign=None if campaign is None else json.loads(campaign),
                            cell_entries=json.loads(entries) if entries else [], stored_cells=cells[seal],
                            stored_data=data)
            for seal, set_name, created, machine_id, entries, campaign, manifest in sets]


def export_parquet(db: Path, directory: Path) -> list[Path]:
    """Each table as a Parquet file (DuckDB writes them; no other library needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with connect(db, write=False) as con:
        for table in ("meta", *TABLES):
            target = directory / f"{table}.parquet"
            quoted = target.as_posix().replace("'", "''")
            con.execute(f"COPY {table} TO '{quoted}' (FORMAT parquet)")
            written.append(target)
    return written
