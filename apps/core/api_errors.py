"""The one DRF exception handler: every API error, ours or DRF's, in one JSON shape.

    {"error": {"code": "conflict", "message": "...", "fields": {"payload": ["..."]}}}

Services raise the plain domain errors of apps/core/exceptions.py; this is where they get
their HTTP status. Views never build error responses by hand.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler

from .exceptions import (
    BacklogQuotaExceeded,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    ServiceUnavailable,
    first_message,
)

# The most specific class wins; a DomainError of no listed kind is a plain 400.
STATUS_OF = {
    InvalidInput: status.HTTP_400_BAD_REQUEST,
    NotFound: status.HTTP_404_NOT_FOUND,
    Forbidden: status.HTTP_403_FORBIDDEN,
    Conflict: status.HTTP_409_CONFLICT,
    PayloadTooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    NotSupported: status.HTTP_501_NOT_IMPLEMENTED,
    ServiceUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    BacklogQuotaExceeded: status.HTTP_429_TOO_MANY_REQUESTS,
    DomainError: status.HTTP_400_BAD_REQUEST,
}


def status_of(exc: DomainError) -> int:
    return next(STATUS_OF[cls] for cls in type(exc).__mro__ if cls in STATUS_OF)


class _DomainAPIError(exceptions.APIException):
    """A domain error as DRF's handler expects it: DRF then rolls back ATOMIC_REQUESTS as for its own."""

    def __init__(self, exc: DomainError):
        super().__init__(exc.message, code=exc.code)
        self.status_code = status_of(exc)
        self.default_code = exc.code
        self.extra = exc.extra


def _as_api_exception(exc):
    if isinstance(exc, InvalidInput):
        return exceptions.ValidationError(exc.fields)
    if isinstance(exc, DomainError):
        return _DomainAPIError(exc)
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    # Django's own limits on what a request may hold, hit while DRF parses the body; left
    # alone they become Django's HTML "Bad Request" page.
    if isinstance(exc, RequestDataTooBig):
        return _DomainAPIError(
            PayloadTooLarge(
                f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024} KB; "
                "upload files with multipart or a presigned upload."
            )
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return exceptions.ParseError(f"Too many form parts: {exc}")
    return exc


def _flatten(detail):
    """Turn DRF's nested ErrorDetail structures into plain strings, lists and dicts."""
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def api_exception_handler(exc, context):
    exc = _as_api_exception(exc)
    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected errors are 500s, logged by Django

    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail if isinstance(exc.detail, dict) else {InvalidInput.NON_FIELD: exc.detail})
        error = {"code": "invalid", "message": first_message(fields) or "Invalid input.", "fields": fields}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", "error")
        if isinstance(detail, dict):
            message = str(detail.get("detail", "")) or first_message(_flatten(detail))
            code = str(detail.get("code", code)) if "code" in detail else code
        else:
            message = str(detail)
        error = {"code": code, "message": message, **getattr(exc, "extra", {})}
    response.data = {"error": error}
    return response


def field_validator(check):
    """A DRF field validator from a domain check (a function that raises InvalidInput)."""

    def validator(value):
        try:
            check(value)
        except InvalidInput as exc:
            raise serializers.ValidationError(exc.messages) from None

    validator.__name__ = validator.__qualname__ = getattr(check, "__name__", "validator")
    return validator
