"""The web dashboard at `/` and the API's documentation at `/docs`, with every asset served by the
service itself: no build step, nothing from a CDN (field sites are often offline).

The page (`ingest/static/`) is plain HTML, CSS and JavaScript that polls the read API
(`/api/devices`, `/api/service`, `/api/devices/{id}/series`); with a read token set, it asks for the
token once and keeps it in the browser's local storage. Swagger UI's files come from the
`fastapi-offline` package.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
SWAGGER_STATIC = Path(fastapi_offline.__file__).resolve().parent / "static"


def mount(app: FastAPI) -> None:
    """Serve the dashboard at `/`, its files under `/static`, and Swagger UI at `/docs`."""
    app.mount("/static/docs", StaticFiles(directory=SWAGGER_STATIC), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def docs_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
