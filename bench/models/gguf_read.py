"""Read a GGUF file's header: metadata, tensor table, and whether the file holds all its data.

Reads only the header (milliseconds, even for a 40 GB file), so a broken or truncated GGUF is
bad input named before a cell loads it, and the real tensor bytes per type (a Q4_K_M file mixes
Q4_K and Q6_K) feed the roofline and `fit`. Pure Python (struct); the ggml type sizes come from
the `gguf` package when present, else from the table below (the values are fixed by the format).

Layout (GGUF v2/v3): magic "GGUF", version u32, tensor count u64, metadata count u64, metadata
(key string, value type u32, value), tensor infos (name, n_dims u32, dims u64..., type u32, offset
u64), padding to `general.alignment` (32), tensor data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.models.local import ModelError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this are not kept as values (the tokenizer's 150k strings): only their length,
# unless the caller asks for them by key.
_KEEP_ARRAY = 64

# ggml type id -> (name, elements per block, bytes per block).
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# llama.cpp's general.file_type values (LLAMA_FTYPE_*), by name as llama-quantize spells them.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GgufError(ModelError):
    """A file that is not a usable GGUF; the message names the file and what is wrong."""


def _type_info(type_id: int) -> tuple[str, int, int]:
    try:
        import gguf

        kind = gguf.GGMLQuantizationType(type_id)
        block, size = gguf.GGML_QUANT_SIZES[kind]
        return kind.name, int(block), int(size)
    except (ImportError, ValueError, KeyError):
        if type_id not in _GGML_TYPES:
            raise KeyError(type_id) from None
        return _GGML_TYPES[type_id]


@dataclass(frozen=True)
class GgufTensor:
    name: str
    type_name: str
    shape: tuple[int, ...]  # ggml order: ne[0] (the contiguous dimension) first
    offset: int  # from the start of the data section
    nbytes: int

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GgufTensor]
    data_offset: int
    file_size: int
    array_lengths: dict[str, int] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def file_type(self) -> str | None:
        value = self.metadata.get("general.file_type")
        return None if value is None else FILE_TYPES.get(int(value), f"type {value}")

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(t.elements for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tensor in self.tensors:
            out[tensor.type_name] = out.get(tensor.type_name, 0) + tensor.nbytes
        return dict(sorted(out.items()))

    def tensor(self, name: str) -> GgufTensor | None:
        return next((t for t in self.tensors if t.name == name), None)

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def decode_read_bytes(self) -> int:
        """Bytes a decoding step reads: every tensor, except an input embedding table that is only
        looked up (one row per token) because a separate output matrix exists."""
        if self.tensor("output.weight") is not None and (embedding := self.tensor("token_embd.weight")) is not None:
            return self.tensor_bytes - embedding.nbytes
        return self.tensor_bytes


class _Cursor:
    def __init__(self, buffer: Any, path: Path):
        self.buffer, self.pos, self.path = buffer, 0, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buffer):
            raise GgufError(f"{self.path}: truncated GGUF header (ends inside the metadata or tensor table)")
        value = struct.unpack_from(fmt, self.buffer, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if length > len(self.buffer) - self.pos:
            raise GgufError(f"{self.path}: truncated or corrupt GGUF header (a string of {length} bytes)")
        raw = bytes(self.buffer[self.pos:self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> tuple[Any, int | None]:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind]), None
        if kind == _STRING:
            return self.string(), None
        if kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            keep = keep or count <= _KEEP_ARRAY
            if item in _SCALARS and not keep:  # skip a long numeric array without unpacking it
                self.pos += struct.calcsize(_SCALARS[item]) * count
                if self.pos > len(self.buffer):
                    raise GgufError(f"{self.path}: truncated GGUF header (inside an array)")
                return None, count
            values = [self.value(item, keep)[0] for _ in range(count)]
            return (values if keep else None), count
        raise GgufError(f"{self.path}: not a GGUF file this reader understands (metadata value type {kind})")


def read_gguf(path: Path | str, arrays: frozenset[str] = frozenset()) -> GgufFile:
    """The header of a GGUF file; `arrays` names long arrays to keep (e.g. tokenizer.ggml.token_type).
    Raises GgufError for a file that is missing, not GGUF, corrupt, or shorter than its tensors need."""
    path = Path(path)
    if not path.is_file():
        raise GgufError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    if size < 24:
        raise GgufError(f"{path}: not a GGUF file ({size} bytes)")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        if buffer[:4] != MAGIC:
            raise GgufError(f"{path}: not a GGUF file (it starts with {bytes(buffer[:4])!r}, not b'GGUF')")
        cursor = _Cursor(buffer, path)
        cursor.pos = 4
        version = cursor.take("<I")
        if version not in (2, 3):
            raise GgufError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = cursor.take("<Q"), cursor.take("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise GgufError(f"{path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} metadata entries)")
        metadata: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for _ in range(n_kv):
            key = cursor.string()
            value, count = cursor.value(cursor.take("<I"), key in arrays)
            if count is not None:
                lengths[key] = count
            if value is not None or count is None:
                metadata[key] = value
        raw_tensors = []
        for _ in range(n_tensors):
            name = cursor.string()
            dims = tuple(cursor.take("<Q") for _ in range(cursor.take("<I")))
            raw_tensors.append((name, dims, cursor.take("<I"), cursor.take("<Q")))
        alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_offset = (cursor.pos + alignment - 1) // alignment * alignment
    tensors = []
    for name, dims, type_id, offset in raw_tensors:
        try:
            type_name, block, block_bytes = _type_info(type_id)
        except KeyError:
            raise GgufError(f"{path}: tensor {name!r} has an unknown ggml type {type_id}") from None
        elements = 1
        for d in dims:
            elements *= d
        if dims and dims[0] % block:
            raise GgufError(f"{path}: tensor {name!r} of type {type_name} has a row of {dims[0]} elements, "
                            f"not a multiple of its block ({block})")
        tensors.append(GgufTensor(name, type_name, dims, offset, elements // block * block_bytes))
    end = max((data_offset + t.offset + t.nbytes for t in tensors), default=data_offset)
    if end > size:
        raise GgufError(f"{path}: truncated GGUF file: its tensors need {end:,} bytes, the file has {size:,} "
                        f"(an interrupted copy or download?)")
    return GgufFile(path, version, metadata, tensors, data_offset, size, lengths)


def hf_config(gguf: GgufFile) -> dict[str, Any]:
    """The config.json a Hugging Face checkpoint of this GGUF would have (for the analytic sizes of
    bench/models/cards.py and the token space): the llama.cpp architectures lokaal-bench writes."""
    arch = gguf.architecture
    model_type = {"llama": "llama", "qwen2": "qwen2", "gemma2": "gemma2", "phi3": "phi3"}.get(arch, arch)
    heads = int(gguf.arch_value("attention.head_count", 0) or 0)
    hidden = int(gguf.arch_value("embedding_length", 0) or 0)
    experts = int(gguf.arch_value("expert_count", 0) or 0)
    if arch == "llama" and experts:
        model_type = "mixtral"
    vocab = gguf.array_lengths.get("tokenizer.ggml.tokens") or int(gguf.arch_value("vocab_size", 0) or 0)
    config: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(gguf.arch_value("feed_forward_length", 0) or 0),
        "num_hidden_layers": int(gguf.arch_value("block_count", 0) or 0),
        "num_attention_heads": heads,
        "num_key_value_heads": int(gguf.arch_value("attention.head_count_kv", heads) or heads),
        "head_dim": int(gguf.arch_value("attention.key_length", 0) or 0) or (hidden // heads if heads else 0),
        "vocab_size": vocab,
        "max_position_embeddings": int(gguf.arch_value("context_length", 0) or 0),
        "tie_word_embeddings": gguf.tensor("output.weight") is None,
    }
    if experts:
        config["num_local_experts"] = experts
        config["num_experts_per_tok"] = int(gguf.arch_value("expert_used_count", 2))
    if gguf.tensor("blk.0.attn_q.bias") is not None and model_type == "llama":
        config["attention_bias"] = True
    for role in ("bos", "eos"):
        value = gguf.metadata.get(f"tokenizer.ggml.{role}_token_id")
        if value is not None:
            config[f"{role}_token_id"] = int(value)
    pad = gguf.metadata.get("tokenizer.ggml.padding_token_id")
    if pad is not None:
        config["pad_token_id"] = int(pad)
    return config
