# syntax=docker/dockerfile:1
# TaskFlow image: one image for web, worker and beat (the command differs).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=taskflow_site.settings TASKFLOW_VAR_DIR=/app/var
RUN useradd --system --uid 10001 --home-dir /app taskflow
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=taskflow:taskflow . /app
# collectstatic needs settings that load; the throwaway key never reaches a running container.
RUN DEBUG=false SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && mkdir -p /app/var && chown -R taskflow:taskflow /app/var /app/staticfiles
USER taskflow
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "taskflow_site.wsgi"]
