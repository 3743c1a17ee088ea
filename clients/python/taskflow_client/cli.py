"""`taskflow`: TaskFlow from the shell. Human output by default, `--json` for scripts.

Exit status: 0 done; 1 an API or connection error; 2 bad usage; 3 a waited task failed;
4 a waited task was cancelled; 5 the wait timed out.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import config
from .client import TaskFlow
from .errors import TaskFlowError, WaitTimeout
from .models import Event, Task

EXIT_ERROR, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 1, 3, 4, 5
EXIT_BY_STATUS = {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

# Piped output is not cut to 80 columns: tables stay one line per row for grep and awk.
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
stderr = Console(stderr=True, soft_wrap=True)


class State:
    def __init__(self, url: str | None, api_key: str | None, as_json: bool):
        self.url, self.api_key, self.as_json = url, api_key, as_json

    def client(self) -> TaskFlow:
        url, api_key = config.resolve(self.url, self.api_key)
        return TaskFlow(url, api_key=api_key)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--json` after the command too (`taskflow ls --json`), as well as before it."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(State).as_json = True
        return value

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=remember,
                        help="Machine-readable JSON output.")(command)  # fmt: skip


def emit(state: State, data: Any, human: Callable[[], None]) -> None:
    if state.as_json:
        click.echo(json.dumps(data, default=str))
    else:
        human()


def fail(error: TaskFlowError, as_json: bool) -> None:
    if as_json:
        body = {"code": error.code, "message": error.message, "status": error.status, "fields": error.fields}
        click.echo(json.dumps({"error": body}), err=True)
    else:
        stderr.print(f"[red]Error[/red] ({error.code}): {error.message}", markup=True, highlight=False)
        for field, message in flat_fields(error.fields):
            stderr.print(f"  {field}: {message}", markup=False, highlight=False)
    sys.exit(EXIT_TIMEOUT if isinstance(error, WaitTimeout) else EXIT_ERROR)


def flat_fields(fields: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """("payload.seconds", "Ensure ...") pairs from the API's nested field errors."""
    if isinstance(fields, dict):
        for key, value in fields.items():
            yield from flat_fields(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(fields, list) and all(isinstance(item, str) for item in fields):
        for item in fields:
            yield prefix or "input", item
    elif isinstance(fields, list):
        for index, item in enumerate(fields):
            yield from flat_fields(item, f"{prefix}[{index}]")
    else:
        yield prefix or "input", str(fields)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="TASKFLOW_URL", help="TaskFlow's base URL (default: TASKFLOW_URL, then the config).")
@click.option("--api-key", envvar="TASKFLOW_API_KEY", help="API key (default: TASKFLOW_API_KEY, then the config).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.version_option(package_name="taskflow-client")
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None, as_json: bool) -> None:
    """TaskFlow from the shell: submit tasks, follow them, manage files."""
    ctx.obj = State(url, api_key, as_json)


# --- login ----------------------------------------------------------------------------------
@cli.command()
@click.option("--url", "login_url", help="TaskFlow's base URL.")
@click.option("--email", help="Log in with email and password; an API key is made and saved.")
@click.option("--password", help="Prompted for when --email is given without it.")
@click.option("--api-key", "login_api_key", help="Save this API key instead (prompted for without --email).")
@click.option("--key-name", default=lambda: f"taskflow CLI on {socket.gethostname()}", show_default="CLI on host")
@json_option
@click.pass_obj
def login(state: State, /, login_url: str | None, email: str | None, password: str | None, login_api_key: str | None,
          key_name: str) -> None:  # fmt: skip
    """Save the URL and an API key in the config file (0600): with --email, or a key from --api-key."""
    url = login_url or state.url or config.load().get("url") or click.prompt("TaskFlow URL")
    if email:
        password = password or click.prompt("Password", hide_input=True)
        with TaskFlow(url, email=email, password=password) as tf:
            api_key = tf.auth.create_api_key(key_name).key or ""
    else:
        api_key = login_api_key or state.api_key or click.prompt("API key", hide_input=True)
    with TaskFlow(url, api_key=api_key) as tf:
        me = tf.auth.me()  # the key works before it is saved
    path = config.save({"url": url.rstrip("/"), "api_key": api_key})
    emit(state, {"url": url, "email": me.email, "config": str(path)},
         lambda: stdout.print(f"Logged in to {url} as {me.email}; saved in {path}", highlight=False))  # fmt: skip


