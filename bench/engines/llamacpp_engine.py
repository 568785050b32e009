"""Engine: llama.cpp in the cell's process, through llama-cpp-python's low-level API (the C functions).

The model is a GGUF file (a local one, or a card materialised and quantised by bench/models/gguf.py).
Requests go in as token ids. A batch of B requests is ONE llama.cpp batch: B sequences with distinct
sequence ids prefilled together, then decoded together, one token per sequence per `llama_decode`
(static batching, as llama-bench's -pg and llama-batched-bench do). Every step is timestamped when its
tokens exist, greedy (argmax of the logits), with no end-of-sequence stop, so lengths are exact.
prefill_decode fills the KV cache to the depth untimed, then times the prompt and generation as
llama-bench does (pp N, tg M, at depth d). llama.cpp's own prompt and eval timers (llama_perf_context)
are kept beside the wall clock for each batch.

Settings (LlamaCppEngineSpec in bench/profile/engine_specs.py): threads and batch threads, n_batch, n_ubatch,
flash attention, the KV-cache type, n_ctx, mmap/mlock (llama.cpp's load mode), NUMA, GPU layers
(refused, with a reason, by a build without a GPU backend). llama-cpp-python is imported when the
engine is made, never by `import bench`.
"""

from __future__ import annotations

import ctypes
import os
import time
from importlib import metadata
from typing import Any

import numpy as np

from bench.engines.base import BatchResult
from bench.engines.llamacpp_label import on_off
from bench.profile.engine_specs import LlamaCppEngineSpec
from bench.profile.workloads import TokenSpace

KV_TYPES = {"f32": "GGML_TYPE_F32", "f16": "GGML_TYPE_F16", "bf16": "GGML_TYPE_BF16", "q8_0": "GGML_TYPE_Q8_0",
            "q4_0": "GGML_TYPE_Q4_0"}
NUMA = {"disabled": "GGML_NUMA_STRATEGY_DISABLED", "distribute": "GGML_NUMA_STRATEGY_DISTRIBUTE",
        "isolate": "GGML_NUMA_STRATEGY_ISOLATE", "numactl": "GGML_NUMA_STRATEGY_NUMACTL",
        "mirror": "GGML_NUMA_STRATEGY_MIRROR"}
FLASH_ATTN = {"auto": "LLAMA_FLASH_ATTN_TYPE_AUTO", "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
              "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED"}
# Sequences one context can hold (llama.cpp's LLAMA_MAX_SEQ is 256); the KV cache is unified, so
# more sequences cost no memory, only bookkeeping.
MAX_SEQUENCES = 64
# CPU features llama.cpp reports (llama_print_system_info), the ones that decide its kernels.
CPU_FEATURES = ("SSE3", "AVX", "AVX2", "AVX_VNNI", "F16C", "FMA", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                "AVX512_BF16", "AMX_INT8", "AMX_BF16", "BMI2", "NEON", "ARM_FMA", "SVE", "OPENMP", "LLAMAFILE",
                "REPACK")


def resolve_threads(value: Any) -> int:
    if value in (None, "auto"):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(value)


def parse_system_info(text: str) -> dict[str, Any]:
    """'CPU : SSE3 = 1 | AVX2 = 1 | ... |' -> {"CPU": {"SSE3": True, ...}} per backend."""
    backends: dict[str, dict[str, Any]] = {}
    current = "general"
    for part in (p.strip() for p in text.split("|")):
        if not part:
            continue
        if ":" in part:
            current, part = (s.strip() for s in part.split(":", 1))
        if "=" in part:
            key, value = (s.strip() for s in part.split("=", 1))
            backends.setdefault(current, {})[key] = value == "1" if value in ("0", "1") else value
    return backends


