"""Turn an architecture card into a loadable Hugging Face model directory with synthetic weights.

Benchmarks of speed and memory do not need trained weights, only the right shapes, dtypes and files, so
on an air-gapped machine we generate them: seeded, deterministic, written tensor by tensor and shard by
shard so an 8B model never has to fit in memory. Results are cached; a build happens in a hidden temporary
sibling directory under a file lock and is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import fsync_dir
from bench.hashing import canonical_json
from bench.models.cards import ONE_PLUS_NORM_MODEL_TYPES, Card, normalise_dtype
from bench.models.safetensors_io import SAFETENSORS_DTYPES, write_streaming
from bench.models.tokenizer import write_tokenizer

# Bump when the bytes or files we produce change, so old cache entries are not reused.
MATERIALISER_VERSION = "1"
MARKER_NAME = "lokaal-bench-synthetic.json"
DEFAULT_MAX_SHARD_BYTES = 1 << 30
# Elements generated per step: bounded memory (~16-32 MB), and a multiple of 4 so the uint64 stream is
# consumed identically however a tensor is chunked.
_CHUNK_ELEMENTS = 1 << 23
# Normal samples are drawn by inverse-CDF lookup in a 2**16-entry quantile table: 16 random bits per
# element, several times faster than Box-Muller/ziggurat in numpy or torch. bfloat16 has only 8 bits of
# mantissa, so the table loses nothing there; float32 weights take 65536 distinct values (tails cut at
# about 4.3 sigma), which is irrelevant for speed and memory measurements.
_TABLE_BITS = 16
INIT_METHOD = "normal(0, initializer_range) via SFC64 + 65536-entry inverse-CDF table; norms 1 (gemma: 0); biases 0"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    init: str  # "normal", "ones" or "zeros"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


# -- cache layout ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get("LOKAAL_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lokaal-bench" / "models"


def build_hash(card: Card) -> str:
    """Short hash of everything that determines the files apart from dtype and seed."""
    from bench.models.chat_templates import chat_template

    payload: dict[str, Any] = {"config": card.config, "tokenizer": card.tokenizer, "materialiser": MATERIALISER_VERSION}
    template = chat_template(card.tokenizer.get("chat_template"))
    if template is not None:  # the template's text, so an edited template rebuilds the directory
        payload["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest()
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]


def cache_entry_name(card: Card, dtype: str, seed: int, weights: str = "files") -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", card.name)
    if weights == "dummy":  # no weight files, so no seed: vLLM's dummy loader makes the weights
        return f"{safe}-{normalise_dtype(dtype)}-noweights-{build_hash(card)}"
    return f"{safe}-{normalise_dtype(dtype)}-seed{int(seed)}-{build_hash(card)}"


def read_marker(path: Path) -> dict[str, Any] | None:
    """The synthetic-weights marker of a model directory, or None if it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(path) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("synthetic") is True else None


def _is_complete(path: Path, card: Card, dtype: str, seed: int, weights: str = "files") -> bool:
    # The marker is written last and the directory renamed into place after it, so a marker that matches
    # means a finished build. (A crashed build leaves only a hidden .tmp sibling, never this path.)
    marker = read_marker(path)
    return bool(
        marker
        and marker.get("card") == card.name
        and marker.get("dtype") == dtype
        and (weights == "dummy" or marker.get("seed") == seed)
        and marker.get("weights", "files") == weights
        and marker.get("build_hash") == build_hash(card)
    )


# -- public entry point ---------------------------------------------------------------------------------------


def materialise(
    card: Card,
    dtype: str,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    weights: str = "files",
) -> Path:
    """Return a complete model directory for `card` with synthetic weights, building it if not cached.
    With weights "dummy" the directory is weightless (config and tokenizer only), for vLLM's dummy loader.

    `progress(done_bytes, total_bytes)` is called while weights are written (not at all on a cache hit).
    """
    dtype = normalise_dtype(dtype)
    seed = int(seed)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / cache_entry_name(card, dtype, seed, weights)
    if _is_complete(final, card, dtype, seed, weights):
        return final

    with _file_lock(root / f".{final.name}.lock"):
        if _is_complete(final, card, dtype, seed, weights):  # another process finished it while we waited
            return final
        # We hold the lock, so any temporary sibling belongs to a builder that died: clear it.
        for stale in root.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # no valid marker: not ours or damaged; rebuild rather than trust it
            shutil.rmtree(final)
        tmp = root / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            if weights == "dummy":
                _build_weightless(card, dtype, tmp)
            else:
                _build(card, dtype, seed, tmp, progress, max_shard_bytes)
            fsync_dir(tmp)
            os.rename(tmp, final)
            fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (fcntl.flock) held for the duration of a build.

    flock locks belong to the open file description, so this excludes other processes and other threads of
    this process alike, and the kernel drops the lock if the holder dies. Without fcntl (Windows) we build
    unlocked; the atomic rename still keeps readers from seeing a partial directory.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# -- building -------------------------------------------------------------------------------------------------


