"""Management API input: JSON types as the schema states them, names that can be looked up.

The API takes JSON bodies only (`targetgroups.api.JsonApi`), so DRF's form-friendly
coercions would only accept what the schema refuses: `"enabled": 0` or `"true"`, a
`"name": 5`, a price given as a number. `JsonTypesMixin` holds each field to its
JSON type before the field sees the value. `NameField` looks an object up by name
and refuses what PostgreSQL could never store (a NUL character) with a 400 instead
of letting the query fail with a 500.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.relations import ManyRelatedField

NUL_MESSAGE = "Null characters are not allowed."

# The first match wins: BooleanField before IntegerField (a bool is an int in Python).
_JSON_TYPES: tuple[tuple[type[serializers.Field], tuple[type, ...], str], ...] = (
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.DecimalField, (str,), "a decimal number written as a string"),
    (serializers.CharField, (str,), "a string"),
    (serializers.IntegerField, (int, float), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.ListField, (list,), "a list"),
    (ManyRelatedField, (list,), "a list"),
    (serializers.SlugRelatedField, (str,), "a string"),
)


_NO_BLANK = (serializers.DecimalField, serializers.SlugRelatedField)


def json_type_errors(fields: dict[str, serializers.Field], data: Any) -> dict[str, list[str]]:
    """`{field: [message]}` for each given value whose JSON type is not its field's."""
    if not isinstance(data, dict):
        return {}
    errors: dict[str, list[str]] = {}
    for name, field in fields.items():
        if field.read_only or name not in data or data[name] is None:
            continue  # null: the field's own allow_null decides
        value = data[name]
        for field_class, types, label in _JSON_TYPES:
            if isinstance(field, field_class):
                if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                    errors[name] = [f"Expected {label}."]
                elif value == "" and isinstance(field, _NO_BLANK):
                    # DRF reads "" as null for these; the schema says a number or a name.
                    errors[name] = [f"Expected {label}, or null for none."]
                break
    return errors


class JsonTypesMixin:
    # A serializer whose fields take only their own JSON type (see the module docstring). A
    # comment, not a docstring: drf-spectacular would show it as every serializer's description.

    def to_internal_value(self, data: Any) -> Any:
        errors = json_type_errors(self.fields, data)  # type: ignore[attr-defined]
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


@extend_schema_field({"type": "string", "minLength": 1})
class NameField(serializers.SlugRelatedField):
    """An object named by its slug (a balancer's name, an instance's instance_id).

    Refuses a NUL character before the lookup: PostgreSQL text cannot hold one, so
    the query would fail with a DataError (a 500) rather than find nothing.
    """

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Expected a string.")
        if "\x00" in data:
            raise serializers.ValidationError(NUL_MESSAGE)
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class ObjectField(serializers.JSONField):
    """A JSON object (not a list, a string or null)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return super().to_internal_value(data)
