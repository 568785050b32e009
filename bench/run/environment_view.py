"""The environment inventory for people: rich panels on the terminal (`lokaal-bench env`), and the
same sections as rows (section, field, value) for Markdown, CSV, LaTeX and the JSON envelope,
whose `data` holds the whole inventory (bench.run.environment.collect_environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.readers.printing import Column, Table


def _fmt_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) or "-"
    return str(v)


@dataclass
class Section:
    title: str
    rows: list[tuple[str, str]]
    error: str | None = None  # the part could not be collected


GPU_COLUMNS = ("#", "name", "memory", "power limit", "max SM MHz", "PCIe", "ECC", "MIG", "persist", "NVLinks", "uuid")


def _gpu_cells(d: Mapping[str, Any]) -> list[str]:
    pcie, top = d.get("pcie") or {}, d.get("max_clocks_mhz") or {}
    return [str(d.get("index")), _fmt(d.get("name")), _fmt_bytes(d.get("memory_total_bytes")),
            f"{_fmt(d.get('power_limit_w'))} W", _fmt(top.get("sm")),
            f"gen{_fmt(pcie.get('gen_current'))} x{_fmt(pcie.get('width_current'))}",
            _fmt((d.get("ecc_mode") or {}).get("current")), _fmt((d.get("mig_mode") or {}).get("current")),
            _fmt(d.get("persistence_mode")), str(sum(1 for x in d.get("nvlinks") or [] if x["active"])),
            _fmt(d.get("uuid"))]


def _gpu_details(d: Mapping[str, Any]) -> str:
    top, now = d.get("max_clocks_mhz") or {}, d.get("clocks_mhz") or {}
    return (f"GPU {d.get('index')}: compute capability {_fmt(d.get('compute_capability'))}; clocks MHz "
            f"SM {_fmt(top.get('sm'))} max / {_fmt(now.get('sm'))} now, memory {_fmt(top.get('mem'))} "
            f"max / {_fmt(now.get('mem'))} now; power limit {_fmt(d.get('power_limit_w'))} W (default "
            f"{_fmt(d.get('power_limit_default_w'))}, enforced {_fmt(d.get('power_limit_enforced_w'))})")


def _topology(gpus: Mapping[str, Any]) -> str:
    return ", ".join(f"{p['a']}-{p['b']}: {_fmt(p.get('common_ancestor'))}"
                     + (f" +{p['nvlinks']} NVLink" if p.get("nvlinks") else "")
                     for p in gpus.get("topology") or []) or "-"


def _section(title: str, rows: list[tuple[str, Any]], part: Any = None) -> Section:
    if isinstance(part, Mapping) and "error" in part:
        return Section(title, [], str(part["error"]))
    return Section(title, [(k, v if isinstance(v, str) else _fmt(v)) for k, v in rows])


def sections(env: Mapping[str, Any]) -> list[Section]:
    """The inventory's parts as people read them, in the order `env` shows them."""
    def part(name: str) -> Mapping[str, Any]:
        p = env.get(name)
        return p if isinstance(p, Mapping) else {}

    cpu, mem, gpus, osi, py, lb, pw = (part(n) for n in ("cpu", "memory", "gpus", "os", "python",
                                                           "lokaal_bench", "power"))
    found = []
    virt, cont, cg = osi.get("virtualization") or {}, osi.get("container") or {}, osi.get("cgroup") or {}
    found.append(_section("Machine", [
        ("machine id", env.get("machine_id")), ("collected", env.get("collected_at")),
        ("host", osi.get("hostname")), ("os", osi.get("name")), ("kernel", osi.get("kernel")),
        ("container", ", ".join(cont.get("hints") or []) or "no"),
        ("virtualisation", f"vm={_fmt(virt.get('vm'))} container={_fmt(virt.get('container'))} "
                           f"product={_fmt(virt.get('dmi_product_name'))}"),
        ("cgroup limits", f"cpu={_fmt(cg.get('cpu_limit_cores'))} cores, "
                          f"memory={_fmt_bytes(cg.get('memory_limit_bytes'))}"),
    ], osi))
    flags = [f for f, on in (cpu.get("flags") or {}).items() if on]
    caches = [f"L{c.get('level')}{(c.get('type') or '')[:1].lower()} {_fmt_bytes(c.get('size_bytes'))}"
              f" x{c.get('instances')}" for c in cpu.get("caches") or []]
    found.append(_section("CPU", [
        ("model", cpu.get("model_name")), ("vendor / arch", f"{_fmt(cpu.get('vendor'))} / "
                                                            f"{_fmt(cpu.get('architecture'))}"),
        ("topology", f"{_fmt(cpu.get('sockets'))} socket(s), {_fmt(cpu.get('physical_cores'))} cores, "
                     f"{_fmt(cpu.get('logical_threads'))} threads ({_fmt(cpu.get('usable_threads'))} usable), "
                     f"{_fmt(cpu.get('numa_nodes'))} NUMA node(s)"),
        ("frequency MHz", f"min {_fmt(cpu.get('freq_min_mhz'))}, max {_fmt(cpu.get('freq_max_mhz'))}, "
                          f"now {_fmt(cpu.get('freq_current_mhz'))}"),
        ("governor", f"{_fmt(cpu.get('governor'))} ({_fmt(cpu.get('scaling_driver'))}), "
                     f"boost {_fmt(cpu.get('boost'))}"),
        ("flags", " ".join(flags) or "-"), ("caches", ", ".join(caches) or "-"),
    ], cpu))
    hp = mem.get("hugepages") or {}
    found.append(_section("Memory", [
        ("total", _fmt_bytes(mem.get("total_bytes"))), ("available", _fmt_bytes(mem.get("available_bytes"))),
        ("swap", _fmt_bytes(mem.get("swap_total_bytes"))),
        ("hugepages", f"THP {_fmt(hp.get('transparent'))}, static {_fmt(hp.get('total'))} x "
                      f"{_fmt_bytes(hp.get('page_size_bytes'))}"),
        ("NUMA", ", ".join(f"node{n['node']} {_fmt_bytes(n.get('total_bytes'))}"
                           for n in mem.get("numa_nodes") or []) or "-"),
    ], mem))
    if "error" in gpus or not gpus.get("devices"):
        found.append(_section("GPUs", [("none", gpus.get("reason") or "no GPUs")], gpus))
    else:
        rows = [("driver / CUDA", f"{_fmt(gpus.get('driver_version'))} / {_fmt(gpus.get('cuda_driver_version'))}")]
        for d in gpus["devices"]:
            cells = _gpu_cells(d)
            rows.append((f"GPU {cells[0]}", ", ".join(f"{h} {v}" for h, v in zip(GPU_COLUMNS[1:], cells[1:],
                                                                                   strict=True))))
            rows.append((f"GPU {cells[0]} details", _gpu_details(d).split(": ", 1)[1]))
        rows.append(("topology", _topology(gpus)))
        found.append(Section("GPUs", rows))
    pkgs = py.get("packages") or {}
    found.append(_section("Software", [
        ("python", f"{_fmt(py.get('version'))} ({_fmt(py.get('implementation'))}) {_fmt(py.get('executable'))}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in pkgs.items() if v) or "-"),
        ("nvidia wheels", ", ".join(f"{k} {v}" for k, v in (py.get("nvidia_packages") or {}).items()) or "-"),
        ("lokaal-bench", f"{_fmt(lb.get('version'))} commit {_fmt(lb.get('git_commit'))}"
                         f"{' (dirty)' if lb.get('git_dirty') else ''} from {_fmt(lb.get('source_dir'))}"),
    ], py))
    ev = env.get("env_vars")
    ev_rows = sorted(ev.items()) if isinstance(ev, Mapping) else []
    found.append(_section("Environment variables", ev_rows or [("(none set)", "")], ev))
    es = pw.get("energy_sources") or {}
    found.append(_section("Power & energy", [
        ("cpu governor", pw.get("cpu_governor")),
        *[(name, "yes" if (s or {}).get("available") else f"no: {_fmt((s or {}).get('reason'))}")
          for name, s in es.items() if name != "host"],
    ], pw))
    return found


def environment_table(env: Mapping[str, Any]) -> Table:
    """The sections as rows; the JSON envelope's `data.environment` is the whole inventory."""
    table = Table("env", [Column("section"), Column("field"), Column("value")],
                  title=f"environment of machine {env.get('machine_id')}", data={"environment": dict(env)})
    for section in sections(env):
        if section.error is not None:
            table.add(section=section.title, field="error", value=section.error)
        for field, value in section.rows:
            table.add(section=section.title, field=field, value=value)
    return table


def format_environment(env: Mapping[str, Any]) -> Any:
    """A rich renderable (Group of Panels) for ``lokaal-bench env``."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table as RichTable

    def kv(section: Section) -> Panel:
        t = RichTable.grid(padding=(0, 2))
        t.add_column(style="bold cyan", no_wrap=True)
        t.add_column()
        for k, v in [("error", section.error)] if section.error is not None else section.rows:
            t.add_row(k, v)
        return Panel(t, title=section.title, title_align="left")

    gpus = env.get("gpus") if isinstance(env.get("gpus"), Mapping) else {}
    panels = []
    for section in sections(env):
        if section.title != "GPUs" or section.error is not None or not gpus.get("devices"):
            panels.append(kv(section))
            continue
        t = RichTable(title=f"driver {_fmt(gpus.get('driver_version'))}, CUDA {_fmt(gpus.get('cuda_driver_version'))}",
                      title_justify="left", expand=False)
        for col in GPU_COLUMNS:
            t.add_column(col)
        for d in gpus["devices"]:
            t.add_row(*_gpu_cells(d))
        details = [_gpu_details(d) for d in gpus["devices"]]
        panels.append(Panel(Group(t, *details, f"topology: {_topology(gpus)}"), title="GPUs", title_align="left"))
    return Group(*panels)
