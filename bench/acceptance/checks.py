"""The acceptance run's figures held against physics. Pure: the environment, the probes and the cell
summaries in, one verdict per check out (PASS, FAIL or UNKNOWN, always with the figures).

The published limits come from the hardware catalogue (bench/planning/hardware/catalogue.json), found by the
GPU's name as the power estimates find it; a GPU the catalogue does not know leaves the published
bounds UNKNOWN rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS, FAIL, UNKNOWN = "PASS", "FAIL", "UNKNOWN"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    figures: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "verdict": self.verdict, "figures": self.figures}


def published(gpu_name: str | None) -> tuple[str, dict[str, Any]] | None:
    """The catalogue entry of a GPU by its name ('NVIDIA H200' -> nvidia-h200), or None."""
    from bench.planning.power import catalogue_entry

    return catalogue_entry(gpu_name, "gpu") if gpu_name else None


def _first_gpu(probes: dict[str, Any] | None) -> dict[str, Any] | None:
    gpus = (probes or {}).get("gpus") or []
    return gpus[0] if gpus else None


def _no_gpu_reason(probes: dict[str, Any] | None, environment: dict[str, Any] | None) -> str:
    if not probes:
        return "no probe result (the probe step did not finish)"
    if probes.get("error"):
        return f"the probes failed: {probes['error']}"
    reason = ((environment or {}).get("gpus") or {}).get("reason")
    return "torch sees no CUDA device" + (f"; NVML: {reason}" if reason else "")


def gpu_visible(environment: dict[str, Any] | None, probes: dict[str, Any] | None, expect_gpu: bool = True) -> Check:
    """NVML and torch both see the GPU; a dry run on a machine without one says so (UNKNOWN)."""
    name = "one GPU seen by NVML and by torch"
    gpus = (environment or {}).get("gpus") or {}
    nvml = [d.get("name") for d in gpus.get("devices") or []]
    torch_gpus = [g.get("name") for g in (probes or {}).get("gpus") or []]
    if environment is None or probes is None:
        return Check(name, UNKNOWN, "the env or probe step did not finish")
    figures = f"NVML: {', '.join(map(str, nvml)) or 'none (' + str(gpus.get('reason')) + ')'}; " \
              f"torch: {', '.join(map(str, torch_gpus)) or 'none'}"
    if nvml and torch_gpus:
        return Check(name, PASS, figures)
    return Check(name, FAIL if expect_gpu else UNKNOWN, figures + ("" if expect_gpu else " (dry run: no GPU expected)"))


def bandwidth(probes: dict[str, Any] | None, environment: dict[str, Any] | None) -> Check:
    """Probed device-memory bandwidth: below the published figure, above half of it."""
    name = "HBM bandwidth below the published peak, above half of it"
    gpu = _first_gpu(probes)
    if gpu is None:
        return Check(name, UNKNOWN, _no_gpu_reason(probes, environment))
    measured = gpu.get("memory_bandwidth_gb_s")
    entry = published(gpu.get("name"))
    if entry is None or measured is None:
        return Check(name, UNKNOWN, f"{gpu.get('name')}: measured {_gb(measured)}; "
                     + ("not in the hardware catalogue" if entry is None else "no bandwidth probed"))
    key, spec = entry
    peak = float(spec["memory_bandwidth_gb_s"])
    verdict = PASS if peak / 2 < measured < peak else FAIL
    return Check(name, verdict, f"{_gb(measured)} measured (copy: read + write) = {measured / peak:.0%} of "
                 f"{_gb(peak)} published ({key}); pass range {_gb(peak / 2)} to {_gb(peak)}")


def matmul_bf16(probes: dict[str, Any] | None, environment: dict[str, Any] | None) -> Check:
    name = "bf16 matmul below the published dense peak"
    gpu = _first_gpu(probes)
    if gpu is None:
        return Check(name, UNKNOWN, _no_gpu_reason(probes, environment))
    matmul = gpu.get("matmul") or {}
    measured = matmul.get("bfloat16_tflops")
    entry = published(gpu.get("name"))
    if measured is None:
        return Check(name, UNKNOWN, f"no bf16 figure: {matmul.get('bfloat16_reason', 'not probed')}")
    if entry is None:
        return Check(name, UNKNOWN, f"{measured:,.0f} TFLOP/s measured; {gpu.get('name')} is not in the catalogue")
    key, spec = entry
    peak = float(spec["tflops"]["bfloat16"])
    size = matmul.get("bfloat16_size")
    return Check(name, PASS if measured < peak else FAIL,
                 f"{measured:,.0f} TFLOP/s measured ({size}x{size} matmul) = {measured / peak:.0%} of "
                 f"{peak:,.0f} TFLOP/s published dense ({key})")


def _batch(summary: dict[str, Any]) -> int:
    return int(((summary.get("config") or {}).get("scenario") or {}).get("batch_size", 1))


def _device(summary: dict[str, Any]) -> str:
    return str((summary.get("engine") or {}).get("device") or
               ((summary.get("config") or {}).get("engine") or {}).get("device") or "cpu")


def _completed(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cells if c.get("status") == "COMPLETED"]


def _published_decode_bound(summary: dict[str, Any], environment: dict[str, Any] | None) -> float | None:
    """Batch-1 decode bound at the catalogue's bandwidth: what no measurement may exceed."""
    from bench.measure.roofline import bounds, cell_shape

    model = (summary.get("model") or {}).get("roofline_inputs")
    devices = ((environment or {}).get("gpus") or {}).get("devices") or []
    entry = published(devices[0].get("name")) if devices else None
    if not model or entry is None or not _device(summary).startswith("cuda"):
        return None
    limits = {"bandwidth_bytes_s": entry[1]["memory_bandwidth_gb_s"] * 1e9, "flops_s": float("inf")}
    return bounds(model, limits, **cell_shape(summary))["decode"]["memory bandwidth"]


