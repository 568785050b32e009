"""Reproducibility: run exactly a result set's resolved profile again, then say whether the two
runs agree: the same cells, the same prompts (by hash), and throughput within a stated tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import ResultSetError
from bench.results.resultset import ResultSet

AGREEMENT_METRICS = ("output_tok_s", "decode_tok_s", "prefill_tok_s")


def stored_profile(result_dir: Path) -> tuple[Path, str]:
    """The profile text a result set was made from, and the path its relative paths are anchored to
    (the original profile's place when it still exists, else the result set itself)."""
    manifest = ResultSet(result_dir).read_manifest()
    profile = manifest.get("profile") or {}
    if not profile.get("source"):
        raise ResultSetError(f"{result_dir}: the manifest holds no profile source to run again")
    original = Path(profile.get("path") or "")
    anchor = original if original.parent.is_dir() else Path(result_dir) / "profile.yaml"
    return anchor, profile["source"]


def _summaries(result_dir: Path) -> dict[str, dict[str, Any]]:
    result_set = ResultSet(result_dir)
    manifest = result_set.read_manifest()
    found = {}
    for entry in manifest.get("cells", []):
        summary = result_set.read_cell_summary(entry["id"])
        if summary:
            found[entry["id"]] = summary
    return found


def agreement(first: Path, second: Path, tolerance: float) -> list[dict[str, Any]]:
    """One row per cell of the first run: whether the second run agrees with it and why not."""
    a, b = _summaries(first), _summaries(second)
    rows = []
    for cell_id, one in a.items():
        other = b.get(cell_id)
        row: dict[str, Any] = {"cell_id": cell_id, "label": one.get("label"), "reasons": [], "differences": {}}
        if other is None:
            row["reasons"].append("cell missing from the second run")
        elif one.get("status") != "COMPLETED" or other.get("status") != "COMPLETED":
            row["reasons"].append(f"not completed in both runs ({one.get('status')} / {other.get('status')})")
        else:
            if one.get("prompts_sha256") != other.get("prompts_sha256"):
                row["reasons"].append("different prompts (prompt hashes differ)")
            # Informational, not a disagreement: batched floating point may legitimately change a token.
            outputs = one.get("responses_sha256"), other.get("responses_sha256")
            row["same_outputs"] = outputs[0] == outputs[1] if None not in outputs else None
            for name in AGREEMENT_METRICS:
                x = (one["metrics"].get(name) or {}).get("value")
                y = (other["metrics"].get(name) or {}).get("value")
                if not x or y is None:
                    continue
                change = y / x - 1
                row["differences"][name] = change
                if abs(change) > tolerance:
                    row["reasons"].append(f"{name} differs by {change:+.1%} (tolerance ±{tolerance:.0%})")
        row["agree"] = not row["reasons"]
        rows.append(row)
    return rows
