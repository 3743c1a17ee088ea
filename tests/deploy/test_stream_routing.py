"""One address, two servers: the live event streams go to the ASGI streams process (uvicorn),
everything else to gunicorn, in docker compose (the nginx router, deploy/nginx/taskflow.conf)
and in Kubernetes (the Ingresses), as the ASGI entry point itself routes them.

Checked offline against Django's URL conf: every URL whose view is a stream goes to the
streams process under every router, and no other URL does. (tests/test_router.py sends real
requests through nginx.)
"""

import re
from functools import cache
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RoutePattern

from .test_deploy_files import (
    BASE_DIR,
    COMPOSE_FILE,
    PROCFILE,
    WEB_PORT,
    compose_service,
    dockerfile_values,
    duration_seconds,
    k8s_command,
    k8s_object,
    k8s_objects,
    main_container,
    normalized_command,
    procfile,
    resolves,
)

NGINX_CONFIG = BASE_DIR / "deploy" / "nginx" / "taskflow.conf"
MAKEFILE = BASE_DIR / "Makefile"
ASGI_APP = "taskflow_site.asgi:application"
SAMPLE_ID = "0b6a6a3c-9f5e-4c53-8a8e-2d3c6f1e7a10"
ROUTE_SAMPLES = {"uuid": SAMPLE_ID, "int": "7", "str": "x", "slug": "x", "path": "x/y"}
# Near misses that no URL pattern produces: they must stay with web (which answers 404).
NOT_STREAMS = [
    "/api/tasks/not-a-task-id/events/stream/",
    f"/api/tasks/{SAMPLE_ID}/events/stream/more",
    "/api/tasks/events/streams/",
    "/api/files/events/stream/",
    "/api/tasks/counts/",
]


# --- Django's URLs, as examples ----------------------------------------------------------------


def _example(pattern) -> str | None:
    """A path a URL pattern matches, with a sample for each argument (None: no simple sample)."""
    if isinstance(pattern, RoutePattern):
        return re.sub(r"<(?:(\w+):)?\w+>", lambda m: ROUTE_SAMPLES[m.group(1) or "str"], str(pattern))
    text = re.sub(r"\(\?P<\w+>[^)]*\)", SAMPLE_ID, pattern.regex.pattern)  # DRF routers' (?P<pk>[^/.]+)
    text = text.removeprefix("^").removesuffix("$").replace(r"\.", ".")
    return None if re.search(r"[()\[\]?*+|{}\\]", text) else text


@cache
def url_examples() -> dict[str, bool]:
    """A sample path of every URL of the URL conf -> whether its view is a live stream."""
    from apps.tasks.streams import _StreamView

    def walk(patterns, prefix):
        for entry in patterns:
            piece = _example(entry.pattern)
            if piece is None:
                continue
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + piece)
            elif isinstance(entry, URLPattern):
                yield prefix + piece

    examples = {}
    for path in walk(get_resolver().url_patterns, "/"):
        if resolves(path):
            view = getattr(resolve(path).func, "view_class", None)
            examples[path] = isinstance(view, type) and issubclass(view, _StreamView)
    return examples


def stream_paths() -> list[str]:
    """Every stream URL, with and without its trailing slash (both are served)."""
    paths = [path for path, is_stream in url_examples().items() if is_stream]
    return paths + [path.rstrip("/") for path in paths]


def other_paths() -> list[str]:
    return [path for path, is_stream in url_examples().items() if not is_stream] + NOT_STREAMS


def test_the_url_examples_cover_the_api_the_admin_and_every_stream():
    streams = {path for path, is_stream in url_examples().items() if is_stream}
    assert streams == {
        "/api/tasks/events/stream/",
        f"/api/tasks/{SAMPLE_ID}/events/stream/",
        "/api/tasks/counts/stream/",
    }
    others = set(other_paths())
    assert {"/api/tasks/", f"/api/tasks/{SAMPLE_ID}/", f"/api/tasks/{SAMPLE_ID}/events/", "/admin/"} <= others
    assert len(others) > 50


def test_the_asgi_entry_point_sends_exactly_the_stream_urls_to_the_streaming_server():
    from taskflow_site.asgi import STREAM_PATH

    assert [path for path in stream_paths() if not STREAM_PATH.match(path)] == []
    assert [path for path in other_paths() if STREAM_PATH.match(path)] == []


