"""Structured answers: judged on validity, not length. A JSON-schema answer must parse and validate
against the schema; a json_object answer must parse to an object; a tool call must name a tool the
request defined, with arguments that validate against its parameters. The cell counts the valid
answers, and `latency_cost` prices the structure against the same workload without it."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from bench.results.records import RequestRecord


def _schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"does not match the schema at {where}: {error.message}"[:300]


def _parsed(text: str, what: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, f"{what} is not JSON ({exc.msg} at character {exc.pos})"


def judge_answer(options: dict[str, Any], answer: str, tool_calls: list[dict[str, str]]) -> tuple[bool, str | None]:
    """(valid, why not) of one answer to a request with these structured options (response_format, tools)."""
    tools = options.get("tools") or []
    if tools:
        if not tool_calls:
            return False, "no tool call"
        defined = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
        for call in tool_calls:
            if call.get("name") not in defined:
                return False, f"a call of {call.get('name')!r}, which the request did not define"
            arguments, problem = _parsed(call.get("arguments") or "", f"the arguments of {call['name']}")
            if problem:
                return False, problem
            problem = _schema_problem(arguments, defined[call["name"]])
            if problem:
                return False, f"the arguments of {call['name']} {problem}"
        return True, None
    response_format = options.get("response_format") or {}
    value, problem = _parsed(answer, "the answer")
    if problem:
        return False, problem
    if response_format.get("type") == "json_object":
        return (True, None) if isinstance(value, dict) else (False, "the answer is JSON but not an object")
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    problem = _schema_problem(value, schema)
    return (False, f"the answer {problem}") if problem else (True, None)


def structured_summary(records: list[RequestRecord]) -> dict[str, Any] | None:
    """How many structured answers were valid, and the most common reasons the others were not."""
    judged = [r for r in records if not r.warmup and r.structured is not None]
    if not judged:
        return None
    answered = [r for r in judged if r.ok]
    valid = sum(1 for r in answered if r.structured_valid)
    problems = Counter(r.structured_problem for r in answered if not r.structured_valid and r.structured_problem)
    return {"kind": judged[0].structured, "requests": len(judged), "answered": len(answered), "valid": valid,
            "invalid": len(answered) - valid, "valid_rate": valid / len(answered) if answered else None,
            "problems": dict(problems.most_common(5))}


def latency_cost(structured: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """What the structure costs: TTFT and E2E p50 of a structured cell against the cell of the same workload
    without it (both cell summaries), as ratios; a ratio of 1.3 is 30% slower."""
    def p50(summary: dict[str, Any], name: str) -> float | None:
        return ((summary.get("metrics") or {}).get(name) or {}).get("p50")

    cost: dict[str, Any] = {"baseline": plain.get("cell_id")}
    for name in ("ttft", "e2e_latency", "tpot"):
        a, b = p50(structured, name), p50(plain, name)
        cost[f"{name}_p50_ratio"] = a / b if a is not None and b else None
    return cost


STRUCTURE_FIELDS = ("response_format", "tools", "tool_choice")


def baseline_for(summary: dict[str, Any], summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed cell that asked the same as a structured cell without the structure: same model, engine
    and scenario point, a workload equal but for its response_format and tools."""
    identity = summary.get("identity") or {}

    def plain(ident: dict[str, Any]) -> dict[str, Any]:
        workload = {k: v for k, v in (ident.get("workload") or {}).items() if k not in STRUCTURE_FIELDS}
        return {**ident, "workload": workload}

    if not any(k in (identity.get("workload") or {}) for k in STRUCTURE_FIELDS):
        return None
    wanted = plain(identity)
    for other in summaries:
        ident = other.get("identity") or {}
        if other is summary or other.get("status") != "COMPLETED" or \
                any(k in (ident.get("workload") or {}) for k in STRUCTURE_FIELDS):
            continue
        if plain(ident) == wanted:
            return other
    return None
