"""Architecture cards as GGUF files for llama.cpp: written in F16 with the `gguf` package (the card's
synthetic weights and its tokenizer as `tokenizer.ggml.*` metadata), then quantised by llama.cpp's own
quantiser (`llama_model_quantize`, through llama-cpp-python, in a child process) to each type asked for.

The weights are the very values the safetensors materialiser writes for the card (same seeds per
Hugging Face tensor name, bench/models/materialise.py), laid out as llama.cpp's converter lays them
out: tensor names mapped by the `gguf` package, Llama's q/k rows permuted for llama.cpp's rotary
layout, Mixtral's experts stacked, Gemma's norms stored as 1 + w, 1-D tensors in F32. llama.cpp's
`convert_hf_to_gguf.py` is not used: it refuses the self-built BPE tokenizer (MACHINE-NOTES).

Cached like the safetensors cards: <cache>/gguf/<card>-seed<N>-<hash>/F16.gguf and, per llama.cpp
version, <type>.llama-cpp-<version>.gguf; each file is written beside its final name and renamed into
place when complete, under a file lock. Nothing is downloaded.

    python -m bench.models.gguf quantize SRC DST TYPE [--threads N]   # the child process
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.hashing import canonical_json
from bench.models.cards import ONE_PLUS_NORM_MODEL_TYPES, Card, UnsupportedArchitectureError
from bench.models.gguf_read import GgufError, GgufFile, read_gguf
from bench.models.gguf_types import normalise_quantization, weight_bytes_estimate
from bench.models.local import ModelError
from bench.models.materialise import (
    MATERIALISER_VERSION,
    TensorSpec,
    _chunks,
    _file_lock,
    _prefetch,
    default_cache_dir,
)
from bench.models.tokenizer import build_tokenizer_json

# Bump when the bytes written change, so old cache entries are not reused.
GGUF_WRITER_VERSION = "1"
MARKER_PREFIX = "lokaal_bench."
# Hugging Face model_type -> llama.cpp architecture (Mistral and Mixtral are Llama to llama.cpp).
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                 "gemma2": "gemma2", "phi3": "phi3"}
_PERMUTED_QK = frozenset({"llama", "mistral", "mixtral"})  # llama.cpp's normal (interleaved) RoPE

Progress = Callable[[int, int], None]


class QuantizeError(ModelError):
    """llama.cpp's quantiser failed; the message carries its last words."""


# -- the Hugging Face tensors of a card, analytically (the names seed the synthetic values) ----------------------


