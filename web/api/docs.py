"""``/docs`` with no internet: Swagger UI's script and style served from an installed package.

quart-schema renders ``/docs`` with Swagger UI taken from a CDN (its
``QUART_SCHEMA_SWAGGER_JS_URL`` and ``QUART_SCHEMA_SWAGGER_CSS_URL`` settings), so on a machine
without internet the page stays blank. `install_docs` points both settings at
``/docs/assets/<version>/<file>`` and serves the files that the ``swagger-ui-py`` package ships
(Swagger UI 5, which renders the OpenAPI 3.1 that quart-schema writes; ``swagger-ui-bundle``
ships Swagger UI 4, which does not).

The package's version is in the address, so a file there never changes: it is cached for a
year as ``immutable``, and an upgrade gives the files new addresses. Conditional requests get
304s (ETag and Last-Modified). Any other path under ``/docs/assets/`` is the app's usual JSON
404. The routes are hidden from ``/openapi.json``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

from quart import Blueprint, Quart, Response, send_file
from quart_schema import hide
from werkzeug.exceptions import NotFound

ASSETS_PATH = "/docs/assets"
# The files the /docs page loads, with their media types; nothing else is served.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
}
ASSET_MAX_AGE_S = 365 * 24 * 3600

blueprint = Blueprint("docs", __name__)


@functools.cache
def swagger_ui_files() -> tuple[str, Path]:
    """The installed ``swagger-ui-py``'s version and its folder of Swagger UI files.

    Raises RuntimeError if the package is not installed. The package is located, not imported
    (importing it would load its framework adapters and YAML).
    """
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("/docs needs the swagger-ui-py package, and it is not installed")
    version = importlib.metadata.version("swagger-ui-py")
    return version, Path(spec.submodule_search_locations[0]) / "static"


def asset_url(name: str) -> str:
    """The address one of `ASSETS` is served at."""
    version, _ = swagger_ui_files()
    return f"{ASSETS_PATH}/{version}/{name}"


def install_docs(app: Quart) -> None:
    """Make quart-schema's ``/docs`` load Swagger UI from this server, and serve its files.

    Call it after ``QuartSchema(app)``, which only sets the CDN addresses as defaults. Raises
    RuntimeError if ``swagger-ui-py`` is not installed.
    """
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = asset_url("swagger-ui-bundle.js")
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = asset_url("swagger-ui.css")
    app.register_blueprint(blueprint)


@blueprint.get(f"{ASSETS_PATH}/<version>/<name>")
@hide
async def asset(version: str, name: str) -> Response:
    """One Swagger UI file, cached as immutable; 404 for another version or file.

    The file is streamed from disk by quart-trio's file body; a client that goes away stops it.
    """
    installed, folder = swagger_ui_files()
    media_type = ASSETS.get(name)
    if version != installed or media_type is None:
        raise NotFound(f"no docs asset at {ASSETS_PATH}/{version}/{name}")
    response = await send_file(
        folder / name, mimetype=media_type, cache_timeout=ASSET_MAX_AGE_S, conditional=True
    )
    response.cache_control.immutable = True
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
