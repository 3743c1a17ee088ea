"""The embedded mode as `make run` starts it: migrate, demo user, system jobs, then honcho on the Procfile
(its processes but `streams`).

Nothing of the test run's environment reaches these processes (`make test` sets DATABASE_URL
and REDIS_URL): the environment is built from scratch, so they run on SQLite, kombu's
filesystem broker, local media and the local-memory cache, all under a temporary folder.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import BASE_DIR, free_port, http

# The Procfile's processes `make run` starts (the Makefile's EMBEDDED_PROCESSES; tests/deploy
# checks they agree): web serves the live streams itself in the embedded mode.
PROCESSES = ("web", "worker", "webhooks", "beat")
# The variables a developer's shell has that the embedded mode may use; nothing TaskFlow reads.
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
READY_MARKERS = {
    "worker": re.compile(r"worker\.1 +\| .*celery@\S+ ready\."),
    "beat": re.compile(r"beat\.1 +\| .*beat: Starting"),
}


def embedded_env(var_dir: Path, port: int) -> dict[str, str]:
    """What `make run` gives its processes: PATH with the virtualenv first, HOST and PORT."""
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        # The one difference from `make run`: a fresh folder instead of the checkout's var/.
        "TASKFLOW_VAR_DIR": str(var_dir),
        # Tests elsewhere may hold the worker's default metrics port (9808) at this moment.
        "WORKER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    return env


class EmbeddedStack:
    def __init__(self, var_dir: Path):
        self.var_dir = var_dir
        self.port = free_port()
        self.env = embedded_env(var_dir, self.port)
        self.log_path = var_dir / "honcho.log"
        self.process = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self, timeout: float = 60):
        self.manage("migrate", "--noinput")
        self.manage("ensure_demo_user")
        self.manage("register_system_jobs")
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (kept open for the process lifetime)
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile", "--env", os.devnull, *PROCESSES],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"honcho exited early:\n{self.read_log()}")
            if self._web_answers() and all(marker.search(self.read_log()) for marker in READY_MARKERS.values()):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"the embedded stack did not come up:\n{self.read_log()}")

    def _web_answers(self) -> bool:
        try:
            return http("GET", self.url("/healthz"), timeout=2).status == 200
        except OSError:
            return False

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        """honcho starts each Procfile entry in a session of its own and says so in its log."""
        return [int(pid) for pid in re.findall(r"\| \w+\.\d+ started \(pid=(\d+)\)", self.read_log())]

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # honcho stops the processes it started
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in self.child_pids():  # whatever honcho could not stop
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if getattr(self, "log", None):
            self.log.close()
