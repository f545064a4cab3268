"""The OpenAPI UI under ``/schema`` works without the internet: every asset is served here."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
PAGES = ["/schema", "/schema/redoc"]


class _References(HTMLParser):
    """Every URL a page makes the browser fetch: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)
                if tag == "script":
                    self.scripts.append(value)


async def references(client: Client, page: str) -> _References:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    found = _References()
    found.feed(response.text)
    return found


@pytest.mark.parametrize("page", PAGES)
async def test_the_schema_page_references_only_this_server(client: Client, page: str) -> None:
    found = await references(client, page)
    assert found.scripts, "the page loads no script: it would render blank"
    for url in found.urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), f"{page} loads {url} from elsewhere"


@pytest.mark.parametrize("page", PAGES)
async def test_the_schema_pages_scripts_are_served_as_javascript(client: Client, page: str) -> None:
    for script in (await references(client, page)).scripts:
        response = await client.get(script)
        assert response.status_code == 200, script
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in {"text/javascript", "application/javascript"}, script
        assert b"Redoc" in response.content


async def test_the_vendored_ui_ships_with_its_licence(client: Client) -> None:
    response = await client.get("/static/redoc/LICENSE")
    assert response.status_code == 200
    assert "MIT License" in response.text
