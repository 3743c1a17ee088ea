from django.urls import path
from rest_framework.routers import SimpleRouter
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from apps.core.throttling import AuthRateThrottle

from . import views
from .serializers import TokenObtainPairSerializer, TokenRefreshSerializer

router = SimpleRouter()
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="register"),
    # Password guessing and token minting get the stricter per-IP "auth" rate limit.
    path(
        "token/",
        TokenObtainPairView.as_view(throttle_classes=[AuthRateThrottle], serializer_class=TokenObtainPairSerializer),
        name="token",
    ),
    path(
        "token/refresh/",
        TokenRefreshView.as_view(throttle_classes=[AuthRateThrottle], serializer_class=TokenRefreshSerializer),
        name="token-refresh",
    ),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("me/", views.MeView.as_view(), name="me"),
    *router.urls,
]
