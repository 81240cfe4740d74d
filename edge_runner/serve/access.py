"""The access token of `allx-edge serve`: made on first start, kept 0600 in the user's config dir, rotatable.

Every request except /health must carry it: `?token=` once (the page then keeps it in an HttpOnly
SameSite=Strict cookie), the cookie, or `Authorization: Bearer TOKEN` for scripts.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import platformdirs

from allx import layout
from allx.errors import UsageError

COOKIE = "allx_session"
TOKEN_BYTES = 24


def default_token_path() -> Path:
    """In the user's config folder, beside site.json (~/.config/allx/serve_token on Linux)."""
    return platformdirs.user_config_path("allx") / layout.SERVE_TOKEN


def load_or_create_token(path: str | Path | None = None, rotate: bool = False) -> str:
    """The stored token, or a new one written with mode 0600 when there is none or `rotate` is set."""
    path = Path(path) if path is not None else default_token_path()
    if not rotate and path.is_file():
        token = read_token(path)
        if token:
            return token
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, token + "\n")
    except OSError as err:
        raise UsageError(f"{path}: cannot store the access token ({err.strerror}), expected a writable "
                         "config folder (set XDG_CONFIG_HOME)") from None
    return token


def write_private(path: Path, text: str) -> None:
    """Atomic like allx.files, but the file is 0600 from its first byte (mkstemp's mode, kept)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:  # readable by others: tighten it rather than trust a token others could read
            os.chmod(path, 0o600)
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: unreadable access token ({err.__class__.__name__}), expected a text file "
                         "(--new-token writes a fresh one)") from None


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison, so response times say nothing about how much of a guess was right."""
    return bool(given) and secrets.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
