"""``/dashboard`` works without the internet: the page and everything it loads come from the
app; the vendored chart library ships with its licence; the error-code table it shows."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ledger.error_codes import ERROR_CODES
from tests.test_schema_site import Client, references

#: Anything in a script that would fetch from another host.
_OUTSIDE = re.compile(r"""["'`](?:https?:)?//[\w.-]+""")


async def test_the_dashboard_and_its_assets_come_from_this_server(client: Client) -> None:
    found = await references(client, "/dashboard")
    assert len(found.scripts) == 2  # Chart.js, then the dashboard's module
    for url in found.urls:
        parts = urlsplit(url)
        if parts.scheme == "data":
            continue  # the inline empty favicon
        assert (parts.scheme, parts.netloc) == ("", ""), f"/dashboard loads {url} from elsewhere"
        assert (await client.get(url)).status_code == 200, url


async def test_the_dashboards_script_fetches_nothing_from_elsewhere(client: Client) -> None:
    response = await client.get("/dashboard/dashboard.js")
    assert response.headers["content-type"].startswith("text/javascript")
    assert _OUTSIDE.findall(response.text) == []


async def test_the_vendored_chart_library_ships_with_its_licence(client: Client) -> None:
    response = await client.get("/static/chartjs/LICENSE.md")
    assert response.status_code == 200
    assert "The MIT License" in response.text
    assert "Chart.js v4." in (await client.get("/static/chartjs/chart.umd.js")).text[:200]


async def test_error_codes_are_listed_with_their_meanings(
    client: Client, auth: dict[str, str]
) -> None:
    response = await client.get("/v1/error-codes", headers=auth)
    assert response.status_code == 200
    assert {row["code"]: row["meaning"] for row in response.json()} == dict(ERROR_CODES)


async def test_error_codes_need_a_read_token(client: Client) -> None:
    assert (await client.get("/v1/error-codes")).status_code == 401
