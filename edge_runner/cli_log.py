"""`allx-edge review` and `allx-edge log verify|export`: a technologist's word on a sample; the audit log's checks.

Exit codes: 0 ok; 2 usage error, or a log that is missing, read-only, damaged or of a newer schema;
3 `log verify` found an edited or deleted row.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import echo, handle_errors
from allx.edge_runner.audit import AuditLog
from allx.edge_runner.provenance import RunLog, model_facts
from allx.edge_runner.site import load_site_config, resolve_log_db, resolve_operator
from allx.errors import CheckFailed, UsageError
from allx.files import checked_write

LogDbOption = Annotated[Optional[Path], typer.Option(
    "--log-db", help="The audit log (SQLite). Default: site.json's log_db, else the user's data folder "
    "(~/.local/share/allx/audit.db on Linux).", show_default=False)]
OperatorOption = Annotated[Optional[str], typer.Option(
    "--operator", help="Who is at the bench; logged with every result (required when site.json says "
    '"require_operator": true).', show_default=False)]
SiteConfigOption = Annotated[Optional[Path], typer.Option(
    "--site-config", help="Site settings (JSON: require_operator, log_db). Default: $ALLX_SITE_CONFIG, else "
    "~/.config/allx/site.json when present.", show_default=False)]

log_app = typer.Typer(name="log", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Check or export the audit log. Exit codes: 0 ok; 2 bad log file; 3 tampered log.")


def open_log(log_db: Path | None, site_config: Path | None, readonly: bool) -> AuditLog:
    """The log --log-db names, else the site config's, else the user's data folder's."""
    return AuditLog.open(resolve_log_db(load_site_config(site_config), log_db), readonly=readonly)


@handle_errors
def review(
    sample: Annotated[str, typer.Argument(help="The sample ID the results were logged under.")],
    confirm: Annotated[bool, typer.Option("--confirm", help="Agree with allx-edge's result.")] = False,
    override: Annotated[Optional[str], typer.Option(
        "--override", help="Replace the result with this label (needs --note).", show_default=False)] = None,
    note: Annotated[str, typer.Option("--note", help="Why (required with --override).")] = "",
    operator: OperatorOption = None,
    log_db: LogDbOption = None,
    site_config: SiteConfigOption = None,
):
    """Record a technologist's confirm or override of a logged sample, as a new row of the audit log.

    Exit codes: 0 recorded; 2 usage error, unknown sample, or a bad log file.
    """
    if confirm == (override is not None):
        raise UsageError("got " + ("both --confirm and --override" if confirm else "neither --confirm nor --override")
                         + ", expected exactly one")
    config = load_site_config(site_config)
    operator = resolve_operator(config, operator)
    with open_log(log_db, site_config, readonly=False) as log:
        row = log.review(sample, override=override, note=note, operator=operator)
    action = "confirmed" if confirm else f"overridden to {override}"
    echo(f"sample {sample}: {action} (audit row {row}, {log.path})")


@log_app.command()
@handle_errors
def verify(log_db: LogDbOption = None, site_config: SiteConfigOption = None):
    """Check the hash chain: every row unchanged, none deleted. Names each bad row.

    Exit codes: 0 intact; 2 missing, damaged or newer log file; 3 an edited or deleted row.
    """
    with open_log(log_db, site_config, readonly=True) as log:
        problems = log.verify()
        count = len(log.rows())
    for problem in problems:
        echo(f"tampered: {problem}")
    if problems:
        raise CheckFailed(f"{log.path}: {len(problems)} problem(s) in the audit log's hash chain ({count} rows left)")
    echo(f"ok: {log.path}: {count} rows, hash chain intact")


@log_app.command()
@handle_errors
def export(
    csv: Annotated[bool, typer.Option(
        "--csv", help="CSV: one line per row, the whole record as JSON at the end.")] = False,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only rows from this UTC date or date-time on (2026-12-01, 2026-12-01T08:00).",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here (atomically) instead of stdout.",
                                                show_default=False)] = None,
    log_db: LogDbOption = None,
    site_config: SiteConfigOption = None,
):
    """Export the audit log's rows (optionally --since a date) as CSV or JSON lines.

    Exit codes: 0 ok; 2 usage error or a missing, damaged or newer log file.
    """
    if csv == json_lines:
        raise UsageError("got " + ("both --csv and --json" if csv else "no format") + ", expected --csv or --json")
    buffer = io.StringIO()
    with open_log(log_db, site_config, readonly=True) as log:
        if csv:
            count = log.export_csv(buffer, since=since)
        else:
            rows = log.rows(since=since)
            buffer.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
            count = len(rows)
    if out is None:
        typer.echo(buffer.getvalue(), nl=False)
    else:
        checked_write(out, buffer.getvalue())
        echo(f"{count} rows -> {out}", err=True)


def check_operator(operator: str | None, site_config: Path | None) -> str | None:
    """Before any work: the operator to log, or a UsageError when the site requires one."""
    return resolve_operator(load_site_config(site_config), operator)


def open_run_log(edge_model, log_db: Path | None, operator: str | None, site_config: Path | None, enabled: bool):
    """The run's audit log (None with --no-log), opened before the first image so a bad log loses no result."""
    if not enabled:
        return None
    return RunLog(open_log(log_db, site_config, readonly=False), model_facts(edge_model), operator)
