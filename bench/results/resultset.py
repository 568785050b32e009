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


def new_run_id(profile_name: str, machine_id: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", profile_name).strip("-") or "profile"
    return f"{stamp}-{safe}-{machine_id[:8]}"


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
        if not self.manifest_path.is_file():
            raise ResultSetError(f"{self.path}: not a result set (no {MANIFEST})")
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ResultSetError(f"{self.manifest_path}: corrupt JSON ({exc})") from None
        manifest = upgrade_manifest(manifest, str(self.manifest_path))
        if UPGRADED_FROM in manifest:
            note_upgrade(str(self.path), manifest[UPGRADED_FROM])
        return manifest

    def write_cell_summary(self, cell_id: str, summary: dict[str, Any]) -> None:
        write_json(self.cell_dir(cell_id) / CELL_SUMMARY, summary)

    def read_cell_summary(self, cell_id: str) -> dict[str, Any] | None:
        path = self.cell_dir(cell_id) / CELL_SUMMARY
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not isinstance(summary, dict) or "schema_version" not in summary:
            return None  # not a summary: the cell counts as not done, like a corrupt one
        return upgrade_cell_summary(summary, str(path))  # a newer version than this code raises

    def completed_cells(self) -> set[str]:
        """Cells with a COMPLETED summary on disk: what a resume keeps."""
        done = set()
        cells_root = self.path / "cells"
        if not cells_root.is_dir():
            return done
        for cell_dir in cells_root.iterdir():
            summary = self.read_cell_summary(cell_dir.name)
            if summary and summary.get("status") == "COMPLETED":
                done.add(cell_dir.name)
        return done

    def write_samples(self, cell_id: str, samples: list[dict[str, Any]]) -> None:
        with atomic_path(self.cell_dir(cell_id) / "telemetry.jsonl.gz") as tmp, gzip.open(tmp, "wt") as out:
            for sample in samples:
                out.write(json.dumps(sample, separators=(",", ":")) + "\n")
