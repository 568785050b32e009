"""Reduce recorder samples to one summary per time window (a pure function, no I/O).

``summarise_telemetry(samples, window, sources)`` returns::

    {
      "window": [start, end] | None,        # wall-clock seconds (time.time())
      "n_samples": int,                     # samples with start <= t <= end
      "t_first": float | None, "t_last": float | None,
      "host": {
        "proc_rss_peak_bytes", "proc_rss_mean_bytes", "proc_cpu_mean_pct", "proc_cpu_peak_pct",
        "cpu_mean_pct", "cpu_freq_mean_mhz", "cpu_freq_min_mhz",
        "mem_used_peak_bytes", "mem_available_min_bytes", "load_avg_1m_max",
      },
      "gpus": [{
        "index", "uuid", "name", "mem_total_bytes", "mem_used_peak_bytes", "proc_mem_used_peak_bytes",
        "util_gpu_mean_pct", "util_mem_mean_pct", "power_mean_w", "power_max_w", "temp_max_c",
        "sm_clock_mean_mhz", "sm_clock_min_mhz", "clock_event_reasons",   # sorted union
      }],
      "clock_event_reasons": [...],          # union over all GPUs
      "energy": {
        "gpu_j": float | None,               # sum over GPUs of their figure below
        "cpu_j": float | None,               # RAPL package + dram zones (core/uncore are inside package)
        "items": [
          {"device": "gpu", "index", "uuid", "joules", "source", "covered_s"},
          {"device": "cpu", "zone", "name", "domain", "joules", "source": "rapl", "covered_s"},
        ],
      },
      "energy_sources": {                    # one entry per source label
        "nvml_energy_counter": {"available": bool, "reason": str | None, "gpus": [...]},
        "nvml_power_integral": {"available": bool, "reason": str | None, "gpus": [...]},
        "rapl": {"available": bool, "reason": str | None, "zones": [...]},
      },
    }

Means and peaks use the samples inside the window. Energy uses the cumulative counters linearly
interpolated at the window edges (so a window between two samples still gets its share), or, for
a GPU without an energy counter, the trapezoid integral of sampled power over the window.
``covered_s`` is the part of the window the samples span; energy is not extrapolated beyond it.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .rapl import rapl_delta_uj

Point = tuple[float, float]


def _value_at(ts: Sequence[float], vs: Sequence[float], x: float) -> float:
    """Linear interpolation of (ts, vs) at x, with ts[0] <= x <= ts[-1]."""
    k = bisect.bisect_left(ts, x)
    if k < len(ts) and ts[k] == x:
        return vs[k]
    t0, t1, v0, v1 = ts[k - 1], ts[k], vs[k - 1], vs[k]
    return v0 + (v1 - v0) * (x - t0) / (t1 - t0)


def _clip(points: Sequence[Point], a: float, b: float) -> tuple[float, float] | None:
    if len(points) < 2:
        return None
    lo, hi = max(a, points[0][0]), min(b, points[-1][0])
    return (lo, hi) if hi > lo else None


def counter_delta(points: Sequence[Point], a: float, b: float) -> tuple[float, float] | None:
    """Increase of a monotonic counter over [a, b], interpolated at the edges: (delta, covered_s)."""
    span = _clip(points, a, b)
    if span is None:
        return None
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    lo, hi = span
    return _value_at(ts, vs, hi) - _value_at(ts, vs, lo), hi - lo


def integrate(points: Sequence[Point], a: float, b: float) -> tuple[float, float] | None:
    """Trapezoid integral of a sampled rate over [a, b], interpolated at the edges."""
    span = _clip(points, a, b)
    if span is None:
        return None
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    lo, hi = span
    pts = [(lo, _value_at(ts, vs, lo))]
    pts += [p for p in points if lo < p[0] < hi]
    pts.append((hi, _value_at(ts, vs, hi)))
    area = sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in itertools.pairwise(pts))
    return area, hi - lo


def _monotonic(points: Iterable[Point], step: Callable[[float, float], float]) -> list[Point]:
    """Turn raw counter readings into a cumulative series using ``step(prev, cur) -> increase``."""
    out: list[Point] = []
    for t, v in points:
        if not out:
            out.append((t, 0.0))
            prev = v
            continue
        out.append((t, out[-1][1] + step(prev, v)))
        prev = v
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _vals(rows: Iterable[dict[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in rows if r.get(key) is not None]


def _host_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rss, pcpu = _vals(rows, "proc_rss_bytes"), _vals(rows, "proc_cpu_pct")
    mem_used, mem_avail = _vals(rows, "mem_used_bytes"), _vals(rows, "mem_available_bytes")
    fmin = _vals(rows, "cpu_freq_min_mhz")
    loads = [r["load_avg"][0] for r in rows if r.get("load_avg")]
    return {
        "proc_rss_peak_bytes": max(rss, default=None),
        "proc_rss_mean_bytes": _mean(rss),
        "proc_cpu_mean_pct": _mean(pcpu),
        "proc_cpu_peak_pct": max(pcpu, default=None),
        "cpu_mean_pct": _mean(_vals(rows, "cpu_pct")),
        "cpu_freq_mean_mhz": _mean(_vals(rows, "cpu_freq_mean_mhz")),
        "cpu_freq_min_mhz": min(fmin, default=None),
        "mem_used_peak_bytes": max(mem_used, default=None),
        "mem_available_min_bytes": min(mem_avail, default=None),
        "load_avg_1m_max": max(loads, default=None),
    }


def _gpu_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    power, sm = _vals(rows, "power_w"), _vals(rows, "sm_clock_mhz")
    reasons: set[str] = set()
    for r in rows:
        reasons.update(r.get("clock_event_reasons") or ())
    last = rows[-1]
    return {
        "index": last.get("index"),
        "uuid": last.get("uuid"),
        "name": last.get("name"),
        "mem_total_bytes": last.get("mem_total_bytes"),
        "mem_used_peak_bytes": max(_vals(rows, "mem_used_bytes"), default=None),
        "proc_mem_used_peak_bytes": max(_vals(rows, "proc_mem_used_bytes"), default=None),
        "util_gpu_mean_pct": _mean(_vals(rows, "util_gpu_pct")),
        "util_mem_mean_pct": _mean(_vals(rows, "util_mem_pct")),
        "power_mean_w": _mean(power),
        "power_max_w": max(power, default=None),
        "temp_max_c": max(_vals(rows, "temp_c"), default=None),
        "sm_clock_mean_mhz": _mean(sm),
        "sm_clock_min_mhz": min(sm, default=None),
        "clock_event_reasons": sorted(reasons),
    }


def _reason(sources: dict[str, Any] | None, key: str, default: str) -> str:
    entry = (sources or {}).get(key) or {}
    return entry.get("reason") or default


def _gpu_energy(
    samples: Sequence[dict[str, Any]], a: float, b: float, sources: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    series: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        for g in s.get("gpus") or ():
            series.setdefault(g["index"], []).append({"t": s["t"], **g})
    items: list[dict[str, Any]] = []
    counter_gpus: list[int] = []
    integral_gpus: list[int] = []
    for idx, rows in sorted(series.items()):
        counter = [(r["t"], float(r["energy_mj"])) for r in rows if r.get("energy_mj") is not None]
        # NVML's counter only resets on driver reload; a decrease is treated as a reset.
        res = counter_delta(_monotonic(counter, lambda p, c: max(c - p, 0.0)), a, b)
        source = "nvml_energy_counter"
        joules = None if res is None else res[0] / 1000.0
        if res is None:
            power = [(r["t"], float(r["power_w"])) for r in rows if r.get("power_w") is not None]
            res = integrate(power, a, b)
            source = "nvml_power_integral"
            joules = None if res is None else res[0]
        if res is None:
            continue
        (counter_gpus if source == "nvml_energy_counter" else integral_gpus).append(idx)
        items.append({"device": "gpu", "index": idx, "uuid": rows[-1].get("uuid"),
                      "joules": joules, "source": source, "covered_s": res[1]})
    no_gpu = _reason(sources, "nvml", "no GPU samples in the window")
    counter_reason = None
    if not counter_gpus:
        counter_reason = no_gpu if not series else _reason(
            sources, "nvml_energy_counter",
            "nvmlDeviceGetTotalEnergyConsumption unsupported (pre-Volta GPU or driver) or too few samples")
    integral_reason = None
    if not integral_gpus:
        integral_reason = (no_gpu if not series
                           else "not needed: GPU energy counter used" if counter_gpus
                           else "no power samples (nvmlDeviceGetPowerUsage unsupported) or too few samples")
    sources_out = {
        "nvml_energy_counter": {"available": bool(counter_gpus), "reason": counter_reason, "gpus": counter_gpus},
        "nvml_power_integral": {"available": bool(integral_gpus), "reason": integral_reason,
                                "gpus": integral_gpus},
    }
    return items, sources_out


def _rapl_energy(
    samples: Sequence[dict[str, Any]], a: float, b: float, sources: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    series: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for s in samples:
        for z in s.get("rapl") or ():
            series.setdefault(z["zone"], []).append((s["t"], z))
    items = []
    for zone, rows in sorted(series.items()):
        last = rows[-1][1]
        if all(z.get("energy_uj_cum") is not None for _, z in rows if z.get("energy_uj") is not None):
            pts = [(t, float(z["energy_uj_cum"])) for t, z in rows if z.get("energy_uj_cum") is not None]
        else:  # raw readings only: unwrap here, at most one wrap between consecutive samples
            raw = [(t, float(z["energy_uj"])) for t, z in rows if z.get("energy_uj") is not None]
            rng = last.get("max_energy_range_uj")
            pts = _monotonic(raw, lambda p, c, rng=rng: float(rapl_delta_uj(int(p), int(c), rng)))
        res = counter_delta(pts, a, b)
        if res is None:
            continue
        items.append({"device": "cpu", "zone": zone, "name": last.get("name"), "domain": last.get("domain"),
                      "joules": res[0] / 1e6, "source": "rapl", "covered_s": res[1]})
    reason = None if items else _reason(sources, "rapl", "no RAPL samples in the window")
    return items, {"rapl": {"available": bool(items), "reason": reason, "zones": [i["zone"] for i in items]}}


def summarise_telemetry(
    samples: Sequence[dict[str, Any]],
    window: tuple[float, float] | None = None,
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarise recorder samples over ``window`` (see module docstring for the keys).

    ``sources`` is optional context (``telemetry_sources()`` or ``TelemetryRecorder.sources``)
    whose ``reason`` strings explain missing energy sources; by default the ``sources`` entry the
    recorder puts in its first sample is used.
    """
    samples = sorted(samples, key=lambda s: s["t"])
    if sources is None:  # the recorder stores its sources in the first sample
        sources = next((s["sources"] for s in samples if s.get("sources")), None)
    a, b = (-math.inf, math.inf) if window is None else (float(window[0]), float(window[1]))
    inside = [s for s in samples if a <= s["t"] <= b]

    host_rows = [s["host"] for s in inside if s.get("host")]
    gpu_rows: dict[int, list[dict[str, Any]]] = {}
    for s in inside:
        for g in s.get("gpus") or ():
            gpu_rows.setdefault(g["index"], []).append(g)
    gpus = [_gpu_summary(rows) for _, rows in sorted(gpu_rows.items())]

    gpu_items, gpu_sources = _gpu_energy(samples, a, b, sources)
    cpu_items, cpu_sources = _rapl_energy(samples, a, b, sources)
    gpu_j = [i["joules"] for i in gpu_items]
    cpu_j = [i["joules"] for i in cpu_items if i["domain"] in ("package", "dram")]
    return {
        "window": None if window is None else [a, b],
        "n_samples": len(inside),
        "t_first": inside[0]["t"] if inside else None,
        "t_last": inside[-1]["t"] if inside else None,
        "host": _host_summary(host_rows),
        "gpus": gpus,
        "clock_event_reasons": sorted({r for g in gpus for r in g["clock_event_reasons"]}),
        "energy": {
            "gpu_j": sum(gpu_j) if gpu_j else None,
            "cpu_j": sum(cpu_j) if cpu_j else None,
            "items": gpu_items + cpu_items,
        },
        "energy_sources": {**gpu_sources, **cpu_sources},
    }
