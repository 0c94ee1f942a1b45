"""Export the JSON Schema of every wire record to schemas/json/ (`python -m schemas.export`)."""
from __future__ import annotations

import json
import sys
from typing import Any
from pathlib import Path

from pydantic import TypeAdapter

from schemas.actions import ActionRecord
from schemas.events import Complaint, InputEvent, Order, Touchpoint
from schemas.outputs import AlertRecord, DeadLetter, ScoreRecord

JSON_DIR = Path(__file__).with_name("json")

MODELS: dict[str, TypeAdapter[Any]] = {
    "input_event": TypeAdapter(InputEvent),
    "touchpoint": TypeAdapter(Touchpoint),
    "order": TypeAdapter(Order),
    "complaint": TypeAdapter(Complaint),
    "action": TypeAdapter(ActionRecord),
    "score": TypeAdapter(ScoreRecord),
    "alert": TypeAdapter(AlertRecord),
    "deadletter": TypeAdapter(DeadLetter),
}


def render() -> dict[str, str]:
    """File name → JSON text, exactly as it should be on disk."""
    return {
        f"{name}.schema.json": json.dumps(adapter.json_schema(), indent=2, sort_keys=True) + "\n"
        for name, adapter in MODELS.items()
    }


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (JSON_DIR / name).write_text(text)
        print(f"wrote {JSON_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
