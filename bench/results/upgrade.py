"""Result sets written by an older lokaal-bench: each schema version has an explicit upgrader, applied
when a manifest or cell summary is read, so every reader sees the current shape.

The upgrade happens in memory only. A sealed result set must stay byte-identical (its hashes and
signature cover the files), so nothing is written back; the document read carries the version it
was upgraded from under UPGRADED_FROM, which ResultSet.write_manifest drops again.

    v1 -> v2: the manifest records whether prompt and response text were stored (`privacy`); v1
              never stored text. Records may carry prompt_text, response_text and response_sha256,
              cell summaries responses_sha256 (all optional, absent in v1).
    v2 -> v3: decode_tok_s is the system-wide decode rate in every cell and stream_decode_tok_s one
              stream's (docs/metrics.md). A served cell's decode_tok_s was one stream's rate: it moves
              to stream_decode_tok_s. What v2 did not store (an in-process cell's stream rate, a served
              cell's system-wide rate) the loader computes from the records through the metric
              registry (bench/results/load.py). The manifest's shape is unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from bench.errors import ResultSetError

SCHEMA_VERSION = 3
UPGRADED_FROM = "upgraded_from"  # in memory only: the schema version the document was written with

Upgrader = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)
_noted: set[str] = set()


def _manifest_v1_to_v2(manifest: dict[str, Any]) -> None:
    manifest["privacy"] = {"store_text": False}


def _cell_v1_to_v2(summary: dict[str, Any]) -> None:
    summary.setdefault("responses_sha256", None)


# The scenario kinds that ran against a server when v2 was current (a fixed fact of that version).
_SERVED_IN_V2 = frozenset({"concurrency", "rate", "capacity", "trace"})


def _manifest_v2_to_v3(manifest: dict[str, Any]) -> None:
    """Nothing in the manifest changed shape."""


def _cell_v2_to_v3(summary: dict[str, Any]) -> None:
    metrics = summary.get("metrics") or {}
    kind = ((summary.get("config") or {}).get("scenario") or {}).get("kind")
    if kind in _SERVED_IN_V2 and "decode_tok_s" in metrics:
        metrics["stream_decode_tok_s"] = metrics.pop("decode_tok_s")


# Version N's upgrader turns a version-N document into version N+1, in place.
MANIFEST_UPGRADES: dict[int, Upgrader] = {1: _manifest_v1_to_v2, 2: _manifest_v2_to_v3}
CELL_UPGRADES: dict[int, Upgrader] = {1: _cell_v1_to_v2, 2: _cell_v2_to_v3}


def check_version(document: Any, where: str) -> int:
    """The document's schema_version; a clear error when there is none or it is newer than this code."""
    version = document.get("schema_version") if isinstance(document, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ResultSetError(f"{where}: no schema_version" if not isinstance(version, int) or isinstance(version, bool)
                             else f"{where}: schema_version {version} does not exist")
    if version > SCHEMA_VERSION:
        raise ResultSetError(
            f"{where}: schema_version {version} is newer than this lokaal-bench understands "
            f"({SCHEMA_VERSION}); upgrade lokaal-bench to read it"
        )
    return version


def _upgrade(document: dict[str, Any], steps: dict[int, Upgrader], where: str) -> dict[str, Any]:
    version = check_version(document, where)
    if version == SCHEMA_VERSION:
        return document
    upgraded = copy.deepcopy(document)  # the caller's document (and the file it came from) stay as they were
    for step in range(version, SCHEMA_VERSION):
        steps[step](upgraded)
    upgraded["schema_version"] = SCHEMA_VERSION
    upgraded[UPGRADED_FROM] = version
    return upgraded


def upgrade_manifest(manifest: dict[str, Any], where: str = "manifest.json") -> dict[str, Any]:
    """A manifest of any schema version this code knows, in the current shape (a copy when upgraded)."""
    return _upgrade(manifest, MANIFEST_UPGRADES, where)


def upgrade_cell_summary(summary: dict[str, Any], where: str = "cell.json") -> dict[str, Any]:
    """A cell summary of any schema version this code knows, in the current shape (a copy when upgraded)."""
    return _upgrade(summary, CELL_UPGRADES, where)


def note_upgrade(where: str, version: int) -> None:
    """Say once per result set and process that it was read through an upgrade (stderr by default)."""
    if where not in _noted:
        _noted.add(where)
        log.warning("note: %s: written with result-set schema v%d, upgraded to v%d on read (files unchanged)",
                    where, version, SCHEMA_VERSION)
