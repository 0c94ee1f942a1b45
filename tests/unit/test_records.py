"""The TypedDicts the core hands to the adapters have the contract's fields, and what the
core builds validates against the contract's models."""
from __future__ import annotations

from typing import get_type_hints

import pytest

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.service.processor import RawRecord
from schemas.outputs import AlertRecord, ChurnDriver, DeadLetter, ScoreRecord
from schemas.records import AlertDict, ChurnDriverDict, DeadLetterDict, ScoreDict
from tests.factories import RECEIVED_AT, at, complaint, raw, touchpoint


@pytest.mark.parametrize("typed, model", [
    (ScoreDict, ScoreRecord), (AlertDict, AlertRecord), (DeadLetterDict, DeadLetter), (ChurnDriverDict, ChurnDriver),
])
def test_typed_record_has_the_models_fields(typed, model):
    assert list(get_type_hints(typed)) == list(model.model_fields)


def test_what_the_core_builds_is_valid_against_the_models():
    settings = Settings()
    core = build_core(settings)
    records = [RawRecord(settings.topic_touchpoints, 0, 0, b"c1", raw(touchpoint("c1", at(0), csat=1, nps=2))),
               RawRecord(settings.topic_complaints, 0, 0, b"c1", raw(complaint("c1", at(1), severity="critical"))),
               RawRecord(settings.topic_orders, 0, 99, b"c1", b"{not json")]
    out = core.process(records, {}.get, received_at=RECEIVED_AT)
    swept = core.sweep(out.states.values(), RECEIVED_AT)
    scores, alerts = out.scores + swept.scores, out.alerts + swept.alerts
    assert scores and alerts and out.dead_letters
    for s in scores:
        assert set(s) == set(ScoreRecord.model_fields)
        ScoreRecord.model_validate(s)
    for a in alerts:
        # `control` / `withheld_action` are present only on control-group alerts (NotRequired)
        assert AlertDict.__required_keys__ <= set(a) <= set(AlertRecord.model_fields)
        AlertRecord.model_validate(a)
    for d in out.dead_letters:
        assert set(d) == set(DeadLetter.model_fields)
        assert DeadLetter.model_validate(d).received_at.timestamp() == pytest.approx(RECEIVED_AT)
