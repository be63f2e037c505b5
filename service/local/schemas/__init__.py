"""The manager's packet schemas (PROTOCOL.md section 1) as JSON Schema data, and a checker.

The `*.json` files beside this module are the contract written as data, independent of the
service's own checks in `service.manager.packets`: one file per packet id, each built on
`envelope.json`. The manager stand-in validates every frame the service sends against them.

Two places where Python's `jsonschema` differs from the JavaScript the manager runs are
closed here, so the checker is at least as strict as the manager:

- Patterns are ECMA-262 regular expressions: `$` matches only at the very end of the string.
  Python's `re` also lets `$` match before a final newline, so `"1234567890123456\\n"` would
  pass `^[0-9]{15,22}$`. Patterns are translated (`$` to `\\Z`) before use.
- `"type": "integer"` accepts only JSON integers: `jsonschema` would take `5.0` as an integer.
  JavaScript cannot tell `5.0` from `5` once parsed, but a float in an integer field is a bug
  on the sending side, so it is refused. NaN and Infinity, which `JSON.parse` rejects, are not
  JSON either.
- The manager rejects floats and integers outside JavaScript's safe range anywhere in a
  frame, not only in the fields a schema types: `problems_in_sent` refuses such a number
  wherever it is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).parent
BASE_URI = "https://discord-cloud.invalid/schemas/"

# Which schema file each packet id is checked against, by who sends it.
SENT_BY_SERVICE: Mapping[str, str] = {
    "generic:boolean": "generic-boolean.json",
    "u2s:upload-finish": "u2s-upload-finish.json",
}
SENT_BY_MANAGER: Mapping[str, str] = {
    "s2u:upload-service-configuration": "s2u-upload-service-configuration.json",
    "s2u:upload-start": "s2u-upload-start.json",
    "s2u:upload-abort": "s2u-upload-abort.json",
}


@functools.cache
def ecma_to_python(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 pattern (as JSON Schema means it) so that `$` is end of input."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_to_python(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_integer(checker: Any, instance: Any) -> bool:
    return type(instance) is int


ManagerValidator = validators.extend(  # type: ignore[no-untyped-call]  # untyped in its stubs
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def _load() -> tuple[dict[str, dict[str, Any]], Registry]:
    schemas = {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(SCHEMA_DIR.glob("*.json"))
    }
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    registry: Registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return schemas, registry


SCHEMAS, REGISTRY = _load()


@functools.cache
def validator_for(filename: str) -> Any:
    return ManagerValidator(SCHEMAS[filename], registry=REGISTRY)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_frame(text: str | bytes) -> Any:
    """Parse a frame as `JSON.parse` would (no NaN or Infinity); raise `ValueError`."""
    return json.loads(text, parse_constant=_no_constant)


def _schema_violation(error: ValidationError) -> str:
    if error.context:  # a oneOf/anyOf: name the closest variant's fault, not just "none"
        error = best_match(error.context)
    where = "/".join(str(part) for part in error.absolute_path) or "(frame)"
    return f"{where}: {error.message}"


def problems(text: str | bytes, by_id: Mapping[str, str]) -> list[str]:
    """Why the manager (or the service, for `SENT_BY_MANAGER`) would drop this frame."""
    try:
        frame = parse_frame(text)
    except (ValueError, UnicodeDecodeError) as error:
        return [f"frame is not JSON: {error}"]
    found = [_schema_violation(e) for e in validator_for("envelope.json").iter_errors(frame)]
    if found:
        return found
    filename = by_id.get(frame["id"])
    if filename is None:
        return [f"packet id {frame['id']!r} is not one this peer accepts"]
    errors = sorted(validator_for(filename).iter_errors(frame), key=lambda e: list(e.path))
    return [_schema_violation(e) for e in errors]


def problems_in_sent(text: str | bytes) -> list[str]:
    """Why the manager would drop this frame from an upload service; `[]` when it would not."""
    return problems(text, SENT_BY_SERVICE) or list(_unsafe_numbers(parse_frame(text)))


# The range is envelope.json's, the schemas' own: this module stays independent of the service.
MAX_SAFE_INTEGER = SCHEMAS["envelope.json"]["$defs"]["safe_integer"]["maximum"]


def _unsafe_numbers(value: Any, where: str = "") -> Iterator[str]:
    """Each number in `value` that is not an integer in JavaScript's safe range, by path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _unsafe_numbers(item, f"{where}/{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unsafe_numbers(item, f"{where}/{index}" if where else str(index))
    elif type(value) is float or (type(value) is int and abs(value) > MAX_SAFE_INTEGER):
        yield f"{where or '(frame)'}: {value!r} is not an integer in JavaScript's safe range"


def problems_in_received(text: str | bytes) -> list[str]:
    """Why the upload service must ignore this frame from the manager; `[]` when it must not."""
    return problems(text, SENT_BY_MANAGER)
