"""Engine: Hugging Face transformers on PyTorch, CPU or CUDA.

Generation goes through `model.generate` (greedy, EOS disabled so output lengths are exact) with a
stopping criterion that timestamps every decoding step. On CUDA the timestamps are CUDA events
read after the batch, so timing adds no host-device synchronisation per step.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList

from bench.engines.base import BatchResult
from bench.profile.workloads import TokenSpace

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class StepClock(StoppingCriteria):
    """Never stops generation; records when each step's token exists.

    On CUDA every event goes on the model's device's current stream (the one its kernels run on;
    `Event.record()` alone would use the current device's, which is another GPU for cuda:1), and
    the events are converted to wall-clock times from the start event, after one synchronisation.
    """

    def __init__(self, device: torch.device, batch: int):
        self.device = device
        self.cuda = device.type == "cuda"
        self.never = torch.zeros(batch, dtype=torch.bool, device=device)
        self.times: list[float] = []
        self.events: list[Any] = []

    def start(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)  # nothing earlier may run into the first step's time
            self.stream = torch.cuda.current_stream(self.device)
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record(self.stream)
        return time.perf_counter()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(self.stream)
            self.events.append(event)
        else:
            self.times.append(time.perf_counter())
        return self.never

    def step_times(self, submit: float) -> list[float]:
        if not self.cuda:
            return self.times
        torch.cuda.synchronize(self.device)
        return [submit + self.start_event.elapsed_time(e) / 1000.0 for e in self.events]


def _resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} asked for, but torch sees no CUDA device")
    return device


def _resolve_threads(requested: Any) -> int:
    if requested == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(requested)


class TransformersEngine:
    def __init__(self, settings: dict[str, Any], model_path: str, model_info: dict[str, Any]):
        self.settings = settings
        self.model_path = model_path
        self.model_info = model_info
        self.device = _resolve_device(settings.device)
        self.dtype = DTYPES[settings.weights_dtype]
        self.threads = _resolve_threads(settings.threads)
        self.model: Any = None
        self.tokenizer: Any = None

    # --- loading -------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        torch.set_num_threads(self.threads)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # what uses "the current device" is then the model's
        self._sync()
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            self.model_path,
            dtype=self.dtype,
            attn_implementation=self.settings.attn_implementation,
            local_files_only=True,
            trust_remote_code=self.model_info.get("trust_remote_code", False),  # only with pinned code (cell.py)
            use_safetensors=not self.model_info.get("allow_pickle", False),
        )
        model.to(self.device)
        model.eval()
        # Exact output lengths: no EOS stopping at all, rather than a logits mask (which costs time).
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = self._pad_id(model.config)
        model.generation_config.do_sample = False
        for name in ("temperature", "top_p", "top_k"):
            setattr(model.generation_config, name, None)
        if self.settings.compile:
            model.forward = torch.compile(model.forward)
        self._sync()
        load_s = time.perf_counter() - start
        self.model = model
        self.tokenizer = self._load_tokenizer()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return {"load_s": load_s, **self.describe()}

    def _load_tokenizer(self) -> Any:
        try:
            return transformers.AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        except (OSError, ValueError):
            return None  # token-id prompts need no tokenizer; prompt files do (encode() says so)

    @staticmethod
    def _pad_id(config: Any) -> int:
        for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
            value = getattr(config, name, None)
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        return 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- prompts -------------------------------------------------------------------------------

    def token_space(self) -> TokenSpace:
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        special: set[int] = set()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(text_config, name, None)
            special.update(value if isinstance(value, list) else [value] if value is not None else [])
        if self.tokenizer is not None:
            special.update(self.tokenizer.all_special_ids)
        return TokenSpace(int(text_config.vocab_size), frozenset(special))

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise RuntimeError(f"{self.model_path} has no tokenizer, so text prompts cannot be encoded")
        return list(self.tokenizer.encode(text, add_special_tokens=True))

    def decode(self, token_ids: list[int]) -> str | None:
        """Text of token ids, for run.store_text; None without a tokenizer (lengths and hashes remain)."""
        return None if self.tokenizer is None else str(self.tokenizer.decode(token_ids, skip_special_tokens=False))

    # --- execution -----------------------------------------------------------------------------

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        pad = self.model.generation_config.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], output_tokens: list[int]) -> BatchResult:
        ids, mask = self._left_padded(prompts)
        steps = max(output_tokens)
        clock = StepClock(self.device, len(prompts))
        submit = clock.start()
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=steps,
            min_new_tokens=None,
            do_sample=False,
            stopping_criteria=StoppingCriteriaList([clock]),
        )
        times = clock.step_times(submit)[:steps]
        produced = int(out.shape[1] - ids.shape[1])
        counts = [min(produced, n) for n in output_tokens]
        generated = out[:, ids.shape[1]:].tolist()  # one copy per batch, after timing: costs no step
        return BatchResult(
            submit_time=submit,
            step_times=times,
            output_tokens=counts,
            finish_reasons=["length" if c == n else "short" for c, n in zip(counts, output_tokens, strict=True)],
            output_token_ids=[row[:count] for row, count in zip(generated, counts, strict=True)],
        )

    @torch.inference_mode()
    def prefill_decode(self, depth_ids: list[list[int]], prompts: list[list[int]], gen_tokens: int) -> BatchResult:
        cache = None
        depth = len(depth_ids[0]) if depth_ids and depth_ids[0] else 0
        if depth:
            filled = self.model(input_ids=torch.tensor(depth_ids, device=self.device), use_cache=True)
            cache = filled.past_key_values
        clock = StepClock(self.device, len(prompts))
        submit = clock.start()
        out = self.model(
            input_ids=torch.tensor(prompts, device=self.device), past_key_values=cache, use_cache=True
        )
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        clock(token, None)
        tokens = [token]  # kept on the device; copied once after timing, for the response hashes
        cache = out.past_key_values
        for _ in range(gen_tokens - 1):
            out = self.model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            cache = out.past_key_values
            clock(token, None)
            tokens.append(token)
        times = clock.step_times(submit)
        return BatchResult(
            submit_time=submit,
            step_times=times,
            output_tokens=[len(times)] * len(prompts),
            finish_reasons=["length"] * len(prompts),
            context_depth=depth,
            output_token_ids=torch.cat(tokens, dim=1).tolist(),
        )

    # --- reporting -----------------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {}
        return {
            "gpu_peak_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device)),
            "gpu_peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
        }

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "engine": "transformers",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "threads": self.threads,
            "attn_implementation": self.settings.attn_implementation,
            "compile": self.settings.compile,
        }
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            info["device_name"] = torch.cuda.get_device_name(index)
            info["cuda_version"] = torch.version.cuda
        if self.model is not None:
            info["model_class"] = type(self.model).__name__
            resolved = getattr(self.model.config, "_attn_implementation", None)
            info["attn_implementation"] = resolved or info["attn_implementation"]
        return info

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
