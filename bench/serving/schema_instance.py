"""A JSON value that satisfies a JSON Schema, for the calibration endpoint's structured answers: the
common keywords (type, properties, required, items, enum, const, anyOf/oneOf/allOf, minimum,
minLength, minItems), which is what benchmark schemas use. Not a general solver."""

from __future__ import annotations

from typing import Any


def instance(schema: Any, depth: int = 0) -> Any:
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return instance(schema[key][0], depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part if isinstance(part, dict) else {})
        return instance(merged, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: instance(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [instance(schema.get("items") or {}, depth + 1) for _ in range(max(1, int(schema.get("minItems", 1))))]
    if kind == "string":
        return "t" * max(1, int(schema.get("minLength", 1)))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    return None

