from django.contrib import admin
from django.urls import include, path
from rest_framework import routers

from bench.stock.items.views import ItemViewSet

router = routers.DefaultRouter()
router.register("items", ItemViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
]
