"""JSON Schema for a kind's payload serializer, for clients (GET /api/kinds/)."""

from rest_framework import fields, serializers

_SIMPLE_TYPES = [
    (fields.BooleanField, {"type": "boolean"}),
    (fields.IntegerField, {"type": "integer"}),
    (fields.FloatField, {"type": "number"}),
    (fields.DecimalField, {"type": "string", "format": "decimal"}),
    (fields.UUIDField, {"type": "string", "format": "uuid"}),
    (fields.EmailField, {"type": "string", "format": "email"}),
    (fields.URLField, {"type": "string", "format": "uri"}),
    (fields.DateTimeField, {"type": "string", "format": "date-time"}),
    (fields.DateField, {"type": "string", "format": "date"}),
    (fields.CharField, {"type": "string"}),
    (fields.DictField, {"type": "object"}),
    (fields.JSONField, {}),
]


def field_schema(field: fields.Field) -> dict:
    if isinstance(field, serializers.BaseSerializer):
        if isinstance(field, serializers.ListSerializer):
            return {"type": "array", "items": serializer_schema(field.child)}
        return serializer_schema(field)
    if getattr(field, "json_schema", None):
        schema = dict(field.json_schema)
    elif isinstance(field, fields.ChoiceField):
        schema = {"enum": list(field.choices)}
    elif isinstance(field, fields.ListField):
        schema = {"type": "array", "items": field_schema(field.child)}
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
    elif isinstance(field, serializers.PrimaryKeyRelatedField):
        schema = {"type": "string"}
    else:
        schema = next((dict(s) for cls, s in _SIMPLE_TYPES if isinstance(field, cls)), {})
    for attr, key in (("min_value", "minimum"), ("max_value", "maximum")):
        if getattr(field, attr, None) is not None:
            schema[key] = getattr(field, attr)
    for attr, key in (("min_length", "minLength"), ("max_length", "maxLength")):
        if getattr(field, attr, None) is not None and schema.get("type") == "string":
            schema[key] = getattr(field, attr)
    if field.default is not fields.empty and not callable(field.default):
        schema["default"] = field.default
    if field.help_text:
        schema["description"] = str(field.help_text)
    return schema


def serializer_schema(serializer, *, extra_keys: bool = False) -> dict:
    """`additionalProperties` says whether keys the serializer does not declare are accepted
    (Kind.extra_keys) or a 400 (the default, nested objects included)."""
    if isinstance(serializer, type):
        serializer = serializer()
    writable = {name: f for name, f in serializer.fields.items() if not f.read_only}
    schema = {
        "type": "object",
        "properties": {name: field_schema(f) for name, f in writable.items()},
        "additionalProperties": extra_keys,
    }
    required = [name for name, f in writable.items() if f.required]
    if required:
        schema["required"] = required
    return schema
