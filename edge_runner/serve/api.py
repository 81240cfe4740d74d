"""The JSON API under /api, for scripts and a LIS: the same Workbench calls as the pages, answered as JSON.

Failures are answered by create_app's handlers as {"error": ...} with their status code.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from allx.edge_runner.serve.answers import read_uploads, upload_status
from allx.edge_runner.serve.card import ModelPage
from allx.edge_runner.serve.uploads import UploadRejected
from allx.edge_runner.serve.workbench import Workbench, recent_samples


class StartSample(BaseModel):
    sample_id: str
    operator: str


class Review(BaseModel):
    action: str
    label: str | None = None
    note: str | None = None
    operator: str | None = None


def api_router(bench: Workbench, card: ModelPage) -> APIRouter:
    """Samples (start, list, one, fields, camera, review), the log (rows, samples, CSV) and the model card."""
    router = APIRouter()

    @router.post("/api/samples", status_code=201)
    def api_start(body: StartSample):
        return bench.start_sample(body.sample_id, body.operator).to_dict()

    @router.get("/api/samples")
    def api_samples():
        return {"samples": [s.to_dict() for s in bench.open_samples()]}

    @router.get("/api/samples/{key}")
    def api_sample(key: str):
        return bench.sample(key).to_dict()

    @router.post("/api/samples/{key}/fields")
    async def api_fields(request: Request, key: str):
        sample = bench.sample(key)
        uploads = await read_uploads(request, bench.limits)
        if not uploads.files and not uploads.refused:
            raise UploadRejected("no file in the request, expected multipart field 'files'")
        added, refused = await run_in_threadpool(bench.add_fields, key, uploads.files)
        refused = uploads.refused + refused
        body = {"added": added, "refused": refused, "verdict": sample.verdict(), "log_warning": bench.log_warning}
        return JSONResponse(body, upload_status(added, refused))

    @router.post("/api/samples/{key}/camera")
    def api_camera(key: str):
        added = bench.capture(key)
        return {"added": [added], "verdict": bench.sample(key).verdict(), "log_warning": bench.log_warning}

    @router.post("/api/samples/{key}/review")
    def api_review(key: str, body: Review):
        return bench.review(key, body.action, body.label, body.note, body.operator)

    @router.get("/api/log")
    def api_log(since: str | None = None, sample: str | None = None):
        return {"rows": bench.rows(since or None, sample or None)}

    @router.get("/api/log/samples")
    def api_log_samples(since: str | None = None):
        return {"samples": recent_samples(bench.rows(since or None))}

    @router.get("/log.csv")  # the page's download link, and the API's
    @router.get("/api/log.csv")
    def log_csv(since: str | None = None):
        return Response(bench.export_csv(since or None), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="allx-audit-log.csv"'})

    @router.get("/api/model")
    def api_model():
        return card.to_dict()

    return router
