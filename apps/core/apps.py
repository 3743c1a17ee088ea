from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"

    def ready(self):
        from django_structlog import signals

        from .logging import describe_finished_request

        signals.bind_extra_request_finished_metadata.connect(describe_finished_request, dispatch_uid="taskflow-request")
