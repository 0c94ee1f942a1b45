"""Cases: operator actions (cx.actions) on alerts, through the core — the lifecycle,
escalation of an unacknowledged critical alert, dead letters with reasons, duplicates."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from pydantic import ValidationError

from pipeline.bootstrap import build_core
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.config import Settings
from pipeline.domain.case import Case
from pipeline.service.processor import Core, RawRecord
from pipeline.domain.state import CustomerState
from schemas.actions import parse_action
from schemas.outputs import DeadLetter
from tests.factories import RECEIVED_AT, T0, at, complaint, raw

HOUR = 3600.0
ACTIONS = "cx.actions"


def action(alert_id: str, kind: str, hours: float, customer: str = "c1", action_id: str | None = None,
           **fields) -> dict:
    return {"type": "action", "schema_version": 1, "action_id": action_id or f"{alert_id}-{kind}-{hours}",
            "alert_id": alert_id, "customer_id": customer, "occurred_at": at(hours), "action": kind,
            "staff_id": "S017", **fields}


def act(core: Core, states: dict, *records: dict, key: bytes | None = b"c1"):
    out = core.process_actions([RawRecord(ACTIONS, 0, i, key, raw(r)) for i, r in enumerate(records)], states.get, received_at=RECEIVED_AT)
    states.update(out.states)
    return out


def breached(core: Core) -> tuple[dict, dict]:
    """A high complaint of 09:00 Monday nobody answered: a critical sla_breach at 18:30."""
    states: dict[str, CustomerState] = {}
    out = core.process([RawRecord(Settings().topic_complaints, 0, 0, b"c1",
                                  raw(complaint(when=at(0), severity="high")))], states.get, received_at=RECEIVED_AT)
    states.update(out.states)
    swept = core.sweep(list(states.values()), T0.timestamp() + 9.5 * HOUR)
    states.update(swept.states)
    (breach,) = [a for a in swept.alerts if a["type"] == "sla_breach"]
    assert breach["severity"] == "critical"
    return states, breach


def test_a_firing_alert_opens_a_case_and_the_lifecycle_is_kept():
    core = build_core(Settings())
    states, breach = breached(core)
    aid = breach["alert_id"]
    assert Case.from_stored(aid, states["c1"].cases[aid]).acked is None
    out = act(core, states,
              action(aid, "acknowledged", 9.6),
              action(aid, "contacted", 9.8, channel="call_center"),
              action(aid, "closed", 10.0, outcome="retained", playbook_action="callback"))
    assert out.dead_letters == [] and out.applied == 3 and len(out.case_events) == 3
    case = Case.from_stored(aid, states["c1"].cases[aid])
    assert (case.acked_by, case.channel, case.outcome, case.action) == ("S017", "call_center", "retained", "callback")
    assert case.contacted - case.acked == pytest.approx(0.2 * HOUR)
    closed = out.case_events[-1]
    assert closed["action"] == "closed" and closed["tier"] == "standard" and closed["alert_type"] == "sla_breach"
    assert closed["acknowledged_at"] == T0 + timedelta(hours=9.6)
    # the case survives storage
    assert decode_state(encode_state(states["c1"]), "c1").cases == states["c1"].cases


def test_an_unacknowledged_critical_alert_escalates_and_an_ack_resolves_it():
    core = build_core(Settings(escalate_after_seconds=2 * HOUR))
    states, breach = breached(core)
    # the breach episode (and its case) starts at the missed deadline, 18:00, not at the 18:30
    # sweep that saw it: the escalation is due 2 h after the deadline
    assert [a for a in core.sweep(list(states.values()), T0.timestamp() + 10.9 * HOUR).alerts
            if a["type"] == "escalation"] == []
    swept = core.sweep(list(states.values()), T0.timestamp() + 11.1 * HOUR)
    states.update(swept.states)
    (esc,) = [a for a in swept.alerts if a["type"] == "escalation"]
    assert esc["status"] == "firing" and esc["severity"] == "critical" and breach["alert_id"] in esc["reasons"][0]
    assert core.sweep(list(states.values()), T0.timestamp() + 12 * HOUR).alerts == []   # no repeat
    out = act(core, states, action(breach["alert_id"], "acknowledged", 12.5))
    (resolved,) = [a for a in out.alerts if a["type"] == "escalation"]
    assert resolved["status"] == "resolved" and resolved["alert_id"] == esc["alert_id"]
    assert "acknowledged by S017" in resolved["reasons"][0]


def test_an_alert_that_resolves_by_itself_does_not_escalate():
    core = build_core(Settings(escalate_after_seconds=2 * HOUR))
    states, breach = breached(core)
    # answered late at 19:00: the breach resolves (the answer came) and nobody acked the case
    out = core.process([RawRecord(Settings().topic_complaints, 0, 1, b"c1",
                                  raw(complaint(when=at(10), status="acknowledged", severity="high")))], states.get, received_at=RECEIVED_AT)
    states.update(out.states)
    assert ("sla_breach", "resolved") in [(a["type"], a["status"]) for a in out.alerts]
    swept = core.sweep(list(states.values()), T0.timestamp() + 12 * HOUR)
    assert [a for a in swept.alerts if a["type"] == "escalation"] == []


def test_a_case_acknowledged_in_time_never_escalates():
    core = build_core(Settings(escalate_after_seconds=2 * HOUR))
    states, breach = breached(core)
    act(core, states, action(breach["alert_id"], "assigned", 10))   # an assignment acknowledges too
    swept = core.sweep(list(states.values()), T0.timestamp() + 20 * HOUR)
    assert [a for a in swept.alerts if a["type"] == "escalation"] == []


def test_bad_actions_are_dead_lettered_with_a_reason_and_change_nothing():
    core = build_core(Settings())
    states, breach = breached(core)
    aid = breach["alert_id"]
    before = encode_state(states["c1"])
    out = act(core, states,
              action("0" * 20, "acknowledged", 10),                                      # unknown alert
              action(aid, "closed", 10),                                                 # no outcome
              action(aid, "acknowledged", 10, note="called Mrs Smith at 555-0101"),      # free text
              action(aid, "contacted", 10),                                              # no channel
              action(aid, "acknowledged", 10, outcome="retained"))                       # outcome not allowed
    reasons = [d["reason"] for d in out.dead_letters]
    assert reasons == ["unknown_alert", "invalid_record", "invalid_record", "invalid_record", "invalid_record"]
    assert "needs `outcome`" in out.dead_letters[1]["error"] and "note" in out.dead_letters[2]["error"]
    assert "channel" in out.dead_letters[3]["error"]
    wrong_key = act(core, states, action(aid, "acknowledged", 10), key=b"someone-else")
    assert [d["reason"] for d in wrong_key.dead_letters] == ["wrong_key"]
    no_key = act(core, states, action(aid, "acknowledged", 10, action_id="unkeyed"), key=None)
    assert [d["reason"] for d in no_key.dead_letters] == ["wrong_key"] and "without a key" in no_key.dead_letters[0]["error"]
    broken = core.process_actions([RawRecord(ACTIONS, 0, 9, b"c1", b"{not json")], states.get, received_at=RECEIVED_AT)
    assert [d["reason"] for d in broken.dead_letters] == ["invalid_json"]
    for d in out.dead_letters + wrong_key.dead_letters + no_key.dead_letters + broken.dead_letters:
        DeadLetter.model_validate(d)
    assert encode_state(states["c1"]) == before and out.case_events == [] and out.alerts == []


def test_duplicates_are_ignored_and_nothing_follows_a_close():
    core = build_core(Settings())
    states, breach = breached(core)
    aid = breach["alert_id"]
    close = action(aid, "closed", 10, outcome="lost", playbook_action="compensation", action_id="x-1")
    act(core, states, close)
    before = encode_state(states["c1"])
    again = act(core, states, close)
    assert again.duplicates == 1 and again.dead_letters == [] and again.case_events == []
    after = act(core, states, action(aid, "contacted", 11, channel="email"))
    assert [d["reason"] for d in after.dead_letters] == ["case_closed"]
    assert encode_state(states["c1"]) == before


def test_actions_in_any_order_give_the_same_case():
    core = build_core(Settings())
    a = breached(core)[1]["alert_id"]
    records = [action(a, "acknowledged", 9.7, staff_id="S001"), action(a, "assigned", 9.8, staff_id="S002"),
               action(a, "contacted", 10, channel="chat"), action(a, "acknowledged", 9.6, staff_id="S003"),
               action(a, "closed", 11, outcome="retained", playbook_action="single_owner")]
    cases = []
    for order in (records, records[::-1]):
        states, _ = breached(core)
        act(core, states, *order)
        cases.append(Case.from_stored(a, states["c1"].cases[a]))
    first, second = cases
    assert (first.acked, first.acked_by, first.assignee, first.contacted, first.outcome) == \
        (second.acked, second.acked_by, second.assignee, second.contacted, second.outcome)
    assert first.acked_by == "S003"


def test_action_records_are_codes_only():
    ok = parse_action(orjson.dumps(action("a" * 20, "closed", 1, outcome="not_needed", playbook_action="none")))
    assert ok.outcome.value == "not_needed"
    for bad in ({"staff_id": "Anna Schmidt"}, {"alert_id": "not-an-alert-id"}, {"occurred_at": "2026-03-02T09:00:00"},
                {"outcome": "happy"}):
        with pytest.raises(ValidationError):
            parse_action(orjson.dumps({**action("a" * 20, "closed", 1, outcome="retained",
                                               playbook_action="callback"), **bad}))
    assert datetime.fromisoformat(ok.occurred_at.isoformat()).tzinfo == timezone.utc
