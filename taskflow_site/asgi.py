"""The ASGI entry point: Django for every path, but live event streams are served by
apps.core.streaming, which holds no thread per open stream (Django's handler would)."""

import os
import re

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskflow_site.settings")

django_application = get_asgi_application()

from apps.core import streaming  # noqa: E402  (needs the settings and apps loaded above)

# GET /api/tasks/events/stream/, /api/tasks/<id>/events/stream/ and /api/tasks/counts/stream/,
# with or without the slash. The router in front of the streams process (deploy/nginx, the
# Kubernetes Ingress) sends the same paths here; tests/deploy checks all three against the URL conf.
STREAM_PATH = re.compile(r"^/api/tasks/(?:(?:[0-9a-fA-F-]{36}/)?events|counts)/stream/?$")


async def application(scope, receive, send):
    if scope["type"] == "lifespan":  # Django has no lifespan; open streams close at shutdown
        await streaming.lifespan(receive, send)
    elif scope["type"] == "http" and scope.get("method") == "GET" and STREAM_PATH.match(scope["path"]):
        if not scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"] + "/"}
        await streaming.serve(scope, receive, send)
    else:
        await django_application(scope, receive, send)