# --- The streams process: one command everywhere ------------------------------------------------


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_streams_run_the_same_uvicorn_command_on_the_asgi_entry_point_everywhere():
    from taskflow_site import asgi

    command = normalized_command(procfile()["streams"])
    assert command == normalized_command(compose_service("streams")["command"])
    assert command == k8s_command(main_container("Deployment", "streams"))
    assert command[:2] == ["uvicorn", ASGI_APP]
    module, attribute = ASGI_APP.split(":")
    assert module == asgi.__name__ and callable(getattr(asgi, attribute))
    assert option(command, "--host") == "0.0.0.0"
    # The entry point's lifespan lets the streams a stopping server cut give their slots back
    # (apps/core/streaming.py); the app serves no WebSocket.
    assert option(command, "--lifespan") == "on" and option(command, "--ws") == "none"
    assert "--workers" not in command, "one process per container or pod: scale those instead"


def streams_port() -> int:
    return int(option(normalized_command(procfile()["streams"]), "--port"))


def test_the_streams_port_agrees_across_compose_kubernetes_the_image_and_the_router():
    port = streams_port()
    assert port != WEB_PORT, "on one machine (the Procfile) web and streams listen side by side"
    assert str(port) in [str(exposed) for exposed in compose_service("streams")["expose"]]
    assert "ports" not in compose_service("streams"), "reached through the router only"
    assert f":{port}/healthz" in " ".join(compose_service("streams")["healthcheck"]["test"])
    assert str(port) in dockerfile_values("EXPOSE")[-1].split()
    container = main_container("Deployment", "streams")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    assert upstreams()["taskflow_streams"] == [f"streams:{port}"]


def test_streams_stop_cutting_open_streams_before_they_are_killed():
    grace = int(option(normalized_command(procfile()["streams"]), "--timeout-graceful-shutdown"))
    assert grace < duration_seconds(compose_service("streams")["stop_grace_period"])
    pod = k8s_object("Deployment", "streams")["spec"]["template"]["spec"]
    pause = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pause + grace < pod["terminationGracePeriodSeconds"]


def test_streams_pods_are_probed_like_web_and_allow_their_pod_ip_as_host():
    container = main_container("Deployment", "streams")
    for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
        assert resolves(path)
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["ALLOWED_HOSTS"]["value"] == "$(ALLOWED_HOSTS),$(POD_IP)"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_compose_starts_streams_after_migrations():
    assert compose_service("streams")["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_make_run_starts_every_procfile_process_but_streams_with_web_on_the_users_port():
    from tests.embedded.stack import PROCESSES

    match = re.search(r"^EMBEDDED_PROCESSES\s*:?=\s*(.+)$", MAKEFILE.read_text(), re.MULTILINE)
    started = match.group(1).split()
    assert started == list(PROCESSES)
    assert set(started) == set(procfile()) - {"streams"}
    # honcho gives the first process it starts the base PORT (the next ones PORT + 100, ...).
    assert started[0] == "web"
    assert "$(EMBEDDED_PROCESSES)" in MAKEFILE.read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert PROCFILE.read_text().index("web:") < PROCFILE.read_text().index("streams:")


# --- docker compose: the nginx router ----------------------------------------------------------


def nginx_tokens(text: str) -> list[str]:
    """nginx's configuration syntax as tokens: words, quoted strings (unquoted), `{`, `}`, `;`."""
    text = re.sub(r"(?m)(^|\s)#.*$", r"\1", text)
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{};]|[^\s{};]+', text)
    return [token[1:-1] if token[:1] in "\"'" else token for token in tokens]


def nginx_blocks(tokens: list[str], start: int = 0) -> tuple[list[tuple], int]:
    """[(directive, [arguments], children or None)] up to the closing brace, and where it ended."""
    entries, words, index = [], [], start
    while index < len(tokens):
        token = tokens[index]
        if token == ";":
            entries.append((words[0], words[1:], None))
            words = []
        elif token == "{":
            children, index = nginx_blocks(tokens, index + 1)
            entries.append((words[0], words[1:], children))
            words = []
        elif token == "}":
            return entries, index
        else:
            words.append(token)
        index += 1
    assert not words, f"unterminated directive {words}"
    return entries, index


@cache
def nginx_config() -> list[tuple]:
    entries, _ = nginx_blocks(nginx_tokens(NGINX_CONFIG.read_text()))
    return entries


def directives(block: list[tuple], name: str) -> list[tuple]:
    return [entry for entry in block if entry[0] == name]


def directive(block: list[tuple], name: str) -> list[str] | None:
    found = directives(block, name)
    assert len(found) <= 1, f"{name} set twice"
    return found[0][1] if found else None


def upstreams() -> dict[str, list[str]]:
    return {
        args[0]: [server_args[0] for _, server_args, _ in directives(children, "server")]
        for _, args, children in directives(nginx_config(), "upstream")
    }


def nginx_server() -> list[tuple]:
    (server,) = directives(nginx_config(), "server")
    return server[2]


