"""The demo page served with the model: GET / and its assets, and the bundle's examples.

Plain HTML, CSS and JavaScript shipped as package data (no build step, no CDN: serving hosts may
have no internet). The page only reads /version and /examples and posts to /predict, so it shows
exactly what the API answers and can send nothing /predict's limits would refuse. A tabular
model's page is a form built from /version's feature list; its examples are rows of values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cxml.core.console import warn
from cxml.core.errors import RecordError
from cxml.records.examples import Example, ExampleRow, read_example_rows, read_examples
from cxml.serve.settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI, Request, Response

Item = TypeVar("Item")

PAGE_FILE = "index.html"
ASSET_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""Only this origin's own files: no inline script or style, no CDN; `blob:` images are the
preview of the file the user picked, which never leaves the page except to /predict."""
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-cache",
}


@dataclass(frozen=True)
class DemoPage:
    """The page, its assets and the examples, read once when the app starts."""

    page: bytes
    assets: dict[str, bytes]
    examples: dict[str, Example]
    rows: tuple[ExampleRow, ...] = ()


def load_demo_page(settings: ServeSettings) -> DemoPage:
    files = resources.files(__name__)
    page = files.joinpath(PAGE_FILE).read_bytes()
    assets = {name: files.joinpath(name).read_bytes() for name in ASSET_TYPES}
    images, rows = bundle_examples(settings), bundle_example_rows(settings)
    return DemoPage(page, assets, {e.name: e for e in images}, tuple(rows))


def bundle_examples(settings: ServeSettings) -> list[Example]:
    """The example images of the bundle being served; none for a bare model file or a damaged
    index (the page is a demo: it loses its examples row, the service still answers)."""
    return from_bundle(settings, read_examples, "examples")


def bundle_example_rows(settings: ServeSettings) -> list[ExampleRow]:
    """A tabular model's example rows from its bundle; none, as for images, when absent or
    damaged (the page then fills its form with the training means)."""
    return from_bundle(settings, read_example_rows, "example rows")


def from_bundle(
    settings: ServeSettings, read: Callable[[Path], list[Item]], what: str
) -> list[Item]:
    """`read` of the served bundle's directory; nothing without a bundle, and nothing, with a
    warning that names `what`, from a damaged one."""
    if settings.release is None:
        return []
    try:
        return read(settings.model_path.parent)
    except RecordError as exc:
        warn(f"demo page without {what}: {exc}")
        return []


def add_demo_page(app: FastAPI, settings: ServeSettings) -> None:
    """Routes for / (the page), /ui/<asset>, /examples (their list) and /examples/<name>."""
    from fastapi import Response

    demo = load_demo_page(settings)

    def answer(body: bytes, media_type: str, status: int = 200) -> Response:
        return Response(body, status_code=status, media_type=media_type, headers=SECURITY_HEADERS)

    def not_found(what: str) -> Response:
        body = json.dumps({"error": f"{what} not found"}, separators=(",", ":")).encode()
        return answer(body, "application/json", 404)

    async def page(request: Request) -> Response:
        return answer(demo.page, "text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        if name not in demo.assets:
            return not_found(f"/ui/{name}")
        return answer(demo.assets[name], ASSET_TYPES[name])

    async def example_list(request: Request) -> Response:
        listed: list[dict[str, object]] = [
            {"name": e.name, "label": e.label, "url": f"/examples/{e.name}"}
            for e in demo.examples.values()
        ]
        listed += [
            {"name": r.name, "label": r.label, "features": list(r.features)} for r in demo.rows
        ]
        body = json.dumps({"examples": listed}, separators=(",", ":")).encode()
        return answer(body, "application/json")

    async def example(request: Request) -> Response:
        found = demo.examples.get(str(request.path_params["name"]))
        if found is None:
            return not_found("example")
        return answer(found.data, found.media_type)

    app.add_route("/", page, methods=["GET"])
    app.add_route("/ui/{name}", asset, methods=["GET"])
    app.add_route("/examples", example_list, methods=["GET"])
    app.add_route("/examples/{name}", example, methods=["GET"])
