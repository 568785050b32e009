"""Kubernetes: a campaign's shards as an Indexed Job (or, nightly, a CronJob of one), rendered as plain
manifests into the campaign directory and applied with kubectl where asked (docs/fleet.md).

Each pod runs `lokaal-bench run PROFILE --shard auto/N --group k8s`: its index comes from
JOB_COMPLETION_INDEX, its campaign id from its Job's name (the downward API), so a CronJob's nightly
Jobs are each a campaign of their own. One pod per node (a required pod anti-affinity on the host
name), Guaranteed QoS (requests equal limits, whole cores: the kubelet's static CPU manager can then
pin them), the profile in a ConfigMap, results and the shared model cache on a persistent volume
(ReadWriteMany: every node writes its shard there). A pod that fails is replaced and resumes its
shard's result set on the volume. The image holds lokaal-bench and what it runs, installed offline
(Containerfile); the pods download nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError

PROFILE_MOUNT = "/etc/lokaal-bench"
RESULTS_MOUNT = "/results"
CAMPAIGN_LABEL = "lokaal-bench/campaign"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods (Kubernetes >= 1.27)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def dns_name(text: str, limit: int = 52) -> str:
    """A Kubernetes object name from a campaign id: lower case, '-' for anything else, at most `limit`
    characters (a CronJob's name leaves room for the 11 its Jobs add)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")
    if not name or not _DNS_LABEL.fullmatch(name):
        raise BenchError(f"cannot make a Kubernetes name of {text!r}")
    return name


def parse_selector(pairs: list[str]) -> dict[str, str]:
    selector = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--node-selector {pair!r}: give KEY=VALUE, e.g. node.kubernetes.io/instance-type=h200")
        selector[key.strip()] = value.strip()
    return selector


@dataclass(frozen=True)
class K8sCampaign:
    name: str  # the Job's (or CronJob's) name; the campaign id of a Job
    shards: int
    image: str
    profile_name: str
    profile_text: str
    namespace: str = "default"
    node_selector: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    cpus: int = 4
    memory: str = "16Gi"
    pvc: str = "lokaal-bench-results"
    storage: str = "100Gi"
    schedule: str | None = None
    image_pull_policy: str = "IfNotPresent"  # air-gapped: the image comes from the cluster's own registry

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "lokaal-bench", "app.kubernetes.io/component": "campaign",
                CAMPAIGN_LABEL: self.name}

    @property
    def config_map_name(self) -> str:
        return f"{self.name}-profile"

    def command(self) -> list[str]:
        return ["lokaal-bench", "run", f"{PROFILE_MOUNT}/profile.yaml", "--shard", f"auto/{self.shards}",
                "--group", "k8s", "--results-dir", RESULTS_MOUNT, "--when-busy", "wait"]

    def _resources(self) -> dict[str, Any]:
        amounts: dict[str, Any] = {"cpu": str(self.cpus), "memory": self.memory}
        if self.gpus:
            amounts["nvidia.com/gpu"] = str(self.gpus)
        return {"requests": dict(amounts), "limits": dict(amounts)}  # equal: Guaranteed QoS

    def pod_template(self) -> dict[str, Any]:
        env = [
            {"name": "LOKAAL_BENCH_CAMPAIGN",  # the Job's name: each nightly Job of a CronJob its own campaign
             "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "LOKAAL_BENCH_CACHE", "value": f"{RESULTS_MOUNT}/.cache"},  # cards materialised once, shared
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        ]
        spec: dict[str, Any] = {
            "restartPolicy": "Never",  # a failed pod is replaced; the new one resumes the shard from the volume
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {CAMPAIGN_LABEL: self.name}},
                "topologyKey": "kubernetes.io/hostname"}]}},  # one pod per node: a benchmark shares it with nothing
            "terminationGracePeriodSeconds": 60,  # SIGTERM first: the shard seals what it has
            "containers": [{
                "name": "bench", "image": self.image, "imagePullPolicy": self.image_pull_policy,
                "command": self.command(), "env": env, "resources": self._resources(),
                "volumeMounts": [{"name": "profile", "mountPath": PROFILE_MOUNT, "readOnly": True},
                                 {"name": "results", "mountPath": RESULTS_MOUNT}],
            }],
            "volumes": [{"name": "profile", "configMap": {"name": self.config_map_name}},
                        {"name": "results", "persistentVolumeClaim": {"claimName": self.pvc}}],
        }
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        return {"metadata": {"labels": dict(self.labels)}, "spec": spec}

    def job_spec(self) -> dict[str, Any]:
        return {"completionMode": "Indexed", "completions": self.shards, "parallelism": self.shards,
                "backoffLimitPerIndex": 2, "maxFailedIndexes": self.shards, "backoffLimit": 3 * self.shards,
                "ttlSecondsAfterFinished": 7 * 24 * 3600, "template": self.pod_template()}

    def _metadata(self, name: str) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": dict(self.labels)}

    def config_map(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._metadata(self.config_map_name),
                "data": {"profile.yaml": self.profile_text}}

    def job(self) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": self._metadata(self.name),
                "spec": self.job_spec()}

    def cron_job(self) -> dict[str, Any]:
        if not self.schedule or len(self.schedule.split()) != 5:
            raise BenchError(f"--schedule {self.schedule!r}: give five cron fields, e.g. \"0 2 * * *\"")
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": self._metadata(self.name),
                "spec": {"schedule": self.schedule, "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 3600,
                         "successfulJobsHistoryLimit": 7, "failedJobsHistoryLimit": 7,
                         "jobTemplate": {"metadata": {"labels": dict(self.labels)}, "spec": self.job_spec()}}}

    def volume_claim(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": self._metadata(self.pvc),
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": self.storage}}}}

    def manifests(self) -> dict[str, dict[str, Any]]:
        """File name -> manifest, in the order they are applied."""
        workload = ("cronjob.yaml", self.cron_job()) if self.schedule else ("job.yaml", self.job())
        return {"pvc.yaml": self.volume_claim(), "configmap.yaml": self.config_map(), workload[0]: workload[1]}
