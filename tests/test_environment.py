"""Environment inventory on this real machine, plus failure isolation, redaction and fake GPUs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from rich.console import Console

import bench
from bench.run import environment
from bench.run.environment import cgroup_limits, collect_environment, env_vars, machine_id
from bench.run.environment_view import format_environment
from fake_nvml import FakeGpu, make_fake_nvml

PARTS = ("cpu", "memory", "gpus", "os", "python", "lokaal_bench", "env_vars", "power")


def render(env: dict) -> str:
    console = Console(record=True, width=110)
    console.print(format_environment(env))
    return console.export_text()


@pytest.fixture(scope="module")
def env() -> dict:
    return collect_environment()


def test_real_machine_inventory(env: dict) -> None:
    assert list(env) == ["schema_version", "collected_at", "machine_id", *PARTS]
    for part in PARTS:
        assert "error" not in env[part], (part, env[part])
    cpu, mem = env["cpu"], env["memory"]
    assert cpu["physical_cores"] == psutil.cpu_count(logical=False)
    assert cpu["logical_threads"] == psutil.cpu_count(logical=True)
    assert cpu["model_name"] and cpu["architecture"]
    assert cpu["sockets"] >= 1
    assert isinstance(cpu["flags"], dict) and all(isinstance(v, bool) for v in cpu["flags"].values())
    assert mem["total_bytes"] == psutil.virtual_memory().total
    assert env["python"]["packages"]["psutil"] == psutil.__version__
    assert env["python"]["packages"]["vllm"] is None or isinstance(env["python"]["packages"]["vllm"], str)
    assert env["lokaal_bench"]["version"] == bench.__version__
    commit = env["lokaal_bench"]["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert env["os"]["kernel"] and env["os"]["hostname"]
    assert set(env["power"]["energy_sources"]) >= {"nvml", "nvml_energy_counter", "rapl"}
    assert json.loads(json.dumps(env)) == env  # plain JSON, no default= needed


def test_machine_id_is_stable(env: dict) -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", env["machine_id"])
    again = collect_environment()
    assert again["machine_id"] == env["machine_id"] == machine_id(env)


def test_machine_id_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("abc\n")
    monkeypatch.setattr(environment, "MACHINE_ID_PATHS", (mid,))
    base = {"cpu": {"model_name": "X", "sockets": 2, "physical_cores": 64, "logical_threads": 128},
            "memory": {"total_bytes": 512 * 2**30 - 123_456},  # rounds to 512 GiB
            "gpus": {"devices": [{"uuid": "GPU-b"}, {"uuid": "GPU-a"}]}}
    a = machine_id(base)
    assert a == machine_id({**base, "memory": {"total_bytes": 512 * 2**30}})
    assert a == machine_id({**base, "gpus": {"devices": [{"uuid": "GPU-a"}, {"uuid": "GPU-b"}]}})
    assert a != machine_id({**base, "gpus": {"devices": [{"uuid": "GPU-a"}]}})
    mid.write_text("other\n")
    assert a != machine_id(base)
    assert re.fullmatch(r"[0-9a-f]{16}", machine_id({}))


def test_failing_part_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(environment, "cpu_info", boom)
    env = collect_environment()
    assert env["cpu"] == {"error": "RuntimeError: boom"}
    for part in PARTS[1:]:
        assert "error" not in env[part], part
    assert env["memory"]["total_bytes"] == psutil.virtual_memory().total
    assert env["power"]["cpu_governor"] is None
    assert re.fullmatch(r"[0-9a-f]{16}", env["machine_id"])
    json.dumps(env)
    assert "RuntimeError: boom" in render(env)


def test_broken_file_reader_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(path: object) -> str:
        raise OSError(f"cannot read {path}")

    monkeypatch.setattr(environment, "_read", unreadable)
    env = collect_environment()
    assert list(env) == ["schema_version", "collected_at", "machine_id", *PARTS]
    errors = [p for p in PARTS if "error" in env[p]]
    assert "cpu" in errors and "memory" in errors
    assert all(env[p]["error"].startswith("OSError: cannot read") for p in errors)
    assert re.fullmatch(r"[0-9a-f]{16}", env["machine_id"])
    json.dumps(env)
    render(env)


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = env_vars({
        "OMP_NUM_THREADS": "8", "CUDA_VISIBLE_DEVICES": "0,1", "NCCL_DEBUG": "INFO", "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "LD_PRELOAD": "/usr/lib/libjemalloc.so.2",
        "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz", "VLLM_API_KEY": "k", "HUGGING_FACE_HUB_TOKEN": "t",
        "TORCH_SECRET_THING": "s", "NCCL_PASSWORD": "p", "VLLM_SOMETHING": "hf_abcdefghijklmnopqrstuv",
        "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "not recorded at all",
    })
    assert recorded == {
        "CUDA_VISIBLE_DEVICES": "0,1", "HF_HUB_OFFLINE": "1", "HF_TOKEN": "<redacted>",
        "HUGGING_FACE_HUB_TOKEN": "<redacted>", "LD_PRELOAD": "/usr/lib/libjemalloc.so.2",
        "NCCL_DEBUG": "INFO", "NCCL_PASSWORD": "<redacted>", "OMP_NUM_THREADS": "8",
        "TOKENIZERS_PARALLELISM": "false", "TORCH_SECRET_THING": "<redacted>", "VLLM_API_KEY": "<redacted>",
        "VLLM_SOMETHING": "<redacted>",
    }
    monkeypatch.setenv("VLLM_API_KEY", "s3cret-value")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = collect_environment()
    assert env["env_vars"]["VLLM_API_KEY"] == "<redacted>"
    assert env["env_vars"]["OMP_NUM_THREADS"] == "3"
    assert "s3cret-value" not in json.dumps(env)
    assert "s3cret-value" not in render(env)


def test_gpus_from_fake_nvml() -> None:
    gpus = [FakeGpu(uuid="GPU-1111", pci_bus_id="00000000:18:00.0", sm_clock=1410,
                    nvlinks={0: "00000000:2A:00.0", 1: "00000000:2A:00.0"}),
            FakeGpu(uuid="GPU-2222", pci_bus_id="00000000:2A:00.0", mig=(1, 1),
                    nvlinks={0: "00000000:18:00.0", 1: "00000000:18:00.0"},
                    unsupported={"nvmlDeviceGetEccMode", "nvmlDeviceGetPowerManagementLimit"})]
    nv = make_fake_nvml(gpus, topology={(0, 1): 10})
    env = collect_environment(nvml=nv)
    g = env["gpus"]
    assert g["available"] and g["count"] == 2 and g["reason"] is None
    assert g["driver_version"] == "550.54.15" and g["cuda_driver_version"] == "12.4"
    d0, d1 = g["devices"]
    assert d0["uuid"] == "GPU-1111" and d0["pci_bus_id"] == "0000:18:00.0"
    assert d0["memory_total_bytes"] == 80 * 2**30 and d0["compute_capability"] == "9.0"
    assert d0["power_limit_w"] == 700.0 and d0["max_clocks_mhz"] == {"graphics": 1980, "sm": 1980, "mem": 2619}
    assert d0["clocks_mhz"] == {"graphics": 1410, "sm": 1410, "mem": 2619}  # the clocks now, not the maximum
    assert d0["ecc_mode"] == {"current": True, "pending": True} and d0["persistence_mode"] is True
    assert d0["pcie"] == {"gen_current": 5, "width_current": 16, "gen_max": 5, "width_max": 16}
    assert d0["compute_mode"] == "default"
    assert d1["ecc_mode"] is None and d1["power_limit_w"] is None  # NOT_SUPPORTED -> None
    assert d1["mig_mode"] == {"current": True, "pending": True}
    assert [link["active"] for link in d0["nvlinks"]] == [True, True] + [False] * 16
    assert g["topology"] == [{"a": 0, "b": 1, "nvlinks": 2, "common_ancestor": "single"}]
    assert env["power"]["energy_sources"]["nvml"]["gpu_count"] == 2
    assert nv.init_count == 0  # every nvmlInit was paired with nvmlShutdown
    assert env["machine_id"] != collect_environment()["machine_id"]  # GPU uuids are part of the id
    text = render(env)
    assert "GPU-2222" in text and "0-1: single +2 NVLink" in text
    assert "SM 1980 max / 1410 now, memory 2619 max / 2619 now" in text


def test_no_nvml_gives_empty_devices_and_reason() -> None:
    env = collect_environment(nvml=make_fake_nvml([], init_error=12))
    assert env["gpus"]["devices"] == [] and env["gpus"]["available"] is False
    assert "not found" in env["gpus"]["reason"]


def test_cgroup_limits_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    (v2 / "cpu.max").write_text("250000 100000\n")
    (v2 / "memory.max").write_text(f"{8 * 2**30}\n")
    assert cgroup_limits(v2) == {"version": 2, "cpu_limit_cores": 2.5, "memory_limit_bytes": 8 * 2**30,
                                 "cpuset": None}
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_limits(v2)["cpu_limit_cores"] is None and cgroup_limits(v2)["memory_limit_bytes"] is None

    v1 = tmp_path / "v1"
    for d in ("cpu", "memory", "cpuset"):
        (v1 / d).mkdir(parents=True)
    (v1 / "cpu/cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu/cpu.cfs_period_us").write_text("100000\n")
    (v1 / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "unlimited"
    (v1 / "cpuset/cpuset.cpus").write_text("0-3\n")
    assert cgroup_limits(v1) == {"version": 1, "cpu_limit_cores": None, "memory_limit_bytes": None,
                                 "cpuset": "0-3"}
    (v1 / "cpu/cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "memory/memory.limit_in_bytes").write_text("1073741824\n")
    assert cgroup_limits(v1)["cpu_limit_cores"] == 4.0
    assert cgroup_limits(v1)["memory_limit_bytes"] == 2**30


def test_format_environment_renders_real_env(env: dict) -> None:
    text = render(env)
    for title in ("Machine", "CPU", "Memory", "GPUs", "Software", "Environment variables", "Power & energy"):
        assert title in text
    assert env["machine_id"] in text
    assert str(env["cpu"]["model_name"]) in text


def test_no_heavy_imports() -> None:
    """Collecting the inventory and recording telemetry must not import torch & co."""
    code = (
        "import sys, os\n"
        "from bench.run.environment import collect_environment\n"
        "from bench.telemetry import TelemetryRecorder\n"
        "collect_environment()\n"
        "TelemetryRecorder(os.getpid(), 0.05).start().stop()\n"
        "heavy = {'torch', 'transformers', 'vllm'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
