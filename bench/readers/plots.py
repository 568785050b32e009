"""Figures from result sets (matplotlib, headless): PNG, SVG or PDF by the file's suffix.

Each function takes DataFrames from `bench.load` (per cell, or per request for distributions) and
returns a matplotlib Figure; one line or bar group per result set, so machines sit side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure.metric_registry import METRICS

FORMATS = (".png", ".svg", ".pdf")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _series(frame: Any, scenario: str | None = None) -> Any:
    done = frame[frame["status"] == "COMPLETED"]
    return done if scenario is None else done[done["scenario"] == scenario]


# The load axis of each scenario: how hard the system was pushed.
LOAD_AXES = (("offline", "batch_size", "batch size"), ("concurrency", "users", "concurrent users"),
             ("rate", "rate", "request rate (req/s)"))


def _load_axes(cells: Any) -> list[tuple[str, str, str]]:
    done = _series(cells)
    return [axis for axis in LOAD_AXES if (done["scenario"] == axis[0]).any()] or [LOAD_AXES[0]]


def throughput_vs_batch(cells: Any) -> Any:
    """Output and decode tokens/s against load: batch size, concurrency or request rate."""
    plt = _pyplot()
    axes_spec = _load_axes(cells)
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.4 * len(axes_spec), 4.0), squeeze=False)
    for ax, (scenario, column, name) in zip(axes[0], axes_spec, strict=True):
        data = _series(cells, scenario)
        for (result_set, model), group in data.groupby(["result_set", "model"]):
            group = group.sort_values(column)
            ax.plot(group[column], group["output_tok_s"], marker="o", label=f"{result_set} {model} output")
            ax.plot(group[column], group["decode_tok_s"], marker="x", linestyle="--",
                    label=f"{result_set} {model} decode")
        ax.set_xscale("log", base=2)
        values = data[["output_tok_s", "decode_tok_s"]].stack()
        if len(values) and values.min() > 0 and values.max() / values.min() > 50:
            ax.set_yscale("log")  # models of very different sizes on one figure
        ax.set(xlabel=name, ylabel="tokens/s", title=f"Throughput against {name}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def latency_vs_batch(cells: Any) -> Any:
    """TTFT and ITL percentiles against load: where latency bends up is the knee."""
    plt = _pyplot()
    axes_spec = _load_axes(cells)
    fig, axes = plt.subplots(len(axes_spec), 2, figsize=(9.6, 4.0 * len(axes_spec)), squeeze=False)
    for row, (scenario, column, name) in zip(axes, axes_spec, strict=True):
        data = _series(cells, scenario)
        for (result_set, model), group in data.groupby(["result_set", "model"]):
            group = group.sort_values(column)
            for ax, metric in zip(row, ("ttft", "itl"), strict=True):
                for q, style in (("p50", "-"), ("p99", ":")):
                    ax.plot(group[column], group[f"{metric}_{q}"] * METRICS[metric].scale, marker="o",
                            linestyle=style, label=f"{result_set} {model} {q}")
        for ax, metric, metric_name in zip(row, ("ttft", "itl"), ("TTFT", "ITL"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set(xlabel=name, ylabel=f"{metric_name} ({METRICS[metric].display_unit})",
                   title=f"{metric_name} against {name}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def latency_distributions(requests: Any) -> Any:
    """Cumulative distributions of TTFT and of end-to-end latency, one line per cell."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
    measured = requests[(requests["repetition"] >= 0) & requests["error"].isna()]
    for (result_set, label), group in measured.groupby(["result_set", "label"]):
        short = label.split(" | ")[-1]
        for ax, column, metric in zip(axes, ("ttft_s", "e2e_latency_s"), ("ttft", "e2e_latency"), strict=True):
            values = group[column].dropna().sort_values() * METRICS[metric].scale
            if len(values):
                ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                        label=f"{result_set} {short}")
    for ax, name, metric in zip(axes, ("TTFT", "end-to-end latency"), ("ttft", "e2e_latency"), strict=True):
        ax.set(xlabel=f"{name} ({METRICS[metric].display_unit})", ylabel="fraction of requests",
               title=f"{name} distribution")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def ttft_by_turn(requests: Any) -> Any | None:
    """Conversations: median TTFT of each turn (0: the first message), one line per cell; the history a
    turn resends grows with it, so the line shows what a long conversation costs (and what a prefix cache
    saves). None when no cell held conversations."""
    if "turn" not in requests or requests["turn"].isna().all():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    measured = requests[(requests["repetition"] >= 0) & requests["error"].isna() & requests["turn"].notna()]
    scale = METRICS["ttft"].scale
    for (result_set, label), group in measured.groupby(["result_set", "label"]):
        medians = group.groupby("turn")["ttft_s"].median() * scale
        ax.plot(medians.index.astype(int), medians.values, marker="o", label=f"{result_set} {label}")
    ax.set(xlabel="turn (0: the first message)", ylabel=f"TTFT p50 ({METRICS['ttft'].display_unit})",
           title="Time to first token by conversation turn")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def server_view(sets: Any) -> Any | None:
    """The server's own /metrics through each served cell (loaded result sets): requests running and
    waiting, and KV-cache usage, against seconds since the cell's first sample; the client's TTFT p50
    in each line's label. None when no cell has samples."""
    series = []
    for result_set in sets:
        for cell in result_set.cells:
            good = [s for s in cell.server_samples if "values" in s]
            if good:
                ttft = (((cell.summary or {}).get("metrics") or {}).get("ttft") or {}).get("p50")
                client = f" (TTFT p50 {ttft * 1000:.0f} ms)" if ttft else ""
                series.append((f"{result_set.name} {cell.label}{client}", good))
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14.4, 4.0))
    for label, good in series:
        t0 = good[0]["t"]
        for ax, name in zip(axes, ("running", "waiting", "kv_cache_usage"), strict=True):
            points = [(s["t"] - t0, s["values"][name]) for s in good if name in s["values"]]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
    for ax, title in zip(axes, ("requests running", "requests waiting", "KV-cache usage (fraction)"), strict=True):
        ax.set(xlabel="seconds into the cell", title=f"Server: {title}")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def memory(cells: Any) -> Any:
    """Peak memory against batch size (offline) and context depth (prefill-decode)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for ax, scenario, x, name in ((axes[0], "offline", "batch_size", "batch size"),
                                  (axes[1], "prefill-decode", "depth", "context depth (tokens)")):
        data = _series(cells, scenario)
        for (result_set, model), group in data.groupby(["result_set", "model"]):
            group = group.sort_values(x)
            ax.plot(group[x], group["peak_host_bytes"] / 2**30, marker="o", label=f"{result_set} {model}")
        ax.set(xlabel=name, ylabel="peak RSS (GiB)", title=f"Memory against {name}")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a scenario the result sets do not have draws nothing
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def energy_per_token(cells: Any) -> Any:
    """Joules per output token per cell, where an energy source existed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    data = _series(cells).dropna(subset=["energy_j_per_token"])
    if data.empty:
        ax.text(0.5, 0.5, "no energy source on these machines\n(NVML or RAPL)", ha="center", va="center")
        ax.set_axis_off()
    else:
        labels = [f"{r.result_set}\n{r.label.split(' | ')[-1]}" for r in data.itertuples()]
        ax.barh(labels, data["energy_j_per_token"])
        ax.set(xlabel="J per output token", title="Energy per token")
    fig.tight_layout()
    return fig


