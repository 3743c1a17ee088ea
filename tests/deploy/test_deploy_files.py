"""The deployable stack: Dockerfile, docker-compose.yml, deploy/k8s, Prometheus and Grafana.

None of it can run here (no Docker engine, no cluster), so it is validated offline instead:
the compose file against the Compose specification (check-jsonschema's built-in schema), the
manifests against the Kubernetes JSON schemas that kubernetes-validate ships, and commands,
ports, URLs and environment variables against each other and against the code.
"""

import ast
import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from celery.app.utils import find_app
from django.conf import settings
from django.urls import Resolver404, resolve
from kubernetes_validate.utils import SchemaNotFoundError
from kubernetes_validate.utils import validate as validate_kubernetes

from tests.support.metrics import KNOWN_METRICS

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = BASE_DIR / "docker-compose.yml"
DOCKERFILE = BASE_DIR / "Dockerfile"
PROCFILE = BASE_DIR / "Procfile"
ENV_EXAMPLE = BASE_DIR / ".env.example"
K8S_DIR = BASE_DIR / "deploy" / "k8s"
PROMETHEUS_CONFIG = BASE_DIR / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = BASE_DIR / "deploy" / "grafana" / "taskflow-dashboard.json"

# The oldest Kubernetes the manifests promise to work on; kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.33.0"
SECRET_EXAMPLE = "secret.example.yaml"
# Compose services built from the TaskFlow image.
TASKFLOW_SERVICES = ("migrate", "web", "streams", "worker", "webhooks", "beat")
WEB_PORT = 8000
WORKER_METRICS_PORT = 9808
# Variables set by compose and k8s ahead of the code that reads them (none at the moment).
NOT_YET_READ: set[str] = set()


# --- Parsing helpers ---------------------------------------------------------------------


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_service(name: str) -> dict:
    return compose()["services"][name]


@cache
def k8s_documents() -> tuple[tuple[str, dict], ...]:
    """(file name, object) for every Kubernetes object in deploy/k8s (not the kustomization)."""
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(documents)


def k8s_objects(kind: str) -> list[dict]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == kind]


def k8s_object(kind: str, component: str) -> dict:
    """The one object of a kind for a component (web, worker, beat, migrate)."""
    found = [
        doc for doc in k8s_objects(kind) if doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} for {component}, found {len(found)}"
    return found[0]


def pod_specs() -> list[tuple[str, dict]]:
    """(object name, pod spec) for every Deployment and Job."""
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for _, doc in k8s_documents()
        if doc["kind"] in ("Deployment", "Job")
    ]


def all_containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def main_container(kind: str, component: str) -> dict:
    containers = k8s_object(kind, component)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@cache
def kustomization() -> dict:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


@cache
def procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, ARGs before FROM applied."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # Docker drops comments, even mid-instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    build_args = {}
    for keyword, arguments in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            build_args[name] = value
    return [
        (keyword, re.sub(r"\$\{(\w+)\}", lambda m: build_args.get(m.group(1), m.group(0)), arguments))
        for keyword, arguments in instructions
    ]


def dockerfile_values(instruction: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile() if keyword == instruction]


def normalized_command(command) -> list[str]:
    """A command as tokens, with `${NAME:-default}`, `${NAME}` and `$(NAME)` all as `$NAME`.

    Lets the Procfile (shell), compose (interpolated) and Kubernetes (`$(NAME)` expansion)
    spellings of one command compare equal.
    """
    tokens = shlex.split(command) if isinstance(command, str) else [str(token) for token in command]
    return [
        re.sub(r"\$\{(\w+)(?::?-[^}]*)?\}|\$\((\w+)\)", lambda m: "$" + (m.group(1) or m.group(2)), token)
        for token in tokens
    ]


def shell_default(command: str, variable: str) -> str:
    """The default in `${VARIABLE:-default}` inside a Procfile or compose command."""
    match = re.search(r"\$\{" + variable + r":-([^}]*)\}", command)
    assert match, f"{variable} has no default in {command!r}"
    return match.group(1)


def k8s_command(container: dict) -> list[str]:
    return normalized_command(container.get("command", []) + container.get("args", []))


