"""The dashboard: `GET /` → `/dashboard`, a static page (serve/static/) over the public API.

The page is one HTML file, one script and one stylesheet (no build step, nothing from another
origin), sent with a Content-Security-Policy that allows this origin only: no inline script or
style. Its script reads GET /model, POST /predict and, with a key the user types, GET
/predictions. The figures of the pipeline (`Settings.figures_dir`, by default reports/figures
in the repository) are listed at /dashboard/figures and served read-only, PNG files directly
in that folder only; the folder is looked up per request, so figures made after the start show.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.response import File, Redirect

from serve.service import service_of

STATIC = Path(__file__).with_name("static")
# name → media type (Litestar adds "; charset=utf-8" to text/*): the assets the page needs;
# nothing else in the folder is reachable.
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}
CSP = "; ".join([
    "default-src 'self'",
    "img-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",  # the forms are handled by the script; a plain submit goes nowhere
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# One path segment, no leading dot: "..", "a/b" and ".hidden.png" never name a figure.
_FIGURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png")


def list_figures(folder: Path) -> list[str]:
    """Names of the figures `figure_file` serves (none if the folder does not exist), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if figure_file(folder, p.name) is not None)


def figure_file(folder: Path, name: str) -> Path | None:
    """The file for `name` if it is a listed figure (symlinks may not lead out of the folder)."""
    if not _FIGURE.fullmatch(name):
        return None
    path = folder / name
    try:
        real = path.resolve(strict=True)
    except OSError:
        return None
    return real if real.is_file() and real.parent == folder.resolve() else None


@cache
def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@get("/", include_in_schema=False)
async def root() -> Redirect:
    return Redirect("/dashboard", status_code=302)


@get("/", include_in_schema=False)
async def index() -> Response:
    return Response(_static("index.html"), media_type="text/html")


@get("/static/{name:str}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFoundException(f"no asset {name!r}")
    return Response(_static(name), media_type=ASSETS[name])


@get("/figures", include_in_schema=False, sync_to_thread=True)
def figures(request: Request[Any, Any, Any]) -> Response:
    names = list_figures(service_of(request).settings.figures_path)
    items = [{"name": n, "url": f"/dashboard/figures/{n}"} for n in names]
    return Response(msgspec.json.encode({"figures": items}), media_type="application/json")


@get("/figures/{name:str}", include_in_schema=False, sync_to_thread=True)
def figure(request: Request[Any, Any, Any], name: str) -> File:
    path = figure_file(service_of(request).settings.figures_path, name)
    if path is None:
        raise NotFoundException("no such figure")
    return File(path, filename=name, media_type="image/png", content_disposition_type="inline")


DASHBOARD = [
    root,
    Router(
        "/dashboard",
        route_handlers=[index, asset, figures, figure],
        response_headers=HEADERS,
        # Revalidate every time: a new model or `dvc repro` changes what is behind these URLs.
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
    ),
]
