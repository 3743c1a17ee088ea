"""docker compose's router for real: nginx with deploy/nginx/taskflow.conf in front of gunicorn
and uvicorn (the streams process), requests sent through it as clients send them.

Only the upstream addresses and the listening port are changed (compose's service names do not
resolve here). tests/deploy checks the same file offline against the URL conf.
"""

import json
import shutil
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from apps.tasks import services
from apps.tasks.models import TaskEvent
from tests.support.processes import BASE_DIR, free_port, gunicorn_command, http, serving_pids, uvicorn_command
from tests.support.sse import EventStream

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
CONFIG = BASE_DIR / "deploy" / "nginx" / "taskflow.conf"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/apt-packages.txt)"),
]


class Router:
    """nginx in the foreground on a free port, in a folder of its own."""

    def __init__(self, folder: Path, *, web_port: int, streams_port: int):
        self.folder, self.port = folder, free_port()
        config = CONFIG.read_text()
        for old, new in (
            ("server web:8000 resolve;", f"server 127.0.0.1:{web_port};"),
            ("server streams:8001 resolve;", f"server 127.0.0.1:{streams_port};"),
            ("listen 8000;", f"listen 127.0.0.1:{self.port};"),
        ):
            assert config.count(old) == 1, f"{old!r} is no longer in {CONFIG.name}: update this test"
            config = config.replace(old, new)
        (folder / "taskflow.conf").write_text(config)
        temp = "".join(
            f"{kind}_temp_path {folder}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (folder / "nginx.conf").write_text(
            f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log info;\n"
            "events { worker_connections 128; }\n"
            f"http {{\naccess_log {folder}/access.log;\n{temp}include {folder}/taskflow.conf;\n}}\n"
        )
        self.command = [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
        self.process = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, "-t"], capture_output=True, text=True, timeout=30)

    def start(self):
        self.process = subprocess.Popen(
            [*self.command, "-g", "daemon off;"], stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                http("GET", self.url("/healthz"), timeout=2)
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not answer")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nginx's fast stop; its workers follow
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def stack(web_env, start_web, tmp_path):
    web = start_web(web_env, gunicorn_command(workers=1), name="router-web")
    streams = start_web(web_env, uvicorn_command(), name="router-streams")
    router = Router(tmp_path, web_port=web.port, streams_port=streams.port)
    checked = router.check()
    assert checked.returncode == 0, checked.stderr
    router.start()
    yield web, streams, router
    router.stop()


def test_the_router_sends_streams_to_uvicorn_unbuffered_and_the_rest_to_gunicorn(stack, owner, staff):
    web, streams, router = stack
    # Due in an hour, so that no worker (of another test) runs them; one cancelled (final).
    later = timezone.now() + timedelta(hours=1)
    tasks = [
        services.task_submit(owner=owner, spec=services.TaskSpec(kind="demo.noop", payload={"n": n}, run_at=later))[0]
        for n in range(3)
    ]
    task = services.task_cancel(task=tasks[2], actor=owner)
    owner_auth = {"Authorization": f"Bearer {RefreshToken.for_user(owner).access_token}"}

    # The API through the router, from gunicorn; its next page points back at the router.
    page = http("GET", router.url("/api/tasks/?page_size=1"), headers=owner_auth)
    assert page.status == 200, page.body
    assert page.json()["next"].startswith(router.url("/api/tasks/?"))
    assert serving_pids(web.read_log())

    # One task's stream, whole, from uvicorn.
    stream = EventStream(router.url(f"/api/tasks/{task.pk}/events/stream/"), owner_auth)
    assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
    events = list(stream.events(until=lambda event: event.event == "end"))
    stream.close()
    history = list(TaskEvent.objects.filter(task=task).order_by("id").values_list("id", flat=True))
    assert [event.id for event in events if event.id is not None] == history
    assert events[-1].data == {"task": str(task.pk), "status": "cancelled"}

    # The staff's counts stream: the first event reaches the client while the stream stays open.
    staff_auth = {"Authorization": f"Bearer {RefreshToken.for_user(staff).access_token}"}
    counts = EventStream(router.url("/api/tasks/counts/stream"), staff_auth, timeout=10)
    (opened,) = counts.events(until=lambda event: event.event == "counts", timeout=10)
    counts.close()
    assert opened.data["statuses"]["pending"]["live"] == 2

    opened_by_streams = [
        json.loads(line)["path"] for line in streams.read_log().splitlines() if '"event": "stream_opened"' in line
    ]
    assert opened_by_streams == [f"/api/tasks/{task.pk}/events/stream/", "/api/tasks/counts/stream/"]
    assert "/stream" not in "\n".join(line for line in web.read_log().splitlines() if line.startswith("access"))
