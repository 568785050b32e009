"""Background telemetry recording for one measured process tree.

The runner starts the benchmark cell in a child process and records from the parent, so the
sampling never runs inside (or competes for the GIL of) the measured process.

Each sample is ``{"t": time.time(), "host": {...} | None, "gpus": [...], "rapl": [...]}`` with the
keys documented in ``host``, ``nvidia`` and ``rapl``. ``gpus``/``rapl`` are empty lists when the
source is unavailable. The first sample also carries ``"sources"``: ``{"host"|"nvml"|"rapl":
{"available": bool, "reason": str | None}}`` (also ``TelemetryRecorder.sources``).

Memory bound: at most ``max_samples`` samples are kept. When full, every other sample is dropped
and from then on only every 2nd (then 4th, ...) tick is kept, so the record stays evenly spaced
over the whole run. Sampling itself keeps its interval, so the RAPL counters are still unwrapped
at full rate and energy stays exact (counters are cumulative); only means/peaks get coarser,
and a peak shorter than the effective interval may be missed. The first sample (at ``start()``)
and the last (at ``stop()``) are always kept.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .host import HostSampler
from .nvidia import NvidiaSampler
from .rapl import DEFAULT_ROOT, RaplReader
from .summary import summarise_telemetry

__all__ = ["TelemetryRecorder", "summarise_telemetry"]


class TelemetryRecorder:
    """Samples host, NVML and RAPL telemetry for ``pid``'s process tree every ``interval_s``.

    ``nvml``: True to use pynvml if it works, False to skip GPUs, or a pynvml-shaped module.
    """

    def __init__(
        self,
        pid: int,
        interval_s: float = 0.25,
        *,
        max_samples: int = 4000,
        nvml: bool | ModuleType = True,
        rapl_root: str | Path = DEFAULT_ROOT,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if max_samples < 4:
            raise ValueError("max_samples must be >= 4")
        self.pid = pid
        self.interval_s = interval_s
        self.max_samples = max_samples
        self._nvml_opt = nvml
        self._rapl_root = rapl_root
        self._samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stride = 1
        self._tick = 0
        self.errors: list[str] = []
        self.sources: dict[str, Any] = {}
        self._host: HostSampler | None = None
        self._gpu: NvidiaSampler | None = None
        self._rapl: RaplReader | None = None

    @property
    def samples(self) -> list[dict[str, Any]]:
        """A snapshot copy of the samples kept so far (safe while recording)."""
        with self._lock:
            return list(self._samples)

    @property
    def stride(self) -> int:
        """How many ticks each kept sample stands for (1 until the first decimation)."""
        return self._stride

    def _open(self) -> None:
        self._host = HostSampler(self.pid)
        if self._nvml_opt is False:
            gpu_reason: str | None = "disabled"
        else:
            mod = None if self._nvml_opt is True else self._nvml_opt
            self._gpu, gpu_reason = NvidiaSampler.try_open(mod)  # type: ignore[arg-type]
        self._rapl = RaplReader(self._rapl_root)
        self.sources = {
            "host": {"available": True, "reason": None},
            "nvml": {"available": self._gpu is not None, "reason": gpu_reason},
            "rapl": {"available": self._rapl.available, "reason": self._rapl.reason},
        }

    def _sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": time.time(), "host": None, "gpus": [], "rapl": []}
        assert self._host is not None and self._rapl is not None
        try:
            s["host"] = self._host.sample()
        except Exception as e:  # keep recording the other sources
            self._error(f"host: {type(e).__name__}: {e}")
        if self._gpu is not None:
            try:
                s["gpus"] = self._gpu.sample(self._host.tree_pids())
            except Exception as e:
                self._error(f"nvml: {type(e).__name__}: {e}")
        if self._rapl.available:
            try:
                s["rapl"] = self._rapl.read()
            except Exception as e:
                self._error(f"rapl: {type(e).__name__}: {e}")
        return s

    def _error(self, msg: str) -> None:
        if len(self.errors) < 100:  # bounded like the samples
            self.errors.append(msg)

    def _keep(self, s: dict[str, Any], force: bool = False) -> None:
        with self._lock:
            if force or self._tick % self._stride == 0:
                self._samples.append(s)
            self._tick += 1
            if len(self._samples) >= self.max_samples:
                last = self._samples[-1]
                self._samples = self._samples[::2]
                if self._samples[-1] is not last:  # the newest sample always survives
                    self._samples.append(last)
                self._stride *= 2

    def _run(self) -> None:
        next_t = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            self._keep(self._sample())
            # Fixed schedule without drift; if a sample overran, skip the missed ticks.
            next_t += self.interval_s
            now = time.monotonic()
            if next_t < now:
                next_t = now + self.interval_s

    def start(self) -> TelemetryRecorder:
        if self._thread is not None:
            raise RuntimeError("recorder already started")
        self._open()
        first = self._sample()
        first["sources"] = self.sources  # so the raw samples alone explain missing sources
        self._keep(first, force=True)
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling (taking one final sample) and return all kept samples."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=max(5.0, 4 * self.interval_s))
            self._keep(self._sample(), force=True)
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None
        return self.samples

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        return summarise_telemetry(self.samples, window, self.sources)

    def __enter__(self) -> TelemetryRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