def nginx_location(path: str) -> list[tuple]:
    """The location nginx picks for a path: the longest prefix, unless a regex location (in
    their order) matches; `=` and `^~` prefixes as nginx reads them."""
    locations = directives(nginx_server(), "location")
    prefix, prefix_block = None, None
    for _, args, block in locations:
        if args[0] == "=" and path == args[1]:
            return block
        if args[0] in ("~", "~*"):
            continue
        candidate = args[-1]
        if path.startswith(candidate) and (prefix is None or len(candidate) > len(prefix)):
            prefix, prefix_block = candidate, (args[0] == "^~", block)
    if prefix_block and prefix_block[0]:
        return prefix_block[1]
    for _, args, block in locations:
        if args[0] in ("~", "~*") and re.search(args[1], path, re.IGNORECASE if args[0] == "~*" else 0):
            return block
    assert prefix_block, f"no location for {path}"
    return prefix_block[1]


def proxied_to(path: str) -> str:
    (target,) = directive(nginx_location(path), "proxy_pass")
    return target.removeprefix("http://")


def nginx_seconds(value: str) -> int:
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(number) * units[unit] for number, unit in re.findall(r"(\d+)([smhd]?)", value))


def nginx_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_the_router_sends_exactly_the_stream_urls_to_the_streams_upstream():
    assert upstreams() == {"taskflow_web": [f"web:{WEB_PORT}"], "taskflow_streams": [f"streams:{streams_port()}"]}
    assert {path: proxied_to(path) for path in stream_paths()} == dict.fromkeys(stream_paths(), "taskflow_streams")
    assert {path: proxied_to(path) for path in other_paths()} == dict.fromkeys(other_paths(), "taskflow_web")


def test_the_router_passes_events_on_unbuffered_over_kept_http_1_1_connections():
    from apps.tasks.live import HEARTBEAT_SECONDS
    from apps.tasks.streams import MAX_SECONDS

    server = nginx_server()
    assert directive(server, "proxy_http_version") == ["1.1"]
    # Kept connections to the upstreams need the client's Connection header dropped.
    assert ["Connection", ""] in [args for _, args, _ in directives(server, "proxy_set_header")]
    stream = nginx_location("/api/tasks/events/stream/")
    assert directive(stream, "proxy_buffering") == ["off"]
    assert directive(stream, "proxy_cache") == ["off"]
    # Quiet between heartbeats: the read timeout outlasts a whole stream.
    assert nginx_seconds(directive(stream, "proxy_read_timeout")[0]) >= MAX_SECONDS > HEARTBEAT_SECONDS
    assert directive(nginx_location("/api/tasks/"), "proxy_buffering") is None  # the default (on) for the rest
    for _, args, children in directives(nginx_config(), "upstream"):
        assert directive(children, "keepalive"), f"{args[0]} keeps no connection"


def test_the_router_forwards_the_host_and_the_client_address_as_taskflow_expects():
    headers = {args[0]: args[1] for _, args, _ in directives(nginx_server(), "proxy_set_header")}
    assert headers["Host"] == "$http_host"  # with the port: absolute URLs (next pages) point back here
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    # Every location inherits them: one that sets its own proxy_set_header would drop the rest.
    for _, _, block in directives(nginx_server(), "location"):
        assert not directives(block, "proxy_set_header")
    # The router is the one proxy in front: compose counts it.
    assert compose_service("web")["environment"]["NUM_PROXIES"] == "1"
    assert compose_service("streams")["environment"]["NUM_PROXIES"] == "1"
    assert nginx_bytes(directive(nginx_server(), "client_max_body_size")[0]) > settings.FILES_MAX_UPLOAD_BYTES


def nginx_version(image: str) -> tuple[int, ...]:
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)(?:-[\w.-]+)?", image)
    assert match, f"{image}: the official nginx image at a pinned version"
    return tuple(int(part) for part in match.groups())


def test_compose_puts_the_router_in_front_on_the_one_published_port():
    router = compose_service("router")
    assert "./deploy/nginx/taskflow.conf:/etc/nginx/conf.d/default.conf:ro" in router["volumes"]
    (listen,) = directives(nginx_server(), "listen")
    assert router["ports"] == [f"{WEB_PORT}:{listen[1][0]}"]
    assert set(router["depends_on"]) == {"web", "streams"}
    for name in ("web", "streams"):
        assert "ports" not in compose_service(name), f"{name} is reached through the router only"
    assert str(WEB_PORT) in [str(port) for port in compose_service("web")["expose"]]
    # Upstream servers re-resolved at run time (`resolve`) need nginx 1.27.3 or later, and
    # Docker's DNS as the resolver.
    servers = [args for _, _, children in directives(nginx_config(), "upstream") for _, args, _ in children]
    if any("resolve" in args for args in servers if args):
        assert nginx_version(router["image"]) >= (1, 27, 3)
        assert directive(nginx_config(), "resolver")[0] == "127.0.0.11"
    assert "8000" in COMPOSE_FILE.read_text().split("services:", 1)[0]  # the header names the address


