"""A small validator for the JSON-schema subset used by Klaviyo's request bodies.

Covers what ``Operation.request_body`` uses: type, nullable, required, properties, items, enum,
oneOf and the date-time format. Kept in the package (instead of depending on ``jsonschema``) so
the simulator runs with the project's runtime dependencies only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


class SchemaError(ValueError):
    def __init__(self, pointer: str, message: str):
        super().__init__(message)
        self.pointer = pointer


def validate(value: Any, schema: dict[str, Any], pointer: str = "") -> None:
    """Raise SchemaError (with a JSON pointer to the offending member) when ``value`` does not fit."""
    if value is None:
        if schema.get("nullable") or ("type" not in schema and "oneOf" not in schema):
            return
        raise SchemaError(pointer or "/", f"'{pointer or '/'}' may not be null")
    if "oneOf" in schema:
        matching = 0
        for option in schema["oneOf"]:
            try:
                validate(value, option, pointer)
                matching += 1
            except SchemaError:
                continue
        if matching != 1:
            raise SchemaError(pointer, f"'{pointer}' does not match exactly one allowed shape")
        return
    expected = schema.get("type")
    if expected:
        ok = isinstance(value, _TYPES[expected]) and not (
            expected in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            raise SchemaError(pointer, f"'{pointer}' must be of type {expected}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(pointer, f"{value!r} is not a valid choice for '{pointer}'")
    if schema.get("format") == "date-time" and isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as err:
            raise SchemaError(pointer, f"'{pointer}' must be an ISO 8601 datetime") from err
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{pointer}/{name}", f"'{pointer}/{name}' is a required field")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                validate(value[name], sub, f"{pointer}/{name}")
    if isinstance(value, list) and "items" in schema:
        for position, item in enumerate(value):
            validate(item, schema["items"], f"{pointer}/{position}")
