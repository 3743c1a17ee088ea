"""The admin's one way to show a domain error: on the form it came from, or as a message.

with errors_on_form(form):
    service_call(...)
if form.is_valid(): ...

with errors_as_message(request):
    service_call(...)
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib import messages

from .exceptions import DomainError, InvalidInput


def _text(messages_) -> list[str]:
    """A field's messages as lines a form can show; nested errors (payload keys) keep their path."""
    if isinstance(messages_, dict):
        return [f"{key}: {line}" for key, value in messages_.items() for line in _text(value)]
    if isinstance(messages_, list):
        return [line for item in messages_ for line in _text(item)]
    return [str(messages_)]


def form_errors_from(form, exc: DomainError, *, field: str | None = None) -> None:
    """Put the error on the form: InvalidInput's on the fields it names, any other on `field`
    (None: the form as a whole). Names the form does not have go to the form as a whole."""
    if not isinstance(exc, InvalidInput):
        form.add_error(field if field in form.fields else None, exc.message)
        return
    for name, messages_ in exc.fields.items():
        form.add_error(name if name in form.fields else None, _text(messages_))


@contextmanager
def errors_on_form(form, *, field: str | None = None) -> Iterator[None]:
    """Run a service call; a domain error becomes the form's errors instead of a server error."""
    try:
        yield
    except DomainError as exc:
        form_errors_from(form, exc, field=field)


@contextmanager
def errors_as_message(request) -> Iterator[None]:
    """Run a service call; a domain error becomes an error message on the next page."""
    try:
        yield
    except DomainError as exc:
        messages.error(request, exc.message)
