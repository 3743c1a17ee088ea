"""Settings of the benchmark's own processes: TaskFlow's settings plus the stock admin's app.

Loaded only by `make bench` (gunicorn, workers, admin timings): the stock admin lives under
/bench/ and never reaches the product's INSTALLED_APPS or URLs. The API rows' baseline is a
project of its own (bench/stock), with its own settings.
"""

from taskflow_site.settings import *  # noqa: F403
from taskflow_site.settings import INSTALLED_APPS, STORAGES

INSTALLED_APPS = [*INSTALLED_APPS, "bench.baseline"]
ROOT_URLCONF = "bench.urls"
# The admin pages are timed with DEBUG off but without a collectstatic run: static URLs
# come from the finders (both admins, TaskFlow's and the stock one, render the same way).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
