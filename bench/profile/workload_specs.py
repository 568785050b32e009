"""Workloads of a profile: what is asked. Independent requests (synthetic token-id prompts with seeded
lengths, or a prompt file), conversations (turns that resend their history), or questions over shared
documents (a prefix-cache hit rate known in advance); any of them salted against caches, and with a
JSON schema or tools for structured answers.

A workload's dump is part of its cells' identity (bench/profile/cells.py): fields added after the
first cells were measured (ADDED_FIELDS) stay out of it while they keep their defaults, so existing
workloads keep their cell ids."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from bench.profile.strict import Strict
from bench.profile.structured_specs import ResponseFormatSpec, ToolChoice, ToolSpec, unique_tool_names


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
    return {"dist": "fixed", "value": value} if isinstance(value, int) and not isinstance(value, bool) else value


class FixedSeconds(Strict):
    dist: Literal["fixed"]
    value: Annotated[float, Field(ge=0)]


class UniformSeconds(Strict):
    dist: Literal["uniform"]
    min: Annotated[float, Field(ge=0)]
    max: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> UniformSeconds:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class ExponentialSeconds(Strict):
    dist: Literal["exponential"]
    mean: Annotated[float, Field(ge=0)]


SecondsDist = Annotated[FixedSeconds | UniformSeconds | ExponentialSeconds, Field(discriminator="dist")]


def _bare_number_is_fixed(value: Any) -> Any:
    return {"dist": "fixed", "value": value} if isinstance(value, int | float) and not isinstance(value, bool) \
        else value


class DocumentsSpec(Strict):
    """A pool of `count` documents of `tokens` tokens each; every request begins with one of them, drawn by
    its popularity (Zipf: document k of D with weight 1 / k^zipf_exponent; or uniform), then asks its own
    question (the workload's input_tokens). A cache that keeps every document it has seen serves all but
    each document's first reading: that ideal hit rate is known before the run."""

    count: Annotated[int, Field(ge=1)]
    tokens: Annotated[int, Field(ge=1)]
    popularity: Literal["zipf", "uniform"] = "zipf"
    zipf_exponent: Annotated[float, Field(gt=0)] = 1.0


WorkloadKind = Literal["requests", "conversation", "shared-documents"]


class WorkloadSpec(Strict):
    """What is asked. kind `requests` (the default): independent requests, synthetic token-id prompts with
    seeded lengths or a JSONL prompt file. `conversation`: each conversation holds `turns` user messages
    (input_tokens each) and answers (output_tokens each), every turn resending the whole history, with
    `think_time_s` between an answer and the next message; or conversations replayed from a file.
    `shared-documents`: each request is a document from `documents` followed by a question."""

    name: str
    kind: WorkloadKind = "requests"
    input_tokens: LengthDist | None = None
    output_tokens: LengthDist
    seed: int = 0
    shared_prefix_tokens: Annotated[int, Field(ge=0)] = 0
    prompts_file: str | None = Field(None, description="JSONL: one {'prompt': text} per line (real text)")
    turns: LengthDist | None = Field(None, description="conversation: user messages per conversation")
    think_time_s: SecondsDist | None = Field(None, description="conversation: seconds between an answer and the "
                                                               "next message (default 0)")
    conversations_file: str | None = Field(None, description="conversation: JSONL, one conversation per line")
    documents: DocumentsSpec | None = None
    salt: bool = Field(False, description="begin every request (conversation) with tokens of its own, so no "
                                          "cache can serve it")
    response_format: ResponseFormatSpec | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None

    _bare = field_validator("input_tokens", "output_tokens", "turns", mode="before")(_bare_int_is_fixed)
    _bare_seconds = field_validator("think_time_s", mode="before")(_bare_number_is_fixed)
    _tools = field_validator("tools")(unique_tool_names)

    @model_validator(mode="after")
    def _source(self) -> WorkloadSpec:
        if self.kind == "conversation":
            if (self.conversations_file is None) == (self.input_tokens is None):
                raise ValueError("a conversation takes exactly one of 'input_tokens' (each user message, with "
                                 "'turns') or 'conversations_file'")
            if self.input_tokens is not None and self.turns is None:
                raise ValueError("a conversation with synthetic messages needs 'turns' (messages per conversation)")
            if self.prompts_file is not None:
                raise ValueError("'prompts_file' is for kind requests; a conversation replays 'conversations_file'")
            if self.shared_prefix_tokens:
                raise ValueError("'shared_prefix_tokens' is for independent requests: a conversation shares its "
                                 "own history")
        elif (self.input_tokens is None) == (self.prompts_file is None):
            raise ValueError("give exactly one of 'input_tokens' (synthetic prompts) or 'prompts_file'")
        for name in ("turns", "think_time_s", "conversations_file"):
            if self.kind != "conversation" and getattr(self, name) is not None:
                raise ValueError(f"'{name}' belongs to kind conversation")
        if (self.kind == "shared-documents") != (self.documents is not None):
            raise ValueError("kind shared-documents takes 'documents' (and only it does)")
        if self.kind == "shared-documents" and self.prompts_file is not None:
            raise ValueError("shared documents are synthetic: give 'input_tokens' (the question), not 'prompts_file'")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("'tool_choice' needs 'tools'")
        return self

    @property
    def structured(self) -> str | None:
        """What the answers are judged on instead of their length: json_schema, json_object or tools."""
        if self.tools:
            return "tools"
        return self.response_format.type if self.response_format is not None else None


# Fields added after the first cells were measured: a workload's identity holds them only when they
# differ from these defaults, so a workload that does not use them keeps the id it always had.
ADDED_FIELDS: dict[str, Any] = {"kind": "requests", "turns": None, "think_time_s": None, "conversations_file": None,
                                "documents": None, "salt": False, "response_format": None, "tools": None,
                                "tool_choice": None}