def _write_config_and_tokenizer(card: Card, dtype: str, out: Path) -> None:
    import transformers

    # transformers_version as save_pretrained writes it: without it, transformers 5 treats a local
    # directory as a possibly-broken Mistral tokenizer and warns on every tokenizer load.
    config = {**card.config, "torch_dtype": dtype, "transformers_version": transformers.__version__}
    _write_json(out / "config.json", config)
    generation = {k: card.config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in card.config}
    _write_json(out / "generation_config.json", generation)
    write_tokenizer(card.config, out, card.tokenizer)


def _build_weightless(card: Card, dtype: str, out: Path) -> None:
    """Config and tokenizer only: vLLM's dummy loader (load_format "dummy") creates the weights."""
    _write_config_and_tokenizer(card, dtype, out)
    _write_json(
        out / MARKER_NAME,
        {
            "synthetic": True,
            "weights": "dummy",
            "note": "No weight files: vLLM's dummy loader creates random weights at load time; not the "
                    "published model's weights, and not lokaal-bench's seeded synthetic weights.",
            "card": card.name,
            "hf_id": card.hf_id,
            "card_config_sha256": card.config_sha256(),
            "build_hash": build_hash(card),
            "materialiser_version": MATERIALISER_VERSION,
            "dtype": dtype,
            "parameter_count": card.parameter_count(),
            "weight_files": {},
        },
    )


