"""``/docs`` loads Swagger UI from this server, never from a CDN, over real HTTP.

Whether the page then renders is tests/test_browser.py's question.
"""

from __future__ import annotations

import re

from web.api.docs import ASSETS_PATH, asset_url, swagger_ui_files

from .conftest import RunningServer


def page_sources(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


async def test_the_docs_page_loads_its_script_and_style_from_this_server(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        page = await client.get("/docs")
        sources = page_sources(page.text)
        fetched = [await client.get(source) for source in sources]
    assert page.status_code == 200
    assert sorted(sources) == sorted(
        [asset_url("swagger-ui-bundle.js"), asset_url("swagger-ui.css")]
    )
    assert all(source.startswith(f"{ASSETS_PATH}/") for source in sources)
    assert [response.status_code for response in fetched] == [200, 200]


async def test_assets_have_their_media_type_the_whole_file_and_a_year_of_caching(
    server: RunningServer,
) -> None:
    _, folder = swagger_ui_files()
    async with server.client() as client:
        script = await client.get(asset_url("swagger-ui-bundle.js"))
        style = await client.get(asset_url("swagger-ui.css"))
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert script.content == (folder / "swagger-ui-bundle.js").read_bytes()
    assert b"SwaggerUIBundle" in script.content
    for response in (script, style):
        cache = {part.strip() for part in response.headers["cache-control"].split(",")}
        assert cache == {"public", "max-age=31536000", "immutable"}
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["etag"]
        assert response.headers["last-modified"]


async def test_a_cached_asset_is_revalidated_with_a_304(server: RunningServer) -> None:
    url = asset_url("swagger-ui.css")
    async with server.client() as client:
        first = await client.get(url)
        again = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


async def test_unknown_asset_paths_are_json_404s(server: RunningServer) -> None:
    version, _ = swagger_ui_files()
    unknown = [
        f"{ASSETS_PATH}/{version}/swagger-editor-bundle.js",  # shipped, but not ours to serve
        f"{ASSETS_PATH}/{version}/swagger-ui.css.map",
        f"{ASSETS_PATH}/0.0.0/swagger-ui-bundle.js",
        f"{ASSETS_PATH}/{version}/..%2F__init__.py",
        f"{ASSETS_PATH}/swagger-ui-bundle.js",
        f"{ASSETS_PATH}/{version}/nested/swagger-ui.css",
    ]
    async with server.client() as client:
        responses = [await client.get(path) for path in unknown]
    for path, response in zip(unknown, responses, strict=True):
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json", path
        assert response.json()["error"]["type"] == "not_found", path
        assert response.json()["error"]["message"], path


async def test_the_assets_are_not_in_the_openapi_description(server: RunningServer) -> None:
    async with server.client() as client:
        spec = (await client.get("/openapi.json")).json()
    assert not [path for path in spec["paths"] if path.startswith(ASSETS_PATH)]
