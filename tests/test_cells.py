"""Cells: expansion of a profile, and ids that depend on what is measured, not where or how long."""

from __future__ import annotations

import copy

from bench.profile.cells import expand
from bench.profile.loading import parse_profile
from conftest import tiny_profile


def _cells(data, path="/a/profile.yaml"):
    from pathlib import Path

    return expand(parse_profile(data, path), Path(path))


def test_expansion_is_the_product_of_models_engines_workloads_and_points() -> None:
    data = tiny_profile(
        engines=[{"kind": "transformers", "dtype": ["float32", "bf16"], "device": "cpu"}],
        scenarios=[{"kind": "single-stream"}, {"kind": "offline", "batch_sizes": [1, 4, 8]},
                   {"kind": "prefill-decode", "prompt_tokens": [16, 32], "gen_tokens": [4], "depths": [0, 64]}],
    )
    cells = _cells(data)
    # 2 dtypes x (1 single-stream + 3 offline points + 4 prefill-decode points, which take no workload)
    assert len(cells) == 2 * (1 + 3 + 4)
    assert len({c.id for c in cells}) == len(cells)
    assert {c.engine.dtype for c in cells} == {"float32", "bfloat16"}
    assert all(c.workload is None for c in cells if c.scenario.kind == "prefill-decode")


def test_ids_are_stable_across_machines_and_run_lengths() -> None:
    data = tiny_profile()
    base = _cells(data)
    other = copy.deepcopy(data)
    other["run"].update(repetitions=9, cell_timeout_s=5, warmup=0)
    assert [c.id for c in _cells(other, "/elsewhere/p.yaml")] == [c.id for c in base]


def test_ids_change_with_what_is_measured() -> None:
    base = _cells(tiny_profile())[0].id
    for mutate in (
        lambda p: p["engines"][0].update(dtype="bfloat16"),
        lambda p: p["workloads"][0].update(seed=4),
        lambda p: p["scenarios"][0].update(requests=4),
        lambda p: p["models"][0].update(seed=1),
    ):
        data = tiny_profile()
        mutate(data)
        assert _cells(data)[0].id != base


def test_duplicate_cells_are_measured_once() -> None:
    data = tiny_profile(scenarios=[{"kind": "single-stream", "requests": 3}, {"kind": "single-stream", "requests": 3}])
    assert len(_cells(data)) == 1
