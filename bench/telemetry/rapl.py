"""CPU energy from the Linux powercap RAPL interface (Intel, and AMD Zen since Linux 5.8).

Zones are ``<root>/intel-rapl:N`` (a package) and ``intel-rapl:N:M`` (its sub-domains: core,
uncore, dram). ``intel-rapl-mmio:*`` zones are skipped: on client Intel parts they duplicate the
package counter. Since Linux 5.10 (PLATYPUS, CVE-2020-8694) ``energy_uj`` is readable by root
only; the reader then reports itself unavailable with that reason.

``energy_uj`` wraps at ``max_energy_range_uj`` (a few minutes to an hour at full power), so the
reader unwraps between consecutive reads and reports ``energy_uj_cum``: microjoules since the
reader's first read, monotonic. Reading often enough (the recorder reads every interval)
guarantees at most one wrap between reads.

Keys of each zone dict from ``RaplReader.read()``: ``zone`` (directory name), ``name``
(e.g. ``package-0``, ``dram``), ``domain`` (``package``/``dram``/``core``/``uncore``/``psys``),
``energy_uj`` (raw counter or None if this read failed), ``max_energy_range_uj``, ``energy_uj_cum``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DEFAULT_ROOT = "/sys/class/powercap"
_ZONE_RE = re.compile(r"^intel-rapl(:\d+)+$")


def rapl_delta_uj(prev: int, cur: int, max_range_uj: int | None) -> int:
    """Energy between two raw readings, assuming at most one wrap of the counter."""
    delta = cur - prev
    if delta < 0 and max_range_uj:
        delta += max_range_uj
    return max(delta, 0)


def _domain(name: str) -> str:
    for d in ("package", "dram", "uncore", "core", "psys"):
        if name.startswith(d):
            return d
    return name


class RaplReader:
    """Reads and unwraps the RAPL energy counters found under ``root``."""

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self.zones: list[dict[str, Any]] = []
        self.reason: str | None = None
        self._last: dict[str, int] = {}
        self._cum: dict[str, int] = {}
        self._discover()

    @property
    def available(self) -> bool:
        return self.reason is None and bool(self.zones)

    def _discover(self) -> None:
        try:
            entries = sorted(p for p in self.root.iterdir() if _ZONE_RE.match(p.name))
        except OSError:
            entries = []
        if not entries:
            self.reason = (
                f"no RAPL zones under {self.root}/intel-rapl:* (non-x86 CPU, no powercap driver, "
                "or a VM/container that does not expose it)"
            )
            return
        for zdir in entries:
            try:
                name = (zdir / "name").read_text().strip()
            except OSError:
                name = zdir.name
            try:
                max_range: int | None = int((zdir / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                max_range = None
            try:
                int((zdir / "energy_uj").read_text())
            except PermissionError:
                self.reason = (
                    f"permission denied reading {zdir}/energy_uj (root-only since Linux 5.10; "
                    "run as root or `chmod a+r` the energy_uj files)"
                )
                self.zones = []
                return
            except (OSError, ValueError) as e:
                self.reason = f"cannot read {zdir}/energy_uj: {e}"
                continue
            self.zones.append({"zone": zdir.name, "name": name, "domain": _domain(name),
                               "max_energy_range_uj": max_range, "path": zdir / "energy_uj"})
        if self.zones:
            self.reason = None

    def read(self) -> list[dict[str, Any]]:
        out = []
        for z in self.zones:
            key = z["zone"]
            try:
                raw: int | None = int(z["path"].read_text())
            except (OSError, ValueError):
                raw = None
            if raw is not None:
                if key in self._last:
                    self._cum[key] += rapl_delta_uj(self._last[key], raw, z["max_energy_range_uj"])
                else:
                    self._cum[key] = 0
                self._last[key] = raw
            out.append({
                "zone": key,
                "name": z["name"],
                "domain": z["domain"],
                "energy_uj": raw,
                "max_energy_range_uj": z["max_energy_range_uj"],
                "energy_uj_cum": self._cum.get(key) if raw is not None else None,
            })
        return out
