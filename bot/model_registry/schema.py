"""A description as RunComfy's JSON input schema, and what differs between a description and RunComfy's schema.

RunComfy's model pages and `GET /v1/models/{id}` show each model's inputs as
a JSON schema (`properties`, `required`, `enum`, `minimum`/`maximum`). The
emulator serves `input_schema(model)` and checks request bodies against it
with `additionalProperties: false`, the way the real API refuses unknown
fields; `python -m bot check` compares the real schema with the description
(`differences`), so an operator learns that a model changed before members do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.model_registry.description import ModelDescription


def input_schema(model: ModelDescription) -> dict[str, Any]:
    """The model's inputs as a JSON schema: exactly the fields the description names, nothing else allowed."""
    inputs = model.inputs
    properties: dict[str, Any] = {
        inputs.prompt: {"title": "Prompt", "type": "string", "minLength": 1, "maxLength": inputs.prompt_max}
    }
    required = [inputs.prompt]
    if inputs.image is not None:
        url = {"type": "string", "format": "uri", "pattern": "^https?://"}
        properties[inputs.image.field] = (
            {"title": "Images", "type": "array", "items": url, "minItems": 1} if inputs.image.list else url
        )
        required.append(inputs.image.field)
    if inputs.aspect_ratio is not None:
        shape = inputs.aspect_ratio
        properties[shape.field] = {
            "type": "string",
            "enum": list(dict.fromkeys(shape.values.values())),
            "default": shape.values[shape.default],
        }
    if inputs.seed is not None:
        properties[inputs.seed.field] = {"type": "integer", "minimum": 0, "maximum": inputs.seed.max, "default": 0}
    if inputs.count is not None:
        properties[inputs.count.field] = {"type": "integer", "minimum": 1, "maximum": inputs.count.max, "default": 1}
    for name, value in inputs.fixed.items():
        properties[name] = {"type": _json_type(value), "default": value}
    return {
        "type": "object",
        "title": "Input",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def differences(model: ModelDescription, schema: Mapping[str, Any]) -> list[str]:
    """What RunComfy's `schema` says that the description does not match, one short phrase each (empty: agrees).

    Checked: every field the bot may send exists upstream; every field
    upstream requires is one the bot sends; each enum value the bot may send
    is allowed upstream; the bot's seed and count ranges fit upstream's.
    """
    upstream = schema.get("properties")
    if not isinstance(upstream, Mapping):
        return ["RunComfy's schema lists no properties"]
    ours = input_schema(model)["properties"]
    found: list[str] = []
    for name, mine in ours.items():
        theirs = upstream.get(name)
        if not isinstance(theirs, Mapping):
            found.append(f"`{name}` is not an input of the model")
            continue
        found.extend(_field_differences(name, mine, theirs))
    required = schema.get("required")
    for name in required if isinstance(required, list) else []:
        if isinstance(name, str) and name not in ours:
            found.append(f"`{name}` is required upstream but not described")
    return found


def _field_differences(name: str, mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    their_type = theirs.get("type")
    if isinstance(their_type, str) and their_type != mine["type"]:
        found.append(f"`{name}` is {their_type} upstream, {mine['type']} here")
    if "enum" in mine and isinstance(theirs.get("enum"), list):
        extra = [value for value in mine["enum"] if value not in theirs["enum"]]
        if extra:
            found.append(f"`{name}` upstream does not allow {', '.join(map(str, extra))}")
    for bound, sign in (("minimum", 1), ("maximum", -1)):
        their_bound = theirs.get(bound)
        # Ours must lie inside theirs: our minimum at or above theirs, our maximum at or below.
        if bound in mine and isinstance(their_bound, int | float) and sign * (mine[bound] - their_bound) < 0:
            found.append(f"`{name}` {bound} is {their_bound:g} upstream, {mine[bound]:g} here")
    return found


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "number" if isinstance(value, float) else "string"
