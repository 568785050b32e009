#!/usr/bin/env bash
# Tier: a real one-node Slurm (munged, slurmctld, slurmd as root; about 20 s to start) and the tests that
# submit campaigns to it as job arrays (tests/test_fleet_slurm.py, a few minutes). With
# LOKAAL_BENCH_REQUIRE_ENGINES=slurm a Slurm test that would skip fails instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/slurm_one_node.sh start
LOKAAL_BENCH_REQUIRE_ENGINES=slurm pytest -m slurm
