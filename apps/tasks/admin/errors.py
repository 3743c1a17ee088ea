"""Service validation errors as form errors: the admin's one place for this mapping.

Services raise DRF's ValidationError today (field → messages, nested for payloads); the
"Submit a copy" form and the schedule form show them next to their fields.
"""

import json

from rest_framework import serializers


def _flatten_errors(errors) -> list[str]:
    if isinstance(errors, dict):
        return [f"{key}: {message}" for key, value in errors.items() for message in _flatten_errors(value)]
    if isinstance(errors, list):
        return [message for item in errors for message in _flatten_errors(item)]
    return [str(errors)]


def add_validation_errors(form, exc: serializers.ValidationError) -> None:
    """Each field's messages on that field (nested ones flattened to "key: message"), the rest on the form."""
    for field, errors in (exc.detail if isinstance(exc.detail, dict) else {None: exc.detail}).items():
        target = field if field in form.fields else None
        form.add_error(target, _flatten_errors(errors))


def add_schedule_errors(form, exc: serializers.ValidationError) -> None:
    """The schedule services' errors: a list of messages per field, anything nested as its JSON."""
    for field, messages_ in exc.detail.items():
        texts = messages_ if isinstance(messages_, list) else [json.dumps(messages_)]
        form.add_error(field if field in form.fields else None, [str(text) for text in texts])
