"""Request ids: every request gets one, every log line of the request carries it, the response echoes it.

And the query guard: a query parameter PostgreSQL could not compare or store is a 400 before
any view sees it.
"""

import ipaddress
import re
import time
import uuid

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import BadRequest
from django.urls import is_valid_path

from .text import UNSTORABLE, describe, storable_text

REQUEST_ID_HEADER = "X-Request-ID"
# An id from a proxy or client is kept only if it cannot smuggle anything into logs or headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_for(incoming: str | None) -> str:
    """The caller's X-Request-ID when it looks sane, else a new one."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def client_ip(request) -> str:
    """The caller's address, as rate limits and logs see it.

    REMOTE_ADDR, unless NUM_PROXIES trusted proxies stand in front: each appends the address it
    received from to X-Forwarded-For, so the client is the entry the outermost trusted proxy
    added, NUM_PROXIES from the right. Entries further left are whatever the client sent.
    """
    remote_addr = request.META.get("REMOTE_ADDR", "")
    num_proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if num_proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        candidate = hops[-min(num_proxies, len(hops))]
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass  # a malformed header: the connection's address is all we know
    return remote_addr


# Methods outside this set are counted as "other": a client must not mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """First in MIDDLEWARE: one observation per request of taskflow_http_request_seconds
    (apps/core/metrics.py), labelled with the view's URL name, the method and the status."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        from .metrics import HTTP_REQUEST_SECONDS

        self.get_response = get_response
        self.histogram = HTTP_REQUEST_SECONDS
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _observe(self, request, response, started: float) -> None:
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match is not None and match.view_name else "<unnamed view>"
        method = request.method if request.method in _METHODS else "other"
        self.histogram.labels(view, method, str(response.status_code)).observe(time.perf_counter() - started)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        started = time.perf_counter()
        request.started_at = started
        response = self.get_response(request)
        self._observe(request, response, started)
        return response

    async def __acall__(self, request):
        started = time.perf_counter()
        request.started_at = started
        response = await self.get_response(request)
        self._observe(request, response, started)
        return response


class RequestIdMiddleware:
    """Give the request an id (a sane incoming X-Request-ID, else a new one) and echo it.

    Runs before django-structlog's RequestMiddleware, which binds the id for the logs
    (DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID: it reads the header this middleware vetted)
    and carries it into Celery messages published during the request.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _prepare(self, request) -> str:
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        request.META["HTTP_X_REQUEST_ID"] = request_id
        request.__dict__.pop("headers", None)  # rebuilt from META on next access
        request.request_id = request_id
        # A fresh context: nothing of an earlier request on this thread may leak into this one.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(ip=client_ip(request))
        return request_id

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request_id = self._prepare(request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def __acall__(self, request):
        request_id = self._prepare(request)
        response = await self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _unstorable_query_parameter(request) -> tuple[str, str] | None:
    """(name, problem) of the first query parameter holding NUL, or None.

    Only NUL can arrive: a URL carries bytes, and bytes that are not UTF-8 (a lone
    surrogate's among them) are decoded to U+FFFD. Its only spelling is `%00`.
    """
    query_string = request.META.get("QUERY_STRING", "")
    if "%00" not in query_string and "\x00" not in query_string:
        return None
    for name, values in request.GET.lists():
        if UNSTORABLE.search(name):
            return storable_text(name), f"The parameter name contains {describe(name)}."
        for value in values:
            if UNSTORABLE.search(value):
                return name, f"This value contains {describe(value)}, which no filter, search or cursor accepts."
    return None


class RequestCheckMiddleware:
    """Base of the middlewares that only look at the request before the view: `check(request)`
    may change it, or return a response to answer with instead. Sync and async alike, with no
    thread hop (the checks do no I/O)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def check(self, request):
        return None

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.check(request) or self.get_response(request)

    async def __acall__(self, request):
        return self.check(request) or await self.get_response(request)


class UnstorableQueryMiddleware(RequestCheckMiddleware):
    """NUL in a query parameter (name or value) is a 400, for every view.

    One place for all of them: the API's filters, searches and cursors, the admin's
    changelist filters, search box, date filters and autocomplete. Each would pass the NUL to
    PostgreSQL, which refuses it in any text comparison (a 500). Under /api/ the answer is
    the one error shape, naming the parameter (from the API's exception handler); elsewhere
    Django's 400 page. A middleware rather than a base class: API views have no common base
    (APIView, viewsets, generic views across four apps) and the admin's views are Django's.
    """

    def check(self, request):
        problem = _unstorable_query_parameter(request)
        if problem is None:
            return None
        name, message = problem
        if not request.path.startswith("/api/"):
            raise BadRequest(f"Query parameter {name!r}: {message}")
        from rest_framework.exceptions import ValidationError
        from rest_framework.renderers import JSONRenderer

        from .api_errors import api_exception_handler

        response = api_exception_handler(ValidationError({name: [message]}), {})
        response.accepted_renderer = JSONRenderer()
        response.accepted_media_type = "application/json"
        response.renderer_context = {}
        return response.render()


class ApiTrailingSlashMiddleware(RequestCheckMiddleware):
    """An /api/ path without its trailing slash is served as the path with it, in place.

    Django's APPEND_SLASH would answer with an HTML 301 to the slash form, which a client that
    follows redirects turns into a GET, losing the body. The slash form stays the canonical
    one: URL names and reverse() give it, and a path that matches neither form is the API's
    JSON 404. Runs before CommonMiddleware, which then finds nothing to redirect.
    """

    def check(self, request) -> None:
        path = request.path_info
        if not path.startswith("/api/") or path.endswith("/"):
            return
        urlconf = getattr(request, "urlconf", None)
        if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
            request.path_info = f"{path}/"
            request.path = f"{request.path}/"
