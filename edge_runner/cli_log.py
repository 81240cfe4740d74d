"""`allx-edge review` and `allx-edge log verify|export|setup-keys`: a technologist's word on a sample; the
audit log's checks.

Exit codes: 0 ok; 2 usage error, or a log that is missing, read-only, empty, cut short, damaged or of a
newer schema; 3 `log verify` (or `log export`, after writing its rows) found an edited, deleted, added or
unsealed row, or a forged seal.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import echo, handle_errors
from allx.edge_runner.audit import AuditLog
from allx.edge_runner.seal import parse_verify_key
from allx.edge_runner.provenance import RunLog, model_facts
from allx.edge_runner.site import SiteConfig, load_site_config, resolve_log_db, resolve_operator
from allx.errors import CheckFailed, UsageError
from allx.files import checked_write, write_atomic

LogDbOption = Annotated[Optional[Path], typer.Option(
    "--log-db", help="The audit log (SQLite). Default: site.json's log_db, else the user's data folder "
    "(~/.local/share/allx/audit.db on Linux).", show_default=False)]
OperatorOption = Annotated[Optional[str], typer.Option(
    "--operator", help="Who is at the bench; logged with every result (required when site.json says "
    '"require_operator": true).', show_default=False)]
SiteConfigOption = Annotated[Optional[Path], typer.Option(
    "--site-config", help="Site settings (JSON: require_operator, log_db). Default: $ALLX_SITE_CONFIG, else "
    "~/.config/allx/site.json when present.", show_default=False)]

VerifyKeyOption = Annotated[Optional[str], typer.Option(
    "--verify-key", help="Check every seal with the verification key `allx-edge log setup-keys` gave (the key "
    "itself, or the file holding it), off the device too. Default: this device's sealing key, which checks the "
    "last seal.", show_default=False)]

log_app = typer.Typer(name="log", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Check or export the audit log, or give its verification key. Exit codes: 0 ok; "
                      "2 bad, empty or cut-short log file; 3 tampered log.")


def open_log(log_db: Path | None, site: SiteConfig, readonly: bool) -> AuditLog:
    """The log --log-db names, else the site config's, else the user's data folder's."""
    return AuditLog.open(resolve_log_db(site, log_db), readonly=readonly)


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
    with open_log(log_db, config, readonly=False) as log:
        say_replayed(log)
        row = log.review(sample, override=override, note=note, operator=operator)
    action = "confirmed" if confirm else f"overridden to {override}"
    echo(f"sample {sample}: {action} (audit row {row}, {log.path})")


def check_log(log: AuditLog, verify_key: str | None, err: bool = False) -> list[str]:
    """verify's problems, each printed as a "tampered:" line (stderr with `err`, when stdout carries rows);
    what went unchecked as a warning."""
    problems = log.verify(parse_verify_key(verify_key) if verify_key else None)
    for warning in log.warnings:
        echo(f"warning: {warning}", err=True)
    for problem in problems:
        echo(f"tampered: {problem}", err=err)
    return problems


@log_app.command()
@handle_errors
def verify(log_db: LogDbOption = None, site_config: SiteConfigOption = None, verify_key: VerifyKeyOption = None):
    """Check every row, the hash chain and the seals: none changed, deleted, added or cut from the end. Names
    each bad row. Opens the log read-only, so an archived copy in a read-only folder is checked as it is.

    Exit codes: 0 intact; 2 missing, empty, cut-short, damaged or newer log file; 3 a changed, deleted, added
    or unsealed row, or a forged seal.
    """
    with open_log(log_db, load_site_config(site_config), readonly=True) as log:
        problems = check_log(log, verify_key)
        count = len(log.rows())
    if problems:
        raise CheckFailed(f"{log.path}: {len(problems)} problem(s) in the audit log ({count} rows left)")
    checked = "seals checked with the verification key" if verify_key else \
        "seals not checked" if log.warnings else "last seal checked with this device's key"
    echo(f"ok: {log.path}: {count} rows, hash chain intact, {checked}")


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
    verify_key: VerifyKeyOption = None,
):
    """Export the audit log's rows (optionally --since a date) as CSV or JSON lines. The log is verified first
    (as `log verify`): a tampered log is still exported, with a "tampered:" line per problem on stderr, and
    the exit code is 3. CSV cells that a spreadsheet would run as a formula get a leading apostrophe.

    Exit codes: 0 ok; 2 usage error or a missing, empty, cut-short, damaged or newer log file; 3 exported, but
    the log was tampered with.
    """
    if csv == json_lines:
        raise UsageError("got " + ("both --csv and --json" if csv else "no format") + ", expected --csv or --json")
    buffer = io.StringIO()
    with open_log(log_db, load_site_config(site_config), readonly=True) as log:
        if csv:
            count = log.export_csv(buffer, since=since)
        else:
            rows = log.rows(since=since)
            buffer.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
            count = len(rows)
        problems = check_log(log, verify_key, err=True)
    if out is None:
        typer.echo(buffer.getvalue(), nl=False)
    else:
        checked_write(out, buffer.getvalue())
        echo(f"{count} rows -> {out}", err=True)
    if problems:
        raise CheckFailed(f"{log.path}: exported, but {len(problems)} problem(s) in the audit log: the rows exported "
                          "may have been changed")


@log_app.command("setup-keys")
@handle_errors
def setup_keys(
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the key to this file (mode 0600) instead of printing it.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Give a key again (from the current seal on) after one was given.")] = False,
    log_db: LogDbOption = None,
    site_config: SiteConfigOption = None,
):
    """Give the audit log's verification key once (creating the log if there is none), as journalctl
    --setup-keys does. Keep it OFF this device: with it, `allx-edge log verify --verify-key KEY` proves every row
    sealed before the last seal, even against someone who later has root on the device. On the device stays
    only the sealing key, which moves forward after every write.

    Exit codes: 0 given; 2 usage error (a key already given, without --force) or a bad log file.
    """
    with open_log(log_db, load_site_config(site_config), readonly=False) as log:
        key = log.export_verify_key(force=force)
    if out is None:
        typer.echo(str(key))
    else:
        try:
            write_atomic(out, f"{key}\n", mode=0o600)
        except OSError as err:
            raise UsageError(f"{out}: cannot write ({err.strerror or err}), expected a writable path") from None
    echo(f"verification key of {log.path} from seal {key.epoch} on{f' -> {out}' if out else ''}: keep it off this "
         "device; check with allx-edge log verify --verify-key KEY", err=True)


def check_operator(operator: str | None, site_config: Path | None) -> tuple[str | None, SiteConfig]:
    """Before any work: the operator to log and the site config it was checked against (read once: the run's
    log is opened from it too), or a UsageError when the site requires an operator."""
    site = load_site_config(site_config)
    return resolve_operator(site, operator), site


def open_run_log(edge_model, log_db: Path | None, operator: str | None, site: SiteConfig | None, enabled: bool):
    """The run's audit log (None with --no-log), opened before the first image so a bad log loses no result;
    the model facts every row carries come from the model's card."""
    if not enabled or site is None:
        return None
    log = open_log(log_db, site, readonly=False)
    say_replayed(log)
    return RunLog(log, model_facts(edge_model), operator)


def say_replayed(log: AuditLog) -> None:
    if log.replayed:
        echo(f"{log.path}: {log.replayed} row(s) kept while the log was locked were written to it now", err=True)