def decode_roofline(cells: list[dict[str, Any]], environment: dict[str, Any] | None) -> Check:
    """Decode tok/s at batch 1 at most the memory-bandwidth roofline (bench/measure/roofline.py: the run's
    probed bandwidth) and at most the bound at the published bandwidth, for every such cell."""
    name = "decode tok/s at batch 1 within the bandwidth roofline"
    batch1 = [c for c in _completed(cells) if _batch(c) == 1
              and ((c.get("metrics") or {}).get("decode_tok_s") or {}).get("value")]
    if not batch1:
        return Check(name, UNKNOWN, "no completed batch-1 cell with a decode rate")
    worst: tuple[float, str] | None = None
    failures, unknown = [], []
    for cell in batch1:
        measured = cell["metrics"]["decode_tok_s"]["value"]
        decode = (cell.get("roofline") or {}).get("decode") or {}
        bound = decode.get("bound_tok_s")
        ceiling = _published_decode_bound(cell, environment)
        if bound is None:
            unknown.append(cell.get("label", "?"))
            continue
        text = f"{cell.get('label')}: {measured:,.1f} of {bound:,.0f} tok/s ({measured / bound:.0%})"
        if ceiling is not None:
            text += f"; published-bandwidth bound {ceiling:,.0f}"
        if measured > bound or (ceiling is not None and measured > ceiling):
            failures.append(text)
        if worst is None or measured / bound > worst[0]:
            worst = (measured / bound, text)
    if failures:
        return Check(name, FAIL, "above the roofline: " + "; ".join(failures))
    if worst is None:
        return Check(name, UNKNOWN, f"no roofline for {', '.join(unknown)} (no probes in the result set?)")
    extra = f"; no roofline for {len(unknown)} cell(s)" if unknown else ""
    return Check(name, PASS, f"{len(batch1) - len(unknown)} batch-1 cell(s) at or below their bound; closest: "
                 f"{worst[1]}{extra}")


