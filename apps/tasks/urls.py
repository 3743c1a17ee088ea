from django.urls import path
from rest_framework.routers import SimpleRouter

from . import streams, views

router = SimpleRouter()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("schedules", views.ScheduleViewSet, basename="schedule")

urlpatterns = [
    path("kinds/", views.KindListView.as_view(), name="kinds"),
    # Live events (server-sent events); in production routed to the ASGI process.
    path("tasks/events/stream/", streams.OwnerEventStreamView.as_view(), name="task-events-stream-all"),
    path("tasks/<uuid:pk>/events/stream/", streams.TaskEventStreamView.as_view(), name="task-events-stream"),
    path("tasks/counts/stream/", streams.CountsStreamView.as_view(), name="task-counts-stream"),
    *router.urls,
]
