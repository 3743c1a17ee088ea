"""Domain errors: what a service raises when it refuses an operation, in plain Python.

Services, selectors and Celery tasks raise these; they know nothing of HTTP or forms. The
API turns them into one JSON shape and status (apps/core/api_errors.py), the admin into form
errors and messages (apps/core/admin_errors.py). Each has a stable `code`, which the API
sends to clients, and a `message` for people.
"""


class DomainError(Exception):
    """Base of every refusal a caller can show to a person."""

    code = "error"
    default_message = "The operation was refused."

    def __init__(self, message: str | None = None, *, code: str | None = None):
        self.message = str(message) if message else self.default_message
        if code:
            self.code = code
        super().__init__(self.message)

    @property
    def extra(self) -> dict:
        """Further facts for the API's error body, beside code and message (none by default)."""
        return {}

    @property
    def detail(self):
        """The message (InvalidInput: the fields), under the name DRF's exceptions give it, so code that
        handles both (while apps/tasks/services.py still raises DRF's ValidationError) reads either."""
        return self.message


class InvalidInput(DomainError):
    """The input cannot be used: messages per field, or for the input as a whole.

    `InvalidInput({"email": ["Taken."]})` names fields; `InvalidInput("Not a public address.")`
    is about the whole input and lands under NON_FIELD.
    """

    NON_FIELD = "non_field_errors"
    code = "invalid"
    default_message = "Invalid input."

    def __init__(self, fields: dict | list | str, *, code: str | None = None):
        if not isinstance(fields, dict):
            fields = {self.NON_FIELD: fields}
        self.fields = {str(name): _messages(value) for name, value in fields.items()}
        super().__init__(first_message(self.fields), code=code)

    @property
    def messages(self) -> list[str]:
        """Every message, without the field names (for a check that validates one value)."""
        return [message for messages in self.fields.values() for message in messages]

    @property
    def detail(self):
        return self.fields


class NotFound(DomainError):
    code = "not_found"
    default_message = "Not found."


class Forbidden(DomainError):
    code = "permission_denied"
    default_message = "You do not have permission to perform this action."


class Conflict(DomainError):
    """The object's current state does not allow the operation."""

    code = "conflict"
    default_message = "The object's current state does not allow this."


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    default_message = "The request body is too large."


class NotSupported(DomainError):
    """This deployment cannot do what was asked (e.g. presigned uploads without S3)."""

    code = "not_supported"
    default_message = "This server does not support the operation."


class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    default_message = "A service TaskFlow depends on is unavailable; try again shortly."


class QuotaExceeded(DomainError):
    """The owner holds as much of something as their quota allows (a 400: change the request)."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, limit: int, current: int):
        self.quota, self.limit, self.current = quota, limit, current
        super().__init__(message)

    @property
    def extra(self) -> dict:
        return {"quota": self.quota, "limit": self.limit, "current": self.current}


class BacklogQuotaExceeded(QuotaExceeded):
    """Too many of the owner's tasks are not final yet (a 429: try again once some finish)."""


def _messages(value) -> list[str] | dict:
    """A field's messages as a list of strings; nested errors (a list's items, a JSON object's
    keys) keep their structure."""
    if isinstance(value, dict):
        return {str(key): _messages(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_messages(item) if isinstance(item, dict | list | tuple) else str(item) for item in value]
    return [str(value)]


def first_message(fields) -> str:
    """The first message, prefixed with its field's name unless it is about the whole input."""
    if isinstance(fields, dict):
        for key, value in fields.items():
            inner = first_message(value)
            if inner:
                return inner if key == InvalidInput.NON_FIELD else f"{key}: {inner}"
    if isinstance(fields, list) and fields:
        return first_message(fields[0])
    if isinstance(fields, str):
        return fields
    return ""
