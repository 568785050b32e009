"""The server's own view: its Prometheus `/metrics` (vLLM's, llama.cpp's server's), scraped from the
runner at the telemetry interval while a served cell runs, beside the client's own measurements.

Only loopback and the hosts a profile allows (run.allow_hosts) are scraped; any other host is not
contacted, and the cell says why. A /metrics that cannot be read (no route, refused, not Prometheus
text) is a reason in the cell, never a failure: the run goes on without the server's view.

Each sample is {"t": time.time(), "values": {series: number}} or {"t": ..., "error": "..."}; the series
are the few that say what the server was doing (SERIES), each summed over its label sets, under one
name whichever server sent it. `summarise_server_metrics` reduces them over the measured window:
gauges to their mean and peak, counters to their increase (from the last sample at or before the
window's start to the first at or after its end, so no request of the window is missed).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import math
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

# series -> (gauge or counter, the names servers give it: the first one found is used)
SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "running": ("gauge", ("vllm:num_requests_running", "llamacpp:requests_processing")),
    "waiting": ("gauge", ("vllm:num_requests_waiting", "llamacpp:requests_deferred")),
    "kv_cache_usage": ("gauge", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                                 "llamacpp:kv_cache_usage_ratio")),
    "preemptions": ("counter", ("vllm:num_preemptions_total", "vllm:num_preemptions")),
    "prefix_cache_queries": ("counter", ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")),
    "prefix_cache_hits": ("counter", ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")),
    "prompt_tokens": ("counter", ("vllm:prompt_tokens_total", "llamacpp:prompt_tokens_total")),
    "generation_tokens": ("counter", ("vllm:generation_tokens_total", "llamacpp:tokens_predicted_total")),
    "spec_decode_draft_tokens": ("counter", ("vllm:spec_decode_num_draft_tokens_total",)),
    "spec_decode_accepted_tokens": ("counter", ("vllm:spec_decode_num_accepted_tokens_total",)),
}
MAX_BODY_BYTES = 8 * 2**20
GIVE_UP_AFTER = 3  # failures in a row before the first good scrape: the server has no /metrics


def metrics_url(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port/metrics (servers expose it at the root)."""
    parts = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit((parts.scheme or "http", parts.netloc, "/metrics", "", ""))


def scrape_refusal(url: str, allowed_hosts: Sequence[str]) -> str | None:
    """Why a URL may not be scraped (a host that is neither loopback nor allowed), or None."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host in allowed_hosts:
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return f"{url} not scraped: {host} is neither loopback nor in run.allow_hosts"


def parse_prometheus(text: str) -> dict[str, float]:
    """The SERIES found in Prometheus text exposition; ValueError when the text is not that at all."""
    totals: dict[str, float] = {}
    samples = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end <= 0:
            raise ValueError(f"not Prometheus text: {line[:80]!r}")
        name = line[:name_end]
        rest = line[line.rfind("}") + 1:] if "{" in line[:name_end + 1] else line[name_end:]
        fields = rest.split()
        try:
            value = float(fields[0])
        except (IndexError, ValueError):
            raise ValueError(f"not Prometheus text: {line[:80]!r}") from None
        samples += 1
        if math.isfinite(value):
            totals[name] = totals.get(name, 0.0) + value
    if not samples:
        raise ValueError("no samples")
    values = {}
    for series, (_, names) in SERIES.items():
        found = next((n for n in names if n in totals), None)
        if found is not None:
            values[series] = totals[found]
    return values


def scrape(url: str, timeout_s: float) -> dict[str, float]:
    """GET a /metrics page: its series; an exception saying what failed otherwise."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
    try:
        connection.request("GET", parts.path or "/metrics")
        response = connection.getresponse()
        body = response.read(MAX_BODY_BYTES)
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return parse_prometheus(body.decode("utf-8", errors="replace"))


class ServerMetricsRecorder:
    """Scrapes one /metrics URL every `interval_s` on a thread of its own (a slow server delays only this)."""

    def __init__(self, url: str, interval_s: float, allowed_hosts: Sequence[str] = ()):
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = min(max(interval_s, 0.5), 2.0)
        self.samples: list[dict[str, Any]] = []
        self.reason: str | None = scrape_refusal(url, allowed_hosts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ServerMetricsRecorder:
        if self.reason is None:
            self._thread = threading.Thread(target=self._run, name="server-metrics", daemon=True)
            self._thread.start()
        return self

    def _one(self) -> bool:
        try:
            self.samples.append({"t": time.time(), "values": scrape(self.url, self.timeout_s)})
            return True
        except Exception as exc:  # whatever the server does, the cell goes on; the reason is kept
            self.samples.append({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"[:300]})
            return False

    def _run(self) -> None:
        failures, good = 0, False
        while not self._stop.is_set():
            ok = self._one()
            good |= ok
            failures = 0 if ok else failures + 1
            if not good and failures >= GIVE_UP_AFTER:
                self.reason = f"GET {self.url} failed {failures} times: {self.samples[-1]['error']}; not scraped"
                return
            self._stop.wait(self.interval_s)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)
            if self.reason is None:
                self._one()  # the last sample, after the cell's last request
        return self.samples


def _counter_delta(points: list[tuple[float, float]], start: float, end: float) -> float | None:
    before = [v for t, v in points if t <= start]
    after = [v for t, v in points if t >= end]
    first = before[-1] if before else (points[0][1] if points else None)
    last = after[0] if after else (points[-1][1] if points else None)
    if first is None or last is None:
        return None
    return max(last - first, 0.0)  # a counter that went down was reset (the server restarted)


def summarise_server_metrics(samples: list[dict[str, Any]], window: tuple[float, float] | None,
                             url: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """The server's view over the measured window (wall clock): gauges' mean and peak, counters' increase,
    the prefix-cache hit rate and speculative decoding's acceptance rate where the server has them."""
    good = [s for s in samples if "values" in s]
    errors = [s["error"] for s in samples if "error" in s]
    summary: dict[str, Any] = {"url": url, "available": bool(good) and reason is None, "reason": reason,
                               "n_samples": len(good), "errors": len(errors)}
    if not good:
        summary["reason"] = reason or (f"no sample could be read from {url}: {errors[-1]}" if errors
                                       else f"{url} was not scraped")
        return summary
    start, end = window if window else (good[0]["t"], good[-1]["t"])
    inside = [s for s in good if start <= s["t"] <= end] or good
    for series, (kind, _) in SERIES.items():
        points = [(s["t"], s["values"][series]) for s in good if series in s["values"]]
        if not points:
            continue
        if kind == "gauge":
            values = [s["values"][series] for s in inside if series in s["values"]] or [points[-1][1]]
            summary[series] = {"mean": sum(values) / len(values), "max": max(values)}
        else:
            summary[series] = _counter_delta(points, start, end)
    queries, hits = summary.get("prefix_cache_queries"), summary.get("prefix_cache_hits")
    summary["prefix_cache_hit_rate"] = hits / queries if queries and hits is not None else None
    drafts, accepted = summary.get("spec_decode_draft_tokens"), summary.get("spec_decode_accepted_tokens")
    summary["spec_decode_acceptance_rate"] = accepted / drafts if drafts and accepted is not None else None
    return summary