def duration_seconds(value: str) -> int:
    """A compose duration ("65m", "1h5m", "3900s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsed duration {value!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def _environment_reads(path: Path) -> set[str]:
    """Environment variable names a Python file reads through env.*, env_*() or os.environ."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and node.args:
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            func = node.func
            reader = (
                # env("NAME"), env_choice("NAME", ...), env_positive_int("NAME", ...), os.getenv
                (isinstance(func, ast.Name) and (func.id in ("env", "getenv") or func.id.startswith("env_")))
                # env.str("NAME"), env.bool, env.int, env.list, env.db_url, env.email_url ...
                or (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env")
                # os.environ.get("NAME"), os.getenv("NAME")
                or (
                    isinstance(func, ast.Attribute)
                    and func.attr == "get"
                    and ast.unparse(func.value).endswith("environ")
                )
                or (isinstance(func, ast.Attribute) and func.attr == "getenv")
            )
            if reader:
                names.add(first.value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return {name for name in names if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)}


def settings_variables() -> set[str]:
    return _environment_reads(BASE_DIR / "taskflow_site" / "settings.py")


def procfile_variables() -> set[str]:
    return {name for command in procfile().values() for name in re.findall(r"\$\{?(\w+)", command)}


def variables_read_by_the_code() -> set[str]:
    """settings.py, the gunicorn config, the Procfile, and any application module (not tests)."""
    modules = [*(BASE_DIR / "taskflow_site").rglob("*.py"), *(BASE_DIR / "deploy").rglob("*.py")]
    modules += [
        path
        for path in (BASE_DIR / "apps").rglob("*.py")
        if not {"tests", "migrations"} & set(path.relative_to(BASE_DIR).parts)
    ]
    names = set().union(*(_environment_reads(path) for path in modules))
    return names | procfile_variables()


def env_example_variables() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
PROMQL_KEYWORDS |= {"offset", "inf", "nan"}


def promql_metric_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression: not functions, labels, keywords or Grafana variables."""
    expression = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # string literals
    expression = re.sub(r"\{[^}]*\}", "", expression)  # label matchers
    expression = re.sub(r"\[[^\]]*\]", "", expression)  # range selectors
    expression = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expression)
    expression = re.sub(r"\$\{[^}]*\}|\$\w+", "", expression)  # Grafana variables
    names = set()
    for match in re.finditer(r"[\w:.]+", expression):
        token = match.group()
        if token[0].isdigit() or token[0] == "." or token.lower() in PROMQL_KEYWORDS:
            continue
        if expression[match.end() :].lstrip().startswith("("):  # a function call
            continue
        names.add(token)
    return names


@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template variable queries."""
    expressions = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                expressions.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard().get("panels", []))
    for variable in dashboard().get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            label_values = re.fullmatch(r"\s*label_values\((.+),\s*\w+\)\s*", query)
            expressions.append(label_values.group(1) if label_values else query)
    return expressions


@cache
def prometheus_jobs() -> dict[str, dict]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


# --- docker-compose ----------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_stack():
    expected = {"postgres", "redis", "minio", "createbuckets", "prometheus", *TASKFLOW_SERVICES}
    assert expected <= set(compose()["services"])


def test_compose_pins_minio_and_its_client_to_release_tags():
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", compose_service("minio")["image"])
    assert re.fullmatch(r"minio/mc:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", compose_service("createbuckets")["image"])


