"""The registry of task kinds.

A kind is a function registered in any app's `kinds.py`:

    @task_kind("demo.sleep", payload=SleepPayload, timeout=60)
    def sleep(ctx: TaskContext, payload: dict) -> dict:
        ...

It receives a TaskContext and the payload validated by its serializer, and returns a
JSON-able result. Raising an exception fails the attempt (and retries while attempts remain).

A payload key the serializer does not declare is a 400 (`{"payload": {"key": [...]}}`), so a
typo never runs with a default. A kind that takes free-form keys says so with
`extra_keys=True`: the undeclared keys are then kept in the payload as sent and given to the
kind with the validated ones. `/api/kinds/` shows either as the schema's `additionalProperties`.
"""

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from rest_framework import serializers

from apps.core.serializers import unknown_field_errors


class EmptyPayload(serializers.Serializer):
    """For kinds that take no payload."""


class PermanentError(Exception):
    """Raise from a kind to fail the task at once, without automatic retries."""


@dataclass(frozen=True)
class Kind:
    name: str
    func: Callable
    payload: type[serializers.Serializer]
    queue: str = "default"
    max_retries: int = 3
    timeout: int = 300
    retry_backoff: float = 2.0
    retry_backoff_max: float = 600.0
    staff_only: bool = False
    description: str = ""
    defaults: dict = field(default_factory=dict)
    extra_keys: bool = False

    def validate_payload(self, data, *, owner) -> tuple[dict, list]:
        """Validate a payload; raises serializers.ValidationError.

        Returns the JSON-able payload and the stored files it names (the task's inputs).
        """
        with _payload_serializer(self.payload, owner) as serializer:
            unknown = {} if self.extra_keys else unknown_field_errors(serializer, data)
            try:
                values, valid = serializer.run_validation(data), True
            except serializers.ValidationError:
                values, valid = None, False
            if valid and not unknown:
                shown = serializer.to_representation(values)
                return self._with_extra_keys(serializer, data, shown), list(_stored_files_in(values))
        # Refused: the errors in the words of is_valid(), from a serializer of this call's own.
        serializer = self.payload(data=data, context={"owner": owner})
        serializer.is_valid()
        raise serializers.ValidationError({**serializer.errors, **unknown})

    def load_payload(self, data, *, owner) -> dict:
        """Validate a stored payload again at run time and return typed values for the kind.

        Undeclared keys are not refused here: a stored payload was checked when it was accepted."""
        with _payload_serializer(self.payload, owner) as serializer:
            try:
                return self._with_extra_keys(serializer, data, serializer.run_validation(data))
            except serializers.ValidationError:
                pass
        # Refused: raised in the words of is_valid(), from a serializer of this call's own.
        serializer = self.payload(data=data, context={"owner": owner})
        serializer.is_valid(raise_exception=True)
        return self._with_extra_keys(serializer, data, serializer.validated_data)

    def _with_extra_keys(self, serializer, data, values) -> dict:
        if not self.extra_keys or not isinstance(data, dict):
            return values
        return {**{key: value for key, value in data.items() if key not in serializer.fields}, **values}


_prebuilt = threading.local()


@contextlib.contextmanager
def _payload_serializer(serializer_class: type[serializers.Serializer], owner):
    """This thread's instance of a payload serializer, with the owner in its context.

    What `serializer_class(data=..., context={"owner": owner})` would validate, without building
    the serializer's fields again: DRF deep-copies every declared field into each instance,
    which cost more than validating a small payload, at submission and again at every run.
    `run_validation()` keeps nothing of a call on the instance; fields, nested serializers and
    `validate_<field>` methods read the context from the root, as with a new instance. A payload
    serializer must therefore not shape its fields from the context in `__init__`."""
    built = _prebuilt.__dict__.setdefault("by_class", {})
    serializer = built.get(serializer_class)
    if serializer is None:
        serializer = built[serializer_class] = serializer_class()
    serializer._context = {"owner": owner}  # what DRF's __init__ keeps of context=
    try:
        yield serializer
    finally:
        serializer._context = {}


def _stored_files_in(value):
    from apps.files.models import StoredFile

    if isinstance(value, StoredFile):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _stored_files_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _stored_files_in(item)


_registry: dict[str, Kind] = {}


def task_kind(
    name: str,
    *,
    payload: type[serializers.Serializer] = EmptyPayload,
    queue: str = "default",
    max_retries: int = 3,
    timeout: int = 300,
    retry_backoff: float = 2.0,
    retry_backoff_max: float = 600.0,
    staff_only: bool = False,
    extra_keys: bool = False,
):
    if timeout > settings.TASK_MAX_TIMEOUT:
        raise ValueError(f"kind {name}: timeout {timeout}s exceeds TASK_MAX_TIMEOUT ({settings.TASK_MAX_TIMEOUT}s)")

    def register(func: Callable) -> Callable:
        if name in _registry and _registry[name].func is not func:
            raise ValueError(f"task kind {name!r} is registered twice")
        _registry[name] = Kind(
            name=name,
            func=func,
            payload=payload,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            staff_only=staff_only,
            extra_keys=extra_keys,
            description=(func.__doc__ or "").strip().split("\n")[0],
        )
        return func

    return register


def get_kind(name: str) -> Kind | None:
    return _registry.get(name)


def all_kinds() -> list[Kind]:
    return sorted(_registry.values(), key=lambda kind: kind.name)


def kinds_for(user) -> list[Kind]:
    return [kind for kind in all_kinds() if user.is_staff or not kind.staff_only]
