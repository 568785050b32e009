"""Reproducibility: run exactly a result set's resolved profile again, then say whether the two
runs agree: the same cells, the same prompts (by hash), and throughput within a stated tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import ResultSetError
from bench.results.load import LoadedCell, LoadedResultSet, load_result_set

AGREEMENT_METRICS = ("output_tok_s", "decode_tok_s", "prefill_tok_s")


def stored_profile(result_dir: Path) -> tuple[Path, str]:
    """The profile text a result set was made from, and the path its relative paths are anchored to
    (the original profile's place when it still exists, else the result set itself)."""
    profile = load_result_set(result_dir).manifest.get("profile") or {}
    if not profile.get("source"):
        raise ResultSetError(f"{result_dir}: the manifest holds no profile source to run again")
    original = Path(profile.get("path") or "")
    anchor = original if original.parent.is_dir() else Path(result_dir) / "profile.yaml"
    return anchor, profile["source"]


def _finished(result_set: LoadedResultSet) -> dict[str, LoadedCell]:
    return {cell.id: cell for cell in result_set.cells if cell.summary}


def agreement(first: Path | LoadedResultSet, second: Path | LoadedResultSet, tolerance: float) -> list[dict[str, Any]]:
    """One row per cell of the first run: whether the second run agrees with it and why not."""
    a, b = (_finished(s if isinstance(s, LoadedResultSet) else load_result_set(s)) for s in (first, second))
    rows = []
    for cell_id, one in a.items():
        other = b.get(cell_id)
        row: dict[str, Any] = {"cell_id": cell_id, "label": one.label, "reasons": [], "differences": {}}
        if other is None:
            row["reasons"].append("cell missing from the second run")
        elif not one.completed or not other.completed:
            row["reasons"].append(f"not completed in both runs ({one.status} / {other.status})")
        else:
            first_summary, second_summary = one.summary or {}, other.summary or {}
            if first_summary.get("prompts_sha256") != second_summary.get("prompts_sha256"):
                row["reasons"].append("different prompts (prompt hashes differ)")
            # Informational, not a disagreement: batched floating point may legitimately change a token.
            outputs = first_summary.get("responses_sha256"), second_summary.get("responses_sha256")
            row["same_outputs"] = outputs[0] == outputs[1] if None not in outputs else None
            for name in AGREEMENT_METRICS:
                x, y = one.metric(name), other.metric(name)
                if not x or y is None:
                    continue
                change = y / x - 1
                row["differences"][name] = change
                if abs(change) > tolerance:
                    row["reasons"].append(f"{name} differs by {change:+.1%} (tolerance ±{tolerance:.0%})")
        row["agree"] = not row["reasons"]
        rows.append(row)
    return rows
