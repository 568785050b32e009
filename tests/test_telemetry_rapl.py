"""RAPL energy against a fake powercap tree, including counter wraparound."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.telemetry import TelemetryRecorder, summarise_telemetry, telemetry_sources
from bench.telemetry.rapl import RaplReader, rapl_delta_uj

RANGE = 1_000_000  # a small max_energy_range_uj so the test can wrap it


def make_tree(root: Path) -> Path:
    zones = {
        "intel-rapl:0": "package-0",
        "intel-rapl:0:0": "core",
        "intel-rapl:0:1": "dram",
        "intel-rapl:1": "package-1",
        "intel-rapl-mmio:0": "package-0",  # duplicates the package counter: must be ignored
    }
    for zone, name in zones.items():
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{RANGE}\n")
        (d / "energy_uj").write_text("0\n")
    return root


def set_energy(root: Path, zone: str, uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_delta_wraps() -> None:
    assert rapl_delta_uj(100, 250, RANGE) == 150
    assert rapl_delta_uj(900_000, 100_000, RANGE) == 200_000
    assert rapl_delta_uj(900_000, 100_000, None) == 0  # unknown range: never negative


def test_reader_discovers_zones_and_unwraps(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    reader = RaplReader(root)
    assert reader.available and reader.reason is None
    assert [(z["zone"], z["domain"]) for z in reader.zones] == [
        ("intel-rapl:0", "package"), ("intel-rapl:0:0", "core"), ("intel-rapl:0:1", "dram"),
        ("intel-rapl:1", "package")]
    set_energy(root, "intel-rapl:0", 900_000)
    first = {z["zone"]: z for z in reader.read()}
    assert first["intel-rapl:0"]["energy_uj"] == 900_000 and first["intel-rapl:0"]["energy_uj_cum"] == 0
    set_energy(root, "intel-rapl:0", 100_000)  # wrapped: +200 000 uJ
    set_energy(root, "intel-rapl:0", 300_000)
    reader.read()
    set_energy(root, "intel-rapl:0", 250_000)  # wrapped again: +950 000 uJ
    third = {z["zone"]: z for z in reader.read()}
    assert third["intel-rapl:0"]["energy_uj_cum"] == 400_000 + 950_000
    assert third["intel-rapl:0"]["name"] == "package-0"
    assert third["intel-rapl:0"]["max_energy_range_uj"] == RANGE


def test_reader_unavailable_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = RaplReader(tmp_path / "nope")
    assert not missing.available and "no RAPL zones" in missing.reason
    assert missing.read() == []

    root = make_tree(tmp_path / "tree")
    real_read_text = Path.read_text

    def deny(self: Path, *a: object, **k: object) -> str:
        if self.name == "energy_uj":  # root-only since Linux 5.10; tests run as root, so fake it
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    denied = RaplReader(root)
    assert not denied.available
    assert "permission denied" in denied.reason
    assert telemetry_sources(rapl_root=root)["rapl"]["reason"] == denied.reason


def _rapl(zone: str, name: str, raw: int, cum: int | None = None) -> dict:
    z = {"zone": zone, "name": name, "domain": name.split("-")[0], "energy_uj": raw, "max_energy_range_uj": RANGE}
    if cum is not None:
        z["energy_uj_cum"] = cum
    return z


def test_summarise_rapl_from_raw_counters_with_wraparound() -> None:
    # package-0 raw: 900 000 -> 100 000 (wrap, +200 000) -> 300 000 (+200 000) -> 500 000 (+200 000)
    # cumulative at t=0..3: 0, 0.2, 0.4, 0.6 J. Window [0.5, 2.5]: C(2.5)-C(0.5) = 0.5-0.1 = 0.4 J.
    # dram raw: 950 000 -> 50 000 (wrap) -> 150 000 -> 250 000, +100 000 uJ/s: 0.2 J over the window.
    # core is inside the package: reported as an item but not added to cpu_j.
    samples = [{"t": float(t), "rapl": [_rapl("intel-rapl:0", "package-0", p), _rapl("intel-rapl:0:1", "dram", d),
                                        _rapl("intel-rapl:0:0", "core", c)]}
               for t, p, d, c in [(0, 900_000, 950_000, 0), (1, 100_000, 50_000, 10),
                                  (2, 300_000, 150_000, 20), (3, 500_000, 250_000, 30)]]
    s = summarise_telemetry(samples, (0.5, 2.5))
    items = {i["zone"]: i for i in s["energy"]["items"]}
    assert items["intel-rapl:0"]["joules"] == pytest.approx(0.4)
    assert items["intel-rapl:0:1"]["joules"] == pytest.approx(0.2)
    assert items["intel-rapl:0:0"]["joules"] == pytest.approx(0.00002)
    assert all(i["source"] == "rapl" and i["device"] == "cpu" for i in items.values())
    assert s["energy"]["cpu_j"] == pytest.approx(0.6)
    assert s["energy"]["gpu_j"] is None
    assert s["energy_sources"]["rapl"]["available"] is True
    assert s["energy_sources"]["rapl"]["reason"] is None
    assert s["energy_sources"]["nvml_energy_counter"]["available"] is False


def test_summarise_prefers_unwrapped_cumulative_counter() -> None:
    # After decimation, consecutive kept samples may be more than one wrap apart: the cum field
    # (unwrapped by the reader at full rate) is then the only correct figure.
    samples = [{"t": 0.0, "rapl": [_rapl("intel-rapl:0", "package-0", 500_000, cum=0)]},
               {"t": 10.0, "rapl": [_rapl("intel-rapl:0", "package-0", 400_000, cum=3 * RANGE - 100_000)]}]
    s = summarise_telemetry(samples, None)
    assert s["energy"]["cpu_j"] == pytest.approx((3 * RANGE - 100_000) / 1e6)


def test_recorder_reads_rapl_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    with TelemetryRecorder(os.getpid(), interval_s=0.02, nvml=False, rapl_root=root) as rec:
        for uj in (400_000, 800_000, 200_000):  # the last one wraps
            time.sleep(0.06)
            set_energy(root, "intel-rapl:0", uj)
        time.sleep(0.06)
    s = rec.summary()
    items = {i["zone"]: i for i in s["energy"]["items"]}
    assert items["intel-rapl:0"]["joules"] == pytest.approx(1.2)
    assert items["intel-rapl:1"]["joules"] == 0
    assert s["energy"]["cpu_j"] == pytest.approx(1.2)
    assert rec.sources["rapl"] == {"available": True, "reason": None}
