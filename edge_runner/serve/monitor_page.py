"""The Monitor page and /api/monitor: the served audit log's drift figures (edge_runner.monitor), and the alarm
that every page's header shows while the latest window is out of its limits.

The expected rates are read once, from the model loaded at start and the folder it came from (its
site_calibration.json first). The page and the API read the log afresh on every request, through their
own read-only connection (WAL lets them read while the workbench writes). The header's alarm comes
from a report kept for HEADER_REFRESH_S: every page view must stay fast on a log of many weeks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from allx.errors import AllxError
from allx.edge_runner.monitor import PERIODS, MonitorReport, expected_rates, monitor_with
from allx.edge_runner.monitor_view import TABLE_HEADER, alarm_words, chart_svg, expected_lines, table_rows

HEADER_REFRESH_S = 30.0
SAMPLES, PAGE_WINDOW = "samples", 6  # the page's choice of windows of N consecutive samples, and its first N


class MonitorState:
    """The served log and the model's expected rates; the header's alarm, recomputed at most every refresh_s."""

    def __init__(self, log_path: Path, model, refresh_s: float = HEADER_REFRESH_S):
        self.log_path = Path(log_path)
        self.expected, self.limits_from = expected_rates(model.manifest, Path(model.model_path).parent)
        self.refresh_s = refresh_s
        self.lock = threading.Lock()
        self.checked_at = -float("inf")
        self.alarm: str | None = None

    def report(self, window: int | None = None, by: str | None = None, since: str | None = None) -> MonitorReport:
        return monitor_with(self.log_path, self.expected, self.limits_from, window, by, since)

    def header_alarm(self) -> str | None:
        """The latest (weekly) window's alarm in words, or None; a log that cannot be read shows none here (the
        Monitor page says why)."""
        with self.lock:
            if time.monotonic() - self.checked_at >= self.refresh_s:
                try:
                    self.alarm = alarm_words(self.report())
                except AllxError:
                    self.alarm = None
                self.checked_at = time.monotonic()
            return self.alarm


def monitor_router(state: MonitorState, page: Callable) -> APIRouter:
    """GET /monitor (the page: chart, table, expectations) and GET /api/monitor (allx-edge monitor --json)."""
    router = APIRouter()

    @router.get("/monitor", response_class=HTMLResponse)
    def monitor_page(request: Request, window: int | None = None, by: str | None = None, since: str | None = None):
        """The form sends by=day|week, or by=samples with the window's size."""
        size, period = (window or PAGE_WINDOW, None) if by == SAMPLES or (not by and window) else (None, by or None)
        report = state.report(size, period, since or None)
        return page(request, "monitor.html", report=report, chart=chart_svg(report), header=TABLE_HEADER,
                    rows=table_rows(report), notes=expected_lines(report), current=alarm_words(report),
                    choices=(*PERIODS, SAMPLES), by=period or SAMPLES if size else period or "week",
                    window=size or "", since=since or "")

    @router.get("/api/monitor")
    def api_monitor(window: int | None = None, by: str | None = None, since: str | None = None):
        return state.report(window, by or None, since or None).to_dict()

    return router
