"""The seam between scenarios and engines. An engine loads a model and executes batches with
timestamps; the load shape and all statistics live elsewhere (as in MLPerf LoadGen's SUT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.profile.workloads import TokenSpace


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


class Engine(Protocol):
    def load(self) -> dict[str, Any]:
        """Load the model once; return what was loaded and `load_s` (cold start is a metric)."""

    def token_space(self) -> TokenSpace: ...

    def encode(self, text: str) -> list[int]: ...

    def generate(self, prompts: list[list[int]], output_tokens: list[int]) -> BatchResult:
        """Run one batch; every row must produce exactly its requested number of tokens."""

    def prefill_decode(self, depth_ids: list[list[int]], prompts: list[list[int]], gen_tokens: int) -> BatchResult:
        """Fill the KV cache with `depth_ids` untimed, then time the prompts' prefill and decoding."""

    def memory(self) -> dict[str, Any]:
        """Peak accelerator memory seen by the engine itself, in bytes (empty on the CPU)."""

    def describe(self) -> dict[str, Any]:
        """Versions, device and resolved settings, for the result set."""

    def close(self) -> None: ...


def create_engine(settings: dict[str, Any], model_path: str, model_info: dict[str, Any]) -> Engine:
    """Engines are imported by kind, so importing bench never imports torch or vLLM."""
    kind = settings["kind"]
    if kind == "transformers":
        from bench.engines.transformers_engine import TransformersEngine

        return TransformersEngine(settings, model_path, model_info)
    if kind == "openai":
        from bench.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(settings, model_path, model_info)
    if kind == "vllm":
        from bench.engines.vllm_engine import VllmEngine

        return VllmEngine(settings, model_path, model_info)
    raise ValueError(f"unknown engine kind {kind!r}")
