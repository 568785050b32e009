"""Checks on a model directory the user brings (downloaded elsewhere, carried in on a disk).

Everything here reads only config.json, index files and safetensors headers: milliseconds even for a
70B model, so a run fails before it starts, with a message naming the file and the problem, instead of
minutes into loading.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.hashing import canonical_json
from bench.models.safetensors_io import SafetensorsFormatError, read_header

INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json", "tokenizer_config.json")
# config.json keys that differ between copies of the same model (local paths, the saving library's
# version) and so must not change its identity.
VOLATILE_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "_commit_hash"})


class ModelError(BenchError, ValueError):
    """A model directory that cannot be used; the message names the path and the problem."""


class ModelNotFoundError(ModelError):
    pass


class MissingConfigError(ModelError):
    pass


class InvalidConfigError(ModelError):
    pass


class MissingWeightsError(ModelError):
    pass


class PickleWeightsError(ModelError):
    """Only pickle checkpoints (*.bin, *.pt): loading them can run arbitrary code."""


class CorruptWeightsError(ModelError):
    pass


class ShardIndexError(ModelError):
    pass


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    config: dict[str, Any]
    identity: str  # sha256 of the canonical config JSON (volatile keys removed)
    weight_files: tuple[str, ...]
    weight_bytes: int  # bytes of tensor data (safetensors) or file bytes (pickle checkpoints)
    parameter_count: int | None  # from safetensors headers; None for pickle checkpoints
    has_tokenizer: bool
    safetensors: bool
    tensor_dtypes: dict[str, int] = field(default_factory=dict)  # safetensors dtype -> element count


def config_identity(config: dict[str, Any]) -> str:
    """Machine-independent sha256 of a config: canonical JSON without paths or library versions."""
    stable = {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(canonical_json(stable).encode()).hexdigest()


def inspect_local_model(path: Path, allow_pickle: bool = False) -> LocalModel:
    path = Path(path).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise ModelNotFoundError(f"{path}: model path {what}; give a directory holding config.json and weights")
    config = _read_config(path)

    safetensors_files = sorted(p.name for p in path.glob("*.safetensors"))
    pickle_files = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    index = _read_index(path) if (path / INDEX_NAME).exists() else None

    if index is not None or safetensors_files:
        weight_files, weight_bytes, params, dtypes = _check_safetensors(path, safetensors_files, index)
        safe = True
    elif pickle_files:
        if not allow_pickle:
            raise PickleWeightsError(
                f"{path}: only pickle weight files ({', '.join(pickle_files[:3])}"
                f"{', ...' if len(pickle_files) > 3 else ''}), no *.safetensors. Loading pickle files can run "
                "arbitrary code; convert the model to safetensors, or pass allow_pickle (--allow-pickle) if you "
                "trust its source"
            )
        weight_files, safe, params, dtypes = tuple(pickle_files), False, None, {}
        weight_bytes = sum((path / f).stat().st_size for f in pickle_files)
    else:
        raise MissingWeightsError(f"{path}: no weight files (*.safetensors, or *.bin with allow_pickle)")

    return LocalModel(
        name=path.resolve().name,
        path=path,
        config=config,
        identity=config_identity(config),
        weight_files=weight_files,
        weight_bytes=weight_bytes,
        parameter_count=params,
        has_tokenizer=any((path / f).is_file() for f in TOKENIZER_FILES),
        safetensors=safe,
        tensor_dtypes=dtypes,
    )


def _read_config(path: Path) -> dict[str, Any]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise MissingConfigError(f"{config_path}: missing; a Hugging Face model directory needs config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidConfigError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise InvalidConfigError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    if "model_type" not in config and "architectures" not in config:
        raise InvalidConfigError(f"{config_path}: has neither model_type nor architectures; not a model config")
    return config


def _read_index(path: Path) -> dict[str, str]:
    index_path = path / INDEX_NAME
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not an object of tensor name -> file name")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ShardIndexError(f"{index_path}: unreadable shard index ({e})") from None
    return weight_map


def _check_safetensors(
    path: Path, files: list[str], index: dict[str, str] | None
) -> tuple[tuple[str, ...], int, int, dict[str, int]]:
    if index is not None:
        listed = sorted(set(index.values()))
        missing = [f for f in listed if not (path / f).is_file()]
        if missing:
            raise ShardIndexError(
                f"{path / INDEX_NAME}: lists shard(s) not in the directory: {', '.join(missing)} "
                "(incomplete download or copy?)"
            )
        files = listed  # unlisted *.safetensors (e.g. consolidated copies) are not what transformers loads
    headers: dict[str, dict[str, Any]] = {}
    for name in files:
        try:
            headers[name] = read_header(path / name)[0]
        except SafetensorsFormatError as e:
            raise CorruptWeightsError(str(e)) from None
    if index is not None:
        for tensor, shard in index.items():
            if tensor not in headers[shard]:
                raise ShardIndexError(f"{path / INDEX_NAME}: tensor {tensor!r} is mapped to {shard}, which lacks it")
    params = 0
    nbytes = 0
    dtypes: dict[str, int] = {}
    for header in headers.values():
        for info in header.values():
            n = 1
            for d in info["shape"]:
                n *= int(d)
            params += n  # elements as stored: packed quantised weights (int4 in int32) count low
            begin, end = info["data_offsets"]
            nbytes += int(end) - int(begin)
            dtypes[info["dtype"]] = dtypes.get(info["dtype"], 0) + n
    return tuple(files), nbytes, params, dtypes
