"""TaskFlow's URLs plus the stock ModelAdmin (the API's stock baseline is bench/stock)."""

from django.contrib import admin
from django.urls import path

from bench.baseline.models import StockTask
from taskflow_site.urls import handler404, handler500  # noqa: F401
from taskflow_site.urls import urlpatterns as taskflow_urlpatterns

stock_site = admin.AdminSite(name="stock")
stock_site.register(StockTask, admin.ModelAdmin)

urlpatterns = [
    path("bench/stock-admin/", stock_site.urls),
    *taskflow_urlpatterns,
]
