"""`sla_at_risk`: the warning before a complaint deadline, from the core with the timer
sweep alone (no new event), resolved by the answer, superseded by the breach."""
from __future__ import annotations

from datetime import datetime, timezone

from pipeline.bootstrap import build_core
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.config import Settings
from pipeline.service.processor import Core, RawRecord
from pipeline.domain.state import CustomerState
from tests.factories import RECEIVED_AT, T0, at, complaint, order, raw

HOUR = 3600.0
# T0 is Monday 2026-03-02 09:00 UTC; the default calendar: UTC, Mon–Fri, 09:00–18:00.


def run(core: Core, events: list[dict], states: dict[str, CustomerState]) -> list[dict]:
    topic_for = Settings().topic_for_type
    recs = [RawRecord(topic_for[e["type"]], 0, 0, e["customer_id"].encode(), raw(e)) for e in events]
    out = core.process(recs, states.get, received_at=RECEIVED_AT)
    states.update(out.states)
    return out.alerts


def sweep(core: Core, states: dict[str, CustomerState], when: float) -> list[dict]:
    out = core.sweep(list(states.values()), when)
    states.update(out.states)
    return out.alerts


def kinds(alerts: list[dict]) -> list[tuple[str, str]]:
    return [(a["type"], a["status"]) for a in alerts]


def test_unanswered_complaint_warns_then_breaches_by_time_alone():
    core, states = build_core(Settings()), {}
    assert kinds(run(core, [complaint(when=at(0))], states)) == []        # 09:00, due 18:00
    assert sweep(core, states, T0.timestamp() + 6.7 * HOUR) == []          # 15:42: 74 % of 9 h
    warned = sweep(core, states, T0.timestamp() + 6.8 * HOUR)              # 15:48: past 15:45
    assert kinds(warned) == [("sla_at_risk", "firing")]
    w = warned[0]
    assert w["complaint_id"] == "k1" and w["severity"] == "warning" and "not answered" in w["reasons"][0]
    assert "sunset-rule deadline is near" in w["recommended_action"]
    assert sweep(core, states, T0.timestamp() + 8 * HOUR) == []            # still at risk: no repeat
    missed = sweep(core, states, T0.timestamp() + 9.1 * HOUR)             # 18:06
    assert kinds(missed) == [("sla_breach", "firing"), ("sla_at_risk", "resolved")]
    breach, superseded = missed
    assert superseded["alert_id"] == w["alert_id"]
    assert f"superseded by sla_breach {breach['alert_id']}" in superseded["reasons"][0]


def test_an_answer_in_time_resolves_the_warning_and_no_breach_follows():
    core, states = build_core(Settings()), {}
    run(core, [complaint(when=at(0))], states)
    warned = sweep(core, states, T0.timestamp() + 7 * HOUR)
    answered = run(core, [complaint(when=at(7.5), status="acknowledged")], states)
    assert kinds(answered) == [("sla_at_risk", "resolved")]
    assert answered[0]["alert_id"] == warned[0]["alert_id"] and "answered in time" in answered[0]["reasons"][0]
    assert sweep(core, states, T0.timestamp() + 10 * HOUR) == []          # past 18:00: answered, no breach


def test_the_alert_id_does_not_depend_on_when_the_sweep_looked():
    ids = set()
    for when in (6.8, 7.3, 8.9):
        core, states = build_core(Settings()), {}
        run(core, [complaint(when=at(0))], states)
        ids |= {a["alert_id"] for a in sweep(core, states, T0.timestamp() + when * HOUR)}
    assert len(ids) == 1


def test_a_friday_evening_complaint_is_at_risk_on_monday_afternoon_not_at_the_weekend():
    core, states = build_core(Settings()), {}
    run(core, [complaint(when="2026-03-06T19:00:00+00:00")], states)      # Friday 19:00 → due Monday 18:00
    sunday = datetime(2026, 3, 8, 20, 0, tzinfo=timezone.utc).timestamp()
    assert sweep(core, states, sunday) == []
    monday = datetime(2026, 3, 9, 15, 50, tzinfo=timezone.utc).timestamp()  # 75 % of 9 h: 15:45
    assert kinds(sweep(core, states, monday)) == [("sla_at_risk", "firing")]


