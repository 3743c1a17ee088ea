"""Domain errors and the one DRF exception handler that gives every API error one shape.

    {"error": {"code": "conflict", "message": "...", "fields": {"payload": ["..."]}}}

Services raise these; views never build error responses by hand.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.views import exception_handler


class Conflict(exceptions.APIException):
    """The object's current state does not allow the operation."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object's current state does not allow this."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class NotSupported(exceptions.APIException):
    """This deployment cannot do what was asked (e.g. presigned uploads without S3)."""

    status_code = status.HTTP_501_NOT_IMPLEMENTED
    default_detail = "This server does not support the operation."
    default_code = "not_supported"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service TaskFlow depends on is unavailable; try again shortly."
    default_code = "service_unavailable"


def _flatten(detail):
    """Turn DRF's nested ErrorDetail structures into plain strings, lists and dicts."""
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def _first_message(fields) -> str:
    if isinstance(fields, dict):
        for key, value in fields.items():
            inner = _first_message(value)
            if inner:
                return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(fields, list) and fields:
        return _first_message(fields[0])
    if isinstance(fields, str):
        return fields
    return ""


def api_exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    # Django's own limits on what a request may hold, hit while DRF parses the body; left
    # alone they become Django's HTML "Bad Request" page.
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024} KB; "
            "upload files with multipart or a presigned upload."
        )
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = exceptions.ParseError(f"Too many form parts: {exc}")

    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected errors are 500s, logged by Django

    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail})
        error = {"code": "invalid", "message": _first_message(fields) or "Invalid input.", "fields": fields}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", "error")
        if isinstance(detail, dict):
            message = str(detail.get("detail", "")) or _first_message(_flatten(detail))
            code = str(detail.get("code", code)) if "code" in detail else code
        else:
            message = str(detail)
        error = {"code": code, "message": message}
    response.data = {"error": error}
    return response
