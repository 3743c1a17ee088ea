"""Long-lived responses under ASGI without a thread each.

Django's ASGI handler gives every request a thread of its own for the request's synchronous
parts (middleware, a DRF view), and keeps it until the response ends: a server-sent event
stream held open for minutes would hold a parked thread per client. `serve` runs a view for
paths the ASGI entry point routes here (taskflow_site/asgi.py): the view itself (with DRF's
authentication, permissions and errors) runs once on the shared thread pool, its JSON answer
or error goes out at once, and a streaming body is then pumped by the event loop alone, until
it ends or the client leaves. Django's middleware does not run for these paths: the view
checks the host, a browser's request gets its session and user as the session and
authentication middlewares would give them (the admin's pages open streams with their
session cookie), and one log line records each stream.

A stopping server (uvicorn, SIGTERM) cancels the streams still open after its graceful
timeout; each ends its response cleanly, so its client reconnects elsewhere with
Last-Event-ID, and gives its slot back at once rather than when it would expire. The server
then runs the ASGI lifespan's shutdown, where `lifespan` waits for them before the process exits.
"""

import asyncio
import io
import time

import structlog
from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpResponse, HttpResponseBadRequest
from django.urls import Resolver404, resolve

from .browser_middleware import is_api_client_call

logger = structlog.get_logger(__name__)

# How long a stopping server waits for the streams it cut to close (seconds).
CLOSE_SECONDS = 2.0
# The tasks serving an open stream in this process.
_open_streams: set[asyncio.Task] = set()


def _not_called(request):
    raise AssertionError("a stream's view is called by _respond, not by a middleware")


def _with_session(request) -> None:
    """A browser's request as Django's session and authentication middlewares leave it (DRF's
    SessionAuthentication reads its user from there); an API client's call brings its own
    credentials, as the site's own middlewares decide (browser_middleware)."""
    if not is_api_client_call(request):
        SessionMiddleware(_not_called).process_request(request)
        AuthenticationMiddleware(_not_called).process_request(request)


def _respond(request) -> HttpResponse:
    close_old_connections()  # as Django does when a request starts: drop a broken or old connection
    try:
        request.get_host()
        match = resolve(request.path_info)
    except DisallowedHost:
        return HttpResponseBadRequest()
    except Resolver404:
        return HttpResponse(status=404)
    _with_session(request)
    response = match.func(request, *match.args, **match.kwargs)
    if hasattr(response, "render") and not response.streaming:
        response.render()
    return response


def _headers(response) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve(scope, receive, send) -> None:
    """Answer one HTTP request with the Django view its path resolves to (see the module)."""
    request = ASGIRequest(scope, io.BytesIO())
    response = await sync_to_async(_respond, thread_sensitive=False)(request)
    await send({"type": "http.response.start", "status": response.status_code, "headers": _headers(response)})
    if not response.streaming:
        await send({"type": "http.response.body", "body": response.content})
        response.close()
        return
    started = time.monotonic()
    user_id = getattr(getattr(request, "user", None), "pk", None)
    logger.info("stream_opened", path=request.path, user_id=user_id)

    async def pump():
        async for chunk in response:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    pumping, leaving = asyncio.ensure_future(pump()), asyncio.ensure_future(_until_disconnect(receive))
    serving = asyncio.current_task()
    _open_streams.add(serving)
    cut = False
    try:
        await asyncio.wait({pumping, leaving}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cut = True  # the server is stopping (see the module)
    finally:
        for task in (pumping, leaving):
            task.cancel()
        try:
            await asyncio.gather(pumping, leaving, return_exceptions=True)
        finally:
            # Also if this wait is cancelled in turn.
            response.close()
            _open_streams.discard(serving)
            seconds = round(time.monotonic() - started, 1)
            logger.info("stream_closed", path=request.path, user_id=user_id, seconds=seconds, cut=cut)
    if cut:
        # A clean end of the response: the client reconnects (with Last-Event-ID) elsewhere.
        await send({"type": "http.response.body", "body": b""})


async def lifespan(receive, send) -> None:
    """The ASGI lifespan protocol: nothing to start; at shutdown, the streams the server cut
    (uvicorn cancels them, then calls this without waiting for them) close before it exits."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _open_streams:
                await asyncio.wait(set(_open_streams), timeout=CLOSE_SECONDS)
            await send({"type": "lifespan.shutdown.complete"})
            return
