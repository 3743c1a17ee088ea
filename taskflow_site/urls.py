from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core import views as core_views

admin.site.site_header = "TaskFlow operations"
admin.site.site_title = "TaskFlow"
admin.site.index_title = "Operate TaskFlow"

api_patterns = [
    path("auth/", include(("apps.accounts.urls", "accounts"), namespace="auth")),
    path("files/", include(("apps.files.urls", "files"), namespace="files")),
    path("", include(("apps.tasks.urls", "tasks"), namespace="tasks")),
    path("", include(("apps.webhooks.urls", "webhooks"), namespace="webhooks")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
]

handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"
