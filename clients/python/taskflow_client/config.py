"""The CLI's settings: options, then TASKFLOW_URL / TASKFLOW_API_KEY, then the file `login` writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

APP_NAME = "taskflow"


def config_path() -> Path:
    """$TASKFLOW_CONFIG, else config.json in the user's config dir (~/.config/taskflow on Linux)."""
    override = os.environ.get("TASKFLOW_CONFIG")
    return Path(override) if override else Path(click.get_app_dir(APP_NAME)) / "config.json"


def load() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise click.ClickException(f"Cannot read the config file {path}: {error}") from None
    return data if isinstance(data, dict) else {}


def save(settings: dict[str, Any]) -> Path:
    """Write the settings readable by the user alone (0600 in a 0700 folder): they hold an API key."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(settings, out, indent=2)
    os.chmod(partial, 0o600)  # the file may have existed with wider modes
    os.replace(partial, path)
    return path


def resolve(url: str | None, api_key: str | None) -> tuple[str, str]:
    stored = load()
    url = url or os.environ.get("TASKFLOW_URL") or stored.get("url")
    api_key = api_key or os.environ.get("TASKFLOW_API_KEY") or stored.get("api_key")
    if not url:
        raise click.UsageError("No TaskFlow URL: run `taskflow login`, or set TASKFLOW_URL or --url.")
    if not api_key:
        raise click.UsageError("Not logged in: run `taskflow login`, or set TASKFLOW_API_KEY or --api-key.")
    return url, api_key
