"""The access token of `allx-edge serve`: kept 0600 in the config folder, rotated on demand."""

from __future__ import annotations

import stat

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from allx.edge_runner.serve.access import load_or_create_token  # noqa: E402


def test_token_is_stored_0600_and_rotates(tmp_path):
    path = tmp_path / "cfg" / "serve_token"
    first = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == first
    assert load_or_create_token(path, rotate=True) != first
