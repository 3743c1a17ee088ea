"""The benchmark harness runs end to end at tiny sizes (correctness only: no timing is asserted)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from bench import readme

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PAIR_ROWS = {
    "1",
    "1 (prefetch 1)",
    "2",
    "3 (4 conn.)",
    "4",
    "5 (unfiltered)",
    "5 (status=failed)",
    "S (bulk, index cost)",
    "S (post, index cost)",
    "F2",
    "F2 (10 owners)",
}
CPU_PARTS = {"worker main", "pool", "submitter", "PostgreSQL", "gunicorn", "total"}


@pytest.mark.bench_smoke
@pytest.mark.slow
def test_the_harness_measures_every_row_and_writes_well_formed_results(bench_database_url, free_ports, tmp_path):
    missing = [tool for tool in ("wrk", "redis-benchmark", "pgbench") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (.ci/apt-packages.txt)")
    web_port, stock_port = free_ports(2)
    run = [
        sys.executable, "-m", "bench.run", "--smoke", "--database-url", bench_database_url,
        "--redis-url", settings.REDIS_URL, "--port", str(web_port), "--stock-port", str(stock_port),
        "--output-dir", str(tmp_path), "--time-limit", "150",
    ]  # fmt: skip
    done = subprocess.run(run, cwd=BASE_DIR, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert min(results["meta"]["reference_loop_ms"]) > 0  # the machine's speed, beside absolute figures
    assert "reference loop" in (tmp_path / "latest.md").read_text()
    rows = {row["id"]: row for row in results["rows"]}
    assert set(rows) >= PAIR_ROWS
    for row_id in PAIR_ROWS:
        row = rows[row_id]
        assert row["taskflow_median"] > 0 and row["baseline_median"] > 0, row
        assert len(row["ratio_samples"]) == results["meta"]["rounds"]
        assert row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"]
        assert isinstance(row["met"], bool)
    assert rows["3 (4 conn.)"]["p99_ms_taskflow_median"] > 0
    for row_id in ("1", "1 (prefetch 1)"):  # CPU per task of each process, from /proc
        cpu = rows[row_id]["cpu_ms_per_task"]
        assert set(cpu["taskflow"]) == CPU_PARTS
        assert set(cpu["baseline"]) == {"worker main", "pool", "submitter", "total"}
        # Bare Celery's pool may spend less than one /proc tick (10 ms) on the smoke's few tasks.
        assert cpu["taskflow"]["pool"] > 0 and cpu["baseline"]["pool"] >= 0
        assert cpu["taskflow"]["total"] == pytest.approx(sum(v for k, v in cpu["taskflow"].items() if k != "total"))
    assert rows["7"]["gunicorn_worker_mb"] > 0 and rows["7"]["celery_pool_child_mb"] > 0
    assert {"6 (cold)", "6 (warm)"} <= set(rows) or rows["6"]["skipped"]
    for name in ("S (payload)", "S (result)"):
        assert rows[name]["median"] > 0 and len(rows[name]["matches"]) == 20, rows[name]
    assert max(rows["S (result)"]["matches"]) > 0  # seeded results carry the searched key
    # Rows F: both sides (fair claim on and off) ran every round; owner B's three tasks all
    # finished, after owner A's flood; the throughput rows read the same CPU parts as row 1.
    flood = rows["F1"]
    for side in ("fair_on", "fair_off"):
        waits = flood[side]["b_waits_s"]
        assert len(waits) == results["meta"]["rounds"] and all(len(r) == 3 for r in waits), flood
        assert all(wait > 0 for r in waits for wait in r) and min(flood[side]["a_total_s"]) > 0, flood
        assert flood[side]["b_wait_p50_s"] <= flood[side]["b_wait_p95_s"] <= flood[side]["b_wait_max_s"]
    assert flood["ratio_p95"] > 0 and isinstance(flood["met"], bool)
    for row_id in ("F2", "F2 (10 owners)"):
        cpu = rows[row_id]["cpu_ms_per_task"]
        assert set(cpu["taskflow"]) == set(cpu["baseline"]) == CPU_PARTS
        assert cpu["taskflow"]["pool"] > 0 and cpu["baseline"]["pool"] > 0
        assert rows[row_id]["cpu_ratio_median"] > 0
    assert rows["F2 (10 owners)"]["owners"] == 10 and rows["F2"]["owners"] == 1
    limits = results["limits"]
    assert limits["redis_lpush_per_s"] > 0 and limits["redis_rpop_per_s"] > 0 and limits["pg_insert_update_per_s"] > 0
    assert limits["fractions"]["end_to_end_vs_pg_insert_update"] > 0

    table = (tmp_path / "latest.md").read_text()
    assert "| # | TaskFlow | baseline (same run) |" in table
    assert "Row 1 (prefetch 1), CPU ms per task" in table
    assert "| F1 | fair claim on: owner B's 3 `demo.noop`" in table
    assert "Row F2 (10 owners), CPU ms per task (median of the rounds, from /proc): fair on:" in table
    assert table.count("\n| ") >= len(PAIR_ROWS) + 4


def test_the_performance_page_shows_the_latest_bench_table():
    current = readme.PAGE.read_text()
    assert readme.render(current, readme.LATEST.read_text()) == current, "run: python -m bench.readme"


def test_the_table_block_is_replaced_between_the_markers_only():
    text = f"intro\n{readme.START}\nold table\n{readme.END}\noutro\n"
    rendered = readme.render(text, "| new |\n")
    assert rendered.startswith(f"intro\n{readme.START}\n")
    assert "| new |" in rendered and "old table" not in rendered
    assert rendered.endswith(f"{readme.END}\noutro\n")
    with pytest.raises(ValueError):
        readme.render("no markers", "| new |")