def hf_tensors(config: dict[str, Any]) -> list[TensorSpec]:
    """Names, shapes and init of a card's checkpoint tensors, as transformers saves them (tests compare
    this with bench.models.materialise.tensor_plan on a meta-device model)."""
    mt = config.get("model_type")
    if mt not in ARCHITECTURES:
        raise UnsupportedArchitectureError(f"no GGUF layout for model_type {mt!r}; "
                                           f"supported: {', '.join(ARCHITECTURES)}")
    h, v, n_layers = int(config["hidden_size"]), int(config["vocab_size"]), int(config["num_hidden_layers"])
    ff = int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    hd = int(config.get("head_dim") or h // heads)
    tied = bool(config.get("tie_word_embeddings", mt == "gemma2"))
    norm = "zeros" if mt in ONE_PLUS_NORM_MODEL_TYPES else "ones"
    specs = [TensorSpec("model.embed_tokens.weight", (v, h), "normal")]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        if mt == "phi3":
            specs.append(TensorSpec(p + "self_attn.qkv_proj.weight", ((heads + 2 * kv) * hd, h), "normal"))
        else:
            specs += [TensorSpec(p + "self_attn.q_proj.weight", (heads * hd, h), "normal"),
                      TensorSpec(p + "self_attn.k_proj.weight", (kv * hd, h), "normal"),
                      TensorSpec(p + "self_attn.v_proj.weight", (kv * hd, h), "normal")]
        if mt == "qwen2" or (config.get("attention_bias") and mt in ("llama", "gemma2")):
            specs += [TensorSpec(p + "self_attn.q_proj.bias", (heads * hd,), "zeros"),
                      TensorSpec(p + "self_attn.k_proj.bias", (kv * hd,), "zeros"),
                      TensorSpec(p + "self_attn.v_proj.bias", (kv * hd,), "zeros")]
        specs.append(TensorSpec(p + "self_attn.o_proj.weight", (h, heads * hd), "normal"))
        if mt == "qwen3":  # per-head RMSNorm of queries and keys
            specs += [TensorSpec(p + "self_attn.q_norm.weight", (hd,), norm),
                      TensorSpec(p + "self_attn.k_norm.weight", (hd,), norm)]
        if config.get("attention_bias") and mt in ("llama", "gemma2"):
            specs.append(TensorSpec(p + "self_attn.o_proj.bias", (h,), "zeros"))
        if mt == "mixtral":
            experts = int(config["num_local_experts"])
            specs.append(TensorSpec(p + "block_sparse_moe.gate.weight", (experts, h), "normal"))
            for e in range(experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                specs += [TensorSpec(q + "w1.weight", (ff, h), "normal"),
                          TensorSpec(q + "w2.weight", (h, ff), "normal"),
                          TensorSpec(q + "w3.weight", (ff, h), "normal")]
        elif mt == "phi3":
            specs += [TensorSpec(p + "mlp.gate_up_proj.weight", (2 * ff, h), "normal"),
                      TensorSpec(p + "mlp.down_proj.weight", (h, ff), "normal")]
        else:
            specs += [TensorSpec(p + "mlp.gate_proj.weight", (ff, h), "normal"),
                      TensorSpec(p + "mlp.up_proj.weight", (ff, h), "normal"),
                      TensorSpec(p + "mlp.down_proj.weight", (h, ff), "normal")]
            if mt == "llama" and config.get("mlp_bias"):
                specs += [TensorSpec(p + "mlp.gate_proj.bias", (ff,), "zeros"),
                          TensorSpec(p + "mlp.up_proj.bias", (ff,), "zeros"),
                          TensorSpec(p + "mlp.down_proj.bias", (h,), "zeros")]
        specs += [TensorSpec(p + "input_layernorm.weight", (h,), norm),
                  TensorSpec(p + "post_attention_layernorm.weight", (h,), norm)]
        if mt == "gemma2":
            specs += [TensorSpec(p + "pre_feedforward_layernorm.weight", (h,), norm),
                      TensorSpec(p + "post_feedforward_layernorm.weight", (h,), norm)]
    specs.append(TensorSpec("model.norm.weight", (h,), norm))
    if not tied:
        specs.append(TensorSpec("lm_head.weight", (v, h), "normal"))
    return specs


# -- the GGUF layout ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufTensorPlan:
    """One GGUF tensor: its numpy shape (rows first, as the converter passes arrays), storage dtype, the
    Hugging Face tensors it is made of (concatenated in order) and the transform applied to their values."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "F16" or "F32"
    sources: list[TensorSpec] = field(default_factory=list)
    transform: str | None = None  # "permute_q", "permute_k", "plus_one", "rope_freqs"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (2 if self.dtype == "F16" else 4)


def gguf_plan(config: dict[str, Any]) -> list[GgufTensorPlan]:
    import gguf

    mt = str(config["model_type"])
    arch = _arch_enum(ARCHITECTURES[mt])
    n_layers = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(arch, n_layers)
    specs = hf_tensors(config)
    plan: list[GgufTensorPlan] = []
    experts: dict[str, list[TensorSpec]] = {}
    for spec in specs:
        stacked = re.match(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.\d+\.(w[123])\.weight$", spec.name)
        if stacked:
            experts.setdefault(f"blk.{stacked.group(1)}.{_EXPERT_NAMES[stacked.group(2)]}.weight", []).append(spec)
            continue
        name = names.get_name(spec.name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedArchitectureError(f"no GGUF name for {spec.name} ({mt})")
        one_dim = len(spec.shape) == 1 or name.endswith("ffn_gate_inp.weight")
        transform = None
        if mt in _PERMUTED_QK and name.endswith("attn_q.weight"):
            transform = "permute_q"
        elif mt in _PERMUTED_QK and name.endswith("attn_k.weight"):
            transform = "permute_k"
        elif mt in ONE_PLUS_NORM_MODEL_TYPES and name.endswith("norm.weight"):
            transform = "plus_one"
        plan.append(GgufTensorPlan(name, spec.shape, "F32" if one_dim else "F16", [spec], transform))
    for name, sources in experts.items():
        plan.append(GgufTensorPlan(name, (len(sources), *sources[0].shape), "F16", sources))
    if _llama3_rope(config):
        half = _head_dim(config) // 2
        plan.insert(0, GgufTensorPlan("rope_freqs.weight", (half,), "F32", [], "rope_freqs"))
    return plan


_EXPERT_NAMES = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}


def _arch_enum(name: str) -> Any:
    import gguf

    return next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == name)


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))


def _llama3_rope(config: dict[str, Any]) -> bool:
    scaling = config.get("rope_scaling") or {}
    return config.get("model_type") == "llama" and str(scaling.get("rope_type", "")).lower() == "llama3"


def llama3_rope_factors(config: dict[str, Any]) -> np.ndarray:
    """The per-frequency factors llama.cpp reads from `rope_freqs` (the converter's formula)."""
    scaling = config["rope_scaling"]
    dim = _head_dim(config)
    base = float(config.get("rope_theta", 10000.0))
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(scaling.get("factor", 8.0))
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old = float(scaling.get("original_max_position_embeddings", 8192))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotate-half q/k rows -> llama.cpp's interleaved pairs (convert_hf_to_gguf's permute)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


# -- metadata ----------------------------------------------------------------------------------------------------


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def write_metadata(writer: Any, card: Card, seed: int) -> None:
    """Hyperparameters llama.cpp reads for the architecture, the tokenizer, and lokaal-bench's marker."""
    import gguf

    c = card.config
    mt = str(c["model_type"])
    heads = int(c["num_attention_heads"])
    hd = _head_dim(c)
    writer.add_name(card.display_name)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(int(c.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(c["hidden_size"]))
    writer.add_block_count(int(c["num_hidden_layers"]))
    writer.add_feed_forward_length(int(c["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(c.get("num_key_value_heads") or heads))
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_rope_dimension_count(hd)
    writer.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(c["vocab_size"]))
    if mt == "mixtral":
        writer.add_expert_count(int(c["num_local_experts"]))
        writer.add_expert_used_count(int(c["num_experts_per_tok"]))
    if mt == "gemma2":
        writer.add_attn_logit_softcapping(float(c.get("attn_logit_softcapping") or 50.0))
        writer.add_final_logit_softcapping(float(c.get("final_logit_softcapping") or 30.0))
        writer.add_sliding_window(int(c.get("sliding_window") or 4096))
    if mt == "phi3":
        writer.add_rope_scaling_orig_ctx_len(int(c.get("original_max_position_embeddings")
                                                 or c.get("max_position_embeddings", 4096)))
        if c.get("sliding_window"):
            writer.add_sliding_window(int(c["sliding_window"]))
    _write_tokenizer(writer, card)
    for key, value in marker(card, seed).items():
        if isinstance(value, bool):
            writer.add_bool(MARKER_PREFIX + key, value)
        elif isinstance(value, int):
            writer.add_uint64(MARKER_PREFIX + key, value)
        else:
            writer.add_string(MARKER_PREFIX + key, str(value))


def _write_tokenizer(writer: Any, card: Card) -> None:
    """The card's synthetic byte-level BPE tokenizer (bench/models/tokenizer.py) as llama.cpp's `gpt2`
    tokenizer with the GPT-2 pre-tokenizer (the same split as the Hugging Face ByteLevel one), so text
    encodes to the same ids in every engine; the special tokens are CONTROL tokens."""
    import json

    import gguf

    text, roles = build_tokenizer_json(card.config, card.tokenizer)
    data = json.loads(text)
    vocab: dict[str, int] = data["model"]["vocab"]
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = {t["id"] for t in data["added_tokens"] if t.get("special")}
    types = [int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL) for i in range(len(tokens))]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(m) for m in data["model"]["merges"]])
    c = card.config
    for role, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id)):
        value = _first(c.get(f"{role}_token_id"))
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(bool(card.tokenizer.get("add_bos_token", True)) and "bos" in roles)
    writer.add_add_eos_token(False)


