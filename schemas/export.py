"""Export the contract as JSON Schema files under ``schemas/jsonschema/``.

``python -m schemas.export`` rewrites them; ``python -m schemas.export --check`` exits 1
when the checked-in files are stale (a unit test runs the same comparison).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.events import TouchpointEvent
from schemas.properties import CATALOGUE
from schemas.records import DeadLetter

OUT_DIR = Path(__file__).parent / "jsonschema"


def event_schema() -> dict[str, Any]:
    schema = TypeAdapter(TouchpointEvent).json_schema()
    schema["$id"] = "https://touchpoint.dev/schemas/touchpoint-event-v1.json"
    schema["title"] = "Touchpoint event (schema v1)"
    return schema


def properties_schema() -> dict[str, Any]:
    return {
        "title": "Typed properties per channel and event type (schema v1)",
        "channels": {
            channel: {etype: model.model_json_schema() for etype, model in types.items()}
            for channel, types in CATALOGUE.items()
        },
    }


def generated() -> dict[str, str]:
    """File name -> content of every generated schema file."""
    docs = {
        "touchpoint-event.v1.json": event_schema(),
        "properties.v1.json": properties_schema(),
        "dead-letter.v1.json": DeadLetter.model_json_schema(mode="serialization"),
    }
    return {name: json.dumps(doc, indent=2, sort_keys=True) + "\n" for name, doc in docs.items()}


def stale_files(out_dir: Path = OUT_DIR) -> list[str]:
    return [
        n
        for n, text in generated().items()
        if not (out_dir / n).exists() or (out_dir / n).read_text() != text
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        for name in stale:
            print(f"stale: schemas/jsonschema/{name} (run python -m schemas.export)")
        return 1 if stale else 0
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in generated().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote schemas/jsonschema/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
