"""The acceptance run's one-page summary (Markdown) and its archive.

`render(state)` is pure: the state the run has gathered so far in, the page out, so a run cut off
after any step still has a page that says what it saw and what it did not reach.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.atomic import atomic_path

UNVERIFIED = (
    "vLLM on CUDA: its CUDA wheels are far larger than the 64 MiB that travels, so only transformers ran",
    "tensor and pipeline parallelism (vLLM TP/PP) and the NCCL all-reduce probe: one GPU",
    "Ray and multi-node runs",
    "more than one GPU: the per-GPU telemetry, the topology and NVLink columns of the inventory",
)


def _ms(dist: dict[str, Any] | None) -> str:
    dist = dist or {}
    if not dist.get("n"):
        return "-"
    return f"{dist['p50'] * 1000:.1f} / {dist['p99'] * 1000:.1f}"


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _gib(value: Any) -> str:
    return "-" if not value else f"{value / 2**30:.2f}"


def cell_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures of one cell that the page shows (and summary.json keeps)."""
    from bench.acceptance.checks import gpu_memory
    from bench.measure.metrics import peak_host_bytes

    metrics = summary.get("metrics") or {}
    allocated, used = gpu_memory(summary)
    gpus = (summary.get("telemetry") or {}).get("gpus") or []
    power = [g.get("power_mean_w") for g in gpus if g.get("power_mean_w") is not None]
    return {
        "label": summary.get("label"),
        "status": summary.get("status"),
        "reason": summary.get("reason"),
        "verdict": (summary.get("validity") or {}).get("verdict"),
        "invalid_reasons": (summary.get("validity") or {}).get("reasons") or [],
        "device": (summary.get("engine") or {}).get("device"),
        "ttft_ms": _ms(metrics.get("ttft")),
        "itl_ms": _ms(metrics.get("itl")),
        "output_tok_s": (metrics.get("output_tok_s") or {}).get("value"),
        "decode_tok_s": (metrics.get("decode_tok_s") or {}).get("value"),
        "decode_roof": ((summary.get("roofline") or {}).get("decode") or {}).get("fraction"),
        "gpu_allocated_bytes": allocated,
        "gpu_used_bytes": used,
        "rss_bytes": peak_host_bytes(summary.get("memory") or {}),
        "j_per_token": (summary.get("energy_per_output_token") or {}).get("value"),
        "power_w": sum(power) if power else None,
        "load_s": summary.get("load_s"),
    }


def _table(headings: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headings) + " |", "|" + "|".join("---" for _ in headings) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return lines


def _gpu_lines(environment: dict[str, Any] | None, probes: dict[str, Any] | None) -> list[str]:
    if environment is None:
        return ["(the env step did not finish)"]
    gpus = environment.get("gpus") or {}
    if "error" in gpus:
        return [f"GPU inventory failed: {gpus['error']}"]
    cpu = environment.get("cpu") or {}
    lines = [f"- host: {cpu.get('model_name')}, {cpu.get('physical_cores')} cores; "
             f"{_gib((environment.get('memory') or {}).get('total_bytes'))} GiB; torch "
             f"{(probes or {}).get('torch', '-')}"]
    if not gpus.get("devices"):
        return [*lines, f"- no GPU: {gpus.get('reason') or 'NVML reports none'}"]
    lines.append(f"- driver {gpus.get('driver_version')}, CUDA driver {gpus.get('cuda_driver_version')}, "
                 f"NVML {gpus.get('nvml_version')}")
    for d in gpus["devices"]:
        clocks, now = d.get("max_clocks_mhz") or {}, d.get("clocks_mhz") or {}
        pcie = d.get("pcie") or {}
        mode = lambda m: "-" if m is None else ("on" if m.get("current") else "off")  # noqa: E731
        lines.append(
            f"- GPU {d.get('index')}: {d.get('name')}, {_gib(d.get('memory_total_bytes'))} GiB, compute "
            f"capability {d.get('compute_capability')}; power limit {d.get('power_limit_w')} W (default "
            f"{d.get('power_limit_default_w')}, enforced {d.get('power_limit_enforced_w')}); max clocks SM "
            f"{clocks.get('sm')} / memory {clocks.get('mem')} MHz, now SM {now.get('sm')} / memory "
            f"{now.get('mem')} MHz; ECC {mode(d.get('ecc_mode'))}, MIG {mode(d.get('mig_mode'))}, persistence "
            f"{d.get('persistence_mode')}; PCIe gen{pcie.get('gen_current')} x{pcie.get('width_current')}")
    return lines


def _rate(tera: float | None, unit: str, reason: str | None) -> str:
    """A matmul rate in T or G units (a CPU's emulated bf16 is a thousand times below a GPU's)."""
    if tera is None:
        return f"- ({reason})" if reason else "-"
    return f"{tera:,.1f} T{unit}" if tera >= 1 else f"{tera * 1000:,.1f} G{unit}"


def _probe_rows(probes: dict[str, Any]) -> list[list[str]]:
    def matmul(device: str, figures: dict[str, Any]) -> list[list[str]]:
        rows = [[device, f"matmul {n}", _rate(figures.get(f"{n}_tflops"), "FLOP/s", figures.get(f"{n}_reason"))]
                for n in ("float32", "bfloat16", "float16")]
        return [*rows, [device, "matmul int8", _rate(figures.get("int8_tops"), "OP/s", figures.get("int8_reason"))]]

    rows = [["host", "memory read", _num((probes.get("host_memory") or {}).get("read_gb_s")) + " GB/s"]]
    rows += matmul("host", probes.get("host_matmul") or {})
    for gpu in probes.get("gpus") or []:
        device = f"GPU {gpu.get('index')} {gpu.get('name')}"
        rows.append([device, "device memory (copy)", _num(gpu.get("memory_bandwidth_gb_s"), 0) + " GB/s"])
        rows.append([device, "host to device / device to host",
                     f"{_num(gpu.get('h2d_gb_s'))} / {_num(gpu.get('d2h_gb_s'))} GB/s (pinned)"])
        rows += matmul(device, gpu.get("matmul") or {})
    return rows


