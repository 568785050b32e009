"""A node's power draw for energy estimates: measured during a cell where the telemetry had an energy
source, else the hardware catalogue's published figure for the parts it knows, each labelled with
where it came from. Pure: a manifest's environment and a cell's telemetry summary in, watts out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# CPU zones core/uncore lie inside the package zone; package + dram is what the cell summary counts too.
_CPU_DOMAINS = ("package", "dram")
# A PCIe card draws far less than its SXM sibling: the form factor must agree, not only the model number.
_FORM_FACTORS = ("pcie",)


@dataclass(frozen=True)
class Power:
    watts: float | None
    source: str  # "measured: ...", "catalogue spec: ..." or "unknown: ..."


def measured(telemetry: dict[str, Any]) -> Power | None:
    """Mean power over the cell's measured window, from the energy counters or power integral."""
    items = (telemetry.get("energy") or {}).get("items") or []
    watts, parts = 0.0, []
    for item in items:
        if item.get("device") == "cpu" and item.get("domain") not in _CPU_DOMAINS:
            continue
        if not item.get("covered_s") or item.get("joules") is None:
            continue
        watts += item["joules"] / item["covered_s"]
        parts.append(f"{'GPU' if item['device'] == 'gpu' else 'CPU'} {item['source']}")
    if not parts:
        return None
    devices = {p.split()[0] for p in parts}
    only = "" if devices == {"GPU", "CPU"} else f" ({next(iter(devices))} only)"
    return Power(watts, "measured: " + ", ".join(sorted(set(parts))) + only)


def _tokens(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def catalogue_entry(device_name: str, kind: str) -> tuple[str, dict[str, Any]] | None:
    """The catalogue entry for a CPU or GPU model name: every model-number token of the entry
    (those with a digit: 'h100', '80gb', '9654') is in the name, and the form factor agrees."""
    from bench.planning.projection import catalogue

    have = _tokens(device_name)
    for key, entry in catalogue().items():
        if entry.get("kind") != kind:
            continue
        want = _tokens(entry["name"].split("(")[0])
        numbers = {t for t in want if any(c.isdigit() for c in t)}
        if numbers and numbers <= have and all((f in have) == (f in want) for f in _FORM_FACTORS):
            return key, entry
    return None


def from_catalogue(environment: dict[str, Any]) -> Power:
    """The published power of the node's GPUs and CPU sockets found in the catalogue; parts it
    does not know are named, since their draw is left out."""
    watts, used, missing = 0.0, [], []
    gpus = [d.get("name") or "?" for d in (environment.get("gpus") or {}).get("devices") or []]
    cpu = (environment.get("cpu") or {}).get("model_name") or "?"
    sockets = (environment.get("cpu") or {}).get("sockets") or 1
    for name, kind, count in [*((g, "gpu", 1) for g in gpus), (cpu, "cpu", sockets)]:
        found = catalogue_entry(name, kind)
        if found is None:
            missing.append(name)
            continue
        watts += found[1]["power_w"] * count
        used.append(f"{count} x {found[0]} {found[1]['power_w']:g} W" if count > 1
                    else f"{found[0]} {found[1]['power_w']:g} W")
    if not used:
        parts = ", ".join(dict.fromkeys(missing))
        return Power(None, f"unknown: no energy telemetry and no catalogue entry for {parts}")
    merged = _merge(used)
    return Power(watts, "catalogue spec: " + merged + (f"; not in the catalogue: {', '.join(missing)}"
                                                         if missing else ""))


def _merge(parts: list[str]) -> str:
    """'nvidia-h200 700 W' eight times reads as '8 x nvidia-h200 700 W'."""
    counts: dict[str, int] = {}
    for part in parts:
        counts[part] = counts.get(part, 0) + 1
    return ", ".join(p if n == 1 else f"{n} x {p}" for p, n in counts.items())


def node_power(environment: dict[str, Any], telemetry: dict[str, Any]) -> Power:
    return measured(telemetry) or from_catalogue(environment)
