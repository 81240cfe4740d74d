"""The web app: server-rendered pages for the technician and a JSON API under /api for scripts and a LIS.

`create_app` is a small factory: middleware, error handlers and three routers, the technician's pages
(`serve.pages`), the JSON API (`serve.api`) and the Monitor page (`serve.monitor_page`). Every route is a
thin edge over the Workbench. Work that can wait (inference, the audit log, which another
process may hold locked for seconds) never runs on the event loop: plain `def` routes run in Starlette's
thread pool, and the async routes that read a form hand the Workbench call to it (`run_in_threadpool`),
so /health and every other request keep answering while an upload waits. Errors never escape as tracebacks: an AllxError
becomes its message with a status code (JSON `{"error": ...}` under /api, the page with a red line
otherwise), and anything unexpected becomes a bare 500 while the server goes on serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from allx.errors import AllxError
from allx.edge_runner.serve.answers import status_of
from allx.edge_runner.serve.api import api_router
from allx.edge_runner.serve.card import ModelPage
from allx.edge_runner.serve.guard import BodyLimit, BodyTooLarge, HostGuard, SecurityHeaders, TokenGuard, wants_json
from allx.edge_runner.serve.monitor_page import MonitorState, monitor_router
from allx.edge_runner.serve.pages import pages_router
from allx.edge_runner.serve.picture_routes import add_pictures
from allx.edge_runner.serve.workbench import Workbench

HERE = Path(__file__).parent
log = logging.getLogger("allx.serve")


def create_app(bench: Workbench, card: ModelPage, token: str, host_names: tuple[str, ...] | None = None) -> FastAPI:
    """The app; with `host_names`, a request must name the device by an IP address or one of them (HostGuard)."""
    app = FastAPI(title="allx-edge serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bench, app.state.card = bench, card
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on: every value is HTML-escaped
    templates.env.filters["when"] = lambda text: (text or "")[:19].replace("T", " ")  # ISO UTC to the second
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodyLimit, max_bytes=bench.limits.max_request_bytes)
    app.add_middleware(TokenGuard, token=token)
    if host_names is not None:
        app.add_middleware(HostGuard, names=host_names)  # before the token: a rebound name never gets a 401 page
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, a 401 included

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        context = {"card": card, "log_warning": bench.log_warning, "labels": bench.model.labels,
                   "has_camera": bench.capture_frame is not None, **context}
        return templates.TemplateResponse(request, name, context, status_code=status)

    monitor = MonitorState(bench.log.path, bench.model)  # the Monitor page; its alarm in every page's header
    templates.env.globals["monitor_alarm"] = monitor.header_alarm
    app.include_router(monitor_router(monitor, page))

    add_error_handlers(app, page)
    add_pictures(app, templates, bench)  # thumbnails, full images and occlusion maps of the fields

    @app.get("/health")
    def health():
        return {"status": "ok"}

    app.include_router(pages_router(bench, page))
    app.include_router(api_router(bench, card))
    return app


def add_error_handlers(app: FastAPI, page) -> None:
    """An AllxError as its message with its status (JSON under /api, else the error page); anything unexpected
    as a bare 500, logged, while the server goes on serving."""

    def error_response(request: Request, err: Exception, status: int):
        if wants_json(request.url.path):
            return JSONResponse({"error": str(err)}, status)
        return page(request, "error.html", status, message=str(err))

    @app.exception_handler(AllxError)
    async def allx_error(request: Request, err: AllxError):
        return error_response(request, err, status_of(err))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, err: BodyTooLarge):
        return error_response(request, err, 413)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in err.errors())
        return JSONResponse({"error": f"invalid request: check {fields}"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return error_response(request, Exception(err.detail), err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request, Exception("internal error (details in the server's log)"), 500)
