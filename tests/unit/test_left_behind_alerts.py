"""Alerts a crash left behind (pipeline/domain/left_behind_alerts.py): recognised, withdrawn
once their customers are evaluated past them, and their numbers not used again."""
from __future__ import annotations

from dataclasses import replace

from pipeline.domain import alerts
from pipeline.domain import left_behind_alerts as lb
from pipeline.domain.scoring import ComplaintSla
from pipeline.domain.state import ComplaintRec, CustomerState
from pipeline.domain.vocabulary import CHURN_RISK, FAILED_RECOVERY
from schemas.outputs import AlertRecord
from tests.unit.test_alerts import BASE, at_risk


def test_a_churn_alert_left_behind_is_withdrawn_and_its_number_not_used_again():
    """`withdraw_left_behind`: an alert the store holds firing that the state does not hold is
    resolved as withdrawn, and the state's episode count moves past its number (a withdrawn
    id stays resolved: the customer's next episode must not take it). The state's own active
    episode is not withdrawn; an id of another form (named by an instant, before numbering)
    is withdrawn without moving the count."""
    warn, _ = alerts.CHURN_THRESHOLDS["standard"]
    s = CustomerState(customer_id="c1", wm=BASE.as_of)
    ghost = lb.StoredAlert("c1", alerts.numbered_alert_id("c1", "churn", 1), "warning", "silver",
                                    BASE.as_of + 5)
    record = lb.withdraw_left_behind(s, ghost)
    assert record is not None and s.churn_episodes == 1
    out = AlertRecord.model_validate(record)
    assert (out.status, out.alert_id, out.tier, out.recommended_action) == (
        "resolved", ghost.alert_id, "silver", lb.WITHDRAWN_ACTION)
    assert out.as_of.timestamp() == ghost.as_of          # not before the firing record it resolves
    fired = alerts.update_alerts(s, at_risk(warn + 0.05, 10))
    assert fired[0]["alert_id"] == alerts.numbered_alert_id("c1", "churn", 2)
    assert lb.withdraw_left_behind(s, ghost._replace(alert_id=fired[0]["alert_id"])) is None
    old = ghost._replace(alert_id=alerts.alert_id("c1", "churn", BASE.as_of))
    assert lb.withdraw_left_behind(s, old) is not None and s.churn_episodes == 2
    # an episode the state fired again and resolved since, or one withdrawn before: nothing to do
    alerts.update_alerts(s, at_risk(0.05, 11))
    assert "churn" not in s.alerts
    assert lb.withdraw_left_behind(s, ghost._replace(alert_id=fired[0]["alert_id"])) is None
    assert lb.withdraw_left_behind(s, ghost) is None and s.churn_episodes == 2


