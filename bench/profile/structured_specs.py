"""Structured output and tools of a workload, as the OpenAI API spells them: a JSON schema the answer
must follow (`response_format`), or functions the model may call (`tools`). Every schema is checked
against the JSON Schema meta-schema when the profile is loaded, so a schema that is not one is bad
input naming its field, not a cell that fails later."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from bench.profile.strict import Strict


def check_json_schema(schema: Any) -> dict[str, Any]:
    """The schema itself when it is valid JSON Schema (by its $schema, else draft 2020-12); ValueError saying
    what is wrong and where otherwise."""
    import jsonschema

    if not isinstance(schema, dict):
        raise ValueError(f"a JSON Schema must be an object, not {type(schema).__name__}")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ValueError(f"not valid JSON Schema at {where}: {exc.message}") from None
    return schema


class JsonSchemaSpec(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = "answer"
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON Schema every answer must validate against")
    strict: bool | None = None

    _valid = field_validator("schema_")(lambda value: check_json_schema(value))


class ResponseFormatSpec(Strict):
    """`json_schema`: answers validate against the schema; `json_object`: answers are a JSON object."""

    type: Literal["json_schema", "json_object"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatSpec:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("give json_schema with type json_schema (and only then)")
        return self


class FunctionSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}},
                                       description="a JSON Schema of the call's arguments")

    _valid = field_validator("parameters")(lambda value: check_json_schema(value))


class ToolSpec(Strict):
    type: Literal["function"] = "function"
    function: FunctionSpec


ToolChoice = Literal["auto", "required", "none"]


def unique_tool_names(tools: list[ToolSpec] | None) -> list[ToolSpec] | None:
    names = [t.function.name for t in tools or []]
    if len(names) != len(set(names)):
        raise ValueError("tool names must be unique")
    return tools


def request_options(response_format: ResponseFormatSpec | None, tools: list[ToolSpec] | None,
                    tool_choice: ToolChoice | None) -> dict[str, Any]:
    """The request body's fields for a workload's structure, as the API spells them (`schema`, not `schema_`)."""
    body: dict[str, Any] = {}
    if response_format is not None:
        body["response_format"] = response_format.model_dump(by_alias=True, exclude_none=True)
    if tools:
        body["tools"] = [t.model_dump(by_alias=True, exclude_none=True) for t in tools]
        body["tool_choice"] = tool_choice or "required"
    return body
