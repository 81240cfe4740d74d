"""site.json: where it is looked up, what it may say, and the operator and audit log a run gets from it."""

import json

import pytest

from allx.edge_runner.site import (ENV_SITE_CONFIG, SiteConfig, default_log_db, load_site_config, resolve_log_db,
                                   resolve_operator)
from allx.errors import DataError, UsageError


def test_no_site_config_means_the_defaults(monkeypatch):
    monkeypatch.delenv(ENV_SITE_CONFIG, raising=False)
    config = load_site_config()
    assert config == SiteConfig() and resolve_log_db(config, None) == default_log_db()
    assert resolve_operator(config, None) is None and resolve_operator(config, "  ana ") == "ana"


def test_a_named_site_config_is_read_and_must_exist(tmp_path, monkeypatch):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"require_operator": True, "log_db": "~/logs/audit.db"}))
    monkeypatch.setenv(ENV_SITE_CONFIG, str(site))
    config = load_site_config()
    assert config.require_operator and config.source == site and not str(config.log_db).startswith("~")
    assert resolve_log_db(config, None) == config.log_db and resolve_log_db(config, tmp_path / "x.db") == tmp_path / "x.db"
    with pytest.raises(UsageError, match="--operator missing"):
        resolve_operator(config, "   ")
    with pytest.raises(DataError, match="no such site config"):
        load_site_config(tmp_path / "absent.json")


@pytest.mark.parametrize("document, message", [
    ({"require_operator": "yes"}, "require_operator: got 'yes', expected true or false"),
    ({"log_db": ""}, "log_db: got '', expected a file path"),
    ({"logdb": "x"}, "got \\['logdb'\\], expected an object with keys among"),
    ([1, 2], "got list, expected an object"),
])
def test_a_bad_site_config_is_one_line(tmp_path, document, message):
    site = tmp_path / "site.json"
    site.write_text(json.dumps(document))
    with pytest.raises(DataError, match=message):
        load_site_config(site)