# --- Kubernetes: the Ingresses -----------------------------------------------------------------


def ingress_routes(host: str) -> list[tuple[str, str, str]]:
    """(path, pathType, service) of every Ingress rule for a host."""
    routes = []
    for ingress in k8s_objects("Ingress"):
        for rule in ingress["spec"]["rules"]:
            if rule["host"] == host:
                for path in rule["http"]["paths"]:
                    routes.append((path["path"], path["pathType"], path["backend"]["service"]["name"]))
    return routes


def ingress_path_matches(rule_path: str, path_type: str, path: str, *, regex: bool) -> bool:
    if regex:  # ingress-nginx's `location ~* "^<path>"`
        return re.match(rule_path, path, re.IGNORECASE) is not None
    if path_type == "Exact":
        return path == rule_path
    return path == rule_path or path.startswith(rule_path.rstrip("/") + "/")  # Prefix, by path segment


def ingress_nginx_service(host: str, path: str) -> str | None:
    """The Service ingress-nginx sends a path to. With `use-regex` on any Ingress of the host,
    every path of the host is a case-insensitive regex anchored at the start, and the longest
    path is written (and so matched) first. Without it, prefixes by path segment."""
    ingresses = [i for i in k8s_objects("Ingress") if any(r["host"] == host for r in i["spec"]["rules"])]
    use_regex = "nginx.ingress.kubernetes.io/use-regex"
    regex = any(i["metadata"].get("annotations", {}).get(use_regex) == "true" for i in ingresses)
    routes = sorted(ingress_routes(host), key=lambda route: len(route[0]), reverse=True)
    for rule_path, path_type, service in routes:
        if ingress_path_matches(rule_path, path_type, path, regex=regex):
            return service
    return None


def test_the_ingress_sends_exactly_the_stream_urls_to_the_streams_service():
    web, streams = k8s_object("Service", "web"), k8s_object("Service", "streams")
    (host,) = {rule["host"] for ingress in k8s_objects("Ingress") for rule in ingress["spec"]["rules"]}
    routed = {path: ingress_nginx_service(host, path) for path in stream_paths()}
    assert routed == dict.fromkeys(stream_paths(), streams["metadata"]["name"])
    public = [path for path in other_paths() if path.startswith(("/api/", "/admin/", "/static/"))]
    assert len(public) > 40
    assert {path: ingress_nginx_service(host, path) for path in public} == dict.fromkeys(
        public, web["metadata"]["name"]
    )
    for private in ("/metrics", "/healthz", "/readyz"):
        assert ingress_nginx_service(host, private) is None


def test_the_streams_ingress_uses_regex_paths_unbuffered_with_long_timeouts():
    from apps.tasks.streams import MAX_SECONDS

    ingress = k8s_object("Ingress", "streams")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= MAX_SECONDS
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= MAX_SECONDS
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            # Regex characters are refused in Prefix and Exact paths (ingress-nginx's path validation).
            assert path["pathType"] == "ImplementationSpecific"
    web = k8s_object("Ingress", "web")
    assert ingress["spec"]["tls"] == web["spec"]["tls"]
    assert ingress["spec"]["ingressClassName"] == web["spec"]["ingressClassName"]
    body_size = web["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert nginx_bytes(body_size) > settings.FILES_MAX_UPLOAD_BYTES


def test_the_streams_service_selects_the_streams_pods_on_their_port():
    service, deployment = k8s_object("Service", "streams"), k8s_object("Deployment", "streams")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    web_labels = k8s_object("Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= web_labels.items(), "only the streams pods"
    port_names = {port["name"] for port in main_container("Deployment", "streams")["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    ingress = k8s_object("Ingress", "streams")
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == service["metadata"]["name"]
            assert path["backend"]["service"]["port"]["name"] in service_ports


@pytest.mark.parametrize("path", [Path("deploy/nginx/taskflow.conf"), Path("deploy/k8s/streams-ingress.yaml")])
def test_every_router_names_the_stream_paths_it_sends(path):
    text = (BASE_DIR / path).read_text()
    for example in ("/api/tasks/<id>/events/stream/", "/api/tasks/events/stream/", "/api/tasks/counts/stream/"):
        assert example in text, f"{path} does not say it routes {example}"