def test_the_resolution_target_gets_its_own_warning_episode():
    core, states = build_core(Settings()), {}
    run(core, [complaint(when=at(0), severity="critical")], states)       # resolve within 24 h
    (answer,) = sweep(core, states, T0.timestamp() + 7 * HOUR)              # the answer is at risk
    # answered at 16:30; the 24 calendar hours to Tuesday 09:00 hold 9 business hours on
    # Monday, 75 % of them passed at 15:45: the resolution is at risk at once — the answer's
    # episode resolves and a new one (new id) starts
    acked = run(core, [complaint(when=at(7.5), status="acknowledged", severity="critical")], states)
    assert kinds(acked) == [("sla_at_risk", "resolved"), ("sla_at_risk", "firing")]
    assert acked[0]["alert_id"] == answer["alert_id"] != acked[1]["alert_id"]
    assert "not resolved" in acked[1]["reasons"][0]
    assert sweep(core, states, T0.timestamp() + 8 * HOUR) == []
    stored = decode_state(encode_state(states["c1"]), "c1").alerts
    assert "risk:k1" not in stored and stored["riskr:k1"][0] == acked[1]["alert_id"]
    resolved = run(core, [complaint(when=at(9), status="resolved", severity="critical", satisfied=True)], states)
    assert ("sla_at_risk", "resolved") in kinds(resolved)
    assert sweep(core, states, T0.timestamp() + 30 * HOUR) == []


def test_severity_is_tier_aware():
    def warning_of(severity: str, spend: str) -> str:
        core, states = build_core(Settings()), {}
        run(core, [order(when=at(-1), amount=spend), complaint(when=at(0), severity=severity)], states)
        (alert,) = sweep(core, states, T0.timestamp() + 7 * HOUR)
        return alert["tier"], alert["severity"]

    assert warning_of("high", "2500.00") == ("gold", "critical")
    assert warning_of("high", "100.00") == ("standard", "warning")
    assert warning_of("low", "12000.00") == ("platinum", "warning")


def test_share_zero_turns_warnings_off():
    core, states = build_core(Settings(sla_warning_share=0)), {}
    run(core, [complaint(when=at(0))], states)
    assert sweep(core, states, T0.timestamp() + 8.9 * HOUR) == []
    assert kinds(sweep(core, states, T0.timestamp() + 9.1 * HOUR)) == [("sla_breach", "firing")]


def test_a_configurable_share():
    core, states = build_core(Settings(sla_warning_share=0.5)), {}
    run(core, [complaint(when=at(0))], states)
    assert sweep(core, states, T0.timestamp() + 4.4 * HOUR) == []
    assert kinds(sweep(core, states, T0.timestamp() + 4.6 * HOUR)) == [("sla_at_risk", "firing")]


def test_breach_and_warning_ids_name_the_complaint_and_the_deadline_not_the_sweep_tick():
    """Two workers (or a worker and replay) whose sweeps look at different instants publish
    the same alert ids: the episode starts at the deadline (the warning: its risk point),
    not when the sweep happened to run."""
    from pipeline.domain.alerts import alert_id

    ids = []
    for warn_at, breach_at in ((6.8, 9.1), (8.9, 13.0)):   # 15:48 / 18:06 vs 17:54 / 22:00
        core, states = build_core(Settings()), {}
        run(core, [complaint(when=at(0))], states)
        warned = sweep(core, states, T0.timestamp() + warn_at * HOUR)
        missed = sweep(core, states, T0.timestamp() + breach_at * HOUR)
        assert kinds(missed) == [("sla_breach", "firing"), ("sla_at_risk", "resolved")]
        ids.append((warned[0]["alert_id"], missed[0]["alert_id"]))
    assert ids[0] == ids[1]
    cid = complaint(when=at(0))["customer_id"]
    due = T0.timestamp() + 9 * HOUR                                         # 18:00, the sunset rule
    assert ids[0][1] == alert_id(cid, "sla:k1", due)
    assert ids[0][0] == alert_id(cid, "risk:k1", T0.timestamp() + 0.75 * 9 * HOUR)


def test_an_unresolved_breach_id_names_the_resolution_deadline():
    ids = set()
    for late in (1.0, 30.0):
        core, states = build_core(Settings()), {}
        run(core, [complaint(when=at(0)), complaint(when=at(1), status="acknowledged")], states)
        alerts: list[dict] = []
        for h in range(2, 24 * 14, 1):
            alerts += sweep(core, states, T0.timestamp() + h * HOUR + late * 60)
        breaches = [a for a in alerts if a["type"] == "sla_breach" and a["status"] == "firing"]
        assert len(breaches) == 1 and "not resolved" in breaches[0]["reasons"][0]
        ids.add(breaches[0]["alert_id"])
    assert len(ids) == 1


def test_a_sweep_held_back_behind_a_customers_latest_event_judges_it_at_that_event():
    core, states = build_core(Settings()), {}
    run(core, [complaint(when=at(0)), order(when=at(7))], states)      # latest event 16:00
    assert sweep(core, states, T0.timestamp() + 1 * HOUR) == []          # held back to 10:00: judged at 16:00
    state = next(iter(states.values()))
    assert state.alerts and all(k.startswith("risk:") for k in state.alerts)   # the warning fired at 16:00
