"""How the web app answers: the HTTP status of an expected failure or of an upload, and the upload body read."""

from __future__ import annotations

from fastapi import Request

from allx.edge_runner.serve.form import Uploads, read_files
from allx.edge_runner.serve.guard import BodyTooLarge
from allx.edge_runner.serve.uploads import UploadLimits, UploadRejected
from allx.edge_runner.serve.workbench import LogUnavailable, NotFound
from allx.errors import DataError, ModelError


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


async def read_uploads(request: Request, limits: UploadLimits) -> Uploads:
    """(display name, bytes) of each file in the multipart field `files`, read as it streams in (names are never
    paths); a file over the per-file limit is refused by its size, its bytes past the limit never kept."""
    return await read_files(request.headers.get("content-type", ""), request.stream(), limits)
