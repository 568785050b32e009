"""The HTML report opens in a real headless Chromium, offline, with its figures visible; plots are
written in every format."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import loopback_only

DATA = Path(__file__).parent / "data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = cli("report", str(DATA / "nightly-1"), str(DATA / "nightly-3-contended"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert "src=" not in text  # nothing to fetch: figures are inline SVG
    assert text.count("<svg") >= 6 and "Hardware side by side" in text and "INVALID" in text


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium_offline(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [*loopback_only(), CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--window-size=1280,4000",
         f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # Chromium's own pages (chrome://, e.g. the omnibox popup) log too, such as "Slow network is
    # detected" when the air gap delays their fonts; only what the report's page logs counts.
    console = [line for line in done.stderr.splitlines()
               if ("CONSOLE" in line or "Uncaught" in line) and "source: chrome://" not in line]
    assert console == [], console
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    figures = pixels[pixels.shape[0] // 3:]  # the figures sit below the tables
    inked = (figures.sum(axis=2) < 2.7).mean()  # share of pixels that are not (near) white
    assert inked > 0.02, f"the figures look blank ({inked:.2%} inked)"


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_plots_in_each_format(tmp_path: Path, fmt: str) -> None:
    done = cli("plot", str(DATA / "nightly-1"), str(DATA / "calibration-cpu"), "-o", str(tmp_path), "--format", fmt)
    assert done.returncode == 0, done.stderr
    files = sorted(tmp_path.glob(f"*.{fmt}"))
    assert len(files) == 7 and all(f.stat().st_size > 1000 for f in files)


def test_report_of_nothing_exits_2(tmp_path: Path) -> None:
    done = cli("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 2 and "no result sets" in done.stderr
