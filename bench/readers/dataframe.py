"""Result sets into pandas DataFrames, for researchers: `bench.load(paths)` gives one row per cell
(metrics flattened to `ttft_p99`, `decode_tok_s`, ...; units in `df.attrs["units"]`), and
`bench.load(paths, per="request")` one row per raw request record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure.metrics import METRIC_INFO, peak_host_bytes
from bench.readers.tables import result_set_paths
from bench.results.records import read_records
from bench.results.resultset import ResultSet
from bench.results.upgrade import UPGRADED_FROM

_DISTRIBUTION_KEYS = ("n", "mean", "stdev", "min", "max", "p50", "p90", "p95", "p99")


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """`{"ttft": {"p99": ...}}` -> `{"ttft_p99": ...}`; rates keep their name."""
    flat: dict[str, Any] = {}
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        if "value" in entry:
            flat[name] = entry["value"]
        for key in _DISTRIBUTION_KEYS:
            if key in entry and "value" not in entry:
                flat[f"{name}_{key}"] = entry[key]
    return flat


def _cell_row(path: Path, manifest: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    config = summary.get("config") or {}
    scenario = config.get("scenario") or {}
    engine = config.get("engine") or {}
    model = config.get("model") or {}
    row: dict[str, Any] = {
        "result_set": path.name,
        "machine_id": manifest.get("machine_id"),
        "cpu": ((manifest.get("environment") or {}).get("cpu") or {}).get("model_name"),
        "cell_id": summary.get("cell_id"),
        "label": summary.get("label"),
        "status": summary.get("status"),
        "validity": (summary.get("validity") or {}).get("verdict"),
        "model": model.get("name") or model.get("card") or model.get("path"),
        "engine": engine.get("kind"),
        "dtype": engine.get("dtype"),
        "device": (summary.get("engine") or {}).get("device"),
        "scenario": scenario.get("kind"),
        "batch_size": scenario.get("batch_size"),
        "users": scenario.get("users"),
        "rate": scenario.get("rate"),
        "depth": scenario.get("depth"),
        "workload": (config.get("workload") or {}).get("name"),
        "synthetic_weights": summary.get("synthetic_weights"),
        "load_s": summary.get("load_s"),
        "peak_rss_bytes": (summary.get("memory") or {}).get("peak_rss_bytes"),
        "peak_host_bytes": peak_host_bytes(summary.get("memory") or {}),  # the process tree's, when higher
        "energy_j_per_token": (summary.get("energy_per_output_token") or {}).get("value"),
        "decode_roofline_fraction": ((summary.get("roofline") or {}).get("decode") or {}).get("fraction"),
        # None, or the older schema version this result set was written with (upgraded on read)
        "schema_upgraded_from": manifest.get(UPGRADED_FROM),
    }
    row.update(flatten_metrics(summary.get("metrics") or {}))
    return row


def load(paths: str | Path | list[str | Path], per: str = "cell") -> Any:
    """A pandas DataFrame of the cells (per="cell") or raw requests (per="request") of result sets
    (or folders holding them)."""
    import pandas as pd

    if per not in ("cell", "request"):
        raise ValueError("per must be 'cell' or 'request'")
    items = paths if isinstance(paths, list) else [paths]
    rows: list[dict[str, Any]] = []
    for path in result_set_paths([Path(p) for p in items]):
        result_set = ResultSet(path)
        manifest = result_set.read_manifest()
        for entry in manifest.get("cells", []):
            summary = result_set.read_cell_summary(entry["id"])
            if summary is None:
                continue
            cell = _cell_row(path, manifest, summary)
            if per == "cell":
                rows.append(cell)
                continue
            records = result_set.cell_dir(entry["id"]) / "records.jsonl.gz"
            if not records.exists():
                continue
            for record in read_records(records):
                data = record.to_json()
                data.pop("token_times")
                data["ttft_s"] = (None if record.first_token_time is None
                                  else record.first_token_time - record.submit_time)
                data["e2e_latency_s"] = None if record.end_time is None else record.end_time - record.submit_time
                rows.append({"result_set": cell["result_set"], "cell_id": cell["cell_id"], "label": cell["label"],
                             "model": cell["model"], "scenario": cell["scenario"], "batch_size": cell["batch_size"],
                             **data})
    frame = pd.DataFrame(rows)
    frame.attrs["units"] = {name: unit for name, (unit, _) in METRIC_INFO.items()}
    return frame