def test_a_failed_recovery_left_behind_is_withdrawn_and_its_complaint_counts_past_it():
    """`withdraw_left_behind` for a failed recovery: an episode the store holds firing that the
    complaint's state does not hold is resolved as withdrawn (a failed_recovery record naming the
    complaint), and the complaint's episode count moves past it, so its next failure gets a new
    id. The complaint's own active episode is left alone; an episode of a complaint the state
    does not hold (folded away, erased) is withdrawn; another complaint's count is not touched."""
    s = CustomerState(customer_id="c1", wm=BASE.as_of,
                      complaints=[ComplaintRec(id="k1", status="resolved", satisfied=True),
                                  ComplaintRec(id="k2", status="reopened", reopened=1, recovery_episodes=1)])
    s.alerts["rec:k2"] = [alerts.numbered_alert_id("c1", "rec:k2", 1), "warning", BASE.as_of]
    ghost = lb.StoredAlert("c1", alerts.numbered_alert_id("c1", "rec:k1", 1), "critical", "gold",
                               BASE.as_of + 5, FAILED_RECOVERY, "k1")
    assert lb.is_left_behind(s, ghost)
    out = AlertRecord.model_validate(lb.withdraw_left_behind(s, ghost))
    assert (out.type, out.status, out.alert_id, out.complaint_id, out.severity, out.recommended_action) == (
        "failed_recovery", "resolved", ghost.alert_id, "k1", "critical", lb.WITHDRAWN_ACTION)
    assert [r.recovery_episodes for r in s.complaints] == [1, 1] and s.churn_episodes == 0
    assert lb.withdraw_left_behind(s, ghost) is None          # withdrawn once: the complaint numbered it
    held = ghost._replace(alert_id=s.alerts["rec:k2"][0], complaint_id="k2")
    assert not lb.is_left_behind(s, held) and lb.withdraw_left_behind(s, held) is None
    # the same number under the churn key is another id: a churn alert is not taken for it
    assert lb.is_left_behind(s, ghost._replace(type=CHURN_RISK, complaint_id=None))
    # the complaint's next failure (reopened) is its episode 2
    s.complaints[0].status, s.complaints[0].reopened = "reopened", 1
    kept = ComplaintSla(ack_due=BASE.as_of + 1e6, resolve_due=BASE.as_of + 1e6, ack_breached=False, resolve_breached=False)
    fired = [a for a in alerts.update_alerts(s, replace(at_risk(0.05, 10), slas={"k1": kept, "k2": kept}))
             if a["type"] == "failed_recovery"]
    assert [(a["complaint_id"], a["alert_id"]) for a in fired] == [("k1", alerts.numbered_alert_id("c1", "rec:k1", 2))]
    gone = ghost._replace(alert_id=alerts.numbered_alert_id("c1", "rec:k9", 1), complaint_id="k9")
    record = lb.withdraw_left_behind(s, gone)
    assert record is not None and record["complaint_id"] == "k9"


def test_the_alerts_held_are_those_of_this_workers_customers_the_states_do_not_know_until_evaluated_past():
    """`LeftBehindAlerts`: of the never-resolved alerts, it holds those of customers fed from
    this worker's partitions whose states do not know them, and of customers with no state
    (their first batch was undone); not one the state holds, nor another worker's customer's.
    A batch withdraws those of its customers evaluated as of the alert's instant or later, and
    keeps waiting the ones evaluated before it; one the batch fired again is forgotten."""
    t = BASE.as_of
    states = {"mine": CustomerState(customer_id="mine", wm=t, offs=[0, 3]),
              "held": CustomerState(customer_id="held", wm=t, offs=[0, 4], churn_episodes=1),
              "other": CustomerState(customer_id="other", wm=t, offs=[1, 9])}
    states["held"].alerts["churn"] = [alerts.numbered_alert_id("held", "churn", 1), "warning", t]

    def churn(cid: str, at: float) -> lb.StoredAlert:
        return lb.StoredAlert(cid, alerts.numbered_alert_id(cid, "churn", 1), "warning", "standard", at)
    stored = [churn("mine", t + 10), churn("held", t), churn("other", t), churn("new", t + 10),
              churn("again", t + 10)]
    left = lb.LeftBehindAlerts()
    assert [left.hold(a, states.get(a.customer_id), owned={(0, 0)}) for a in stored] == [True, False, False, True, True]
    assert sorted(left.waiting) == ["again", "mine", "new"]

    redelivered = {"mine": states["mine"], "new": CustomerState(customer_id="new", wm=t + 5)}
    assert left.withdraw_due(redelivered, lambda cid: t + 5) == [] and sorted(left.waiting) == ["again", "mine", "new"]
    again = CustomerState(customer_id="again", wm=t + 10, churn_episodes=1)
    again.alerts["churn"] = [stored[-1].alert_id, "warning", t + 10]      # fired again: the same id
    redelivered = {"mine": states["mine"], "new": CustomerState(customer_id="new", wm=t + 20), "again": again}
    out = left.withdraw_due(redelivered, lambda cid: t + 20)
    assert sorted((a["customer_id"], a["recommended_action"]) for a in out) == [
        ("mine", lb.WITHDRAWN_ACTION), ("new", lb.WITHDRAWN_ACTION)]
    assert left.waiting == {} and redelivered["new"].churn_episodes == 1
