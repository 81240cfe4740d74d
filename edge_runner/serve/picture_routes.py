"""The routes of a field's pictures: its thumbnail, its full image and its occlusion map, behind the app's token.

Fields are numbered from 1 in the order the sample page lists them. The occlusion map runs the model on
about a hundred covered copies of the field, so it is made on the interpreter's own thread, once, and only
when the technician asks for it.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from allx.edge_runner.serve.pictures import KEPT_SAMPLES, FieldPictures
from allx.edge_runner.serve.workbench import NotFound, Workbench

FIELD = "/samples/{key}/fields/{number}"
BREAK_AFTER = re.compile(r"([_\-/])")  # where a long file name may wrap: after _ - /, never mid-word


def add_pictures(app: FastAPI, templates: Jinja2Templates, bench: Workbench) -> None:
    """The routes, and what the sample page's templates need to link to them."""
    app.include_router(pictures_router(bench))
    templates.env.globals["picture_urls"] = picture_urls
    templates.env.filters["breakable"] = breakable


def breakable(name: str) -> Markup:
    """The name HTML-escaped, with a line-break opportunity (<wbr>) after each separator."""
    return Markup(BREAK_AFTER.sub(r"\1<wbr>", str(escape(name))))


def picture_urls(key: str, number: int) -> dict[str, str]:
    """The addresses the sample page links to, for one field."""
    base = FIELD.format(key=key, number=number)
    return {"thumbnail": f"{base}/thumbnail.jpg", "full": f"{base}/image.jpg", "occlusion": f"{base}/occlusion.png"}


def pictures_router(bench: Workbench) -> APIRouter:
    router = APIRouter()

    def pictures_of(key: str, number: int) -> FieldPictures:
        pictures = bench.sample(key).pictures
        if not 1 <= number <= len(pictures):
            raise NotFound(f"field {number}: no such field, expected 1 to {len(pictures)}")
        if pictures[number - 1] is None:
            raise NotFound(f"field {number}: no picture, expected a readable image of one of the {KEPT_SAMPLES} "
                           "most recent samples")
        return pictures[number - 1]

    @router.get(FIELD + "/thumbnail.jpg")
    def thumbnail(key: str, number: int):
        return Response(pictures_of(key, number).thumbnail, media_type="image/jpeg")

    @router.get(FIELD + "/image.jpg")
    def full_image(key: str, number: int):
        return Response(pictures_of(key, number).full, media_type="image/jpeg")

    @router.get(FIELD + "/occlusion.png")
    def occlusion(key: str, number: int):
        pictures = pictures_of(key, number)
        png = bench.inference.submit(pictures.occlusion_png, bench.model).result()
        return Response(png, media_type="image/png")

    return router