def _gib(value: Any) -> str:
    return "-" if not value else f"{value / 2**30:.2f} GiB"


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} GB/s"


def gpu_memory(summary: dict[str, Any]) -> tuple[int | None, int | None]:
    """(torch's peak allocated bytes, NVML's peak used bytes on the cell's GPU) of a CUDA cell."""
    memory = summary.get("memory") or {}
    nvml = [v for v in memory.get("gpu_used_peak_bytes") or [] if v]
    return memory.get("gpu_peak_allocated_bytes"), (max(nvml) if nvml else None)


def memory(cells: list[dict[str, Any]]) -> Check:
    """Every completed cell has its peak memory: a CUDA cell both torch's and NVML's figure, a CPU
    cell its peak resident set."""
    from bench.measure.metrics import peak_host_bytes

    name = "peak memory recorded per cell"
    done = _completed(cells)
    if not done:
        return Check(name, UNKNOWN, "no completed cell")
    missing, shown = [], []
    for cell in done:
        if _device(cell).startswith("cuda"):
            allocated, used = gpu_memory(cell)
            if not allocated or not used:
                missing.append(f"{cell.get('label')}: torch peak {_gib(allocated)}, NVML peak {_gib(used)}")
            shown.append(allocated or 0)
        else:
            rss = peak_host_bytes(cell.get("memory") or {})
            if not rss:
                missing.append(f"{cell.get('label')}: no peak RSS")
            shown.append(rss or 0)
    if missing:
        return Check(name, FAIL, "missing: " + "; ".join(missing))
    on_gpu = [_device(c).startswith("cuda") for c in done]
    kind = "GPU (torch peak allocated)" if all(on_gpu) else "host (peak RSS)" if not any(on_gpu) else "GPU or host"
    return Check(name, PASS, f"{len(done)} of {len(done)} cells; {kind} {_gib(min(shown))} to {_gib(max(shown))}")


def energy(cells: list[dict[str, Any]]) -> Check:
    """Energy per output token: present, or absent with the reason recorded. A CUDA cell must have it
    (NVML's energy counter exists on every GPU since Volta); a CPU cell may lack RAPL."""
    name = "energy per output token"
    done = _completed(cells)
    if not done:
        return Check(name, UNKNOWN, "no completed cell")
    values, sources, failures, reasons = [], set(), [], set()
    for cell in done:
        entry = cell.get("energy_per_output_token") or {}
        if entry.get("value") is not None:
            values.append(entry["value"])
            sources.update(entry.get("sources") or [])
            continue
        why = "; ".join(f"{k}: {v}" for k, v in (entry.get("unavailable") or {}).items() if v)
        if _device(cell).startswith("cuda") or not why:
            failures.append(f"{cell.get('label')}: absent ({why or 'no reason recorded'})")
        else:
            reasons.add(why)
    if failures:
        return Check(name, FAIL, "; ".join(failures))
    if not values:
        return Check(name, UNKNOWN, f"absent in all {len(done)} cells, with the reason: {'; '.join(sorted(reasons))}")
    text = (f"{len(values)} of {len(done)} cells: {min(values):.3g} to {max(values):.3g} J/tok "
            f"({', '.join(sorted(sources))})")
    return Check(name, PASS, text + (f"; absent in {len(done) - len(values)} with the reason" if reasons else ""))


def all_checks(environment: dict[str, Any] | None, probes: dict[str, Any] | None,
               cells: list[dict[str, Any]] | None, expect_gpu: bool = True) -> list[Check]:
    cells = cells if cells is not None else []
    result_set = [decode_roofline(cells, environment), memory(cells), energy(cells)] if cells else [
        Check(n, UNKNOWN, "no result set (the profile step did not finish)")
        for n in ("decode tok/s at batch 1 within the bandwidth roofline", "peak memory recorded per cell",
                  "energy per output token")]
    return [gpu_visible(environment, probes, expect_gpu), bandwidth(probes, environment),
            matmul_bf16(probes, environment), *result_set]
