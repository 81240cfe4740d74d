"""The web app: server-rendered pages for the technician and a JSON API under /api for scripts and a LIS.

Every route is a thin edge over the Workbench. Work that can wait (inference, the audit log, which another
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
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from allx.errors import AllxError, DataError, ModelError
from allx.edge_runner.serve.card import ModelCard
from allx.edge_runner.serve.guard import (BodyLimit, BodyTooLarge, HostGuard, SecurityHeaders, TokenGuard,
                                          wants_json)
from allx.edge_runner.serve.form import Uploads, read_files
from allx.edge_runner.serve.uploads import UploadLimits, UploadRejected
from allx.edge_runner.serve.monitor_page import MonitorState, monitor_router
from allx.edge_runner.serve.picture_routes import add_pictures
from allx.edge_runner.serve.workbench import LogUnavailable, NotFound, Workbench, recent_samples

HERE = Path(__file__).parent
log = logging.getLogger("allx.serve")


class StartSample(BaseModel):
    sample_id: str
    operator: str


class Review(BaseModel):
    action: str
    label: str | None = None
    note: str | None = None
    operator: str | None = None


def status_of(err: Exception) -> int:
    """The HTTP status of an expected failure: the client's fault (4xx) or the device's (503)."""
    if isinstance(err, (UploadRejected, BodyTooLarge)):
        return getattr(err, "status", 413)
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, (LogUnavailable, DataError, ModelError)):
        return 503  # camera unplugged, log locked or read-only, model gone: retry later
    return 400


def upload_status(added: list, refused: list[dict]) -> int:
    """200 when any field was added; else the refusals' status when they agree (413 all too large, 415 none
    an image), else 400."""
    if added:
        return 200
    statuses = {r.get("status", 400) for r in refused}
    return statuses.pop() if len(statuses) == 1 else 400


def create_app(bench: Workbench, card: ModelCard, token: str, host_names: tuple[str, ...] | None = None) -> FastAPI:
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

    add_pictures(app, templates, bench)  # thumbnails, full images and occlusion maps of the fields

    @app.get("/health")
    def health():
        return {"status": "ok"}

    # --- pages ---------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return page(request, "index.html", samples=bench.open_samples())

    @app.post("/samples")
    async def start_page(request: Request):
        form = await request.form(max_fields=10)
        try:
            sample = bench.start_sample(form.get("sample_id"), form.get("operator"))
        except AllxError as err:
            return page(request, "index.html", status_of(err), samples=bench.open_samples(), message=str(err),
                        typed=dict(form))
        return RedirectResponse(f"/samples/{sample.key}", 303)

    @app.get("/samples/{key}", response_class=HTMLResponse)
    def sample_page(request: Request, key: str):
        return page(request, "sample.html", sample=bench.sample(key))

    @app.post("/samples/{key}/fields", response_class=HTMLResponse)
    async def upload_page(request: Request, key: str):
        sample = bench.sample(key)
        uploads = await read_uploads(request, bench.limits)
        if not uploads.files and not uploads.refused:
            return page(request, "sample.html", 400, sample=sample,
                        message="no file chosen, expected one or more images")
        added, refused = await run_in_threadpool(bench.add_fields, key, uploads.files)
        refused = uploads.refused + refused
        return page(request, "sample.html", upload_status(added, refused), sample=sample, refused=refused,
                    added=added)

    @app.post("/samples/{key}/camera", response_class=HTMLResponse)
    def camera_page(request: Request, key: str):
        sample = bench.sample(key)
        try:
            added = [bench.capture(key)]
        except AllxError as err:
            return page(request, "sample.html", status_of(err), sample=sample, message=str(err))
        return page(request, "sample.html", sample=sample, added=added)

    @app.post("/samples/{key}/review", response_class=HTMLResponse)
    async def review_page(request: Request, key: str):
        sample = bench.sample(key)
        form = await request.form(max_fields=10)
        try:
            await run_in_threadpool(bench.review, key, form.get("action", ""), form.get("label"), form.get("note"),
                                    form.get("operator"))
        except AllxError as err:
            return page(request, "sample.html", status_of(err), sample=sample, message=str(err))
        return page(request, "sample.html", sample=sample, notice="review saved in the audit log")

    @app.get("/log", response_class=HTMLResponse)
    def log_page(request: Request, since: str | None = None, sample: str | None = None):
        rows = bench.rows(since or None, sample or None)
        return page(request, "log.html", rows=rows[-200:], samples=recent_samples(rows), since=since or "",
                    sample_filter=sample or "")

    @app.get("/log.csv")
    @app.get("/api/log.csv")
    def log_csv(since: str | None = None):
        return Response(bench.export_csv(since or None), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="allx-audit-log.csv"'})

    @app.get("/model", response_class=HTMLResponse)
    def model_page(request: Request):
        return page(request, "model.html")

    # --- JSON API ------------------------------------------------------------------------------------

    @app.post("/api/samples", status_code=201)
    def api_start(body: StartSample):
        return bench.start_sample(body.sample_id, body.operator).to_dict()

    @app.get("/api/samples")
    def api_samples():
        return {"samples": [s.to_dict() for s in bench.open_samples()]}

    @app.get("/api/samples/{key}")
    def api_sample(key: str):
        return bench.sample(key).to_dict()

    @app.post("/api/samples/{key}/fields")
    async def api_fields(request: Request, key: str):
        sample = bench.sample(key)
        uploads = await read_uploads(request, bench.limits)
        if not uploads.files and not uploads.refused:
            raise UploadRejected("no file in the request, expected multipart field 'files'")
        added, refused = await run_in_threadpool(bench.add_fields, key, uploads.files)
        refused = uploads.refused + refused
        body = {"added": added, "refused": refused, "verdict": sample.verdict(), "log_warning": bench.log_warning}
        return JSONResponse(body, upload_status(added, refused))

    @app.post("/api/samples/{key}/camera")
    def api_camera(key: str):
        added = bench.capture(key)
        return {"added": [added], "verdict": bench.sample(key).verdict(), "log_warning": bench.log_warning}

    @app.post("/api/samples/{key}/review")
    def api_review(key: str, body: Review):
        return bench.review(key, body.action, body.label, body.note, body.operator)

    @app.get("/api/log")
    def api_log(since: str | None = None, sample: str | None = None):
        return {"rows": bench.rows(since or None, sample or None)}

    @app.get("/api/log/samples")
    def api_log_samples(since: str | None = None):
        return {"samples": recent_samples(bench.rows(since or None))}

    @app.get("/api/model")
    def api_model():
        return card.to_dict()

    return app


async def read_uploads(request: Request, limits: UploadLimits) -> Uploads:
    """(display name, bytes) of each file in the multipart field `files`, read as it streams in (names are never
    paths); a file over the per-file limit is refused by its size, its bytes past the limit never kept."""
    return await read_files(request.headers.get("content-type", ""), request.stream(), limits)