def build_hash(card: Card) -> str:
    payload = {"config": card.config, "tokenizer": card.tokenizer, "materialiser": MATERIALISER_VERSION,
               "gguf_writer": GGUF_WRITER_VERSION}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]


def marker(card: Card, seed: int) -> dict[str, Any]:
    """What the GGUF's own metadata says about where it came from (kept through quantisation)."""
    return {"synthetic": True, "card": card.name, "seed": int(seed), "card_config_sha256": card.config_sha256(),
            "build_hash": build_hash(card), "materialiser_version": MATERIALISER_VERSION,
            "gguf_writer_version": GGUF_WRITER_VERSION,
            "note": "Synthetic random weights generated by lokaal-bench; not the published model's weights."}


def read_marker(info: GgufFile) -> dict[str, Any] | None:
    found = {k.removeprefix(MARKER_PREFIX): v for k, v in info.metadata.items() if k.startswith(MARKER_PREFIX)}
    return found if found.get("synthetic") is True else None


# -- writing ----------------------------------------------------------------------------------------------------


def _tensor_values(plan: GgufTensorPlan, config: dict[str, Any], card_name: str, seed: int) -> Iterator[np.ndarray]:
    """The tensor's values as float32 chunks, streamed unless a transform needs the whole tensor."""
    std = float(config.get("initializer_range") or 0.02)
    if plan.transform == "rope_freqs":
        yield llama3_rope_factors(config)
        return
    for source in plan.sources:
        chunks = _chunks([source], "float32", std, card_name, seed)
        if plan.transform is None:
            yield from chunks
            continue
        whole = np.concatenate(list(chunks)).reshape(source.shape)
        heads = int(config["num_attention_heads"])
        if plan.transform == "permute_q":
            whole = _permute(whole, heads)
        elif plan.transform == "permute_k":
            whole = _permute(whole, int(config.get("num_key_value_heads") or heads))
        elif plan.transform == "plus_one":
            whole = whole + np.float32(1.0)
        yield whole.reshape(-1)