def _cell_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        status = r["status"] if r["status"] != "COMPLETED" else (r["verdict"] or "ok")
        memory = (f"{_gib(r['gpu_allocated_bytes'])} / {_gib(r['gpu_used_bytes'])}"
                  if str(r.get("device", "")).startswith("cuda") else f"RSS {_gib(r['rss_bytes'])}")
        roof = "-" if r["decode_roof"] is None else f"{r['decode_roof']:.1%}"
        out.append([r["label"], status, r["ttft_ms"], r["itl_ms"], _num(r["output_tok_s"]), _num(r["decode_tok_s"]),
                    roof, memory, _num(r["j_per_token"], 3), _num(r["power_w"], 0), _num(r["load_s"], 1)])
    return out


def overall(state: dict[str, Any]) -> str:
    statuses = [s["status"] for s in state["steps"]]
    verdicts = [c["verdict"] for c in state.get("checks") or []]
    if any(s in ("FAILED", "TIMEOUT") for s in statuses) or "FAIL" in verdicts:
        return "FAIL"
    if any(s in ("PENDING", "RUNNING", "SKIPPED") for s in statuses):
        return "INCOMPLETE"
    return "PASS" if "UNKNOWN" not in verdicts else "PASS (with UNKNOWN checks)"


def render(state: dict[str, Any]) -> str:
    mode = "dry run (CPU)" if state["mode"] == "dry-run" else "GPU run"
    lines = [f"# lokaal-bench GPU acceptance: {mode}, {overall(state)}", ""]
    lines.append(f"Started {state['started']} on `{state.get('host')}`; {state['elapsed_s']:.0f} s of a "
                 f"{state['budget_s']:.0f} s budget; lokaal-bench commit {state.get('commit') or '-'}. "
                 f"Everything below is in `{state['archive']}`.")
    lines += ["", "## Steps", ""]
    lines += _table(["step", "status", "seconds", "limit s", "note"],
                    ([s["title"], s["status"], _num(s["seconds"]), _num(s["limit_s"], 0), s["note"]]
                     for s in state["steps"]))
    lines += ["", "## Machine (`lokaal-bench env`)", "", *_gpu_lines(state.get("environment"), state.get("probes"))]
    lines += ["", "## Probes (`lokaal-bench probe`)", ""]
    probes = state.get("probes")
    if not probes:
        lines.append("(the probe step did not finish)")
    elif probes.get("error"):
        lines.append(f"the probes failed: {probes['error']}")
    else:
        lines += _table(["device", "measure", "value"], _probe_rows(probes))
    lines += ["", "## Checks against physics", ""]
    lines += _table(["check", "verdict", "figures"],
                    ([c["name"], c["verdict"], c["figures"]] for c in state.get("checks") or []))
    result = state.get("result_set")
    lines += ["", f"## Cells ({result['title'] if result else 'no result set'})", ""]
    if result:
        lines += _table(["cell", "verdict", "TTFT ms p50 / p99", "ITL ms p50 / p99", "output tok/s", "decode tok/s",
                         "decode % roof", "GPU GiB torch / NVML", "J/tok", "GPU W", "load s"],
                        _cell_rows(result["cells"]))
        notes = [f"- {r['label']}: {r['reason'] or '; '.join(r['invalid_reasons'])}" for r in result["cells"]
                 if r["status"] != "COMPLETED" or r["verdict"] == "INVALID"]
        lines += ["", *notes] if notes else []
    lines += ["", "## GPU tests (`pytest -m gpu`)", "", *_pytest_lines(state.get("pytest"))]
    lines += ["", "## Not verified by this run", "", *[f"- {item}" for item in UNVERIFIED], ""]
    return "\n".join(lines)


def _pytest_lines(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["(the pytest step did not finish)"]
    if result.get("collected") is not None:
        lines = [f"{len(result['collected'])} test(s) marked gpu would run:"]
        return lines + [f"- `{node}`" for node in result["collected"]]
    counts = result.get("counts") or {}
    lines = [", ".join(f"{k} {v}" for k, v in counts.items()) or "no test outcome recorded"]
    lines += [f"- FAILED `{name}`: {message}" for name, message in result.get("failures") or []]
    lines += [f"- skipped `{name}`: {message}" for name, message in result.get("skipped") or []]
    return lines


def write_page(out: Path, state: dict[str, Any]) -> None:
    """summary.md and summary.json, each replaced in one rename (a reader never sees half)."""
    for name, text in (("summary.md", render(state)), ("summary.json", json.dumps(state, indent=2, default=str))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")


def write_archive(archive: Path, work: Path, extra: Iterable[Path] = ()) -> int:
    """The work folder (result set, logs, inventory, probes, test report) and the page, as one .tar.gz."""
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=str(Path(work.name) / path.relative_to(work)), recursive=False)
        for path in extra:
            if path.is_file():
                data = path.read_bytes()
                info = tarfile.TarInfo(str(Path(work.name) / path.name))
                info.size, info.mtime = len(data), int(path.stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))
    return archive.stat().st_size
