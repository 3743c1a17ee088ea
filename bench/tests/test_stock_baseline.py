"""The API rows' baseline is a user's stock project: startproject's middleware, DRF's own
authentication and pagination, and no TaskFlow code; the CPU figure reads /proc right."""

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import django

from bench import run
from bench.stock import settings as stock_settings

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def startproject_setting(name: str):
    """A setting as `django-admin startproject` writes it, read from Django's template."""
    template = Path(django.__file__).parent / "conf" / "project_template" / "project_name" / "settings.py-tpl"
    for node in ast.parse(template.read_text().replace("{{ project_name }}", "project")).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:
            return ast.literal_eval(node.value)
    raise LookupError(name)


def test_the_stock_project_keeps_startprojects_middleware_and_apps():
    assert startproject_setting("MIDDLEWARE") == stock_settings.MIDDLEWARE
    assert stock_settings.INSTALLED_APPS[:6] == startproject_setting("INSTALLED_APPS")
    assert stock_settings.DEBUG is False
    assert stock_settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] == [
        "rest_framework.authentication.TokenAuthentication"
    ]


def test_the_stock_project_imports_no_taskflow_code():
    script = (
        "import json, sys, django; django.setup(); import bench.stock.urls, bench.stock.wsgi; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('apps', 'taskflow_site'))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["DJANGO_SETTINGS_MODULE"] = "bench.stock.settings"
    done = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_both_web_sides_get_the_same_processes_and_threads_as_deploy_config(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "5")
    flags = run.gunicorn_flags(9999)
    assert flags[flags.index("--workers") + 1] == "3"
    assert flags[flags.index("--threads") + 1] == "5"
    assert flags[flags.index("--worker-class") + 1] == "gthread"
    assert "127.0.0.1:9999" in flags


def test_cpu_seconds_counts_a_processs_cpu_and_skips_a_gone_one():
    before = run.cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    spent = run.cpu_spent(before, run.cpu_seconds([os.getpid(), 2**22 + 1]))
    assert 0.2 <= spent <= 5
