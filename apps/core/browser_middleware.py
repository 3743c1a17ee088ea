"""Django's session middlewares (sessions, authentication from the session, messages), skipped
for API calls that carry their own credentials.

An `/api/` request with an `Authorization` header (a JWT, an API key) is authenticated by DRF
from that header alone: it has no use for a session or flash messages. Every other request,
API calls without the header included, gets them as before: session-authenticated API calls
(the admin's pages, the browsable docs) keep working, and DRF's SessionAuthentication keeps
checking CSRF on their unsafe methods (it runs Django's CSRF check itself; DRF views are
exempt from CsrfViewMiddleware's own). CsrfViewMiddleware and XFrameOptionsMiddleware stay
Django's own, for every request: `check --deploy` looks for them by name, and for an API
client call they cost little (no CSRF cookie to read, a view exempt from the check, one
header).

One consequence, by design: an `/api/` call whose `Authorization` header DRF does not accept
(another scheme) is not authenticated from a session cookie it may also carry: it is a 401.
"""

from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware


def is_api_client_call(request) -> bool:
    """An /api/ request that brings its own credentials in the Authorization header."""
    return request.path_info.startswith("/api/") and "HTTP_AUTHORIZATION" in request.META


class BrowserOnlyMixin:
    """Before one of Django's middlewares (subclasses, so that Django's checks still find them):
    an API client call goes straight on, sync or async alike (get_response's own result)."""

    def __call__(self, request):
        if is_api_client_call(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(BrowserOnlyMixin, DjangoSessionMiddleware):
    pass


class AuthenticationMiddleware(BrowserOnlyMixin, DjangoAuthenticationMiddleware):
    pass


class MessageMiddleware(BrowserOnlyMixin, DjangoMessageMiddleware):
    pass
