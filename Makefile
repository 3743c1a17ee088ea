# TaskFlow. `make run` starts everything embedded; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --quiet --disable-pip-version-check
PORT ?= 8000
HOST ?= 127.0.0.1

# The suite runs against the real stack on localhost.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/taskflow
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# pytest-xdist worker processes; each has its own test database and Redis database (15, 14, ...
# counting down from TEST_REDIS_URL's): tests/support/parallel.py. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: run test lint lint-deploy format migrate worker beat web clean bench

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install $(PIP_FLAGS) -r requirements-dev.txt
	touch $@

# The Procfile's processes `make run` starts: all but `streams`. In the embedded mode the web
# process serves live streams itself (a thread each, at most two per gunicorn process: enough
# for one person's admin pages and CLI), so the one address http://127.0.0.1:$(PORT)/ is all
# there is; the streams process is for deployments with a router in front (docs/deploying.md).
EMBEDDED_PROCESSES := web worker webhooks beat

run: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_demo_user
	$(BIN)/python manage.py register_system_jobs
	@echo "TaskFlow on http://127.0.0.1:$(PORT)/  (admin: /admin/, API docs: /api/docs/)"
	@# --env /dev/null: honcho would read a .env (the README's copy of .env.example for docker
	@# compose: DEBUG=false, secure cookies) into web, worker and beat, but not into the steps above.
	PATH="$(abspath $(BIN)):$$PATH" HOST=$(HOST) PORT=$(PORT) $(BIN)/honcho start -f Procfile --env /dev/null $(EMBEDDED_PROCESSES)

# The import contracts (pyproject.toml) first: a wrong-way import fails in seconds, not after the suite.
test: $(BIN)/.installed-dev
	$(BIN)/lint-imports
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) DEBUG=true \
		$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(BIN)/.installed-dev lint-deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The deployment files (docker-compose.yml, Dockerfile, deploy/k8s, Prometheus, Grafana) checked
# offline against their schemas and against the code. Not part of `make test`'s run (pytest.ini
# skips tests/deploy); CI runs it as a step of its own before the suite.
lint-deploy: $(BIN)/.installed-dev
	$(BIN)/pytest tests/deploy -q --durations=0 --durations-min=1

format: $(BIN)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks against bare Celery and a minimal DRF service, on PostgreSQL and Redis on
# localhost (database taskflow_bench, Redis DB 8); then the table in docs/performance.md.
# BENCH_ARGS: --quick or --full, --rounds N, --only 1 2 ..., see `python -m bench.run --help`.
BENCH_ARGS ?=
bench: $(BIN)/.installed-dev
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.readme

clean:
	rm -rf var/ staticfiles/ .pytest_cache
