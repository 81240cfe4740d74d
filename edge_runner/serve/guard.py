"""ASGI layers in front of every route: the Host header, the access token, and a cap on the request body's size.

The token check answers 401 with the same few words whether the token was missing or wrong, so a
caller learns nothing; /health is the one open path. A `?token=` on a page sets the session cookie
(HttpOnly, SameSite=Strict) and redirects to the same page without it, so the token leaves the
address bar and the browser history. Under /api a `?token=` is refused (even a right one): a script
sends `Authorization: Bearer`, and a token in a URL ends up in logs and histories.

The Host check stops DNS rebinding: a page on another site whose name is made to resolve to this device
would otherwise reach the API from the technician's own browser. A request must name this device by an
IP address, or by one of the names `allx-edge serve` knows for it (localhost, its host name, --allow-host).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

from allx.edge_runner.serve.access import COOKIE, bearer, token_matches

OPEN_PATHS = ("/health",)
UNAUTHORIZED_PAGE = ("<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
                     "<title>allx: sign in</title><h1>Not signed in</h1><p>Open the address that "
                     "<code>allx-edge serve</code> printed (it carries the access token).</p>")


def wants_json(path: str) -> bool:
    return path.startswith("/api/") or path == "/api"


class TokenGuard:
    def __init__(self, app, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        request = Request(scope)
        query_token = request.query_params.get("token")
        if query_token is not None and token_matches(query_token, self.token) and not wants_json(scope["path"]):
            return await self.sign_in(request)(scope, receive, send)
        if query_token is not None and wants_json(scope["path"]):
            response = JSONResponse({"error": "unauthorized: a token in the address is refused under /api, "
                                              "expected the header Authorization: Bearer TOKEN"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        given = bearer(request.headers.get("authorization")) or request.cookies.get(COOKIE)
        if token_matches(given, self.token):
            return await self.app(scope, receive, send)
        if wants_json(scope["path"]):
            response = JSONResponse({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": "Bearer"})
        else:
            response = HTMLResponse(UNAUTHORIZED_PAGE, 401)
        await response(scope, receive, send)

    def sign_in(self, request: Request) -> RedirectResponse:
        rest = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
        return response


def host_name(header: str) -> str:
    """The name or address of a Host header, without its port ("[::1]:8080" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """400 for a request whose Host header is neither an IP address nor one of `names` (DNS rebinding)."""

    def __init__(self, app, names: tuple[str, ...]):
        self.app = app
        self.names = {name.lower().rstrip(".") for name in names}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_name(header).rstrip(".")
        if is_address(name) or name in self.names:
            return await self.app(scope, receive, send)
        message = "unknown Host header, expected this device's address or name (allx-edge serve --allow-host NAME)"
        response = (JSONResponse({"error": message}, 400) if wants_json(scope["path"])
                    else HTMLResponse(f"<!doctype html><meta charset=utf-8><p>{message}</p>", 400))
        await response(scope, receive, send)


SECURITY_HEADERS = [
    # Only this app's own files, never framed, no type guessing, and no address (with a token) sent elsewhere.
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    """Raised while reading a body past the limit; the app's handler answers 413."""

    def __init__(self, max_bytes: int):
        super().__init__(f"request body over {max_bytes:,} bytes, expected less (fewer or smaller files)")


class BodyLimit:
    """413 for a request whose body is over `max_bytes`: by its Content-Length up front, else while reading."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = str(BodyTooLarge(self.max_bytes))
            response = (JSONResponse({"error": message}, 413) if wants_json(scope["path"])
                        else HTMLResponse(f"<!doctype html><meta charset=utf-8><p>{message}</p>", 413))
            return await response(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)
