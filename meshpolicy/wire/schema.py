"""The published JSON Schema of the meshproxy format, made from the models:
`python -m meshpolicy.wire.schema > targets/meshproxy/schema.json`."""

from __future__ import annotations

import json
import sys

from .config import WorkloadConfig

SCHEMA_ID = "https://meshpolicy.dev/schemas/meshproxy/v3/workload.json"


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a workload file."""
    schema = WorkloadConfig.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "meshproxy workload config, version 3",
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
