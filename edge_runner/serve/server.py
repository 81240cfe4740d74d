"""Start `allx-edge serve`: load the model once, open the audit log, print the address with its token, run uvicorn.

Binds to 127.0.0.1 unless told otherwise; with --host 0.0.0.0 (or a LAN address) it prints the address a
phone on the clinic's network can open, and a QR code of it when the output is a terminal. The socket is
bound before the address is printed, so a port in use or an unknown host is one line and exit 2.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from allx.errors import MissingDependency, UsageError
from allx.edge_runner.camera import capture_still
from allx.edge_runner.serve.access import load_or_create_token
from allx.edge_runner.serve.card import describe_loaded
from allx.edge_runner.serve.uploads import UploadLimits
from allx.edge_runner.serve.workbench import Workbench
from allx.edge_runner.site import load_site_config, resolve_log_db

ANY_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServeOptions:
    model: Path
    host: str = "127.0.0.1"
    port: int = 8080
    log_db: Path | None = None
    camera: str | None = "0"
    token_path: Path | None = None
    new_token: bool = False
    limits: UploadLimits = UploadLimits()
    allow_hosts: tuple[str, ...] = ()  # names besides this device's own a request's Host header may carry


def build_app(options: ServeOptions, model):
    """The app for a loaded EdgeModel and its token (made, kept or rotated as the options say)."""
    try:
        import fastapi  # noqa: F401  (the serve extra; checked here for a clear line instead of a traceback)
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise MissingDependency(f'allx-edge serve needs {err.name}: pip install "allx[serve]"') from None
    from allx.edge_runner.serve.app import create_app  # FastAPI: the serve extra, only when serving

    log_db = resolve_log_db(load_site_config(), options.log_db)
    token = load_or_create_token(options.token_path, rotate=options.new_token)
    capture = None if options.camera is None else functools.partial(capture_still, options.camera)
    bench = Workbench(model, log_db, options.limits, capture)
    return create_app(bench, describe_loaded(model), token, host_names(options)), token, log_db


def host_names(options: ServeOptions) -> tuple[str, ...]:
    """The names a request may call this device by (IP addresses always pass): localhost, its host name (also
    with .local, as mDNS announces it), its fully qualified name, --host when it is a name, and --allow-host."""
    hostname = socket.gethostname()
    names = ["localhost", hostname, f"{hostname}.local", socket.getfqdn(), options.host, *options.allow_hosts]
    return tuple(dict.fromkeys(name.lower() for name in names if name))


def banner(options: ServeOptions, token: str, model_path, log_db) -> list[str]:
    """What the terminal shows at start: where it serves, the link(s) with the token, a QR code for a phone."""
    urls = [url_for(address, options.port, token) for address in lan_addresses(options.host)]
    where = "this device only" if is_local(options.host) else "the network"
    lines = [f"allx-edge serve: {model_path} on {where}; audit log {log_db}", *(f"open: {url}" for url in urls)]
    qr = qr_text(urls[0]) if terminal() and not is_local(options.host) else None
    return lines + ([qr] if qr else [])


def lan_addresses(host: str) -> list[str]:
    """Addresses others can open: the host itself, or this machine's non-loopback IPv4s for 0.0.0.0/::."""
    if host not in ANY_HOSTS:
        return [host]
    found = []
    try:
        for *_, address in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not ipaddress.ip_address(address[0]).is_loopback and address[0] not in found:
                found.append(address[0])
    except OSError:
        pass
    return found or [socket.gethostname()]


def url_for(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def qr_text(url: str) -> str | None:
    """The URL as a QR code in text (the qrcode package, when installed)."""
    try:
        import qrcode  # optional: the serve extra brings it
    except ImportError:
        return None
    code = qrcode.QRCode(border=1)
    code.add_data(url)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def listen(options: ServeOptions) -> socket.socket:
    """The listening socket on --host and --port; UsageError (exit 2) for a port in use or an unknown host."""
    host = options.host or "0.0.0.0"
    try:
        family = socket.getaddrinfo(host, options.port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, options.port), family=family)
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: unknown host ({err.strerror}), expected an address of this device, "
                         "127.0.0.1 or 0.0.0.0") from None
    except OSError as err:
        why = os.strerror(err.errno) if err.errno else str(err)
        raise UsageError(f"cannot listen on {host} port {options.port} ({why}), expected a free port "
                         "(--port) on an address of this device (--host)") from None


def run(app, options: ServeOptions, listener: socket.socket) -> None:
    import uvicorn  # the serve extra, only when serving

    # No access log: a first request's line would carry ?token=...; the audit log is the record.
    config = uvicorn.Config(app, host=options.host or "0.0.0.0", port=options.port, access_log=False,
                            log_level="warning", server_header=False)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again: a normal stop
        pass


def is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def terminal() -> bool:
    return sys.stdout.isatty()
