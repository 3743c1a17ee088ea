"""The reliability report: the suite writes docs/reliability.json, this renders the table in docs/reliability.md.

    python -m tests.reliability.report           # rewrite the table in docs/reliability.md from the JSON
    python -m tests.reliability.report --check   # exit 1 when docs/reliability.md differs from the JSON

The suite calls `record()` for each scenario it ran and `write()` once at the end of the
session, which also rewrites the table, so the page always shows the last run's figures.
"""

import fcntl
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
REPORT_PATH = Path(os.environ.get("RELIABILITY_REPORT", BASE_DIR / "docs" / "reliability.json"))
PAGE_PATH = BASE_DIR / "docs" / "reliability.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"

# Table order and the words a reader sees; keys are what the tests record.
SCENARIOS = {
    "sigkill_pool_child": "SIGKILL of a worker's pool child mid-task",
    "sigkill_worker": "SIGKILL of a whole worker (another takes over)",
    "sigterm_worker": "SIGTERM of a worker (graceful shutdown)",
    "redis_restart": "Redis restarted during the load",
    "redis_flushall": "Redis `FLUSHALL` during the load",
    "postgres_terminate": "PostgreSQL connections of web and workers killed",
    "redis_down_at_submit": "Redis unreachable when clients submit",
    "poison_kind": "Poison kind (kills its process) among the load",
    "soak": "Soak: mixed API traffic and tasks, gunicorn + worker",
}

CHECKS = {
    "fuzz": "API fuzzing (schemathesis), signed in: {requests} generated requests over {operations} operations, "
    "valid and invalid, {failures} failures",
    "fuzz_anonymous": "API fuzzing, anonymous: {requests} generated requests, {failures} failures",
    "authorization_matrix_api": "Authorization matrix, API: {cells} endpoint x role cells, {mismatches} mismatches",
    "authorization_matrix_admin_pages": "Authorization matrix, admin pages: {cells} page x role cells, "
    "{mismatches} mismatches",
    "authorization_matrix_admin_actions": "Authorization matrix, admin actions: {cells} action x role cells, "
    "{mismatches} mismatches",
}


def load() -> dict:
    if REPORT_PATH.exists():
        return json.loads(REPORT_PATH.read_text())
    return {"scenarios": {}}


_pending: dict[str, dict] = {}
_pending_checks: dict[str, dict] = {}


def record(key: str, figures: dict) -> None:
    """Keep one scenario's figures for the end of the session."""
    if key not in SCENARIOS:
        raise KeyError(f"unknown reliability scenario {key!r}: add it to SCENARIOS")
    _pending[key] = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}


def record_check(key: str, figures: dict) -> None:
    """Figures of a check that is not a fault scenario (fuzzing, the authorization matrix)."""
    _pending_checks[key] = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}


def write() -> None:
    """Merge the scenarios this session ran into the report, then re-render the page's table.

    Under pytest-xdist every worker process writes what it ran at its end: the merge holds a
    lock, or two workers ending together would each write the report without the other's figures.
    """
    if not (_pending or _pending_checks):
        return
    with open(REPORT_PATH.with_name(REPORT_PATH.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge_and_write()


def _merge_and_write() -> None:
    report = load()
    report["scenarios"].update(_pending)
    report["checks"] = {**report.get("checks", {}), **_pending_checks}
    _pending_checks.clear()
    report["scenarios"] = {key: report["scenarios"][key] for key in SCENARIOS if key in report["scenarios"]}
    report["machine"] = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    REPORT_PATH.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    _pending.clear()
    if REPORT_PATH == BASE_DIR / "docs" / "reliability.json":
        update_page()


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render_table(report: dict) -> str:
    lines = [
        "| scenario | accepted | completed | lost | duplicated runs | recovery | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, title in SCENARIOS.items():
        figures = report["scenarios"].get(key)
        if figures is None:
            lines.append(f"| {title} | - | - | - | - | - | not run yet |")
            continue
        lines.append(
            f"| {title} | {figures['accepted']} | {figures['completed']} | {figures['lost']} "
            f"| {figures['duplicated_runs']} | {_seconds(figures.get('recovery_seconds'))} "
            f"| {figures.get('notes', '')} |"
        )
    machine = report.get("machine", "")
    lines.append("")
    checks = report.get("checks", {})
    for key, words in CHECKS.items():
        if key in checks:
            lines.append(f"- {words.format(**checks[key])}")
    if checks:
        lines.append("")
    where = f" on {machine}" if machine else ""
    lines.append(f"Last run: {_last_run(report)}{where}. Figures: `docs/reliability.json`.")
    return "\n".join(lines)


def _last_run(report: dict) -> str:
    entries = [*report["scenarios"].values(), *report.get("checks", {}).values()]
    stamps = [figures["measured_at"] for figures in entries if "measured_at" in figures]
    return max(stamps) if stamps else "never"


def rendered_page(page: str, report: dict) -> str:
    before, found, rest = page.partition(START)
    if not found or END not in rest:
        raise ValueError(f"{PAGE_PATH.name} has no {START} ... {END} section")
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{render_table(report)}\n{END}{after}"


def update_page(*, check: bool = False) -> bool:
    """Rewrite (or, with check, compare) the table; True when docs/reliability.md is up to date."""
    current = PAGE_PATH.read_text()
    wanted = rendered_page(current, load())
    if check:
        return current == wanted
    if current != wanted:
        PAGE_PATH.write_text(wanted)
    return True


def main(argv: list[str]) -> int:
    if "--check" in argv:
        if update_page(check=True):
            return 0
        print("docs/reliability.md's table differs from docs/reliability.json: python -m tests.reliability.report")
        return 1
    update_page()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
