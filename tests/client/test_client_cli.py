"""The `taskflow` command line, run as a real process against a real TaskFlow."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from apps.tasks.models import Task as TaskRow
from tests.client.conftest import PASSWORD_FOR_CLIENT_TESTS

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def taskflow(env, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "taskflow_client", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def logged_in(owner, cli_env, api_key_for):
    return cli_env | {"TASKFLOW_API_KEY": api_key_for(owner)}


def test_login_saves_an_api_key_readable_by_the_user_alone(owner, cli_env):
    url = cli_env.pop("TASKFLOW_URL")

    login = taskflow(cli_env, "login", "--url", url, "--email", owner.email, "--password", PASSWORD_FOR_CLIENT_TESTS)

    assert login.returncode == 0, login.stderr
    path = cli_env["TASKFLOW_CONFIG"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(Path(path).read_text())
    assert saved["url"] == url and owner.api_keys.get().prefix in saved["api_key"]
    kinds = taskflow(cli_env, "kinds", "--json")  # the URL and key from the file alone
    assert kinds.returncode == 0, kinds.stderr
    assert {"demo.sleep", "demo.noop", "demo.fail"} <= {kind["name"] for kind in json.loads(kinds.stdout)}
    wrong = taskflow(cli_env, "login", "--url", url, "--email", owner.email, "--password", "wrong")
    assert wrong.returncode == 1 and "credentials" in wrong.stderr.lower()
    revoked = taskflow(cli_env, "login", "--url", url, "--api-key", "not-a-key")
    assert revoked.returncode == 1
    assert json.loads(Path(path).read_text()) == saved  # a key that does not work is not saved


def test_submit_wait_shows_progress_and_exits_zero(owner, logged_in):
    done = taskflow(logged_in, "submit", "demo.sleep", "--payload", '{"seconds": 1.5, "steps": 3}', "--wait")

    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and '"steps": 3' in done.stdout
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Submitted ")
    assert any(line.startswith("progress  ") and "%" in line for line in lines), done.stderr
    assert lines[-1].startswith("succeeded")


def test_a_failed_task_exits_3_and_can_be_retried_and_tailed(owner, logged_in, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text('{"failures": 5, "message": "bad input"}')

    failed = taskflow(logged_in, "submit", "demo.fail", "--payload", f"@{payload}", "--max-retries", "0", "--wait",
                      "--json")  # fmt: skip
    assert failed.returncode == 3, failed.stderr
    task = json.loads(failed.stdout)
    assert task["status"] == "failed" and "bad input" in task["error"]

    listed = taskflow(logged_in, "ls", "--status", "failed", "--kind", "demo.fail", "--json")
    assert [item["id"] for item in json.loads(listed.stdout)] == [task["id"]]
    retried = taskflow(logged_in, "retry", task["id"], "--reason", "again", "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["status"] == "queued"
    tail = taskflow(logged_in, "tail", task["id"], "--json")
    assert tail.returncode == 3
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["type"] for e in events if e["type"] in ("failed", "queued")] == ["queued", "failed", "queued", "failed"]
    assert events[-1]["type"] == "failed"


def test_cancel_wait_timeout_and_errors_have_their_exit_codes(owner, other_user, logged_in, api_key_for):
    later = taskflow(logged_in, "submit", "demo.noop", "--run-at", "2099-01-01T00:00:00Z", "--json")
    task_id = json.loads(later.stdout)["id"]

    timed_out = taskflow(logged_in, "tail", task_id, "--timeout", "1")
    assert timed_out.returncode == 5, timed_out.stderr
    cancelled = taskflow(logged_in, "cancel", task_id, "--json")
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = taskflow(logged_in, "--json", "cancel", task_id)
    assert again.returncode == 1 and json.loads(again.stderr)["error"]["status"] == 409
    others = taskflow(logged_in | {"TASKFLOW_API_KEY": api_key_for(other_user)}, "show", task_id)
    assert others.returncode == 1 and "not_found" in others.stderr
    bad = taskflow(logged_in, "submit", "demo.sleep", "--payload", '{"seconds": -1}')
    assert bad.returncode == 1 and "payload" in bad.stderr
    not_json = taskflow(logged_in, "submit", "demo.sleep", "--payload", "{nope")
    assert not_json.returncode == 2 and "not JSON" in not_json.stderr
    assert TaskRow.objects.filter(owner=owner).count() == 1


def test_files_upload_and_download_round_trip(owner, logged_in, tmp_path):
    source = tmp_path / "report.csv"
    source.write_bytes(b"a,b\n1,2\n" * 1000)

    uploaded = taskflow(logged_in, "files", "upload", str(source), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = json.loads(uploaded.stdout)["id"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    downloaded = taskflow(logged_in, "files", "download", file_id, "-o", str(out_dir), "--json")

    assert downloaded.returncode == 0, downloaded.stderr
    assert (out_dir / "report.csv").read_bytes() == source.read_bytes()
    assert json.loads(downloaded.stdout)["path"] == str(out_dir / "report.csv")
