from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "apps.core"

    def ready(self):
        from django.db.backends.signals import connection_created
        from django_structlog import signals

        from .json_contains import register_sqlite_functions
        from .logging import describe_finished_request
        from .metrics import DATABASE, register_system_gauges

        # SQLite (the embedded mode) answers JSON containment with a function of ours.
        connection_created.connect(register_sqlite_functions, dispatch_uid="taskflow_sqlite_functions")
        signals.bind_extra_request_finished_metadata.connect(describe_finished_request, dispatch_uid="taskflow-request")
        # The database's reachability, latency and connections, read per scrape of /metrics.
        register_system_gauges(DATABASE)
        prepare_local_folders()


def prepare_local_folders() -> None:
    """Create the folders this process writes to on local disk, once the settings are read.

    Settings only name them (importing settings has no side effects): var/ with the embedded
    mode's SQLite file, media and beat lock; the on-disk broker's folders (kombu's filesystem
    transport creates none of its own); STATIC_ROOT when DEBUG is on (whitenoise serves from
    the finders then, but warns without the folder); the Prometheus multiprocess folder when
    one is set. Runs in every process that sets Django up: web, worker, beat, manage.py.
    """
    folders = [Path(settings.VAR_DIR)]
    if settings.CELERY_BROKER_URL.startswith("filesystem:"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders += [Path(options[key]) for key in ("data_folder_in", "processed_folder", "control_folder")]
    if settings.DEBUG:
        folders.append(Path(settings.STATIC_ROOT))
    if settings.PROMETHEUS_MULTIPROC_DIR:
        folders.append(Path(settings.PROMETHEUS_MULTIPROC_DIR))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