def write_f16(card: Card, seed: int, out: Path, progress: Progress | None = None) -> None:
    """The card's synthetic model as one F16 GGUF at `out` (tensor by tensor, bounded memory)."""
    import gguf

    config = card.config
    plan = gguf_plan(config)
    writer = gguf.GGUFWriter(out, ARCHITECTURES[str(config["model_type"])])
    write_metadata(writer, card, seed)
    for tensor in plan:
        dtype = np.float16 if tensor.dtype == "F16" else np.float32
        writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(dtype), tensor.nbytes)
    writer.write_header_to_file(out)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    fout = writer.fout[0]
    total = sum(t.nbytes for t in plan)
    done = 0
    if progress is not None:
        progress(0, total)
    for tensor in plan:
        writer.write_padding(fout, fout.tell())
        dtype = np.float16 if tensor.dtype == "F16" else np.float32
        written = 0
        for chunk in _prefetch(_tensor_values(tensor, config, card.name, seed)):
            data = chunk.astype(dtype, copy=False)
            data.tofile(fout)
            written += data.nbytes
        if written != tensor.nbytes:
            raise RuntimeError(f"GGUF writer: {tensor.name} has {written} bytes, expected {tensor.nbytes}")
        writer.write_padding(fout, written)
        done += written
        if progress is not None:
            progress(done, total)
    fout.flush()
    os.fsync(fout.fileno())
    writer.close()


# -- the cache ---------------------------------------------------------------------------------------------------


