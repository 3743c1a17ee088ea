"""The reliability table in docs/reliability.md is generated from docs/reliability.json, never edited by hand."""

from . import report


def test_the_table_in_the_reliability_page_is_the_rendering_of_the_report():
    assert report.update_page(check=True), "run: python -m tests.reliability.report"


def test_the_table_lists_every_scenario_and_says_when_one_has_not_run():
    table = report.render_table({"scenarios": {}})
    for title in report.SCENARIOS.values():
        assert f"| {title} | - |" in table
    assert "not run yet" in table


def test_a_scenario_row_shows_its_figures():
    figures = {"accepted": 200, "completed": 200, "lost": 0, "duplicated_runs": 0, "recovery_seconds": 8.44}
    table = report.render_table({"scenarios": {"redis_flushall": figures | {"notes": "n"}}})
    assert "| Redis `FLUSHALL` during the load | 200 | 200 | 0 | 0 | 8.4 s | n |" in table
