"""`submit k8s`: the manifests checked against the Kubernetes API types (the official client's models: a
round trip that drops any field the API does not know, so a misspelled one fails), and the shards run
through the same entry point a pod runs (its command, with JOB_COMPLETION_INDEX and the Job's name)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_profile

client = pytest.importorskip("kubernetes.client", reason="the API-type check needs the kubernetes client "
                             "(pip install -e '.[kubernetes]')")

TYPES = {"Job": "V1Job", "CronJob": "V1CronJob", "ConfigMap": "V1ConfigMap",
         "PersistentVolumeClaim": "V1PersistentVolumeClaim"}


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=environ,
                          cwd=REPO, timeout=600)


def round_trip(manifest: dict) -> dict:
    api = client.ApiClient()
    model = api.deserialize(json.dumps(manifest), TYPES[manifest["kind"]], None)
    return api.sanitize_for_serialization(model)


def submit(tmp_path: Path, *extra: str, profile: Path | None = None) -> Path:
    done = bench("submit", "k8s", str(profile or REPO / "profiles" / "quickstart.yaml"), "--shards", "2", "--image",
                 "registry.example/lokaal-bench:1", "--node-selector", "node.kubernetes.io/instance-type=h200",
                 "--gpus", "1", "--results", str(tmp_path / "results"), *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    (directory,) = [p.parent for p in (tmp_path / "results").glob("*/campaign.json")]
    return directory


def test_the_job_and_its_config_map_are_valid_api_objects(tmp_path: Path) -> None:
    directory = submit(tmp_path)
    manifests = {p.name: yaml.safe_load(p.read_text()) for p in directory.glob("*.yaml") if p.name != "profile.yaml"}
    assert set(manifests) == {"job.yaml", "configmap.yaml", "pvc.yaml"}
    for manifest in manifests.values():
        assert round_trip(manifest) == manifest
    job = manifests["job.yaml"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    (container,) = pod["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"]  # Guaranteed QoS
    limits = container["resources"]["limits"]
    assert limits["cpu"].isdigit() and limits["nvidia.com/gpu"] == "1"  # whole cores; the GPUs asked for
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "h200"}
    assert manifests["configmap.yaml"]["data"]["profile.yaml"] == (REPO / "profiles" / "quickstart.yaml").read_text()
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {manifests["pvc.yaml"]["metadata"]["name"]}
    campaign = json.loads((directory / "campaign.json").read_text())
    assert campaign["submissions"][0]["files"] == ["pvc.yaml", "configmap.yaml", "job.yaml"]


def test_a_schedule_gives_a_cron_job_of_the_same_pods(tmp_path: Path) -> None:
    directory = submit(tmp_path, "--schedule", "0 2 * * *")
    cron = yaml.safe_load((directory / "cronjob.yaml").read_text())
    assert round_trip(cron) == cron
    assert cron["spec"]["schedule"] == "0 2 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["completionMode"] == "Indexed"
    assert not (directory / "job.yaml").exists()


def test_a_misspelled_field_fails_the_round_trip(tmp_path: Path) -> None:
    job = yaml.safe_load((submit(tmp_path) / "job.yaml").read_text())
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    assert round_trip(job) != job


def test_apply_without_kubectl_exits_2_naming_it(tmp_path: Path) -> None:
    done = bench("submit", "k8s", str(REPO / "profiles" / "quickstart.yaml"), "--image", "x", "--apply",
                 "--results", str(tmp_path), env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 2 and "kubectl" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_each_pod_runs_its_shard_through_the_container_command(tmp_path: Path) -> None:
    profile = tmp_path / "fleet.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile(name="pods", scenarios=[
        {"kind": "single-stream", "requests": 2}, {"kind": "offline", "batch_sizes": [2], "batches": 1}])))
    directory = submit(tmp_path, profile=profile)
    job = yaml.safe_load((directory / "job.yaml").read_text())
    config = yaml.safe_load((directory / "configmap.yaml").read_text())
    container = job["spec"]["template"]["spec"]["containers"][0]
    mount = tmp_path / "etc"  # what the ConfigMap volume shows the pod
    mount.mkdir()
    for name, text in config["data"].items():
        (mount / name).write_text(text)
    volume = tmp_path / "volume"  # the persistent volume
    command = [str(mount / "profile.yaml") if w == "/etc/lokaal-bench/profile.yaml" else
               str(volume) if w == "/results" else w for w in container["command"]]
    assert command[0] == "lokaal-bench"
    for index in range(job["spec"]["completions"]):  # the downward API's values, as the kubelet sets them
        env = {"JOB_COMPLETION_INDEX": str(index), "LOKAAL_BENCH_CAMPAIGN": job["metadata"]["name"]}
        done = bench(*command[1:], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    campaign = volume / job["metadata"]["name"]
    shards = sorted(p.name.split("-of-")[0] for p in campaign.glob("*/manifest.json") for p in [p.parent])
    assert shards == ["k8s-shard-0", "k8s-shard-1"]
    rows = json.loads(bench("table", str(campaign), "--format", "json").stdout)["rows"]
    cell_ids = json.loads((directory / "campaign.json").read_text())["cell_ids"]
    assert sorted(r["cell_id"] for r in rows) == sorted(cell_ids)
    assert bench("status", str(campaign)).returncode == 0
