"""The OpenAPI document and its browsable UI under ``/schema``, served without the internet.

The UI is Redoc's standalone bundle, vendored under ``api/static/redoc`` (see its README) and
served by Litestar's static files router, with no CDN script, favicon or Google font.
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/static"
REDOC_JS = f"{STATIC_PATH}/redoc/redoc.standalone.js"


def openapi_config() -> OpenAPIConfig:
    """The document at ``/schema/openapi.json``, and Redoc at ``/schema``."""
    return OpenAPIConfig(
        title="Plivo delivery ledger",
        version="0.1.0",
        description="Plivo status callbacks kept as immutable events, with read views. "
        "Every error is RFC 9457 problem details (application/problem+json).",
        path="/schema",
        render_plugins=[
            RedocRenderPlugin(js_url=REDOC_JS, google_fonts=False, path=["/", "/redoc"], favicon="")
        ],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="Read-API token")
            }
        ),
    )


def static_assets() -> Router:
    """The vendored files the schema UI loads, under ``/static``."""
    return create_static_files_router(
        path=STATIC_PATH, directories=[STATIC_DIR], include_in_schema=False
    )
