from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("", views.StoredFileViewSet, basename="file")

urlpatterns = router.urls
