"""The drift monitor's words, table and chart (the CLI's --html, serve's Monitor page, allx report)."""

from monitor_logs import write_log
from test_edge_monitor import EXPECTED, tallies_of

from allx.edge_runner.monitor import CARD, Expected, monitor_tallies
from allx.edge_runner.monitor_view import chart_svg, html_page


def test_the_chart_and_page_show_every_window_and_mark_alarms(tmp_path):
    db = tmp_path / "audit.db"
    write_log(db, good=6, changed=6)
    report = monitor_tallies(tallies_of(db), EXPECTED, CARD, size=6, log=str(db))
    svg = chart_svg(report)
    assert svg.startswith("<svg") and svg.count('class="alarm"') == 3 and svg.count('class="point"') == 4
    assert "samples 7-12: 100.0% (30/30) ALARM" in svg and "http" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    page = html_page(report)
    assert "Monitor alarm in the latest window (samples 7-12)" in page and "<script" not in page


def test_a_window_too_small_to_alarm_says_so():
    from allx.edge_runner.monitor import SampleTally, judge
    from allx.edge_runner.monitor_view import rate_cell

    reviewed = SampleTally("A", "2026-12-06T08:00:00Z", reviewed=True, overridden=True, verdict="malignant")
    window = judge("w", [reviewed], {"override_rate": Expected(0.3, 20, CARD, "")})
    assert window.limits["override_rate"].upper is None and window.alarms == ()
    assert rate_cell(window, "override_rate") == "100.0% (1/1) too few to alarm"
    assert window.to_dict()["limits"]["override_rate"]["upper"] is None
