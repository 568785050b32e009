"""Checks on user-supplied model directories: clear errors before any loading starts."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from bench.models import (
    CorruptWeightsError,
    InvalidConfigError,
    MissingConfigError,
    MissingWeightsError,
    ModelError,
    ModelNotFoundError,
    PickleWeightsError,
    ShardIndexError,
    config_identity,
    inspect_local_model,
    load_card,
    materialise,
    resolve_model,
)
from bench.models.safetensors_io import write_streaming

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "vocab_size": 16}


def write_safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    """A valid float32 safetensors file of zeros, written without torch."""
    spec = [(name, shape, "F32") for name, shape in tensors.items()]
    sizes = [4 * _numel(shape) for shape in tensors.values()]
    write_streaming(path, spec, iter([b"\0" * n for n in sizes]))


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small, valid two-shard model directory with a tokenizer."""
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**CONFIG, "_name_or_path": str(d), "torch_dtype": "float32"}))
    write_safetensors(d / "model-00001-of-00002.safetensors", {"a.weight": [16, 8], "b.weight": [8]})
    write_safetensors(d / "model-00002-of-00002.safetensors", {"c.weight": [8, 8]})
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    index = {
        "metadata": {"total_size": 4 * (128 + 8 + 64)},
        "weight_map": {"a.weight": first, "b.weight": first, "c.weight": second},
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    (d / "tokenizer.json").write_text("{}")
    return d


def test_valid_directory(model_dir: Path) -> None:
    model = inspect_local_model(model_dir)
    assert model.name == "my-model"
    assert model.config["model_type"] == "llama"
    assert model.parameter_count == 128 + 8 + 64
    assert model.weight_bytes == 4 * (128 + 8 + 64)
    assert model.has_tokenizer and model.safetensors
    assert model.weight_files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert len(model.identity) == 64


def test_identity_is_machine_independent(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(_name_or_path="/mnt/other/machine", transformers_version="9.9.9")
    (copy / "config.json").write_text(json.dumps(config, indent=4))  # different spelling, same content
    assert inspect_local_model(copy).identity == inspect_local_model(model_dir).identity
    config["hidden_size"] = 16
    assert config_identity(config) != inspect_local_model(model_dir).identity


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        inspect_local_model(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        inspect_local_model(tmp_path / "file")


def test_missing_config(model_dir: Path) -> None:
    (model_dir / "config.json").unlink()
    with pytest.raises(MissingConfigError) as info:
        inspect_local_model(model_dir)
    assert str(model_dir / "config.json") in str(info.value)
    assert isinstance(info.value, ModelError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"hidden_size": 8}'])
def test_invalid_config(model_dir: Path, content: str) -> None:
    (model_dir / "config.json").write_text(content)
    with pytest.raises(InvalidConfigError, match=r"config\.json"):
        inspect_local_model(model_dir)


def test_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(MissingWeightsError, match="no weight files"):
        inspect_local_model(tmp_path)


def test_pickle_only_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02" + b"\0" * 510)
    with pytest.raises(PickleWeightsError) as info:
        inspect_local_model(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "pytorch_model.bin" in message and "safetensors" in message
    model = inspect_local_model(tmp_path, allow_pickle=True)
    assert not model.safetensors and model.weight_bytes == 512 and model.parameter_count is None


def test_truncated_header(model_dir: Path) -> None:
    shard = model_dir / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:20])  # header length promises more than the file holds
    with pytest.raises(CorruptWeightsError) as info:
        inspect_local_model(model_dir)
    assert shard.name in str(info.value) and "truncated" in str(info.value)


def test_truncated_data(model_dir: Path) -> None:
    shard = model_dir / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(CorruptWeightsError, match="truncated or corrupt"):
        inspect_local_model(model_dir)


def test_garbage_header(model_dir: Path) -> None:
    shard = model_dir / "model-00002-of-00002.safetensors"
    shard.write_bytes(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 64)
    with pytest.raises(CorruptWeightsError, match="not valid JSON"):
        inspect_local_model(model_dir)


def test_index_lists_missing_shard(model_dir: Path) -> None:
    (model_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ShardIndexError) as info:
        inspect_local_model(model_dir)
    assert "model-00002-of-00002.safetensors" in str(info.value) and "index" in str(info.value)


def test_index_maps_tensor_to_wrong_shard(model_dir: Path) -> None:
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    index["weight_map"]["c.weight"] = "model-00001-of-00002.safetensors"
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match=r"c\.weight"):
        inspect_local_model(model_dir)


def test_unreadable_index(model_dir: Path) -> None:
    (model_dir / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ShardIndexError, match="weight_map"):
        inspect_local_model(model_dir)


def test_no_tokenizer_detected(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").unlink()
    assert not inspect_local_model(model_dir).has_tokenizer


def test_resolve_local_directory(model_dir: Path) -> None:
    resolved = resolve_model(None, str(model_dir), "auto", 0, None)
    assert not resolved.synthetic and resolved.card is None and resolved.name == "my-model"
    assert resolved.dtype == "float32"  # "auto": the checkpoint's dtype
    assert resolved.parameter_count == 200 and resolved.weight_bytes == 800
    expected_sha = inspect_local_model(model_dir).identity
    assert resolved.identity == {"kind": "local", "name": "my-model", "config_sha256": expected_sha, "dtype": "float32"}
    assert resolve_model(None, str(model_dir), "bf16", 0, None).weight_bytes == 400


def test_resolve_pickle_counts_analytically(tmp_path: Path) -> None:
    card = load_card("tiny-llama")
    (tmp_path / "config.json").write_text(json.dumps(card.config))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 100)
    with pytest.raises(PickleWeightsError):
        resolve_model(None, str(tmp_path), "bf16", 0, None)
    resolved = resolve_model(None, str(tmp_path), "bf16", 0, None, allow_pickle=True)
    assert resolved.parameter_count == card.parameter_count()


def test_materialised_directory_passes_inspection(tmp_path: Path) -> None:
    card = load_card("tiny-llama")
    path = materialise(card, "bf16", cache_dir=tmp_path)
    model = inspect_local_model(path)
    assert model.parameter_count == card.parameter_count()
    assert model.weight_bytes == card.weight_bytes("bf16")
    assert model.tensor_dtypes == {"BF16": card.parameter_count()}
    assert model.has_tokenizer