# --- tasks ----------------------------------------------------------------------------------
@cli.command()
@json_option
@click.pass_obj
def kinds(state: State) -> None:
    """The kinds of task you may submit."""
    with state.client() as tf:
        items = tf.kinds.list()
    table = Table("kind", "queue", "timeout", "description", box=None)
    for kind in items:
        table.add_row(kind.name, kind.queue, f"{kind.timeout}s", kind.description)
    emit(state, [kind.raw for kind in items], lambda: stdout.print(table))


def read_payload(value: str) -> Any:
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        return json.loads(text)
    except OSError as error:
        raise click.BadParameter(f"cannot read {value[1:]}: {error.strerror}", param_hint="--payload") from None
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--payload") from None


@cli.command()
@click.argument("kind")
@click.option("--payload", default="{}", help="JSON, or @file.json.")
@click.option("--priority", type=click.Choice(["low", "normal", "high", "critical"]))
@click.option("--title")
@click.option("--max-retries", type=click.IntRange(min=0), help="Default: the kind's.")
@click.option("--run-at", help="ISO 8601 time to run it at (default: now).")
@click.option("--idempotency-key", help="Default: a new uuid4, reused across this command's retries.")
@click.option("--wait", is_flag=True, help="Follow the task until it is final; exit 3 if it failed, 4 if cancelled.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 5).")
@json_option
@click.pass_obj
def submit(state: State, /, kind: str, payload: str, wait: bool, timeout: float | None, **options: Any) -> None:
    """Submit a task of KIND."""
    with state.client() as tf:
        task = tf.tasks.submit(kind, read_payload(payload), **options)
        if not wait:
            emit(state, task.raw, lambda: stdout.print(f"{task.id} {task.kind} {task.status}", highlight=False))
            return
        if not state.as_json:
            stderr.print(f"Submitted {task.id} ({task.kind})", highlight=False)
        follow(state, tf, task, timeout, show_events=False)


def follow(state: State, tf: TaskFlow, task: Task, timeout: float | None, *, show_events: bool) -> None:
    """Follow the task's events to the end (a progress bar on a terminal), print it, exit by its status."""
    with progress_bar(state, "queued", total=100) as update:
        for event in tf.tasks.events(task, timeout=timeout):
            if show_events and state.as_json:
                click.echo(json.dumps(event_json(event)))
            elif show_events or not stderr.is_terminal:
                stderr.print(event_line(event), highlight=False, markup=False)
            update(event.progress if event.status == "running" else 100 if event.is_final else None, event.type)
    final = tf.tasks.get(task)
    if not show_events:
        emit(state, final.raw, lambda: print_task(final))
    elif not state.as_json:
        print_task(final)
    sys.exit(EXIT_BY_STATUS.get(final.status, EXIT_ERROR))


def event_json(event: Event) -> dict[str, Any]:
    keys = ("type", "id", "task_id", "status", "progress", "message", "attempt")
    return {key: getattr(event, key) for key in keys}


def event_line(event: Event) -> str:
    parts = [event.type]
    if event.progress is not None:
        parts.append(f"{event.progress}%")
    if event.attempt:
        parts.append(f"attempt {event.attempt}")
    if event.message:
        parts.append(event.message)
    return "  ".join(parts)


def print_task(task: Task) -> None:
    stdout.print(f"{task.id}  {task.kind}  {task.status}  {task.progress}%", highlight=False)
    if task.waiting_for:
        stdout.print(task.waiting_for, markup=False, highlight=False)
    if task.result is not None:
        stdout.print_json(json.dumps(task.result, default=str))
    if task.error:
        stdout.print(task.error, markup=False, highlight=False)


@contextmanager
def progress_bar(state: State, description: str, total: int | None,
                 download: bool = False) -> Iterator[Callable[..., None]]:  # fmt: skip
    """An updater (completed, description=None); a live bar on a terminal, silent otherwise."""
    if state.as_json or not stderr.is_terminal:
        yield lambda completed, description=None, total=None: None
        return
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    columns.append(DownloadColumn() if download else TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=False) as bar:
        task_id = bar.add_task(description, total=total)

        def update(completed: int | None, description: str | None = None, total: int | None = None) -> None:
            bar.update(task_id, completed=completed, description=description, total=total)

        yield update


