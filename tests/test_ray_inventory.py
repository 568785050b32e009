"""The multi-node path's inventory: a Ray task pinned to every node of the cluster gathers the same
environment record the manifest holds for the head node. Run on a one-node Ray instance started
here; skipped where Ray is not installed (it is not a dependency: multi-node hosts install it)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")


def test_every_node_reports_its_inventory() -> None:
    import ray

    from bench.engines.vllm_engine import ray_cluster_inventory

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        nodes = ray_cluster_inventory()
    finally:
        ray.shutdown()
    assert len(nodes) == 1
    (node,) = nodes
    assert node["address"] and node["resources"].get("CPU") == 1
    inventory = node["inventory"]
    assert inventory["memory"]["total_bytes"] > 0 and inventory["cpu"]["logical_threads"] >= 1
    assert inventory["machine_id"] and "gpus" in inventory
