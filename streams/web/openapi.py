"""The OpenAPI document of the HTTP API, exported next to the event JSON Schemas.

Built from the real app with inert dependencies (nothing is started or called).

>>> import tempfile, json, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> doc = json.loads(export_openapi(out).read_text())
>>> sorted(doc["paths"])[:4]
['/', '/healthz', '/metrics', '/query']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from streams.config import Settings
from streams.web.app import create_app
from streams.web.deps import Health, WebDeps

__all__ = ["openapi_document", "export_openapi"]


def _unused(*args: Any) -> Any:
    raise AssertionError("the OpenAPI export calls no dependency")


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The app's OpenAPI document (the routes do not depend on the settings' values)."""
    deps = WebDeps(
        settings=settings or Settings(),
        registry=CollectorRegistry(),
        status=_unused,
        health=lambda: Health(),
        query=_unused,
        select=_unused,
        pseudonym=_unused,
        producer_config={},
    )
    return create_app(deps).openapi()


def export_openapi(directory: Path) -> Path:
    """Write ``openapi.json`` into ``directory``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "openapi.json"
    path.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
    return path