@cli.command()
@click.argument("task_id")
@click.option("--last-event-id", help="Resume after this event (as a reconnecting stream does).")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 5).")
@json_option
@click.pass_obj
def tail(state: State, task_id: str, last_event_id: str | None, timeout: float | None) -> None:
    """Print the task's events as they happen, until it is final (JSON lines with --json)."""
    with state.client() as tf:
        for event in tf.tasks.events(task_id, last_event_id=last_event_id, timeout=timeout):
            if state.as_json:
                click.echo(json.dumps(event_json(event)))
            else:
                stdout.print(event_line(event), highlight=False, markup=False)
        final = tf.tasks.get(task_id)
    sys.exit(EXIT_BY_STATUS.get(final.status, EXIT_ERROR))


@cli.command("ls")
@click.option("--status", multiple=True, help="Repeatable: --status failed --status cancelled.")
@click.option("--kind")
@click.option("--search", help="In titles.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@click.pass_obj
def list_tasks(state: State, status: tuple[str, ...], kind: str | None, search: str | None, limit: int) -> None:
    """Your tasks, newest first."""
    with state.client() as tf:
        page_size = min(limit, 100)
        tasks = list(tf.tasks.list(status=status or None, kind=kind, search=search, limit=limit, page_size=page_size))
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("kind", "status", "progress", "created"):
        table.add_column(column)
    for task in tasks:
        table.add_row(task.id, task.kind, task.status, f"{task.progress}%", f"{task.created_at:%Y-%m-%d %H:%M:%S}")
    emit(state, [task.raw for task in tasks], lambda: stdout.print(table))


@cli.command()
@click.argument("task_id")
@json_option
@click.pass_obj
def show(state: State, task_id: str) -> None:
    """One task in full."""
    with state.client() as tf:
        task = tf.tasks.get(task_id)
    emit(state, task.raw, lambda: print_task(task))


@cli.command()
@click.argument("task_id")
@click.option("--reason", default="")
@json_option
@click.pass_obj
def retry(state: State, task_id: str, reason: str) -> None:
    """Run a failed or cancelled task again."""
    with state.client() as tf:
        task = tf.tasks.retry(task_id, reason=reason)
    emit(state, task.raw, lambda: stdout.print(f"{task.id} {task.status}", highlight=False))


@cli.command()
@click.argument("task_id")
@click.option("--reason", default="")
@click.option("--hard", is_flag=True, help="Operators: stop a running task now.")
@json_option
@click.pass_obj
def cancel(state: State, task_id: str, reason: str, hard: bool) -> None:
    """Cancel a task (a running one is asked to stop)."""
    with state.client() as tf:
        task = tf.tasks.cancel(task_id, reason=reason, hard=hard)
    emit(state, task.raw, lambda: stdout.print(f"{task.id} {task.status}", highlight=False))


# --- files ----------------------------------------------------------------------------------
@cli.group()
def files() -> None:
    """Upload and download files."""


@files.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--content-type", help="Default: guessed from the name.")
@json_option
@click.pass_obj
def files_upload(state: State, path: Path, content_type: str | None) -> None:
    """Upload PATH (straight to the object store when it is big and the server allows)."""
    with state.client() as tf, progress_bar(state, path.name, path.stat().st_size, download=True) as update:
        stored = tf.files.upload(path, content_type=content_type, progress=lambda done, total: update(done))
    emit(state, stored.raw, lambda: stdout.print(f"{stored.id} {stored.name} {stored.size} bytes", highlight=False))


@files.command("download")
@click.argument("file_id")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="A file, or a folder for the server's file name.")  # fmt: skip
@json_option
@click.pass_obj
def files_download(state: State, file_id: str, output: Path) -> None:
    """Download a file."""
    with state.client() as tf:
        meta = tf.files.get(file_id)
        with progress_bar(state, meta.name, meta.size, download=True) as update:
            path = tf.files.download(file_id, output, progress=lambda done, total: update(done))
    emit(state, {"id": meta.id, "path": str(path), "size": meta.size},
         lambda: stdout.print(f"{path} ({meta.size} bytes)", highlight=False))  # fmt: skip


@files.command("ls")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@click.pass_obj
def files_list(state: State, limit: int) -> None:
    """Your files, newest first."""
    with state.client() as tf:
        items = list(tf.files.list(limit=limit))
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("name", "size", "state"):
        table.add_column(column)
    for item in items:
        table.add_row(item.id, item.name, str(item.size), item.state)
    emit(state, [item.raw for item in items], lambda: stdout.print(table))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        stderr.print("Aborted.")
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except TaskFlowError as error:
        fail(error, "--json" in sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
