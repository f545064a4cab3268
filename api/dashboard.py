"""``GET /dashboard``: the analysts' dashboard, static files the app serves itself.

Plain HTML, CSS and a JavaScript module under ``api/static/dashboard`` (no build step), with
Chart.js vendored under ``api/static/chartjs``: it works offline, with nothing from a CDN.
The page asks for the read-API token once and keeps it in the tab's ``sessionStorage``; every
figure comes from the read API with that token, and the live tail from ``GET /v1/stream``.
"""

from __future__ import annotations

from litestar.router import Router
from litestar.static_files import create_static_files_router

from api.openapi import STATIC_DIR

DASHBOARD_DIR = STATIC_DIR / "dashboard"


def dashboard() -> Router:
    """``/dashboard`` (its ``index.html``) and the files it loads, under ``/dashboard/``."""
    return create_static_files_router(
        path="/dashboard", directories=[DASHBOARD_DIR], html_mode=True, include_in_schema=False
    )
