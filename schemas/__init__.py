"""Wire contracts of cxpulse (DESIGN.md section 2), as pydantic v2 models."""
from schemas.events import (
    Channel, Complaint, InputEvent, Order, Touchpoint, parse_event, EVENT_ADAPTER,
)
from schemas.outputs import AlertRecord, ChurnDriver, DeadLetter, ScoreRecord

__all__ = [
    "Channel", "Complaint", "InputEvent", "Order", "Touchpoint", "parse_event", "EVENT_ADAPTER",
    "AlertRecord", "ChurnDriver", "DeadLetter", "ScoreRecord",
]
