"""Workloads of a profile: what is asked (synthetic token-id prompts with seeded lengths, or a file)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from bench.profile.strict import Strict


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