def build_info(lib: Any) -> dict[str, Any]:
    """llama.cpp's build as the loaded library reports it: ggml's version and commit, the system info
    string, the CPU features it was compiled for and uses, and whether it can offload to a GPU."""
    system = lib.llama_print_system_info()
    text = system.decode(errors="replace") if isinstance(system, bytes) else str(system)
    info: dict[str, Any] = {"llama_cpp_python": _version(), "system_info": text.strip(),
                            "gpu_offload": bool(lib.llama_supports_gpu_offload())}
    ggml = _ggml_library(lib)
    for name in ("ggml_version", "ggml_commit"):
        function = getattr(ggml, name, None) if ggml is not None else None
        if function is not None:
            function.restype = ctypes.c_char_p
            info[name] = function().decode(errors="replace")
    backends = parse_system_info(text)
    cpu = backends.get("CPU", {})
    info["cpu_features"] = {k: bool(cpu.get(k)) for k in CPU_FEATURES if k in cpu}
    info["cpu_features_used"] = sorted(k for k, v in cpu.items() if v is True)
    info["backends"] = sorted(backends)
    return info


def cpu_has_amx() -> bool:
    """Whether this CPU offers AMX (Linux's amx_int8 flag): a native llama.cpp build then uses it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            return any(line.startswith("flags") and " amx_int8" in line for line in info)
    except OSError:
        return False


def resolve_repack(value: Any, uses_amx: bool) -> bool:
    """llama.cpp's extra buffer types (repacked weights, AMX), as set; `auto`: off where llama.cpp would
    use AMX. In the llama.cpp of llama-cpp-python 0.3.36 ggml_backend_amx_mul_mat segfaults on the
    first quantised matrix multiply (Q8_0, Q4_K_M; seen on a Xeon with AMX): the cell would die."""
    if value in (None, "auto"):
        return not uses_amx
    return bool(value)


def _ggml_library(lib: Any) -> Any:
    """libggml-base beside libllama (llama-cpp-python ships them together)."""
    from pathlib import Path

    folder = Path(lib.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (folder / name).exists():
            try:
                return ctypes.CDLL(str(folder / name))
            except OSError:
                return None
    return None


def _version() -> str | None:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


class LlamaCppEngine:
    def __init__(self, settings: LlamaCppEngineSpec, model_path: str, model_info: dict[str, Any]):
        import llama_cpp

        self.lib = llama_cpp
        self.settings = settings  # one engine variant: every sweepable setting holds one value
        self.model_path = model_path
        self.model_info = model_info
        self.threads = resolve_threads(settings.threads)
        self.threads_batch = resolve_threads(settings.threads_batch or self.threads)
        self.n_ctx = int(settings.n_ctx)  # type: ignore[arg-type]
        self.n_batch = int(settings.n_batch)  # type: ignore[arg-type]
        self.n_ubatch = int(settings.n_ubatch)  # type: ignore[arg-type]
        self.kv_type = str(settings.kv_cache_type).lower()
        self.flash_attn = on_off(settings.flash_attn)
        self.n_gpu_layers = int(settings.n_gpu_layers)  # type: ignore[arg-type]
        self.use_mmap, self.use_mlock = bool(settings.use_mmap), bool(settings.use_mlock)
        self.numa = str(settings.numa)
        self.repack: bool | None = None  # resolved at load, from the build's CPU features
        self.model: Any = None
        self.ctx: Any = None
        self.vocab: Any = None
        self.batch: Any = None
        self.n_vocab = 0
        self.resolved: dict[str, Any] = {}
        self._build: dict[str, Any] | None = None

    # --- loading -------------------------------------------------------------------------------

    def _load_mode(self) -> int:
        mmap, mlock = self.use_mmap, self.use_mlock
        name = {(True, True): "MMAP_MLOCK", (True, False): "MMAP", (False, True): "MLOCK", (False, False): "NONE"}
        return int(getattr(self.lib, f"LLAMA_LOAD_MODE_{name[(mmap, mlock)]}", {
            "MMAP_MLOCK": 3, "MMAP": 1, "MLOCK": 2, "NONE": 0}[name[(mmap, mlock)]]))

    def load(self) -> dict[str, Any]:
        lib = self.lib
        lib.llama_backend_init()
        if self.numa != "disabled":
            lib.llama_numa_init(getattr(lib, NUMA[self.numa]))
        if self.n_gpu_layers and not lib.llama_supports_gpu_offload():
            raise RuntimeError(f"n_gpu_layers {self.n_gpu_layers} asked for, but this llama.cpp build has no GPU "
                               "backend (llama_supports_gpu_offload() is false): reinstall llama-cpp-python with "
                               "CMAKE_ARGS=-DGGML_CUDA=ON, or set n_gpu_layers: 0")
        self._check_memory()
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = self.n_gpu_layers
        model_params.load_mode = self._load_mode()
        self.repack = resolve_repack(self.settings.repack, bool(self._build_info()["cpu_features"].get("AMX_INT8")))
        model_params.use_extra_bufts = self.repack
        start = time.perf_counter()
        self.model = lib.llama_model_load_from_file(self.model_path.encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {self.model_path} (see the cell log for its reason)")
        params = lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_ubatch
        params.n_seq_max = MAX_SEQUENCES
        params.kv_unified = True  # one KV buffer for all sequences: each may use the whole n_ctx
        params.n_threads = self.threads
        params.n_threads_batch = self.threads_batch
        params.flash_attn_type = getattr(lib, FLASH_ATTN[self.flash_attn])
        params.type_k = params.type_v = getattr(lib, KV_TYPES[self.kv_type])
        params.no_perf = False  # llama.cpp's own prompt/eval timers, kept beside the wall clock
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context (n_ctx {self.n_ctx}, KV cache {self.kv_type}, "
                               f"flash attention {self.flash_attn}); a quantised V cache needs flash attention; "
                               "see the cell log for llama.cpp's reason")
        load_s = time.perf_counter() - start
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._views()
        self.resolved = {"n_ctx": int(lib.llama_n_ctx(self.ctx)), "n_batch": int(lib.llama_n_batch(self.ctx)),
                         "n_ubatch": int(lib.llama_n_ubatch(self.ctx)), "n_seq_max": MAX_SEQUENCES,
                         "kv_unified": True}
        return {"load_s": load_s, **self.describe()}

    def kv_cache_bytes(self) -> int | None:
        """The KV cache llama.cpp allocates: n_ctx cells of K and V for every layer at the cache type."""
        from bench.models.cards import Card
        from bench.models.gguf_types import kv_bytes_per_element

        config = self.model_info.get("config") or {}
        try:
            per_token = Card("model", "model", None, "", "", config).kv_cache_bytes_per_token("float16")
        except (KeyError, TypeError, ValueError):
            return None
        return int(self.n_ctx * per_token * kv_bytes_per_element(self.kv_type) / 2)

    def _check_memory(self) -> None:
        """A model too large for this machine (or for run.memory_limit_gib) fails the cell with the sizes,
        before llama.cpp maps it (with mmap it would otherwise page from disk, slowly, or be killed)."""
        import psutil

        weights = int((self.model_info.get("gguf") or {}).get("tensor_bytes") or os.path.getsize(self.model_path))
        kv = self.kv_cache_bytes() or 0
        needed = weights + kv
        available = int(psutil.virtual_memory().available)
        limit = self.model_info.get("memory_limit_bytes")
        gib = 2**30
        if limit and needed > limit:
            raise RuntimeError(f"model too large for run.memory_limit_gib {limit / gib:.2f}: weights "
                               f"{weights / gib:.2f} GiB + KV cache {kv / gib:.2f} GiB (n_ctx {self.n_ctx}, "
                               f"{self.kv_type}) = {needed / gib:.2f} GiB")
        if needed > available and not self.n_gpu_layers:
            raise RuntimeError(f"model too large for memory: weights {weights / gib:.2f} GiB + KV cache "
                               f"{kv / gib:.2f} GiB (n_ctx {self.n_ctx}, {self.kv_type}) = {needed / gib:.2f} GiB, "
                               f"but {available / gib:.2f} GiB is available on this machine")

    def _views(self) -> None:
        """numpy views of the batch's arrays: filling a prefill of thousands of tokens stays cheap."""
        capacity = self.n_batch
        self.b_token = np.ctypeslib.as_array(self.batch.token, shape=(capacity,))
        self.b_pos = np.ctypeslib.as_array(self.batch.pos, shape=(capacity,))
        self.b_nseq = np.ctypeslib.as_array(self.batch.n_seq_id, shape=(capacity,))
        self.b_logits = np.ctypeslib.as_array(self.batch.logits, shape=(capacity,))
        self.b_seq = [self.batch.seq_id[i] for i in range(capacity)]
        self.b_nseq[:] = 1

    # --- prompts -------------------------------------------------------------------------------

    def token_space(self) -> TokenSpace:
        """The same token space the other engines draw synthetic prompts from: the vocabulary without
        the model's bos/eos/pad ids (a card's config lists; a local GGUF's tokenizer metadata)."""
        config = self.model_info.get("config") or {}
        special: set[int] = set()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = config.get(name)
            special.update(value if isinstance(value, list) else [value] if value is not None else [])
        if not config:
            for function in (self.lib.llama_vocab_bos, self.lib.llama_vocab_eos, self.lib.llama_vocab_pad):
                token = int(function(self.vocab))
                if token >= 0:
                    special.add(token)
        return TokenSpace(self.n_vocab, frozenset(int(s) for s in special))

    def encode(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        size = len(raw) + 8
        buffer = (self.lib.llama_token * size)()
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buffer, size, True, False)
        if n < 0:
            size = -n
            buffer = (self.lib.llama_token * size)()
            n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buffer, size, True, False)
        return list(buffer[:n])

    def decode(self, token_ids: list[int]) -> str | None:
        out = bytearray()
        piece = ctypes.create_string_buffer(256)
        for token in token_ids:
            n = self.lib.llama_token_to_piece(self.vocab, int(token), piece, len(piece), 0, True)
            out += piece.raw[:max(n, 0)]
        return out.decode("utf-8", errors="replace")

    # --- execution -----------------------------------------------------------------------------

    def _check(self, rows: int, cells: int) -> None:
        if rows > MAX_SEQUENCES:
            raise RuntimeError(f"a batch of {rows} sequences; the llamacpp engine holds at most {MAX_SEQUENCES}")
        if cells > self.n_ctx:
            raise RuntimeError(f"the batch needs {cells} KV-cache cells (all its sequences' tokens), but n_ctx is "
                               f"{self.n_ctx}: raise the engine's n_ctx")

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """Decode (token, position, sequence, wants logits) entries in chunks of n_batch; return the
        greedy next token of every entry that wanted logits, in entry order."""
        lib = self.lib
        chosen: list[int] = []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            n = len(chunk)
            self.b_token[:n] = [e[0] for e in chunk]
            self.b_pos[:n] = [e[1] for e in chunk]
            self.b_logits[:n] = [e[3] for e in chunk]
            for i, entry in enumerate(chunk):
                self.b_seq[i][0] = entry[2]
            self.batch.n_tokens = n
            status = lib.llama_decode(self.ctx, self.batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status} (1: no KV-cache slot for the batch; raise n_ctx)")
            outputs = int(sum(1 for e in chunk if e[3]))
            if outputs:
                logits = np.ctypeslib.as_array(lib.llama_get_logits(self.ctx), shape=(outputs, self.n_vocab))
                chosen += [int(t) for t in logits.argmax(axis=1)]
        return chosen

    def _reset(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self.lib.llama_perf_context_reset(self.ctx)

    def _engine_timing(self, rows: int) -> list[dict[str, Any] | None]:
        """llama.cpp's own account of the batch (llama_perf_context), the same for every row. llama.cpp
        counts a llama_decode of several tokens as prompt evaluation, so its timers are the prefill and
        the decode only for one sequence; with more, only its raw counters are kept."""
        perf = self.lib.llama_perf_context(self.ctx)
        timing: dict[str, Any] = {"source": "llama_perf_context", "p_eval_s": perf.t_p_eval_ms / 1000.0,
                                  "eval_s": perf.t_eval_ms / 1000.0, "n_p_eval": int(perf.n_p_eval),
                                  "n_eval": int(perf.n_eval)}
        if rows == 1:
            timing.update(prefill_s=timing["p_eval_s"], decode_s=timing["eval_s"])
        return [dict(timing) for _ in range(rows)]

    def _run(self, prompts: list[list[int]], output_tokens: list[int], start_pos: list[int],
             depth: int) -> BatchResult:
        rows = len(prompts)
        entries = []
        for row, prompt in enumerate(prompts):
            entries += [(int(t), start_pos[row] + i, row, i == len(prompt) - 1) for i, t in enumerate(prompt)]
        positions = [start_pos[row] + len(p) for row, p in enumerate(prompts)]
        times: list[list[float]] = [[] for _ in prompts]
        generated: list[list[int]] = [[] for _ in prompts]
        submit = time.perf_counter()
        tokens = self._decode(entries)
        now = time.perf_counter()
        for row in range(rows):
            times[row].append(now)
            generated[row].append(tokens[row])
        while True:
            active = [r for r in range(rows) if len(generated[r]) < output_tokens[r]]
            if not active:
                break
            step = [(generated[r][-1], positions[r], r, True) for r in active]
            tokens = self._decode(step)
            now = time.perf_counter()
            for r, token in zip(active, tokens, strict=True):
                positions[r] += 1
                times[r].append(now)
                generated[r].append(token)
        return BatchResult(
            submit_time=submit,
            step_times=times[0],
            output_tokens=[len(t) for t in times],
            finish_reasons=["length"] * rows,
            context_depth=depth,
            row_step_times=times,
            engine_timing=self._engine_timing(rows),
            output_token_ids=generated,
        )

    def generate(self, prompts: list[list[int]], output_tokens: list[int]) -> BatchResult:
        self._check(len(prompts), sum(len(p) + n for p, n in zip(prompts, output_tokens, strict=True)))
        self._reset()
        return self._run(prompts, output_tokens, [0] * len(prompts), 0)

    def prefill_decode(self, depth_ids: list[list[int]], prompts: list[list[int]], gen_tokens: int) -> BatchResult:
        depth = len(depth_ids[0]) if depth_ids and depth_ids[0] else 0
        self._check(len(prompts), sum(depth + len(p) + gen_tokens for p in prompts))
        self._reset()
        if depth:  # untimed, as llama-bench fills the context before a test at depth
            self._decode([(int(t), i, row, False) for row, ids in enumerate(depth_ids) for i, t in enumerate(ids)])
            self.lib.llama_synchronize(self.ctx)
            self.lib.llama_perf_context_reset(self.ctx)
        return self._run(prompts, [gen_tokens] * len(prompts), [depth] * len(prompts), depth)

    # --- reporting -----------------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        return {}  # host memory is the process's: the runner samples its RSS

    def _build_info(self) -> dict[str, Any]:
        if self._build is None:
            self._build = build_info(self.lib)
        return self._build

    def describe(self) -> dict[str, Any]:
        self._build_info()
        info: dict[str, Any] = {
            "engine": "llamacpp",
            "llama_cpp_python_version": _version(),
            "llama_cpp_build": self._build,
            "device": "cpu" if not self.n_gpu_layers else "gpu",
            "dtype": self.model_info.get("quantization"),
            # The roofline's compute bound for quantised kernels: the probed float32 FLOP/s, a proxy
            # (llama.cpp multiplies quantised weights by int8-quantised activations on the CPU).
            "compute_dtype": "float32",
            "quantization": self.model_info.get("quantization"),
            "threads": self.threads,
            "threads_batch": self.threads_batch,
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "flash_attn": self.flash_attn,
            "kv_cache_type": self.kv_type,
            "use_mmap": self.use_mmap,
            "use_mlock": self.use_mlock,
            "numa": self.numa,
            "n_gpu_layers": self.n_gpu_layers,
            "repack": self.repack,  # as resolved (see resolve_repack)
            "batching": "one llama.cpp batch per request batch: distinct sequence ids, decoded together",
        }
        if self.model is not None:
            description = ctypes.create_string_buffer(256)
            self.lib.llama_model_desc(self.model, description, len(description))
            info.update(model_description=description.value.decode(errors="replace"),
                        model_size_bytes=int(self.lib.llama_model_size(self.model)),
                        model_parameters=int(self.lib.llama_model_n_params(self.model)),
                        context=self.resolved)
        return info

    def close(self) -> None:
        lib = self.lib
        if self.batch is not None:
            lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            lib.llama_free(self.ctx)
            self.ctx = None
        if self.model is not None:
            lib.llama_model_free(self.model)
            self.model = None
