"""TaskFlow's URLs plus the baselines: a minimal DRF endpoint and the stock ModelAdmin."""

from django.contrib import admin
from django.urls import path

from bench.baseline.models import StockTask
from bench.baseline.views import RowListCreateView
from taskflow_site.urls import handler404, handler500  # noqa: F401
from taskflow_site.urls import urlpatterns as taskflow_urlpatterns

stock_site = admin.AdminSite(name="stock")
stock_site.register(StockTask, admin.ModelAdmin)

urlpatterns = [
    path("bench/rows/", RowListCreateView.as_view(), name="bench-rows"),
    path("bench/stock-admin/", stock_site.urls),
    *taskflow_urlpatterns,
]