def card_directory(card: Card, seed: int, cache_dir: Path | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", card.name)
    return root / "gguf" / f"{safe}-seed{int(seed)}-{build_hash(card)}"


def llama_cpp_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise ModelError("quantising GGUF files needs llama-cpp-python: pip install -e '.[llamacpp]' "
                         "(see docs/llamacpp.md)") from None


def quantised_name(quantization: str) -> str:
    """F16 is what the writer makes; every other type is llama.cpp's work, so its version is in the name."""
    return "F16.gguf" if quantization == "F16" else f"{quantization}.llama-cpp-{llama_cpp_version()}.gguf"


def _complete(path: Path, card: Card | None, quantization: str) -> bool:
    if not path.is_file():
        return False
    try:
        info = read_gguf(path)
    except GgufError:
        return False
    found = read_marker(info)
    if card is not None and (found is None or found.get("build_hash") != build_hash(card)):
        return False
    return info.file_type == quantization


def materialise_gguf(card: Card, quantization: str, seed: int = 0, cache_dir: Path | None = None,
                     progress: Progress | None = None, threads: int | None = None) -> Path:
    """A complete GGUF of `card` at `quantization`, built (F16 first, then quantised) if not cached."""
    quantization = normalise_quantization(quantization)
    directory = card_directory(card, seed, cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    f16 = directory / quantised_name("F16")
    with _file_lock(directory / ".lock"):
        if not _complete(f16, card, "F16"):
            _check_disk(directory, sum(t.nbytes for t in gguf_plan(card.config)), f"{card.name} in F16")
            _atomically(f16, lambda tmp: write_f16(card, seed, tmp, progress))
        if quantization == "F16":
            return f16
        final = directory / quantised_name(quantization)
        if not _complete(final, card, quantization):
            _check_disk(directory, weight_bytes_estimate(card.parameter_count(), quantization),
                        f"{card.name} in {quantization}")
            _atomically(final, lambda tmp: quantize(f16, tmp, quantization, threads))
        return final


def gguf_files_missing(card: Card, quantization: str, seed: int, cache_dir: Path | None) -> int:
    """Bytes materialise_gguf would still write for `card` at `quantization` (0 when both files are cached)."""
    quantization = normalise_quantization(quantization)
    directory = card_directory(card, seed, cache_dir)
    needed = 0
    if not _complete(directory / quantised_name("F16"), card, "F16"):
        needed += sum(t.nbytes for t in gguf_plan(card.config))
    if quantization != "F16" and not _complete(directory / quantised_name(quantization), card, quantization):
        needed += weight_bytes_estimate(card.parameter_count(), quantization)
    return needed


def _check_disk(directory: Path, needed: int, what: str) -> None:
    """Refuse before writing a file the disk cannot hold (a 70B card is 141 GB in F16)."""
    free = shutil.disk_usage(directory).free
    if needed * 1.02 + 2**28 > free:
        raise ModelError(f"{what} needs {needed / 1e9:.1f} GB of disk; {directory} has {free / 1e9:.1f} GB free "
                         "(set LOKAAL_BENCH_CACHE or run.model_cache_dir to a larger disk)")


def quantise_local(source: Path, quantization: str, cache_dir: Path | None, threads: int | None = None) -> Path:
    """A local GGUF requantised to `quantization` (from F16/BF16/F32 as llama.cpp prefers), cached by the
    source's header digest; the source itself is never changed."""
    quantization = normalise_quantization(quantization)
    info = read_gguf(source)
    if info.file_type == quantization:
        return source
    digest = header_sha256(source, info)[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory = root / "gguf" / f"local-{re.sub(r'[^A-Za-z0-9._-]', '_', source.stem)}-{digest}"
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / quantised_name(quantization)
    with _file_lock(directory / ".lock"):
        if not _complete(final, None, quantization):
            _atomically(final, lambda tmp: quantize(source, tmp, quantization, threads))
    return final


def header_sha256(path: Path, info: GgufFile | None = None) -> str:
    """SHA-256 of a GGUF's header and tensor table (metadata, names, types, shapes): the same model file
    on another machine has the same digest, in milliseconds rather than the minutes a full hash takes."""
    info = info or read_gguf(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(info.data_offset))
    digest.update(str(info.file_size).encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole GGUF file, computed once: kept in a hidden file beside it, keyed by size and
    modification time (the result set's integrity record of the weights a cell ran)."""
    import json

    stat = path.stat()
    sidecar = path.parent / f".{path.name}.sha256.json"
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        kept = json.loads(sidecar.read_text())
        if {k: kept.get(k) for k in key} == key:
            return str(kept["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            digest.update(chunk)
    with contextlib.suppress(OSError):  # a read-only location: hashed again next time
        sidecar.write_text(json.dumps({**key, "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def _atomically(final: Path, build: Callable[[Path], None]) -> None:
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        stale.unlink(missing_ok=True)  # we hold the lock: a temporary file belongs to a builder that died
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        build(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


# -- quantising (llama.cpp's own quantiser, in a child process) --------------------------------------------------


def quantize(source: Path, destination: Path, quantization: str, threads: int | None = None) -> None:
    """llama.cpp's `llama_model_quantize` in a child process: a crash in native code fails this model's
    cells with a reason instead of taking the runner down."""
    command = [sys.executable, "-m", "bench.models.gguf", "quantize", str(source), str(destination), quantization]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        tail = " | ".join(line for line in (done.stderr or done.stdout).strip().splitlines()[-4:])
        raise QuantizeError(f"llama.cpp could not quantise {source.name} to {quantization} "
                            f"(exit status {done.returncode}): {tail}")


def _quantize_here(source: str, destination: str, quantization: str, threads: int) -> int:
    import ctypes

    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantization}" if quantization != "F32"
                           else "LLAMA_FTYPE_ALL_F32")
    params.nthread = threads
    params.allow_requantize = True  # a local Q8_0 file may be asked for as Q4_K_M
    status = llama_cpp.llama_model_quantize(source.encode(), destination.encode(), ctypes.byref(params))
    if status != 0:
        print(f"llama_model_quantize returned {status}", file=sys.stderr)
    return 0 if status == 0 else 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.models.gguf")
    verbs = parser.add_subparsers(dest="verb", required=True)
    q = verbs.add_parser("quantize")
    q.add_argument("source")
    q.add_argument("destination")
    q.add_argument("type")
    q.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    return _quantize_here(args.source, args.destination, normalise_quantization(args.type), args.threads)


if __name__ == "__main__":
    sys.exit(main())
