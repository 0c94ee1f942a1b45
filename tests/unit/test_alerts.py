"""Alert lifecycle: fire once, no flapping at the threshold, resolve on recovery, stable
ids, no duplicate on redelivery."""
from __future__ import annotations

from dataclasses import replace

from pipeline.domain import alerts
from pipeline.domain.churn import ChurnAssessment
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.service.processor import RawRecord
from pipeline.domain.scoring import Profile
from pipeline.domain.state import CustomerState
from schemas.outputs import AlertRecord
from tests.factories import RECEIVED_AT, T0, at, complaint, raw, touchpoint

BASE = Profile(as_of=T0.timestamp(), dims={}, cxi=None, baseline_cxi=None, csat=None, nps=None, tier="standard",
               revenue_365d=1000.0, open_complaints=0, sla_breaches=0, slas={},
               churn=ChurnAssessment(0.1, 0.9, []))


def at_risk(risk: float, t: float = 0) -> Profile:
    return replace(BASE, as_of=BASE.as_of + t, churn=ChurnAssessment(risk, 1 - risk, [("inactivity", risk - 0.1)]))


def test_churn_alert_fires_once_and_does_not_flap_at_threshold():
    s = CustomerState(customer_id="c1")
    warn, _ = alerts.CHURN_THRESHOLDS["standard"]
    out = []
    for i, risk in enumerate([0.3, warn + 0.01, warn - 0.01, warn + 0.02, warn - 0.05, warn + 0.01]):
        out += alerts.update_alerts(s, at_risk(risk, i))
    assert [(a["status"], a["severity"]) for a in out] == [("firing", "warning")]
    AlertRecord.model_validate(out[0])
    assert out[0]["reasons"] and out[0]["recommended_action"] == alerts.PLAYBOOK["inactivity"]


def test_escalates_then_resolves_with_stable_id():
    s = CustomerState(customer_id="c1")
    warn, crit = alerts.CHURN_THRESHOLDS["standard"]
    out = []
    for i, risk in enumerate([warn + 0.01, crit + 0.01, crit - 0.05, warn - alerts.HYSTERESIS - 0.01]):
        out += alerts.update_alerts(s, at_risk(risk, i))
    assert [(a["status"], a["severity"]) for a in out] == [("firing", "warning"), ("firing", "critical"),
                                                           ("resolved", "critical")]
    assert len({a["alert_id"] for a in out}) == 1
    # a new episode gets a new id
    again = alerts.update_alerts(s, at_risk(0.95, 10))
    assert again[0]["status"] == "firing" and again[0]["alert_id"] != out[0]["alert_id"]


def test_a_churn_episode_keeps_its_id_when_a_redelivery_sees_the_crossing_elsewhere():
    """A worker killed after writing a batch's alerts and before storing its states: the
    redelivery starts again from the stored state and cuts its micro-batches anew, so it sees the
    risk cross at another evaluation (as of another event). The episode is the customer's next
    one either way, and its id names it by its number: the same id, no second alert left behind
    (the kill -9 drill once left two customers with two firing churn ids each, one of them never
    resolved). A later episode gets the next number."""
    from pipeline.adapters.state_codec import decode_state, encode_state

    warn, _ = alerts.CHURN_THRESHOLDS["standard"]
    stored = CustomerState(customer_id="c1")
    first = alerts.update_alerts(stored, at_risk(warn + 0.05, 1))            # an earlier episode, stored
    first += alerts.update_alerts(stored, at_risk(0.05, 2))
    assert [a["status"] for a in first] == ["firing", "resolved"]
    raw = encode_state(stored)

    lost = decode_state(raw)                                                   # the batch the kill cut
    fired = alerts.update_alerts(lost, at_risk(warn + 0.01, 5))
    redo = decode_state(raw)                                                   # the redelivery, cut elsewhere
    assert alerts.update_alerts(redo, at_risk(warn - 0.02, 4)) == []
    again = alerts.update_alerts(redo, at_risk(warn + 0.03, 8))
    assert [a["status"] for a in fired] == [a["status"] for a in again] == ["firing"]
    assert fired[0]["as_of"] != again[0]["as_of"] and fired[0]["alert_id"] == again[0]["alert_id"]
    assert again[0]["alert_id"] != first[0]["alert_id"]
    assert decode_state(encode_state(redo)).churn_episodes == redo.churn_episodes == 2
    # an erased customer who comes back starts the next number: ids of the erased stay unique
    back = redo.erasure_marker(requested_at=BASE.as_of + 9)
    assert back.churn_episodes == 2
    alerts.update_alerts(back, at_risk(0.05, 10))
    assert alerts.update_alerts(back, at_risk(0.9, 11))[0]["alert_id"] not in {first[0]["alert_id"], again[0]["alert_id"]}


