# syntax=docker/dockerfile:1
# TaskFlow image: one image for web, streams, worker, beat and the migrate job; only the command differs
# (see the Procfile, docker-compose.yml and deploy/k8s/, which run the same commands).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: dependencies into a virtualenv that the runtime stage copies whole -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- runtime: no compilers, no pip cache, code owned by root and read-only for the app user --
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=taskflow_site.settings \
    TASKFLOW_VAR_DIR=/app/var
# A fixed UID/GID so Kubernetes can check runAsNonRoot and mount volumes with fsGroup 10001.
RUN groupadd --system --gid 10001 taskflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home taskflow
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY . /app
# collectstatic needs settings that load; the throwaway key never reaches a running container.
# Byte-code is compiled here because the running container may have a read-only file system.
# Only var/ (TASKFLOW_VAR_DIR) is writable by the app user.
RUN DEBUG=false SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && python -m compileall -q apps taskflow_site deploy \
    && mkdir -p /app/var \
    && chown -R 10001:10001 /app/var
USER 10001:10001
# 8000: gunicorn (web, including /metrics); 8001: uvicorn (streams); 9808: the worker's metrics endpoint.
EXPOSE 8000 8001 9808
# For the web container. docker-compose overrides it for streams (port 8001), and for worker
# and beat, which serve no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "taskflow_site.wsgi"]
