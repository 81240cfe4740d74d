"""The site's settings for allx-edge (site.json) and where the audit log lives by default.

site.json, looked up at --site-config, else $ALLX_SITE_CONFIG, else the user's config folder
(~/.config/allx/site.json on Linux); absent means the defaults. Keys:
  "require_operator": true   every classify and review must name its --operator
  "log_db": "PATH"           the audit log (default: the user's data folder, ~/.local/share/allx/audit.db)
The audit logs' sealing keys live in the user's config folder (~/.config/allx/audit-keys/, mode 0700,
each key 0600), never in the log's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from allx import layout
from allx.errors import DataError, UsageError
from allx.jsonio import read_json

ENV_SITE_CONFIG = "ALLX_SITE_CONFIG"
KEYS = {"kind", "require_operator", "log_db"}


@dataclass(frozen=True)
class SiteConfig:
    require_operator: bool = False
    log_db: Path | None = None
    source: Path | None = None  # the file read, None for the defaults


def default_site_config_path() -> Path:
    return platformdirs.user_config_path("allx") / layout.SITE_CONFIG


def default_log_db() -> Path:
    return platformdirs.user_data_path("allx") / layout.AUDIT_DB


def default_key_dir() -> Path:
    """Where the audit logs' sealing keys live: the user's config folder, apart from the logs' data folder."""
    return platformdirs.user_config_path("allx") / layout.AUDIT_KEYS


def load_site_config(path: str | Path | None = None) -> SiteConfig:
    """The site config at `path`, $ALLX_SITE_CONFIG or the user's config folder; a named file must exist."""
    named = path or os.environ.get(ENV_SITE_CONFIG)
    source = Path(named) if named else default_site_config_path()
    if not source.is_file():
        if named:
            raise DataError(f"{source}: no such site config, expected a JSON file like "
                            '{"require_operator": true}')
        return SiteConfig()
    data = read_json(source, "site config")
    if not isinstance(data, dict) or set(data) - KEYS:
        extra = sorted(set(data) - KEYS) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{source}: got {extra}, expected an object with keys among {sorted(KEYS - {'kind'})}")
    require = data.get("require_operator", False)
    if not isinstance(require, bool):
        raise DataError(f"{source}: require_operator: got {require!r}, expected true or false")
    log_db = data.get("log_db")
    if log_db is not None and (not isinstance(log_db, str) or not log_db.strip()):
        raise DataError(f"{source}: log_db: got {log_db!r}, expected a file path")
    return SiteConfig(require, Path(log_db).expanduser() if log_db else None, source)


def resolve_operator(config: SiteConfig, operator: str | None) -> str | None:
    """The operator to log; a UsageError when the site requires one and none (or a blank one) was given."""
    operator = operator.strip() if operator else None
    if config.require_operator and not operator:
        raise UsageError(f"--operator missing: the site config {config.source} requires every result to name "
                         "its operator, expected --operator NAME")
    return operator


def resolve_log_db(config: SiteConfig, log_db: str | Path | None) -> Path:
    return Path(log_db) if log_db else config.log_db or default_log_db()
