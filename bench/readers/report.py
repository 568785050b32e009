"""One self-contained HTML report of result sets: hardware side by side, headline numbers, figures,
validity flags, failed cells and the environment inventories. No scripts, no fonts, no links out:
it opens the same on an air-gapped laptop. Figures are inline SVG."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.measure.metric_registry import metric
from bench.results.load import LoadedResultSet, Source, load_result_sets

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.VALID { color: #17692d; } .INVALID { color: #a15c00; text-decoration: line-through; }
.FAILED { color: #b00020; font-weight: bold; }
.note { background: #fff6d6; padding: 0.6rem 1rem; border-left: 4px solid #e0b000; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
details pre { font-size: 0.75rem; background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
"""


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _num(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value * scale:,.{digits}f}"


def _svg(fig: Any) -> str:
    from bench.readers.plots import _pyplot

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    _pyplot().close(fig)
    text = buffer.getvalue()
    text = text[text.find("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG needs neither
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # an RDF block naming web addresses


def _hardware(manifests: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("machine id", lambda e: e.get("machine_id")),
        ("CPU", lambda e: (e.get("cpu") or {}).get("model_name")),
        ("cores / threads", lambda e: f"{(e.get('cpu') or {}).get('physical_cores')} / "
                                      f"{(e.get('cpu') or {}).get('logical_threads')}"),
        ("memory GiB", lambda e: _num(((e.get("memory") or {}).get("total_bytes") or 0) / 2**30)),
        ("GPUs", lambda e: ", ".join(d.get("name", "?") for d in (e.get("gpus") or {}).get("devices") or [])
         or "none"),
        ("OS / kernel", lambda e: f"{(e.get('os') or {}).get('name')} / {(e.get('os') or {}).get('kernel')}"),
        ("torch / transformers", lambda e: " / ".join(
            str(((e.get("python") or {}).get("packages") or {}).get(k)) for k in ("torch", "transformers"))),
    ]
    head = "".join(f"<th>{_e(name)}</th>" for name in manifests)
    body = ""
    for label, get in rows:
        cells = ""
        for manifest in manifests.values():
            try:
                value = get(manifest.get("environment") or {})
            except (AttributeError, TypeError):
                value = None
            cells += f"<td>{_e(value)}</td>"
        body += f"<tr><th>{_e(label)}</th>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _cells_table(cells: Any) -> str:
    def shown(title: str, name: str) -> tuple[str, str, float]:  # a registry metric, in its display unit
        return f"{title} {metric(name).display_unit}", name, metric(name).scale

    columns = [("result set", "result_set", None), ("cell", "label", None), shown("output", "output_tok_s"),
               shown("decode", "decode_tok_s"), shown("TTFT p50", "ttft_p50"), shown("TTFT p99", "ttft_p99"),
               shown("ITL p50", "itl_p50"),
               ("peak RSS GiB", "peak_host_bytes", 1 / 2**30), ("decode % roof", "decode_roofline_fraction", 100)]
    head = "".join(f"<th>{_e(title)}</th>" for title, _, _ in columns) + "<th>verdict</th>"
    body = ""
    for row in cells.to_dict("records"):
        verdict = row.get("validity") if row.get("status") == "COMPLETED" else "FAILED"
        cells_html = ""
        for _, key, scale in columns:
            if scale is None:
                cells_html += f"<td>{_e(row.get(key))}</td>"
            else:
                cells_html += f'<td class="num {verdict}">{_num(row.get(key), 2 if scale != 1 else 1, scale)}</td>'
        body += f'<tr>{cells_html}<td class="{verdict}">{_e(verdict)}</td></tr>'
    return f"<table><tr>{head}</tr>{body}</table>"


def _server_view(summaries: list[tuple[str, dict[str, Any]]]) -> str:
    """Served cells: the server's own /metrics over the measured window beside the client's TTFT, and the
    prefix-cache hit rate an ideal cache would reach beside the one the server measured."""
    def pct(value: Any) -> str:
        return "-" if value is None else f"{value:.0%}"

    rows = ""
    for result_set, summary in summaries:
        server = summary.get("server_metrics")
        if not server:
            continue
        ttft = ((summary.get("metrics") or {}).get("ttft") or {}).get("p50")
        cache = summary.get("prefix_cache") or {}
        if not server.get("available"):
            rows += (f"<tr><td>{_e(result_set)}</td><td>{_e(summary.get('label'))}</td>"
                     f"<td colspan='8'>not read: {_e(server.get('reason'))}</td></tr>")
            continue
        gauge = [(server.get(k) or {}) for k in ("running", "waiting", "kv_cache_usage")]
        cells = [_num(ttft, 1, 1000), _num(gauge[0].get("mean")), _num(gauge[1].get("mean")), _num(gauge[1].get("max")),
                 pct(gauge[2].get("max")), _num(server.get("preemptions"), 0), pct(cache.get("ideal_hit_rate")),
                 pct(cache.get("measured_hit_rate") if cache else server.get("prefix_cache_hit_rate"))]
        rows += (f"<tr><td>{_e(result_set)}</td><td>{_e(summary.get('label'))}</td>"
                 + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("result set", "cell", "TTFT p50 ms (client)", "running mean",
                                               "waiting mean", "waiting max", "KV cache peak", "preemptions",
                                               "prefix hit ideal", "prefix hit measured"))
    return f"<h2>The server's own view (/metrics)</h2><table><tr>{head}</tr>{rows}</table>"


def _problems(summaries: list[tuple[str, dict[str, Any]]]) -> str:
    items = []
    for result_set, summary in summaries:
        if summary.get("status") != "COMPLETED":
            items.append(f'<li class="FAILED">{_e(result_set)}: {_e(summary.get("label"))}: FAILED: '
                         f'{_e(summary.get("reason"))}</li>')
        elif (summary.get("validity") or {}).get("verdict") == "INVALID":
            reasons = "; ".join(summary["validity"].get("reasons", []))
            items.append(f'<li>{_e(result_set)}: {_e(summary.get("label"))}: <span class="INVALID">INVALID</span> '
                         f'({_e(summary["validity"].get("rules"))} rules): {_e(reasons)}</li>')
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>Every cell completed and is valid.</p>"


def _capacity_and_projection(sets: list[LoadedResultSet]) -> str:
    """Per-node capacity of the capacity cells (what `plan` divides N users by), and decode tok/s
    measured and projected against model size where cells with rooflines allow a projection."""
    from bench.measure.slo import SLOSpec, describe
    from bench.planning.capacity_plan import node_capacities
    from bench.planning.projection import calibration_samples, held_out_errors, size_points
    from bench.readers.plots import projection_vs_size

    parts = []
    capacities = node_capacities(sets)
    if capacities:
        head = "".join(f"<th>{_e(t)}</th>" for t in ("machine", "model", "engine", "workload", "measured under SLO",
                                                       "users per node", "basis", "power per node",
                                                       "kWh per node per day"))
        body = ""
        for c in capacities:
            watts = c.power.watts
            power = c.power.source if watts is None else f"{watts:,.0f} W ({c.power.source})"
            cells = [c.machine, c.model, c.engine, c.workload, describe(SLOSpec.model_validate(c.slo))]
            body += ("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in cells) + f"<td class='num'>{_num(c.users, 2)}</td>"
                     f"<td>{_e(c.basis)}</td><td>{_e(power)}</td>"
                     f"<td class='num'>{_num(None if watts is None else watts * 24 / 1000, 2)}</td></tr>")
        parts += ["<h3>Capacity per node</h3>", f"<table><tr>{head}</tr>{body}</table>",
                  "<p>A service for N concurrent users needs ceil(N / users per node) nodes; "
                  "<code>lokaal-bench plan</code> answers for a given N and SLO.</p>"]
    samples = calibration_samples(sets)
    if samples:
        engine = max({s.engine for s in samples}, key=[s.engine for s in samples].count)
        points = size_points(sets, samples, engine, 1, 512, 128, [])
        if any(p["projected"] for p in points):
            held = held_out_errors(samples)["decode"]
            typical = "-" if held["typical_error"] is None else f"{held['typical_error']:.0%}"
            parts += ["<h3>Projection: decode tokens/s against model size</h3>",
                      f"<figure>{_svg(projection_vs_size(points))}<figcaption>measured (filled) and PROJECTION "
                      f"(hollow) with {_e(engine)} at batch 1, 512-token prompts and 128 output tokens; held-out "
                      f"typical error {typical} over {held['cells']} decode cells</figcaption></figure>"]
    return "<h2>Capacity and projections</h2>" + "".join(parts) if parts else ""


def render_report(paths: Source | Iterable[Source], title: str | None = None) -> str:
    import bench
    from bench.readers import plots

    sets = load_result_sets(paths)  # each set is read once; every part below gets the loaded sets
    manifests = {s.name: s.manifest for s in sets}
    summaries = []
    for result_set in sets:
        for cell in result_set.cells:
            summary = cell.summary or {"label": cell.entry["label"], "status": cell.entry["status"],
                                       "reason": cell.entry.get("reason")}
            summaries.append((result_set.name, summary))
    cells = bench.load(sets)
    requests = bench.load(sets, per="request")
    synthetic = any(s.get("synthetic_weights") for _, s in summaries)
    figures = [(name.replace("-", " "), _svg(fn(cells))) for name, fn in plots.FIGURES.items()]
    if not requests.empty:
        figures.insert(2, ("latency distributions", _svg(plots.latency_distributions(requests))))
        by_turn = plots.ttft_by_turn(requests)
        if by_turn is not None:
            figures.insert(3, ("TTFT by conversation turn", _svg(by_turn)))
    server = plots.server_view(sets)
    if server is not None:
        figures.append(("the server's own view (/metrics)", _svg(server)))
    title = title or "lokaal-bench report: " + ", ".join(manifests)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>",
        f"<p>{len(sets)} result set(s), {len(summaries)} cell(s).</p>",
    ]
    if synthetic:
        parts.append('<p class="note">Some cells ran on synthetic weights: their speed and memory are real, their '
                     "answer quality is not.</p>")
    parts += ["<h2>Hardware side by side</h2>", _hardware(manifests),
              "<h2>Headline numbers</h2>", _cells_table(cells),
              _server_view(summaries),
              "<h2>Failed and invalid cells</h2>", _problems(summaries), "<h2>Figures</h2>"]
    parts += [f"<figure>{svg}<figcaption>{_e(name)}</figcaption></figure>" for name, svg in figures]
    parts.append(_capacity_and_projection(sets))
    parts.append("<h2>Environment inventories</h2>")
    for name, manifest in manifests.items():
        inventory = json.dumps(manifest.get("environment"), indent=2, default=str)
        parts.append(f"<details><summary>{_e(name)}</summary><pre>{_e(inventory)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(paths: Source | Iterable[Source], out: Path, title: str | None = None) -> Path:
    from bench.atomic import write_text

    write_text(out, render_report(paths, title))
    return out
