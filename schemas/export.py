"""JSON Schema files for upstream teams: one per event type, plus an index.

>>> import tempfile, json, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> files = export_json_schemas(out)
>>> len(files), json.loads((out / "index.json").read_text())["schema_version"]
(26, '1.0')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import SCHEMA_VERSION
from schemas.registry import EVENT_MODELS, stream_of

__all__ = ["export_json_schemas"]

_BASE_URI = "https://community-pulse.dev/schemas"


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<event_type>.schema.json`` for every event type and ``index.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "event_types": {}}
    for event_type, model in sorted(EVENT_MODELS.items()):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"{_BASE_URI}/{SCHEMA_VERSION}/{event_type}.schema.json"
        schema["x-pulse-topic"] = f"pulse.{stream_of(event_type)}"
        schema["x-pulse-schema-version"] = SCHEMA_VERSION
        path = directory / f"{event_type}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
        index["event_types"][event_type] = {
            "file": path.name,
            "topic": schema["x-pulse-topic"],
            "description": (model.__doc__ or "").strip().splitlines()[0],
        }
    index_path = directory / "index.json"
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    written.append(index_path)
    return written
