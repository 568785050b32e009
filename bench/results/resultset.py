"""The result set on disk: one directory per run.

    results/<run-id>/
      manifest.json              schema_version, resolved profile, environment, offline record, cell index
      network.jsonl              refused connection attempts of the runner itself (only if any)
      cells/<cell-id>/
        spec.json                exactly what the cell process was asked to run
        cell.json                the cell summary: status, reason, metrics with units, telemetry, energy
        result.json              what the cell process reported (absent when it died)
        records.jsonl.gz         raw per-request records
        telemetry.jsonl.gz       raw telemetry samples
        server-metrics.jsonl.gz  served cells: the server's /metrics samples (bench/telemetry/server_metrics.py)
        cell.log                 the cell process's output
        network.jsonl            refused connection attempts of the cell (only if any)

Every file is written atomically. A cell counts as done only when its cell.json says COMPLETED.
Older schema versions are upgraded on read, in memory (bench/results/upgrade.py); newer ones are refused.
Readers read result sets through bench/results/load.py; this module writes them and reads single files.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import secrets
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from bench.atomic import atomic_path, write_json
from bench.errors import ResultSetError
from bench.results.upgrade import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported: what new result sets are written as
from bench.results.upgrade import UPGRADED_FROM, note_upgrade, upgrade_cell_summary, upgrade_manifest

MANIFEST = "manifest.json"
CELL_SUMMARY = "cell.json"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(profile_name: str, machine_id: str, now: dt.datetime | None = None) -> str:
    """UTC seconds, profile, machine (so ids sort by time and say what and where), and a random
    suffix: two runs of one profile started in the same second (nightly cron jobs) get two ids."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", profile_name).strip("-") or "profile"
    return f"{stamp}-{safe}-{machine_id[:8]}-{secrets.token_hex(3)}"


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("bench.results.schema").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate(document: dict[str, Any], name: str) -> None:
    """Raise ResultSetError when `document` does not match the shipped JSON Schema `name`."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema(name))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top)"
        raise ResultSetError(f"{name}: {where}: {first.message} ({len(errors)} problem(s))")


class ResultSet:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def cell_dir(self, cell_id: str) -> Path:
        return self.path / "cells" / cell_id

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        # An upgraded manifest is written in the current shape; the note of its old version stays in memory.
        write_json(self.manifest_path, {k: v for k, v in manifest.items() if k != UPGRADED_FROM})

    def read_manifest(self) -> dict[str, Any]:
        """The manifest in the current schema; ResultSetError (naming the file) for one that is corrupt,
        of an unknown version or not of the manifest schema, so no reader meets a broken document."""
        if not self.manifest_path.is_file():
            raise ResultSetError(f"{self.path}: not a result set (no {MANIFEST})")
        manifest = upgrade_manifest(_read_json(self.manifest_path), str(self.manifest_path))
        _check_schema(manifest, "manifest", self.manifest_path)
        if UPGRADED_FROM in manifest:
            note_upgrade(str(self.path), manifest[UPGRADED_FROM])
        return manifest

    def write_cell_summary(self, cell_id: str, summary: dict[str, Any]) -> None:
        write_json(self.cell_dir(cell_id) / CELL_SUMMARY, summary)

    def read_cell_summary(self, cell_id: str) -> dict[str, Any] | None:
        """A cell's summary in the current schema; None when the cell has none (not run, or died before
        it had one); ResultSetError for one that is corrupt or not of the cell schema."""
        path = self.cell_dir(cell_id) / CELL_SUMMARY
        if not path.is_file():
            return None
        summary = upgrade_cell_summary(_read_json(path), str(path))  # a newer version than this code raises
        _check_schema(summary, "cell", path)
        return summary

    def completed_cells(self) -> set[str]:
        """Cells with a COMPLETED summary on disk: what a resume keeps (a corrupt one is redone)."""
        done = set()
        cells_root = self.path / "cells"
        if not cells_root.is_dir():
            return done
        for cell_dir in cells_root.iterdir():
            try:
                summary = self.read_cell_summary(cell_dir.name)
            except ResultSetError:
                continue
            if summary and summary.get("status") == "COMPLETED":
                done.add(cell_dir.name)
        return done

    def write_samples(self, cell_id: str, samples: list[dict[str, Any]], name: str = "telemetry.jsonl.gz") -> None:
        """Telemetry samples (or, named server-metrics.jsonl.gz, the server's /metrics samples) as gzip JSONL."""
        from bench import scrub

        with atomic_path(self.cell_dir(cell_id) / name) as tmp, gzip.open(tmp, "wt") as out:
            for sample in samples:
                out.write(scrub.text(json.dumps(sample, separators=(",", ":"))) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultSetError(f"{path}: corrupt (not UTF-8 at byte {exc.start})") from None
    except ValueError as exc:
        raise ResultSetError(f"{path}: corrupt JSON ({exc})") from None
    except RecursionError:
        raise ResultSetError(f"{path}: corrupt JSON (nested too deeply)") from None
    except OSError as exc:
        raise ResultSetError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_schema(document: dict[str, Any], name: str, path: Path) -> None:
    try:
        validate({k: v for k, v in document.items() if k != UPGRADED_FROM}, name)
    except ResultSetError as exc:
        raise ResultSetError(f"{path}: not a valid {name} ({exc})") from None
    except ModuleNotFoundError:  # a bare host before lokaal-bench's own install (the GPU acceptance run)
        _warn_once("jsonschema is not installed: result-set documents are read without their schema check")


@cache
def _warn_once(text: str) -> None:
    import logging

    logging.getLogger(__name__).warning("note: %s", text)


def find_result_sets(root: Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).glob(f"*/{MANIFEST}"))
