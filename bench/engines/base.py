"""The seam between scenarios and engines. An engine loads a model and executes batches with
timestamps; the load shape and all statistics live elsewhere (as in MLPerf LoadGen's SUT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bench.profile.engine_specs import EngineSpec
from bench.profile.workloads import Request, TokenSpace


@dataclass
class BatchResult:
    """One executed batch. Times are `time.perf_counter()` seconds of the cell process.

    `step_times[i]` is when token i of every row was available (the first is the end of prefill).
    `output_tokens[r]` is how many tokens row r produced; `finish_reasons[r]` why it stopped.
    """

    submit_time: float
    step_times: list[float]
    output_tokens: list[int]
    finish_reasons: list[str]
    context_depth: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # Engines that schedule each request on its own (vLLM) give each row its own token times, and
    # the engine's own timestamps for the row (same clock as the cell's, relative times, or None).
    row_step_times: list[list[float]] | None = None
    engine_timing: list[dict[str, Any] | None] | None = None
    # The generated token ids of each row (engines that have them): hashed into every record, and
    # decoded into it when run.store_text asks for the text.
    output_token_ids: list[list[int]] | None = None


class EngineBase(Protocol):
    """What every engine does, in process or served."""

    def load(self) -> dict[str, Any]:
        """Load the model once (or reach the server); return what was loaded and `load_s` (cold start)."""

    def token_space(self) -> TokenSpace: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str | None:
        """The text of token ids; None where the model directory has no tokenizer."""

    def memory(self) -> dict[str, Any]:
        """Peak accelerator memory seen by the engine itself, in bytes (empty on the CPU)."""

    def describe(self) -> dict[str, Any]:
        """Versions, device and resolved settings, for the result set."""

    def close(self) -> None: ...


class Engine(EngineBase, Protocol):
    """An engine in the cell's own process: it executes batches; the scenario shapes them."""

    def generate(self, prompts: list[list[int]], output_tokens: list[int]) -> BatchResult:
        """Run one batch; every row must produce exactly its requested number of tokens."""

    def prefill_decode(self, depth_ids: list[list[int]], prompts: list[list[int]], gen_tokens: int) -> BatchResult:
        """Fill the KV cache with `depth_ids` untimed, then time the prompts' prefill and decoding."""


@runtime_checkable
class ServedEngine(EngineBase, Protocol):
    """A model behind an HTTP API: the engine knows where to send what; the served load shapes
    (bench/scenarios/served.py) send it, over the streaming client (bench/serving/client.py)."""

    api_key: str | None  # sent as a bearer token; never written anywhere
    request_timeout_s: float
    think_tags: bool  # reasoning comes inside <think>...</think> in the answer's text

    @property
    def route(self) -> str:
        """The path after an endpoint's prefix: /completions or /chat/completions."""

    def route_for(self, request: Request) -> str:
        """The route of one request (conversations and structured answers: chat)."""

    def address(self, index: int) -> tuple[str, int, str]:
        """(host, port, path prefix) of the endpoint request `index` goes to (round robin)."""

    def payload(self, request: Request) -> dict[str, Any]:
        """The request body for one request."""


def create_engine(settings: EngineSpec, model_path: str, model_info: dict[str, Any]) -> Engine | ServedEngine:
    """Engines are imported by kind, so importing bench never imports torch, vLLM or llama.cpp."""
    kind = settings.kind
    if kind == "transformers":
        from bench.engines.transformers_engine import TransformersEngine

        return TransformersEngine(settings, model_path, model_info)
    if kind == "openai":
        from bench.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(settings, model_path, model_info)
    if kind == "vllm":
        from bench.engines.vllm_engine import VllmEngine

        return VllmEngine(settings, model_path, model_info)
    if kind == "llamacpp":
        from bench.engines.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(settings, model_path, model_info)
    raise ValueError(f"unknown engine kind {kind!r}")
