"""An MCP tool's input schema: checked once per listing, then each call's arguments against it.

Servers describe their tools' arguments in full JSON Schema (nested objects,
`$ref`/`$defs`, `oneOf`, type lists, bounds, patterns), which chatui's own
validator (`chatui.tools.schema`, made for the built-ins' signatures) does
not cover; the `jsonschema` library, which the `mcp` SDK depends on, does.

- `ToolSchema.load(schema)`, once per listing: the schema is checked against
  its draft's meta-schema; one that is not valid, or not for an object,
  raises `BadSchema` with the reason, and its tool is left out (a schema the
  APIs refuse would fail every request, not just that tool's calls).
- `ToolSchema.check(arguments)`, before each call: the best error becomes an
  `InvalidArguments` the model can act on. Nothing is filled in or coerced:
  the arguments go to the server as the model wrote them, and the server
  applies its own defaults.
- `parameters`, what the model APIs are sent: the schema as given, with
  `"type": "object"` at its root (both APIs require it) and without a root
  `oneOf`/`anyOf`/`allOf` (Anthropic refuses the whole request for one);
  those are still enforced by `check`, and their branches' properties are
  listed at the root so that the model sees every argument.
- Checking a schema against its meta-schema takes about 1 to 5 ms, on the
  event loop; a server with a hundred tools lists them again and again (on
  each change, each restart), so a schema already checked is taken from a
  cache, by its content.
- A `$ref` resolves only inside the schema: jsonschema would fetch a remote
  one by default, and a server's schema must not make chatui fetch a URL. A
  call whose check needs such a reference is left to the server's own check.
- A `pattern` is left to the server's own check, and not read when the schema
  is checked: Python's `re` backtracks while holding the GIL, so a pattern
  such as `^(a+)+$` would freeze chatui for hours on a 40-character argument
  (no stop could end it); and patterns are ECMA-262's, which `re` reads
  otherwise (`\\p{L}`, `(?<name>…)`): such a tool is still usable.
  (`patternProperties` still apply to the names of the arguments.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from chatui.tools.schema import InvalidArguments, kind_of

COMBINATORS = ("allOf", "anyOf", "oneOf")
CACHE_SIZE = 2048  # Schemas kept checked; past that the cache starts again.
MESSAGE_LIMIT = 300  # Characters of a validation message (it quotes the argument).
_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry()  # Retrieves nothing.


class BadSchema(ValueError):
    """A tool's input schema that cannot be used; the message says why (after "the tool: ")."""


@dataclass(frozen=True)
class ToolSchema:
    """A tool's input schema as the server gave it, its validator, and what the APIs are sent."""

    schema: dict[str, Any]
    parameters: dict[str, Any]
    validator: Any  # A jsonschema validator for `schema`.

    @classmethod
    def load(cls, schema: object) -> ToolSchema:
        """`schema` checked as a JSON Schema for an object, or `BadSchema` saying why not."""
        try:
            key = json.dumps(schema, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            return cls._check(schema)
        if (known := _checked.get(key)) is None:
            if len(_checked) >= CACHE_SIZE:
                _checked.clear()
            known = _checked[key] = cls._check(schema)
        return known

    @classmethod
    def _check(cls, schema: object) -> ToolSchema:
        if not isinstance(schema, dict):
            raise BadSchema(f"its input schema is {kind_of(schema)}, not a JSON object")
        kind = schema.get("type", "object")
        if kind != "object" and not (isinstance(kind, list) and "object" in kind):
            raise BadSchema(
                f"its input schema is for {_types(kind)}, not an object, and the model APIs "
                "take only object arguments"
            )
        try:
            validator_class = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            validator_class.check_schema(schema, format_checker=_but_regex(validator_class))
        except SchemaError as error:
            reason = f"its input schema is not valid JSON Schema ({_cut(error.message)})"
            raise BadSchema(reason) from None
        except (TypeError, ValueError, RecursionError):  # An unhashable "$schema", say.
            raise BadSchema("its input schema is not valid JSON Schema") from None
        validator = _patterns_unchecked(validator_class)(schema, registry=_LOCAL_ONLY)
        return cls(schema, api_parameters(schema), validator)

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """`arguments`, unchanged, if they fit; else `InvalidArguments` with the best reason."""
        try:
            error = best_match(self.validator.iter_errors(arguments))
        except referencing.exceptions.Unresolvable:
            return arguments  # A reference outside the schema: the server checks.
        except RecursionError:
            raise InvalidArguments("the arguments are nested too deeply to check") from None
        if error is not None:
            raise InvalidArguments(describe_error(error))
        return arguments


_checked: dict[str, ToolSchema] = {}  # By the schema's JSON, keys sorted.
_unchecking: dict[Any, Any] = {}  # Each draft's validator class, without `pattern`.


def _but_regex(validator_class: Any) -> jsonschema.FormatChecker:
    """The draft's own format checker, but for `regex` (a `pattern` is not read here)."""
    checker = jsonschema.FormatChecker(())
    checker.checkers = {
        name: check
        for name, check in validator_class.FORMAT_CHECKER.checkers.items()
        if name != "regex"
    }
    return checker


def _patterns_unchecked(validator_class: Any) -> Any:
    """`validator_class` with `pattern` left to the server (see the module's docstring)."""
    if (unchecking := _unchecking.get(validator_class)) is None:
        unchecking = jsonschema.validators.extend(validator_class, {"pattern": _left_to_server})
        _unchecking[validator_class] = unchecking
    return unchecking


def _left_to_server(*_: Any) -> None:
    """A `pattern` keyword: no error here, whatever the string."""


def api_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as the model APIs accept it (see the module's docstring)."""
    parameters = {key: value for key, value in schema.items() if key not in COMBINATORS}
    parameters["type"] = "object"
    properties = schema.get("properties")
    merged: dict[str, Any] = dict(properties) if isinstance(properties, dict) else {}
    for key in COMBINATORS:
        branches = schema.get(key)
        for branch in branches if isinstance(branches, list) else []:
            listed = branch.get("properties") if isinstance(branch, dict) else None
            for name, spec in (listed if isinstance(listed, dict) else {}).items():
                merged.setdefault(name, spec)
    if merged or "properties" in schema:
        parameters["properties"] = merged
    return parameters


def describe_error(error: ValidationError) -> str:
    """A validation error as a sentence part the model can act on."""
    path = _path(error.absolute_path)
    value = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((name for name in value if name not in error.instance), None)
        if missing is not None:
            if not path:
                return f"missing required argument {missing!r}"
            return f"{path}: missing required property {missing!r}"
    if error.validator == "type" and path:
        return f"{path} must be {_types(value)}, not {kind_of(error.instance)}"
    if error.validator == "enum" and path and isinstance(value, list):
        choices = ", ".join(json.dumps(choice) for choice in value)
        return _cut(f"{path} must be one of {choices}, not {_json(error.instance)}")
    message = _cut(error.message)
    return f"{path}: {message}" if path else message


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _types(kind: Any) -> str:
    names = kind if isinstance(kind, list) else [kind]
    words = [_ARTICLES.get(str(name), f"a {name}") for name in names]
    return " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " or " + words[-1]


_ARTICLES = {
    "object": "an object",
    "array": "an array",
    "integer": "an integer",
    "null": "null",
}


def _json(value: Any) -> str:
    try:
        return _cut(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return kind_of(value)


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else f"{text[: MESSAGE_LIMIT - 1]}…"
