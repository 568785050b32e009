"""`weights: dummy` for vLLM cells on a card: the cache entry is weightless (config and tokenizer, no
weight file), vLLM (in-process and the managed server) is told load_format dummy, the cell's model
identity says so, and the cell ids of profiles that do not set it stay as they were. The run on real
vLLM is tests/test_vllm_dummy_weights.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.engines.vllm_engine import VllmEngine
from bench.models import ModelError, read_marker, resolve_model
from bench.profile.cells import expand
from bench.profile.engine_specs import ManagedServerSpec, VllmEngineSpec
from bench.profile.loading import parse_profile
from bench.results.integrity import model_weight_hashes
from bench.serving.managed import server_command

PROFILE = {"name": "t", "models": [{"card": "tiny-llama"}],
           "engines": [{"kind": "vllm", "dtype": "float32", "enforce_eager": True},
                       {"kind": "openai", "server": {"kind": "vllm", "args": ["--enforce-eager"]}},
                       {"kind": "transformers", "dtype": "float32", "device": "cpu"}],
           "workloads": [{"name": "w", "input_tokens": 16, "output_tokens": 8}],
           "scenarios": [{"kind": "single-stream", "requests": 3},
                         {"kind": "concurrency", "users": [2], "requests": 4}]}
# The ids these cells had before `weights` existed (computed with main at 4279aae).
IDS_BEFORE = {"tiny-llama | vllm/float32 | w | single-stream": "d072bcf08d3c2ac9",
              "tiny-llama | openai | w | concurrency 2": "0b151d9d35405614",
              "tiny-llama | transformers/float32/cpu | w | single-stream": "765b9589ed7391de"}


def ids(profile: dict) -> dict[str, str]:
    return {c.label: c.id for c in expand(parse_profile(profile, "p.yaml"), Path("p.yaml"))}


def test_cell_ids_stay_while_weights_are_files_and_change_with_dummy() -> None:
    assert ids(PROFILE) == IDS_BEFORE
    explicit = {**PROFILE, "engines": [{**PROFILE["engines"][0], "weights": "files"},
                                       {"kind": "openai", "server": {"kind": "vllm", "args": ["--enforce-eager"],
                                                                     "weights": "files"}},
                                       PROFILE["engines"][2]]}
    assert ids(explicit) == IDS_BEFORE
    dummy = {**PROFILE, "engines": [{**PROFILE["engines"][0], "weights": "dummy"},
                                    {"kind": "openai", "server": {"kind": "vllm", "weights": "dummy"}}]}
    got = ids(dummy)
    assert set(got) == {"tiny-llama | vllm/float32/dummy-weights | w | single-stream",
                        "tiny-llama | openai/dummy-weights | w | concurrency 2"}
    assert not set(got.values()) & set(IDS_BEFORE.values())


def test_dummy_needs_a_vllm_server() -> None:
    with pytest.raises(ValidationError, match="weights: dummy needs a server of kind vllm"):
        ManagedServerSpec(kind="command", command=["srv", "{port}"], weights="dummy")


def test_vllm_is_told_to_make_the_weights() -> None:
    args = VllmEngine(VllmEngineSpec(kind="vllm", weights="dummy", kv_cache_gib=0.25), "/m", {})._engine_args("cpu")
    assert args["load_format"] == "dummy"
    files = VllmEngine(VllmEngineSpec(kind="vllm", kv_cache_gib=0.25), "/m", {})._engine_args("cpu")
    assert files["load_format"] == "safetensors"
    command = server_command(ManagedServerSpec(kind="vllm", weights="dummy"), Path("/m"), 8000)
    assert command[command.index("--load-format") + 1] == "dummy"
    assert "--load-format" not in server_command(ManagedServerSpec(kind="vllm"), Path("/m"), 8000)


def test_a_weightless_cache_entry_beside_the_seeded_one(tmp_path: Path) -> None:
    dummy = resolve_model("tiny-llama", None, "float32", 0, tmp_path, weights="dummy")
    assert dummy.weights == "dummy" and dummy.weights_note == "synthetic by vLLM's dummy loader"
    assert dummy.identity["weights"] == "dummy" and dummy.identity["seed"] is None
    assert (dummy.path / "config.json").is_file() and (dummy.path / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".safetensors", ".bin")]
    marker = read_marker(dummy.path)
    assert marker is not None and marker["weights"] == "dummy" and marker["weight_files"] == {}
    assert model_weight_hashes(dummy.path) == {}
    assert dummy.weight_bytes > 0  # what vLLM's random weights occupy once loaded
    assert resolve_model("tiny-llama", None, "float32", 0, tmp_path, weights="dummy").path == dummy.path  # cached
    seeded = resolve_model("tiny-llama", None, "float32", 0, tmp_path)
    assert seeded.path != dummy.path and "weights" not in seeded.identity
    assert seeded.weights_note == "synthetic, written by lokaal-bench"
    assert list(seeded.path.glob("*.safetensors"))
    with pytest.raises(ModelError, match="weights: dummy is for cards"):
        resolve_model(None, str(seeded.path), "float32", 0, tmp_path, weights="dummy")
