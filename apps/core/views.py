import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from . import metrics as metrics_module
from .health import run_checks
from .stack import describe_stack


@require_safe
def home(request):
    """Where `make run` points a newcomer: what is running, and the links to everything else."""
    context = {"stack": describe_stack(), "api_version": settings.SPECTACULAR_SETTINGS["VERSION"]}
    return render(request, "home.html", context)


@never_cache
@require_GET
def healthz(request):
    """The process is alive and serving; dependencies are /readyz's business."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    healthy, checks = run_checks()
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )


@never_cache
@require_GET
def metrics(request):
    """Prometheus: every web process's counters (multiprocess mode) plus the system gauges.

    The text format 0.0.4, which every Prometheus version reads (prometheus_client's own
    server, on the worker, answers the same). With METRICS_TOKEN set, only a scrape that
    sends it as a bearer token is answered; others get a plain 401 (this is not the API).
    """
    if settings.METRICS_TOKEN and not _has_metrics_token(request):
        response = HttpResponse(
            "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_module.exposition(with_system_gauges=True), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _has_metrics_token(request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken says nothing about how much of the token matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode())


def _api_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def not_found(request, exception=None):
    """JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return _api_error("not_found", "Not found.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return _api_error("server_error", "Internal server error.", 500)
    return defaults.server_error(request)