def _build(card: Card, dtype: str, seed: int, out: Path, progress: Progress | None, max_shard_bytes: int) -> None:
    _write_config_and_tokenizer(card, dtype, out)

    plan = tensor_plan(out)
    std = float(card.config.get("initializer_range") or 0.02)
    element_bytes = np.dtype(_NP_STORAGE[dtype]).itemsize
    shards = _plan_shards(plan, element_bytes, max_shard_bytes)
    total = sum(s.numel for s in plan) * element_bytes
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    files: dict[str, dict[str, Any]] = {}
    for filename, specs in shards:
        digest = write_streaming(
            out / filename,
            [(s.name, list(s.shape), SAFETENSORS_DTYPES[dtype]) for s in specs],
            _prefetch(_chunks(specs, dtype, std, card.name, seed)),
            on_bytes,
            fsync=False,
        )
        files[filename] = {"sha256": digest, "bytes": (out / filename).stat().st_size}

    if len(shards) > 1:
        index = {
            "metadata": {"total_size": total, "total_parameters": sum(s.numel for s in plan)},
            "weight_map": {s.name: filename for filename, specs in shards for s in specs},
        }
        _write_json(out / "model.safetensors.index.json", index)
    # fsync the shards only now: the kernel has been writing them back while we generated the rest, and
    # the directory is renamed into place only after everything in it is durable.
    for filename in files:
        _fsync_file(out / filename)
    _write_json(
        out / MARKER_NAME,
        {
            "synthetic": True,
            "note": "Synthetic random weights generated by lokaal-bench; not the published model's weights.",
            "card": card.name,
            "hf_id": card.hf_id,
            "card_config_sha256": card.config_sha256(),
            "build_hash": build_hash(card),
            "materialiser_version": MATERIALISER_VERSION,
            "seed": seed,
            "dtype": dtype,
            "parameter_count": sum(s.numel for s in plan),
            "init": {"std": std, "method": INIT_METHOD},
            "weight_files": files,
        },
    )


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _plan_shards(
    plan: list[TensorSpec], element_bytes: int, max_shard_bytes: int
) -> list[tuple[str, list[TensorSpec]]]:
    """Greedy split in plan order, like transformers' save_pretrained: a tensor larger than the limit gets a
    shard of its own. One shard is named model.safetensors, several model-0000i-of-0000n.safetensors."""
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in plan:
        nbytes = spec.numel * element_bytes
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += nbytes
    if len(groups) == 1:
        return [("model.safetensors", groups[0])]
    n = len(groups)
    return [(f"model-{i:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups, start=1)]


# -- which tensors ----------------------------------------------------------------------------------------------

_NORM_NAME = re.compile(r"norm[^.]*\.weight$", re.IGNORECASE)


def tensor_plan(model_dir: Path) -> list[TensorSpec]:
    """Names, shapes and init of the tensors a checkpoint for model_dir/config.json holds.

    Builds the model on the meta device (no memory, well under a second even for 70B) and takes the state
    dict the way save_pretrained writes it: persistent buffers only, tied weights once, and transformers'
    own load-time conversions reverted (e.g. Mixtral's fused experts go back to per-expert w1/w2/w3, the
    layout of the published checkpoints that vLLM and older transformers also load).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    norm_params = {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if "norm" in type(module).__name__.lower()
        for param_name, _ in module.named_parameters(recurse=False)
    }
    one_plus = getattr(config, "model_type", "") in ONE_PLUS_NORM_MODEL_TYPES
    plan = []
    for name, tensor in _serialised_state_dict(model).items():
        if name.endswith(".bias"):
            init = "zeros"
        elif name in norm_params or _NORM_NAME.search(name):
            init = "zeros" if one_plus else "ones"  # gemma norms compute x * (1 + w)
        else:
            init = "normal"
        plan.append(TensorSpec(name, tuple(int(d) for d in tensor.shape), init))
    return plan


def _serialised_state_dict(model: Any) -> dict[str, Any]:
    state = model.state_dict()  # parameters and persistent buffers only
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state.pop(key, None)
    try:  # transformers 5.x internals used by save_pretrained
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
    except ImportError:  # other versions: named_parameters() lists tied parameters once
        keep = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        return {k: v for k, v in state.items() if k in keep}
    state = remove_tied_weights_from_state_dict(state, model)
    return dict(revert_weight_conversion(model, state))


def _prefetch(chunks: Iterator[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """Generate chunks in a background thread while the caller hashes and writes the previous ones.

    numpy's bit generators and fancy indexing, hashlib and file writes all release the GIL, so on two
    cores generation overlaps I/O. At most `depth` chunks are in flight, so memory stays bounded.
    """
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    worker = threading.Thread(target=produce, name="lokaal-bench-weights", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


# -- generating bytes -------------------------------------------------------------------------------------------

# Storage type per dtype: bfloat16 and float16 are written as their raw 16-bit patterns.
_NP_STORAGE = {"float32": np.float32, "bfloat16": np.uint16, "float16": np.uint16}


def _to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values -> the bit patterns stored for dtype, rounding to nearest even like torch does."""
    values = values.astype(np.float32)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16).view(np.uint16)
    bits = values.view(np.uint32).astype(np.uint64)  # bfloat16: top 16 bits of float32, RNE (no NaNs here)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


@lru_cache(maxsize=8)
def _normal_table(std: float, dtype: str) -> np.ndarray:
    from statistics import NormalDist  # pure Python, IEEE doubles: the same table on every machine

    unit = NormalDist()
    size = 1 << _TABLE_BITS
    quantiles = np.array([unit.inv_cdf((i + 0.5) / size) for i in range(size)], dtype=np.float64)
    return _to_storage((quantiles * std).astype(np.float32), dtype)


def _seed_sequence(card_name: str, seed: int, tensor_name: str) -> np.random.SeedSequence:
    digest = hashlib.sha256(f"lokaal-bench\0{card_name}\0{seed}\0{tensor_name}".encode()).digest()
    return np.random.SeedSequence(int.from_bytes(digest[:16], "little"))


def _chunks(specs: list[TensorSpec], dtype: str, std: float, card_name: str, seed: int) -> Iterator[np.ndarray]:
    """The bytes of each tensor in turn, in bounded chunks.

    Every tensor has its own stream, seeded from (card, seed, tensor name), so a tensor's values do not
    depend on sharding, chunk size or the other tensors, and the bfloat16 model is exactly the float32 one
    rounded.
    """
    table = _normal_table(std, dtype)
    constants = {
        "zeros": _to_storage(np.zeros(1, np.float32), dtype),
        "ones": _to_storage(np.ones(1, np.float32), dtype),
    }
    for spec in specs:
        n = spec.numel
        if spec.init == "normal":
            bitgen = np.random.SFC64(_seed_sequence(card_name, seed, spec.name))
            for start in range(0, n, _CHUNK_ELEMENTS):
                m = min(_CHUNK_ELEMENTS, n - start)
                indices = bitgen.random_raw((m + 3) // 4).view("<u2")[:m]  # four 16-bit draws per uint64
                yield table[indices]
        else:
            block = np.full(min(n, _CHUNK_ELEMENTS), constants[spec.init][0])
            for start in range(0, n, _CHUNK_ELEMENTS):
                yield block[: min(_CHUNK_ELEMENTS, n - start)]
