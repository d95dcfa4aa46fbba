"""A tool's JSON schema from its Python signature, and argument validation against it.

The schema covers what a tool's parameters can be: `str`, `int`, `float`,
`bool`, a `Literal` of strings or numbers (an enum), `list[T]` of those, and
`T | None` (the argument may be null). A parameter without a default is
required. The descriptions come from the docstring: its first paragraph
describes the tool, and an `Args:` section (Google style) each parameter.

`validate()` checks a model's arguments against such a schema and returns
them as Python values, or raises `InvalidArguments` with a message that the
model can act on (it is sent back as the call's result).
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class InvalidArguments(ValueError):
    """The model's arguments do not fit the tool; the message says how."""


def describe(function: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, JSON schema of the parameters) of `function`.

    Raises TypeError for a parameter whose type has no JSON form, or that has
    no annotation: a tool must say what it takes.
    """
    summary, arg_docs = _parse_docstring(inspect.getdoc(function) or "")
    hints = get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{function.__name__}: *args and **kwargs cannot be described")
        if name not in hints:
            raise TypeError(f"{function.__name__}: parameter {name!r} has no type annotation")
        schema = _type_schema(hints[name], f"{function.__name__}.{name}")
        if name in arg_docs:
            schema["description"] = arg_docs[name]
        if parameter.default is parameter.empty:
            required.append(name)
        else:
            schema["default"] = parameter.default
        properties[name] = schema
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return summary, parameters


def _type_schema(annotation: Any, where: str) -> dict[str, Any]:
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal and args and all(isinstance(a, str | int | float) for a in args):
        return {"enum": list(args)}
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _type_schema(args[0], where)}
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _type_schema(next(a for a in args if a is not type(None)), where)
        return {"anyOf": [inner, {"type": "null"}]}
    raise TypeError(f"{where}: {annotation!r} has no JSON schema here")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and the `Args:` section's descriptions by parameter."""
    paragraphs = doc.strip().split("\n\n")
    summary = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, current = True, None
            continue
        if not in_args:
            continue
        if not stripped or not line.startswith(" "):  # A blank line or "Returns:" ends it.
            in_args, current = False, None
            continue
        match = _ARG_LINE.match(line)
        if match and len(line) - len(line.lstrip()) <= 4:
            current = match.group(1)
            args[current] = match.group(2).strip()
        elif current is not None:
            args[current] = f"{args[current]} {stripped}".strip()
    return summary, args


def parse_arguments(text: str) -> dict[str, Any]:
    """The model's raw argument text as a JSON object (empty text is `{}`)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidArguments(f"the arguments are not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise InvalidArguments(f"the arguments must be a JSON object, not {kind_of(value)}")
    return value


def validate(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`arguments` checked against the object `schema` (from `describe`), defaults filled in."""
    properties: dict[str, Any] = schema.get("properties", {})
    unknown = sorted(set(arguments) - set(properties))
    if unknown and schema.get("additionalProperties") is False:
        known = ", ".join(properties) or "none"
        raise InvalidArguments(f"unknown argument {unknown[0]!r} (it takes: {known})")
    missing = [name for name in schema.get("required", []) if name not in arguments]
    if missing:
        raise InvalidArguments(f"missing required argument {missing[0]!r}")
    values: dict[str, Any] = {}
    for name, spec in properties.items():
        if name in arguments:
            values[name] = _check(arguments[name], spec, name)
        elif "default" in spec:
            values[name] = spec["default"]
    return values


def _check(value: Any, spec: dict[str, Any], where: str) -> Any:
    if "anyOf" in spec:
        if value is None:
            return None
        return _check(value, spec["anyOf"][0], where)
    if "enum" in spec:
        if value not in spec["enum"] or isinstance(value, bool):
            choices = ", ".join(json.dumps(c) for c in spec["enum"])
            raise InvalidArguments(f"{where} must be one of {choices}, not {json.dumps(value)}")
        return value
    kind = spec.get("type")
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)  # 3.0 is an integer in JSON Schema.
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "array" and isinstance(value, list):
        return [_check(v, spec["items"], f"{where}[{n}]") for n, v in enumerate(value)]
    raise InvalidArguments(f"{where} must be {_article(kind)}, not {kind_of(value)}")


def _article(kind: Any) -> str:
    return {"integer": "an integer", "array": "an array"}.get(kind, f"a {kind}")


def kind_of(value: Any) -> str:
    """What a JSON value is, with its article: "a string", "an array", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
