"""Project-wide promises: deploy checks, the OpenAPI schema, the docs UI without a CDN."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[3]

PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "a-production-like-secret-key-that-is-long-and-random-0123456789-abcdefghijkl",
    "ALLOWED_HOSTS": "taskflow.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://taskflow.example.com",
    "DATABASE_URL": "postgres://taskflow@127.0.0.1:5432/taskflow",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "LOG_FORMAT": "json",
}


def run_manage(*args, env_overrides):
    env = {key: value for key, value in os.environ.items() if key not in PRODUCTION_ENV}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env_overrides=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = PRODUCTION_ENV | {"SECRET_KEY": ""}
    result = run_manage("check", env_overrides=env)
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr


def test_a_bad_setting_value_fails_loudly_at_start():
    result = run_manage("check", env_overrides={"LOG_FORMAT": "xml"})
    assert result.returncode != 0
    assert "LOG_FORMAT must be one of console, json" in result.stderr


def test_openapi_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    result = run_manage("spectacular", "--fail-on-warn", "--validate", "--file", str(out), env_overrides={})
    assert result.returncode == 0, result.stderr
    assert "/api/auth/token/" in out.read_text()


@pytest.mark.django_db
def test_docs_ui_loads_its_assets_locally(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html


def test_no_product_module_imports_the_test_support_code():
    # The image leaves tests/ out (.dockerignore): no product module may need it.
    product = [*(BASE_DIR / "apps").rglob("*.py"), *(BASE_DIR / "taskflow_site").rglob("*.py")]
    offenders = []
    for path in product:
        if "tests" in path.relative_to(BASE_DIR).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.relative_to(BASE_DIR)}: {name}" for name in names if name.split(".")[0] == "tests"]
    assert offenders == []


def test_reading_the_settings_writes_nothing_and_starting_django_makes_the_local_folders(tmp_path):
    var_dir, metrics_dir = tmp_path / "var", tmp_path / "metrics"
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"TASKFLOW_VAR_DIR": str(var_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DEBUG": "true"}
    env["DJANGO_SETTINGS_MODULE"] = "taskflow_site.settings"
    script = (
        "import pathlib, sys, django\n"
        "from django.conf import settings\n"
        "settings.DATABASES, settings.CELERY_BROKER_TRANSPORT_OPTIONS\n"
        "print(sorted(p.name for p in pathlib.Path(sys.argv[1]).iterdir()))\n"
        "django.setup()\n"
        "print(sorted(str(p.relative_to(sys.argv[1])) for p in pathlib.Path(sys.argv[1]).rglob('*') if p.is_dir()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "[]"  # settings read: no folder made
    # Django set up: var/ and the on-disk broker's folders of the embedded mode, the metrics folder.
    for folder in ("var", "var/broker/queue", "var/broker/processed", "var/broker/control", "metrics"):
        assert f"'{folder}'" in after
