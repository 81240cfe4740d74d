"""`allx-edge monitor`: the audit log's drift and disagreement figures per window, against control limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import echo, handle_errors
from allx.edge_runner.cli_log import LogDbOption, SiteConfigOption
from allx.edge_runner.monitor import FAMILY_ALPHA, PERIODS, monitor_log
from allx.edge_runner.site import load_site_config, resolve_log_db
from allx.errors import CheckFailed
from allx.files import checked_write


@handle_errors
def monitor(
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="The model in use (.tflite, model.json or its folder): its expected rates set the "
        "limits (site_calibration.json beside it first, then model.json). Without it: rates only, no alarms.",
        show_default=False)] = None,
    window: Annotated[Optional[int], typer.Option(
        "--window", help="Windows of N consecutive samples (instead of --by).", show_default=False)] = None,
    by: Annotated[Optional[str], typer.Option(
        "--by", help=f"Windows by UTC {' or ISO '.join(PERIODS)} of each sample's first row (default: week).",
        show_default=False)] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only rows from this UTC date or date-time on (2026-12-01, 2026-12-01T08:00).",
        show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the windows as one JSON object.")] = False,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write a self-contained HTML page (chart and table) here.", show_default=False)] = None,
    log_db: LogDbOption = None,
    site_config: SiteConfigOption = None,
):
    """Watch the audit log for drift: per window, the share of fields flagged unlike training, fields rejected
    by the quality check (by reason), inconclusive samples, malignant verdicts, reviews that override the model,
    and the mean confidence.

    Each rate is judged against a one-sided binomial limit from the rate expected on good images (the site's
    calibration when present, else model.json; beta-binomial: the uncertainty of that rate included), the
    window's false-alarm rate held at {alpha} over all its rates (Bonferroni): a window of an unchanged stream
    alarms with a chance of at most {alpha}.
    --json prints {{"windows": [{{"samples", "fields", "rates", "limits", "alarms", "period"}}], "expected",
    "limits_from"}}. Reads the log only (streamed, never loaded whole).
    Exit codes: 0 the latest window is within its limits; 2 usage error or a missing, damaged or newer log;
    3 the latest window alarms (the alarms are named on stderr).
    """
    from allx.edge_runner.monitor_view import html_page, text_lines  # the report's words: this command's own

    path = resolve_log_db(load_site_config(site_config), log_db)
    report = monitor_log(path, model, window, by, since)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in text_lines(report):
            echo(line)
    if html is not None:
        checked_write(html, html_page(report))
        echo(f"wrote {html}", err=True)
    if report.latest_alarms:
        latest = report.windows[-1]
        raise CheckFailed(f"monitor: the latest window ({latest.period}) alarms: {', '.join(latest.alarms)}")


monitor.__doc__ = monitor.__doc__.format(alpha=f"{FAMILY_ALPHA:.0%}")
