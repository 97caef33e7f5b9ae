"""Generate the JSON Schemas in ``schemas/`` from the event models.

``python -m consent_ledger.schemas DIR`` writes one ``<EventType>.schema.json``
per event type; ``--check`` exits 1 when the files in DIR differ from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from consent_ledger.core.events import EVENT_MODELS

SCHEMA_BASE_URI = "https://consent-ledger.dev/schemas/v1/"


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name to JSON Schema (draft 2020-12), one per event type."""
    schemas = {}
    for name, model in EVENT_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{SCHEMA_BASE_URI}{name}.schema.json",
            **schema,
        }
        schemas[f"{name}.schema.json"] = schema
    return schemas


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--check", action="store_true", help="fail when files drift from the models"
    )
    args = parser.parse_args(argv)
    drifted = []
    for file_name, schema in event_schemas().items():
        path = args.directory / file_name
        text = render(schema)
        if args.check:
            if not path.exists() or path.read_text("utf-8") != text:
                drifted.append(file_name)
        else:
            args.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    if drifted:
        sys.stderr.write(
            f"schemas drifted from the models: {', '.join(drifted)}; run `make schemas`\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