def test_no_compose_service_pulls_an_unpinned_image():
    for name, service in compose()["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image} is not pinned"


def test_compose_creates_the_bucket_the_app_uses_once_and_idempotently():
    service = compose_service("createbuckets")
    command = normalized_command(service["command"])
    assert command[:2] == ["mb", "--ignore-existing"]
    bucket = service["command"][-1].removeprefix("local/")
    assert compose_service("web")["environment"]["AWS_STORAGE_BUCKET_NAME"] == bucket
    assert service["depends_on"]["minio"]["condition"] == "service_healthy"
    assert service["restart"] == "no"


def test_compose_redis_keeps_its_data_and_never_evicts_a_key():
    command = " ".join(compose_service("redis")["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_compose_starts_taskflow_only_after_migrations_and_the_bucket():
    migrate = compose_service("migrate")
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        assert compose_service(name)["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("web", "worker"):
        assert compose_service(name)["depends_on"]["createbuckets"]["condition"] == "service_completed_successfully"


def test_compose_points_taskflow_at_the_compose_backends():
    services = set(compose()["services"])
    for name in TASKFLOW_SERVICES:
        environment = compose_service(name)["environment"]
        for variable in ("DATABASE_URL", "REDIS_URL", "AWS_S3_ENDPOINT_URL"):
            host = urlsplit(environment[variable]).hostname
            assert host in services, f"{name}: {variable} points at {host}, not a compose service"


def test_compose_runs_exactly_one_beat():
    beat = compose_service("beat")
    assert beat["deploy"]["replicas"] == 1
    assert beat.get("scale", 1) == 1


def test_compose_worker_stops_gracefully_for_longer_than_the_longest_task():
    assert duration_seconds(compose_service("worker")["stop_grace_period"]) > settings.TASK_MAX_TIMEOUT


def test_compose_mounts_the_prometheus_config_into_a_pinned_prometheus():
    service = compose_service("prometheus")
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", service["image"])
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in service["volumes"]


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_multi_stage_image():
    bases = [arguments.split()[0] for arguments in dockerfile_values("FROM")]
    assert len(bases) >= 2, "build and runtime stages"
    for base in bases:
        assert "slim" in base, base
        assert ":" in base and not base.endswith(":latest"), base
    assert any(arguments.startswith("--from=") for arguments in dockerfile_values("COPY"))


def test_dockerfile_collects_static_files_at_build_time():
    assert any("manage.py collectstatic --noinput" in arguments for arguments in dockerfile_values("RUN"))


def test_image_runs_as_the_non_root_uid_10001():
    user = dockerfile_values("USER")[-1]
    assert user.split(":")[0] == "10001", "numeric, so Kubernetes can verify runAsNonRoot"
    keywords = [keyword for keyword, _ in dockerfile()]
    last_from = max(index for index, keyword in enumerate(keywords) if keyword == "FROM")
    assert "USER" in keywords[last_from:], "the runtime stage switches to the app user"


def test_image_health_check_requests_a_url_that_exists():
    (healthcheck,) = dockerfile_values("HEALTHCHECK")
    match = re.search(r"http://[^/'\"\s]+:(\d+)(/[^'\"\s]*)", healthcheck)
    assert match, healthcheck
    port, path = match.groups()
    assert int(port) == WEB_PORT
    assert resolves(path), f"HEALTHCHECK requests {path}, which is not in the URL conf"
    assert resolve(path).url_name == "healthz"
    assert str(WEB_PORT) in dockerfile_values("EXPOSE")[-1].split()


# --- Commands: Procfile, Dockerfile, compose and Kubernetes agree -----------------------------


def test_web_runs_the_same_gunicorn_command_everywhere():
    procfile_web = normalized_command(procfile()["web"])
    assert procfile_web == normalized_command(json.loads(dockerfile_values("CMD")[-1]))
    assert procfile_web == normalized_command(compose_service("web")["command"])
    assert procfile_web == k8s_command(main_container("Deployment", "web"))
    config = procfile_web[procfile_web.index("--config") + 1]
    assert (BASE_DIR / config).is_file()


def test_worker_runs_the_same_celery_command_everywhere():
    procfile_worker = normalized_command(procfile()["worker"])
    assert procfile_worker == normalized_command(compose_service("worker")["command"])
    assert procfile_worker == k8s_command(main_container("Deployment", "worker"))


def test_webhook_workers_run_the_same_celery_command_everywhere_on_the_webhooks_queue_alone():
    from apps.webhooks.tasks import QUEUE, send_due_webhooks, send_webhook

    procfile_webhooks = normalized_command(procfile()["webhooks"])
    assert procfile_webhooks == normalized_command(compose_service("webhooks")["command"])
    assert procfile_webhooks == k8s_command(main_container("Deployment", "webhooks"))
    assert procfile_webhooks[procfile_webhooks.index("--queues") + 1] == QUEUE
    assert send_webhook.queue == send_due_webhooks.queue == QUEUE
    # The task workers leave deliveries alone: a slow endpoint never takes a task's slot.
    assert QUEUE not in shell_default(procfile()["worker"], "TASKFLOW_QUEUES").split(",")


def test_beat_runs_the_same_celery_command_everywhere():
    procfile_beat = normalized_command(procfile()["beat"])
    assert procfile_beat == normalized_command(compose_service("beat")["command"])
    assert procfile_beat == k8s_command(main_container("Deployment", "beat"))


def test_migrations_run_the_same_command_in_compose_and_kubernetes():
    assert normalized_command(compose_service("migrate")["command"]) == k8s_command(main_container("Job", "migrate"))


def test_every_celery_invocation_names_the_taskflow_celery_app():
    from taskflow_site.celery import app

    texts = [PROCFILE.read_text(), COMPOSE_FILE.read_text()] + [p.read_text() for p in K8S_DIR.glob("*.yaml")]
    apps = {name for text in texts for name in re.findall(r"--app[\s\"',-]+([\w.:]+)", text)}
    invocations = sum(len(re.findall(r"\bcelery\b[\s\"',-]+--app", text)) for text in texts)
    assert invocations >= 6, "worker and beat in the Procfile, compose and Kubernetes at least"
    assert apps == {"taskflow_site"}
    assert find_app("taskflow_site") is app


def test_every_worker_consumes_the_same_queues():
    procfile_queues = shell_default(procfile()["worker"], "TASKFLOW_QUEUES")
    assert shell_default(compose_service("worker")["command"], "TASKFLOW_QUEUES") == procfile_queues
    (config_map,) = k8s_objects("ConfigMap")
    assert config_map["data"]["TASKFLOW_QUEUES"] == procfile_queues
    default_queue = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    assert default_queue in procfile_queues.split(","), "tasks that name no queue go to the default one"


def test_deployed_workers_consume_every_task_kinds_queue():
    from apps.tasks.registry import all_kinds

    assert all_kinds(), "the built-in kinds are registered"
    queues = set(shell_default(procfile()["worker"], "TASKFLOW_QUEUES").split(","))
    unconsumed = {kind.name: kind.queue for kind in all_kinds() if kind.queue not in queues}
    assert not unconsumed, f"no deployed worker consumes these kinds' queues: {unconsumed}"


# --- Environment variables ------------------------------------------------------------------


def test_every_variable_compose_and_kubernetes_set_is_read_by_the_code():
    known = variables_read_by_the_code()
    set_by = {}
    for name in TASKFLOW_SERVICES:
        for variable in compose_service(name)["environment"]:
            set_by.setdefault(variable, f"docker-compose.yml ({name})")
    for _, doc in k8s_documents():
        data = {**doc.get("data", {}), **doc.get("stringData", {})} if doc["kind"] in ("ConfigMap", "Secret") else {}
        for variable in data:
            set_by.setdefault(variable, f"{doc['kind']} {doc['metadata']['name']}")
    for name, pod_spec in pod_specs():
        for container in all_containers(pod_spec):
            # A variable only there to build another one, like POD_IP in "$(ALLOWED_HOSTS),$(POD_IP)".
            referenced = set(re.findall(r"\$\((\w+)\)", json.dumps(container)))
            for entry in container.get("env", []):
                if not (entry["name"] in referenced and "valueFrom" in entry):
                    set_by.setdefault(entry["name"], f"{name}/{container['name']}")
    for variable in env_example_variables():
        set_by.setdefault(variable, ".env.example")
    unread = {variable: where for variable, where in set_by.items() if variable not in known | NOT_YET_READ}
    assert not unread, f"set but read by no code: {unread}"


def test_env_example_documents_every_variable_the_code_reads():
    undocumented = (settings_variables() | variables_read_by_the_code()) - env_example_variables()
    assert not undocumented, f"add these to .env.example: {sorted(undocumented)}"


def test_settings_variable_parser_finds_the_typed_helpers():
    names = settings_variables()
    # env.str, env.bool, env.list, env.int, env.db_url, env.email_url, env_choice, env_positive_int
    expected = {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "SECURE_HSTS_SECONDS", "DATABASE_URL", "EMAIL_URL"}
    assert expected | {"LOG_FORMAT", "FILES_URL_EXPIRE_SECONDS"} <= names


def test_every_config_map_and_secret_a_pod_uses_is_defined():
    config_maps = {doc["metadata"]["name"]: doc["data"] for doc in k8s_objects("ConfigMap")}
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in k8s_objects("Secret")}
    for name, pod_spec in pod_specs():
        for container in all_containers(pod_spec):
            available = set()
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    available |= set(config_maps[source["configMapRef"]["name"]])
                if "secretRef" in source:
                    available |= set(secrets[source["secretRef"]["name"]])
            available |= {entry["name"] for entry in container.get("env", [])}
            # Kubernetes leaves an undefined $(NAME) as is: celery would get "--queues $(TASKFLOW_QUEUES)".
            for variable in re.findall(r"\$\((\w+)\)", json.dumps(container)):
                assert variable in available, f"{name}/{container['name']} uses undefined $({variable})"


def test_secret_example_holds_only_placeholders():
    (secret,) = k8s_objects("Secret")
    assert "data" not in secret
    assert secret["stringData"]
    for variable, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{variable} must be an obvious placeholder"
    assert "EXAMPLE ONLY" in (K8S_DIR / SECRET_EXAMPLE).read_text()


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", sorted(p.name for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_kubernetes_manifest_validates_against_the_kubernetes_schemas(manifest):
    documents = [doc for name, doc in k8s_documents() if name == manifest]
    assert documents, f"{manifest} holds no object"
    for doc in documents:
        try:
            # strict: an unknown (misspelt) field is an error, not silently ignored.
            validate_kubernetes(doc, KUBERNETES_VERSION, strict=True)
        except SchemaNotFoundError as exc:
            pytest.fail(exc.message)


def test_kustomization_lists_every_manifest_except_the_secret_example():
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml", SECRET_EXAMPLE}
    assert set(kustomization()["resources"]) == manifests
    assert len(kustomization()["resources"]) == len(manifests), "listed twice"


def test_every_object_lives_in_the_kustomization_namespace():
    (namespace,) = k8s_objects("Namespace")
    assert kustomization()["namespace"] == namespace["metadata"]["name"]
    for name, doc in k8s_documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], name


def test_every_taskflow_container_runs_one_pinned_image_chosen_by_kustomize():
    images = {container["image"] for _, spec in pod_specs() for container in all_containers(spec)}
    assert len(images) == 1, images
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest", image
    assert name in {entry["name"] for entry in kustomization()["images"]}


def test_pods_run_as_the_image_user_without_privileges():
    uid = int(dockerfile_values("USER")[-1].split(":")[0])
    for name, pod_spec in pod_specs():
        security = pod_spec["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == uid, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in all_containers(pod_spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, f"{name}/{container['name']}"
            assert context["capabilities"]["drop"] == ["ALL"], f"{name}/{container['name']}"


def test_every_container_has_resource_requests_and_limits():
    for name, pod_spec in pod_specs():
        for container in all_containers(pod_spec):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}/{container['name']}"


def test_web_is_ready_on_readyz_and_alive_on_healthz():
    container = main_container("Deployment", "web")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == WEB_PORT
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in ("http", WEB_PORT)
        assert resolves(path) and resolve(path).url_name == path.strip("/")


def test_web_allows_its_pod_ip_as_host_for_probes_and_scraping():
    env = {entry["name"]: entry for entry in main_container("Deployment", "web")["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["ALLOWED_HOSTS"]["value"] == "$(ALLOWED_HOSTS),$(POD_IP)"


def test_ingress_routes_to_the_web_service_and_the_service_to_the_web_pods():
    service = k8s_object("Service", "web")
    web = k8s_object("Deployment", "web")
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    port_names = {port["name"] for port in web["spec"]["template"]["spec"]["containers"][0]["ports"]}
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    paths = k8s_object("Ingress", "web")["spec"]["rules"][0]["http"]["paths"]
    assert {"/api", "/admin", "/static"} <= {path["path"] for path in paths}
    assert "/metrics" not in {path["path"] for path in paths}
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in service_ports


def test_worker_termination_grace_outlasts_the_longest_task_time_limit():
    worker = k8s_object("Deployment", "worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > settings.TASK_MAX_TIMEOUT


@pytest.mark.parametrize("component", ["worker", "webhooks", "streams"])
def test_each_autoscaler_scales_its_own_deployment_on_cpu(component):
    autoscaler = k8s_object("HorizontalPodAutoscaler", component)
    worker = k8s_object("Deployment", component)
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", worker["metadata"]["name"])
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in autoscaler["spec"]["metrics"])
    assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    assert "replicas" not in worker["spec"], "the autoscaler owns the replica count"
    assert "cpu" in main_container("Deployment", component)["resources"]["requests"], "CPU utilisation needs a request"


def test_beat_runs_exactly_one_replica_and_is_recreated_not_rolled():
    beat = k8s_object("Deployment", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in k8s_objects("HorizontalPodAutoscaler")}
    assert beat["metadata"]["name"] not in scaled


def test_pods_with_metrics_carry_prometheus_scrape_annotations_for_their_metrics_port():
    for component, port in (("web", WEB_PORT), ("worker", WORKER_METRICS_PORT)):
        template = k8s_object("Deployment", component)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(port)
        assert port in {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}


# --- Prometheus and Grafana ---------------------------------------------------------------


def test_worker_metrics_port_agrees_across_compose_kubernetes_and_prometheus():
    compose_worker = compose_service("worker")
    assert compose_worker["environment"]["WORKER_METRICS_PORT"] == str(WORKER_METRICS_PORT)
    assert str(WORKER_METRICS_PORT) in [str(port) for port in compose_worker["expose"]]
    env = {entry["name"]: entry.get("value") for entry in main_container("Deployment", "worker")["env"]}
    assert env["WORKER_METRICS_PORT"] == str(WORKER_METRICS_PORT)
    assert str(WORKER_METRICS_PORT) in dockerfile_values("EXPOSE")[-1].split()


def test_prometheus_scrapes_web_metrics_on_the_web_port():
    job = prometheus_jobs()["taskflow-web"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for config in job["static_configs"] for target in config["targets"]]
    assert targets == [f"web:{WEB_PORT}"]
    assert str(WEB_PORT) in [str(port) for port in compose_service("web")["expose"]]
    # Prometheus sends Host: web, which Django must accept.
    assert "web" in compose_service("web")["environment"]["ALLOWED_HOSTS"].split(",")


def test_prometheus_scrapes_every_worker_replica_on_the_worker_metrics_port():
    job = prometheus_jobs()["taskflow-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["port"] == WORKER_METRICS_PORT
    assert "worker" in compose()["services"]


def test_grafana_dashboard_queries_only_known_metrics():
    used = set().union(*(promql_metric_names(expression) for expression in dashboard_queries()))
    assert used, "no query found"
    assert used <= KNOWN_METRICS, f"unknown metrics: {sorted(used - KNOWN_METRICS)}"


def test_grafana_dashboard_charts_every_taskflow_metric():
    used = set().union(*(promql_metric_names(expression) for expression in dashboard_queries()))
    assert used >= KNOWN_METRICS, f"not charted: {sorted(KNOWN_METRICS - used)}"


def test_grafana_dashboard_is_importable():
    board = dashboard()
    assert board["title"] and board["uid"]
    panel_ids = [panel["id"] for panel in board["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_promql_metric_extraction_skips_functions_labels_keywords_and_variables():
    expression = (
        'histogram_quantile(0.95, sum by (le, kind) (rate(taskflow_task_run_seconds_bucket{kind=~"$kind"}'
        "[$__rate_interval]))) / on (kind) group_left sum(rate(other_metric[5m] offset 1h)) > bool 0"
    )
    assert promql_metric_names(expression) == {"taskflow_task_run_seconds_bucket", "other_metric"}
