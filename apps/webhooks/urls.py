from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("webhooks", views.EndpointViewSet, basename="endpoint")
router.register("webhook-deliveries", views.DeliveryViewSet, basename="delivery")

urlpatterns = [
    path("webhooks/callback-secret/", views.CallbackSecretView.as_view(), name="callback-secret"),
    *router.urls,
]
