"""The management API's OpenAPI schema states every answer an operation can give.

drf-spectacular documents the success answers it reads from `extend_schema`; the
refusals are common to every view, so one postprocessing hook adds them (see
SPECTACULAR_SETTINGS) rather than each view repeating them:

- 400 with the fields in error (`{"field": ["message"]}`, nested paths such as
  `routes[0].weight` as keys) for every operation that reads a body or a query;
- 401 and 403 (`{"detail": ...}`) everywhere: no credentials, a bad token, a
  user who may not do this;
- 404 (`{"detail": ...}`) wherever the path names an object;
- 415 where a body is read: JSON only.

`ManagementAutoSchema` states what the fields check that drf-spectacular leaves out,
so that what the schema calls valid is what the API accepts: a string that may not
be blank has `minLength: 1`, a decimal that may not be negative has a pattern of
digits only, a serializer that refuses unknown keys (`refuses_unknown_keys`) has
`additionalProperties: false`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ManagementAutoSchema(AutoSchema):
    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and getattr(serializer, "refuses_unknown_keys", False):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(
        self, field: Any, direction: str, bypass_extensions: bool = False
    ) -> dict[str, Any]:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request" or not isinstance(schema, dict):
            return schema
        if (
            isinstance(field, serializers.CharField)
            and not field.allow_blank
            and schema.get("type") == "string"
            and "enum" not in schema
            and not schema.get("minLength")
        ):
            schema["minLength"] = 1
        if (
            isinstance(field, serializers.DecimalField)
            and field.min_value is not None
            and field.min_value >= 0
            and field.max_digits is not None
            and field.decimal_places is not None
        ):
            whole, places = field.max_digits - field.decimal_places, field.decimal_places
            schema["pattern"] = rf"^(?:\d{{1,{whole}}}(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}})$"
            schema.pop(
                "format", None
            )  # "decimal" makes generators send numbers: the API takes a string
        return schema


ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "description": "Why the request was refused.",
}
FIELD_ERRORS = {
    "type": "object",
    "additionalProperties": {},
    "description": 'The fields in error, each with its messages (`{"name": ["This field is '
    'required."]}`); '
    "`non_field_errors` or `detail` when no one field is to blame.",
}
_METHODS = ("get", "put", "post", "patch", "delete")


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def declare_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR)
    schemas.setdefault("FieldErrors", FIELD_ERRORS)
    for path_item in result.get("paths", {}).values():
        for method in _METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            parameters = operation.get("parameters", [])
            reads_body = method in ("put", "post", "patch")
            responses = operation.setdefault("responses", {})
            if reads_body or any(p.get("in") == "query" for p in parameters) or method == "delete":
                responses.setdefault(
                    "400", _answer("Invalid input, or a change the rules refuse.", "FieldErrors")
                )
            responses.setdefault("401", _answer("No credentials, or a bad token.", "Error"))
            responses.setdefault("403", _answer("Not allowed for this user.", "Error"))
            if any(p.get("in") == "path" for p in parameters):
                responses.setdefault("404", _answer("No such object.", "Error"))
            if reads_body:
                responses.setdefault("415", _answer("The body is not JSON.", "Error"))
    return result
