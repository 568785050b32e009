"""scripts/gpu_acceptance.sh (issue 17): its dry run for real on this CPU machine (install plan, env,
probe, the profile's validation, the gpu tests' collection, the page and the archive of a CPU result
set), a spent budget, the time limit of a step, the checks against physics and the wheel plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.acceptance import checks, wheels
from bench.acceptance.main import parse_junit
from bench.acceptance.steps import run_command

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_acceptance.sh"
EXAMPLE = REPO / "results" / "examples" / "quickstart-2core-epyc-vm"


def _script(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                           "--wheels", str(tmp_path / "no-wheels"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _rows(page: str, heading: str) -> dict[str, list[str]]:
    """The rows of the Markdown table under `## heading`, by their first column."""
    section = page.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]
    return {row[0]: row[1:] for row in rows[1:]}


def test_dry_run_writes_the_page_and_an_archive_whose_result_set_verifies(tmp_path: Path) -> None:
    done = _script(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    page = (out / "summary.md").read_text()
    assert page.startswith("# lokaal-bench GPU acceptance: dry run (CPU), PASS (with UNKNOWN checks)")
    assert "# lokaal-bench GPU acceptance" in done.stdout  # the page is printed too: a device's output tail has it

    step_status = {name: row[0] for name, row in _rows(page, "Steps").items()}
    assert step_status == {"install (wheels, imports)": "PLANNED", "lokaal-bench env": "OK",
                           "lokaal-bench probe": "OK", "materialise the cards": "PLANNED",
                           "lokaal-bench run profiles/gpu-acceptance.yaml": "OK", "pytest -m gpu": "PLANNED"}
    steps = _rows(page, "Steps")
    assert "no wheels folder" in steps["install (wheels, imports)"][3] and "imports here: ok" in page
    assert "(10 cells)" in steps["lokaal-bench run profiles/gpu-acceptance.yaml"][3]
    assert "GB of synthetic weights" in steps["materialise the cards"][3]

    verdicts = {name: row[0] for name, row in _rows(page, "Checks against physics").items()}
    assert verdicts["HBM bandwidth below the published peak, above half of it"] == "UNKNOWN"
    assert verdicts["bf16 matmul below the published dense peak"] == "UNKNOWN"
    assert verdicts["one GPU seen by NVML and by torch"] == "UNKNOWN"
    assert verdicts["decode tok/s at batch 1 within the bandwidth roofline"] == "PASS"  # the CPU cells' rooflines
    assert verdicts["peak memory recorded per cell"] == "PASS"
    assert verdicts["energy per output token"] in ("PASS", "UNKNOWN")  # RAPL where the machine exposes it

    manifest = json.loads((EXAMPLE / "manifest.json").read_text())
    cells = _rows(page, "Cells (dry run: the CPU result set results/examples/quickstart-2core-epyc-vm)")
    assert sorted(cells) == sorted(e["label"].replace("|", "\\|") for e in manifest["cells"])
    assert "tests/test_gpu.py::test_a_run_on_cuda_records_gpu_memory_energy_and_its_roofline" in page
    assert "vLLM on CUDA" in page.split("## Not verified by this run")[1]

    state = json.loads((out / "summary.json").read_text())
    assert state["mode"] == "dry-run" and state["environment"]["gpus"]["devices"] == []
    assert state["probes"]["quick"] is True and state["install"]["plan"]["missing"] == sorted(wheels.WHEELS)

    with tarfile.open(out / "gpu-acceptance.tar.gz") as archive:
        names = archive.getnames()
        top = names[0].split("/")[0]
        for member in ("result/manifest.json", "env.json", "env.txt", "probe.json", "models.json",
                       "logs/validate.txt", "logs/pytest-collect.txt", "summary.md", "summary.json"):
            assert f"{top}/{member}" in names, member
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.10.12+, 3.11.4+
        archive.extractall(tmp_path / "unpacked", **safe)
    unpacked = tmp_path / "unpacked" / top
    assert (unpacked / "summary.md").read_text() == page
    verified = subprocess.run([sys.executable, "-m", "bench", "verify", str(unpacked / "result")],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert verified.returncode == 0, verified.stdout + verified.stderr  # the archive kept the sealed files as they were


def test_the_page_and_checks_need_nothing_the_install_step_installs(tmp_path: Path) -> None:
    """The run starts where pydantic, jsonschema and cryptography are missing (and must not load torch):
    its page, checks and result-set reading work without them."""
    code = (
        "import sys\n"
        "for name in ('pydantic', 'pydantic_core', 'jsonschema', 'cryptography', 'torch', 'transformers'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "from bench.acceptance.main import Acceptance, build_parser\n"
        "from bench.acceptance import summary\n"
        f"run = Acceptance(build_parser().parse_args(['--out', {str(tmp_path / 'out')!r}, "
        f"'--work', {str(tmp_path / 'work')!r}]))\n"
        f"run._load_result_set(__import__('pathlib').Path({str(EXAMPLE)!r}), 'example')\n"
        "state = run.state()\n"
        "assert len(state['result_set']['cells']) == 5 and state['checks'][3]['verdict'] == 'PASS', state['checks']\n"
        "print(summary.render(state).splitlines()[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("# lokaal-bench GPU acceptance: GPU run")


def test_a_spent_budget_skips_every_step_and_still_writes_the_page(tmp_path: Path) -> None:
    done = _script(tmp_path, "--dry-run", "--budget-s", "1", timeout=120)
    assert done.returncode == 1
    page = (tmp_path / "out" / "summary.md").read_text()
    assert "INCOMPLETE" in page.splitlines()[0]
    assert {row[0] for row in _rows(page, "Steps").values()} == {"SKIPPED"}
    assert set(row[0] for row in _rows(page, "Checks against physics").values()) == {"UNKNOWN"}
    assert (tmp_path / "out" / "gpu-acceptance.tar.gz").stat().st_size > 0


def test_a_command_past_its_limit_gets_sigint_first_then_its_whole_group_is_gone(tmp_path: Path) -> None:
    marker, pid_file = tmp_path / "interrupted", tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            f"child = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "try:\n    time.sleep(60)\n"
            f"except KeyboardInterrupt:\n    open({str(marker)!r}, 'w').write('sealed'); sys.exit(130)\n")
    outcome = run_command([sys.executable, "-c", code], log=tmp_path / "log.txt", timeout_s=2, grace_s=5)
    assert outcome.timed_out and outcome.returncode == 130
    assert marker.read_text() == "sealed"  # the runner's KeyboardInterrupt path (seal what finished) ran
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert "# exit 130 (time limit)" in (tmp_path / "log.txt").read_text()


def test_junit_report_of_a_real_pytest_run_is_counted(tmp_path: Path) -> None:
    (tmp_path / "test_three.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2, 'one is not two'\n\n"
        "@pytest.mark.skip(reason='no GPU here')\ndef test_skipped():\n    pass\n")
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                    f"--junitxml={report}", str(tmp_path / "test_three.py")], capture_output=True, timeout=120,
                   cwd=tmp_path)
    parsed = parse_junit(report)
    assert parsed["counts"] == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1}
    assert "test_bad" in parsed["failures"][0][0] and "one is not two" in parsed["failures"][0][1]
    assert parsed["skipped"][0][1] == "no GPU here"
    assert parse_junit(tmp_path / "missing.xml") is None


# --- checks against physics (pure) ----------------------------------------------------------------

def _probes(bandwidth: float, bf16: float, name: str = "NVIDIA H200") -> dict[str, Any]:
    return {"gpus": [{"index": 0, "name": name, "memory_bandwidth_gb_s": bandwidth, "h2d_gb_s": 50.0,
                      "d2h_gb_s": 50.0, "matmul": {"bfloat16_tflops": bf16, "bfloat16_size": 8192}}]}


@pytest.mark.parametrize(("bandwidth", "verdict"), [(4300.0, "PASS"), (5000.0, "FAIL"), (2000.0, "FAIL")])
def test_bandwidth_must_lie_between_half_the_published_peak_and_the_peak(bandwidth: float, verdict: str) -> None:
    check = checks.bandwidth(_probes(bandwidth, 700.0), None)
    assert check.verdict == verdict and "4,800 GB/s published (nvidia-h200)" in check.figures


def test_flops_above_the_published_dense_peak_fail_and_an_unknown_gpu_is_unknown() -> None:
    assert checks.matmul_bf16(_probes(4300.0, 790.0), None).verdict == "PASS"
    assert checks.matmul_bf16(_probes(4300.0, 1200.0), None).verdict == "FAIL"
    unknown = checks.matmul_bf16(_probes(4300.0, 790.0, name="Some Future GPU"), None)
    assert unknown.verdict == "UNKNOWN" and "not in the catalogue" in unknown.figures
    assert checks.bandwidth({"gpus": []}, {"gpus": {"reason": "no driver"}}).verdict == "UNKNOWN"


def _cell(device: str = "cuda", batch: int = 1, decode: float = 100.0, bound: float = 1000.0,
          energy: float | None = 0.5, memory: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "label": f"cell {device} b={batch}", "status": "COMPLETED",
        "config": {"scenario": {"kind": "offline", "batch_size": batch}, "engine": {"device": device}},
        "engine": {"device": device},
        "metrics": {"decode_tok_s": {"value": decode}},
        "roofline": {"decode": {"bound_tok_s": bound, "fraction": decode / bound}},
        "memory": memory if memory is not None else {"gpu_peak_allocated_bytes": 3 * 2**30,
                                                     "gpu_used_peak_bytes": [4 * 2**30]},
        "energy_per_output_token": {"value": energy, "sources": ["nvml_energy_counter"] if energy else [],
                                    "unavailable": {} if energy else {"nvml_energy_counter": "too few samples"}},
    }


def test_decode_above_its_roofline_fails_and_only_batch_one_counts() -> None:
    assert checks.decode_roofline([_cell(), _cell(batch=8, decode=5000.0)], None).verdict == "PASS"
    failed = checks.decode_roofline([_cell(decode=1200.0)], None)
    assert failed.verdict == "FAIL" and "1,200.0 of 1,000 tok/s" in failed.figures
    assert checks.decode_roofline([_cell(batch=8)], None).verdict == "UNKNOWN"


def test_memory_and_energy_of_a_cuda_cell_must_be_there_a_cpu_cell_may_lack_energy_with_a_reason() -> None:
    assert checks.memory([_cell()]).verdict == "PASS"
    assert checks.memory([_cell(memory={"gpu_peak_allocated_bytes": 2**30})]).verdict == "FAIL"  # no NVML figure
    assert checks.energy([_cell()]).verdict == "PASS"
    assert checks.energy([_cell(energy=None)]).verdict == "FAIL"
    cpu = _cell(device="cpu", energy=None, memory={"peak_rss_bytes": 2**30})
    assert checks.memory([cpu]).verdict == "PASS"
    unknown = checks.energy([cpu])
    assert unknown.verdict == "UNKNOWN" and "too few samples" in unknown.figures


# --- the wheels that travel -------------------------------------------------------------------------

def _wheel(folder: Path, name: str) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:  # a zip holding a METADATA, as a wheel does
        archive.writestr(f"{name.split('-')[0]}.dist-info/METADATA", "Metadata-Version: 2.1\n")
    return path


def _full_set(folder: Path) -> None:
    folder.mkdir()
    for name, version in wheels.WHEELS.items():
        tag = "cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64" if name == "cryptography" else "py3-none-any"
        _wheel(folder, f"{name.replace('-', '_')}-{version}-{tag}.whl")


def test_a_complete_set_of_wheels_plans_cleanly(tmp_path: Path) -> None:
    _full_set(tmp_path / "whl")
    plan = wheels.plan(tmp_path / "whl")
    assert plan["ok"], plan["problems"]
    assert plan["missing"] == [] and len(plan["wheels"]) == len(wheels.WHEELS) and plan["glibc_needed"] == "2.17"
    command = wheels.install_command(tmp_path / "whl", tmp_path / "site")
    assert "--no-index" in command and "--no-deps" in command and command.count("--target") == 1


def test_a_wheel_plan_names_every_problem(tmp_path: Path) -> None:
    folder = tmp_path / "whl"
    _full_set(folder)
    (folder / f"pycparser-{wheels.WHEELS['pycparser']}-py3-none-any.whl").unlink()
    _wheel(folder, "pydantic-2.0.0-py3-none-any.whl")  # a second version
    _wheel(folder, "extra_pkg-1.0-py3-none-any.whl")
    _wheel(folder, f"cffi-{wheels.WHEELS['cffi']}-cp311-cp311-manylinux_2_17_x86_64.whl")  # CPython 3.11 only
    _wheel(folder, "rpds_py-0.30.0-cp312-cp312-win_amd64.whl")
    (folder / f"attrs-{wheels.WHEELS['attrs']}-py3-none-any.whl").write_bytes(b"<html>not a wheel</html>")
    problems = "\n".join(wheels.plan(folder)["problems"])
    for expected in ("missing wheels: pycparser", "pydantic: 2 wheels", "extra-pkg: not in the list",
                     "not CPython 3.12", "win_amd64 is not manylinux x86-64", "not a zip archive"):
        assert expected in problems, (expected, problems)
    assert wheels.plan(tmp_path / "absent")["problems"][0].startswith("no wheels folder")


def test_the_fetch_script_asks_for_exactly_the_listed_wheels() -> None:
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "fetch_gpu_wheels.sh")]).returncode == 0
    listed = subprocess.run([sys.executable, "-m", "bench.acceptance.wheels", "--requirements"], capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    assert listed == [f"{n}=={v}" for n, v in wheels.WHEELS.items()]