def test_a_failed_recovery_keeps_its_id_when_a_redelivery_evaluates_it_after_a_later_event():
    """The same crash as above, for a failed recovery: the lost batch evaluated the customer
    right after the dissatisfied resolution, the redelivery (from the same stored state) only
    after the customer's next event too. Named by the evaluation's instant, the episode got two
    ids and the first stayed firing for good; numbered per complaint, it is one id. A second
    failure of the same complaint (reopened after a satisfied resolution) is a new episode."""
    from pipeline.adapters.state_codec import decode_state, encode_state

    core = build_core(Settings())
    tc, tt = Settings().topic_complaints, Settings().topic_touchpoints
    opened = RawRecord(tc, 0, 0, b"c1", raw(complaint(when=at(0), event_id="a")))
    failed = RawRecord(tc, 0, 1, b"c1", raw(complaint(when=at(1), event_id="b", status="resolved", satisfied=False)))
    later = RawRecord(tt, 0, 0, b"c1", raw(touchpoint(when=at(2), event_id="t")))
    stored = core.process([opened], {}.get, received_at=RECEIVED_AT).states["c1"]
    raw_state = encode_state(stored)

    def run(batches: list[list[RawRecord]]) -> tuple[list[dict], CustomerState]:
        state = decode_state(raw_state, "c1")
        out: list[dict] = []
        for batch in batches:
            result = core.process(batch, {"c1": state}.get, received_at=RECEIVED_AT)
            state = result.states["c1"]
            out += [a for a in result.alerts if a["type"] == "failed_recovery"]
        return out, state

    lost, _ = run([[failed], [later]])
    redo, state = run([[failed, later]])
    assert [a["status"] for a in lost] == [a["status"] for a in redo] == ["firing"]
    assert lost[0]["as_of"] != redo[0]["as_of"] and lost[0]["alert_id"] == redo[0]["alert_id"]
    # recovered, then reopened: the complaint's second failed-recovery episode, a new id
    fixed = RawRecord(tc, 0, 2, b"c1", raw(complaint(when=at(3), event_id="c", status="resolved", satisfied=True)))
    reopened = RawRecord(tc, 0, 3, b"c1", raw(complaint(when=at(4), event_id="d", status="reopened")))
    out = core.process([fixed], {"c1": state}.get, received_at=RECEIVED_AT)
    assert [(a["type"], a["status"]) for a in out.alerts if a["type"] == "failed_recovery"] == [("failed_recovery", "resolved")]
    state = decode_state(encode_state(out.states["c1"]), "c1")
    again = [a for a in core.process([reopened], {"c1": state}.get, received_at=RECEIVED_AT).alerts
             if a["type"] == "failed_recovery"]
    assert [a["status"] for a in again] == ["firing"] and again[0]["alert_id"] != redo[0]["alert_id"]


def test_high_tiers_are_warned_earlier_and_get_an_account_manager():
    s = CustomerState(customer_id="c1")
    p = replace(at_risk(0.7), tier="platinum", revenue_365d=20000.0)
    out = alerts.update_alerts(s, p)
    assert out[0]["severity"] == "critical" and out[0]["recommended_action"] == alerts.PLAYBOOK["high_tier_critical"]
    assert out[0]["revenue_at_risk"] == 14000.0


def test_sla_and_failed_recovery_alerts_through_the_core_with_redelivery():
    core = build_core(Settings())
    topic = Settings().topic_complaints
    records = [RawRecord(topic, 0, i, b"c1", raw(r)) for i, r in enumerate([
        complaint(when=at(0), event_id="a"),                                   # 09:00 UTC, due 18:00
        complaint(when=at(11), event_id="b", status="acknowledged"),           # answered at 20:00
        complaint(when=at(12), event_id="c", status="resolved", satisfied=False),
    ])]
    states: dict[str, CustomerState] = {}
    seen = []
    for i, rec in enumerate(records):
        out = core.process([rec], states.get, received_at=RECEIVED_AT)
        states.update(out.states)
        seen += out.alerts
        if i == 0:  # the timer sweeps at 15:30, 17:00 and 18:30, with no event since the complaint
            assert core.sweep(states.values(), T0.timestamp() + 6.5 * 3600).alerts == []
            # 75 % of the 9 business hours to the 18:00 cut-off have passed at 15:45: a warning
            warned = core.sweep(states.values(), T0.timestamp() + 8 * 3600).alerts
            assert [(a["type"], a["status"]) for a in warned] == [("sla_at_risk", "firing")]
            swept = core.sweep(states.values(), T0.timestamp() + 9.5 * 3600)
            assert swept.scores[0]["sla_breaches"] == 1
            # the breach supersedes the warning
            assert [(a["type"], a["status"]) for a in swept.alerts] == [("sla_breach", "firing"),
                                                                         ("sla_at_risk", "resolved")]
            seen += warned + swept.alerts
    kinds = [(a["type"], a["status"]) for a in seen]
    assert ("sla_breach", "firing") in kinds and ("sla_breach", "resolved") in kinds
    assert ("failed_recovery", "firing") in kinds
    firing = [a for a in seen if a["type"] == "sla_breach" and a["status"] == "firing"]
    assert len(firing) == 1 and "sunset rule" in firing[0]["recommended_action"]
    # redelivery of the same records: duplicates, no new alert records
    out = core.process(records, states.get, received_at=RECEIVED_AT)
    assert out.duplicates == 3 and out.alerts == [] and out.scores == []


def test_control_share_marks_churn_alerts_deterministically_and_withholds_the_action():
    from pipeline.domain.uplift import is_control

    fired = []
    for i in range(200):
        s = CustomerState(customer_id=f"c{i}")
        out = alerts.update_alerts(s, at_risk(0.5, i), control_share=0.3)
        out += alerts.update_alerts(s, at_risk(0.05, i + 1), control_share=0.3)
        assert [a["status"] for a in out] == ["firing", "resolved"]
        for a in out:
            AlertRecord.model_validate(a)
            assert a.get("control", False) == is_control(a["alert_id"], 0.3)
            if a.get("control"):
                assert a["recommended_action"] == alerts.PLAYBOOK["control"]
                assert a["withheld_action"] == alerts.PLAYBOOK["inactivity"]
            else:
                assert a["recommended_action"] == alerts.PLAYBOOK["inactivity"] and "withheld_action" not in a
        fired.append(out[0])
    assert 30 < sum(bool(a.get("control")) for a in fired) < 90
    # share 0 (the default): no alert carries the new keys
    s = CustomerState(customer_id="c0")
    assert all("control" not in a for a in alerts.update_alerts(s, at_risk(0.5)))