def pareto(cells: Any) -> Any:
    """Tokens/s per user (stream_decode_tok_s: one stream's decode rate) against tokens/s per node
    (output_tok_s), with the front."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    data = _series(cells).dropna(subset=["stream_decode_tok_s", "output_tok_s"])
    for result_set, group in data.groupby("result_set"):
        per_user = group["stream_decode_tok_s"]
        ax.scatter(group["output_tok_s"], per_user, label=result_set)
        points = sorted(zip(group["output_tok_s"], per_user, strict=True), reverse=True)
        front, best = [], -1.0
        for node, user in points:  # keep a point only if no other has more of both
            if user > best:
                front.append((node, user))
                best = user
        ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", alpha=0.6)
    ax.set(xlabel="tokens/s per node", ylabel="tokens/s per user", title="Per-user speed against node throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def side_by_side(cells: Any, metric: str = "output_tok_s") -> Any:
    """One metric for every cell, one bar per result set: hardware side by side."""
    plt = _pyplot()
    data = _series(cells)
    table = data.pivot_table(index="label", columns="result_set", values=metric, aggfunc="first")
    fig, ax = plt.subplots(figsize=(9.6, max(3.0, 0.45 * len(table) + 1.5)))
    if not table.empty:
        table.index = [label.split(" | ", 1)[-1] for label in table.index]
        table.plot.barh(ax=ax)
    ax.set(xlabel=metric, title=f"{metric} per cell and result set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def projection_vs_size(points: list[dict[str, Any]], batch: int = 1) -> Any:
    """Decode tokens/s against model size per machine (bench.planning.projection.size_points): measured cells as
    filled markers, projections hollow with their held-out error bars, so neither passes for the other."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    machines = list(dict.fromkeys(p["machine"] for p in points))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, machine in enumerate(machines):
        colour = colours[index % len(colours)]
        mine = [p for p in points if p["machine"] == machine]
        done = [p for p in mine if not p["projected"]]
        ax.scatter([p["parameters"] for p in done], [p["decode_tok_s"] for p in done], color=colour, zorder=3)
        guess = sorted((p for p in mine if p["projected"]), key=lambda p: p["parameters"])
        if guess:
            xs, ys = [p["parameters"] for p in guess], [p["decode_tok_s"] for p in guess]
            errors = [y * (p["error"] or 0) for y, p in zip(ys, guess, strict=True)]
            ax.errorbar(xs, ys, yerr=errors, color=colour, linestyle="--", alpha=0.8, capsize=3, marker="o",
                        markerfacecolor="none", markeredgecolor=colour)
    handles = [Line2D([], [], color=colours[i % len(colours)], linewidth=3, label=m) for i, m in enumerate(machines)]
    handles += [Line2D([], [], marker="o", color="black", linestyle="", label="measured"),
                Line2D([], [], marker="o", color="black", markerfacecolor="none", linestyle="--",
                       label="projected (held-out error bars)")]
    ax.legend(handles=handles, fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="model parameters", ylabel="decode tokens/s",
           title=f"Decode tokens/s against model size, batch {batch} (hollow: projection)")
    ax.grid(True, alpha=0.3, which="both")
    fig.tight_layout()
    return fig


FIGURES = {
    "throughput": throughput_vs_batch,
    "latency": latency_vs_batch,
    "memory": memory,
    "energy": energy_per_token,
    "pareto": pareto,
    "side-by-side": side_by_side,
}


def save(fig: Any, path: Path) -> Path:
    if path.suffix not in FORMATS:
        raise ValueError(f"{path}: figures are written as {', '.join(FORMATS)}")
    fig.savefig(path, dpi=150)
    _pyplot().close(fig)
    return path
