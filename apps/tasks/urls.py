from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("schedules", views.ScheduleViewSet, basename="schedule")

urlpatterns = [
    path("kinds/", views.KindListView.as_view(), name="kinds"),
    *router.urls,
]
