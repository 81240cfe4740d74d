"""The technician's pages: start a sample, add fields (upload or camera), review it, read the log, see the model.

Each route is a thin edge over the Workbench; `page` (from create_app) renders a template with what every
page shows. A form's failure is shown on the page it came from, with its status code.
"""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from allx.edge_runner.serve.answers import read_uploads, status_of, upload_status
from allx.edge_runner.serve.workbench import Workbench, recent_samples
from allx.errors import AllxError

MAX_LOG_ROWS = 200  # the log page shows the latest rows; /log.csv has them all


def pages_router(bench: Workbench, page: Callable) -> APIRouter:
    """GET /, POST /samples, the sample page and its forms, GET /log and GET /model."""
    router = APIRouter(default_response_class=HTMLResponse)

    @router.get("/")
    def index(request: Request):
        return page(request, "index.html", samples=bench.open_samples())

    @router.post("/samples")
    async def start_page(request: Request):
        form = await request.form(max_fields=10)
        try:
            sample = bench.start_sample(form.get("sample_id"), form.get("operator"))
        except AllxError as err:
            return page(request, "index.html", status_of(err), samples=bench.open_samples(), message=str(err),
                        typed=dict(form))
        return RedirectResponse(f"/samples/{sample.key}", 303)

    @router.get("/samples/{key}")
    def sample_page(request: Request, key: str):
        return page(request, "sample.html", sample=bench.sample(key))

    @router.post("/samples/{key}/fields")
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

    @router.post("/samples/{key}/camera")
    def camera_page(request: Request, key: str):
        sample = bench.sample(key)
        try:
            added = [bench.capture(key)]
        except AllxError as err:
            return page(request, "sample.html", status_of(err), sample=sample, message=str(err))
        return page(request, "sample.html", sample=sample, added=added)

    @router.post("/samples/{key}/review")
    async def review_page(request: Request, key: str):
        sample = bench.sample(key)
        form = await request.form(max_fields=10)
        try:
            await run_in_threadpool(bench.review, key, form.get("action", ""), form.get("label"), form.get("note"),
                                    form.get("operator"))
        except AllxError as err:
            return page(request, "sample.html", status_of(err), sample=sample, message=str(err))
        return page(request, "sample.html", sample=sample, notice="review saved in the audit log")

    @router.get("/log")
    def log_page(request: Request, since: str | None = None, sample: str | None = None):
        rows = bench.rows(since or None, sample or None)
        return page(request, "log.html", rows=rows[-MAX_LOG_ROWS:], samples=recent_samples(rows),
                    since=since or "", sample_filter=sample or "")

    @router.get("/model")
    def model_page(request: Request):
        return page(request, "model.html")

    return router
