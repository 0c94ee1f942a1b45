"""Churn risk: silence, incidents against the customer's own chances, the experience drop,
contributions, the population fit, the alert gate and the lead-time measure."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.domain import alerts, churn
from pipeline.domain.churn import ChurnAssessment, PopulationParams, fit_incident_rates
from pipeline.tools.evaluate import churn_alert_episodes, lead_time_days
from pipeline.domain.scoring import ScoringParams, apply, experience_drop, profile
from pipeline.domain.state import CustomerState
from tests.factories import T0, at, complaint, ev, order, touchpoint

P = ScoringParams()
POP = PopulationParams()
DAY = 86400.0


def customer(*records) -> CustomerState:
    s = CustomerState(customer_id="c1")
    for r in records:
        assert apply(s, ev(r), P) == "applied"
    return s


def risk_at(s: CustomerState, days_after_last: float, pop: PopulationParams = POP):
    return profile(s, s.wm + days_after_last * DAY, P, pop).churn


def weekly_orders(n: int, late: set[int] = frozenset()) -> list[dict]:
    out = []
    for i in range(n):
        promised = at(days=7 * i + 3)
        fulfilled = at(days=7 * i + (4 if i in late else 2))
        out.append(order(when=at(days=7 * i), order_id=f"o{i}"))
        out.append(order(when=at(days=7 * i + 2.5), order_id=f"o{i}", status="delivered",
                         promised_at=promised, fulfilled_at=fulfilled))
    return out


def test_silence_alone_raises_risk():
    s = customer(*weekly_orders(8))
    risks = [risk_at(s, d).risk for d in (0, 10, 30, 60)]
    assert risks == sorted(risks) and risks[-1] > risks[0] + 0.3
    assert risk_at(s, 60).drivers[0][0] == "inactivity"


def test_a_single_purchase_customer_is_not_safe_when_silent():
    once = customer(order(when=at()))
    assert risk_at(once, 60).risk > risk_at(once, 1).risk
    assert risk_at(once, 60).risk > 0.5


def test_incidents_count_against_the_customers_own_chances():
    # one late delivery in twenty is about the usual rate; two of three is not
    frequent = dict(risk_at(customer(*weekly_orders(20, late={10})), 0).drivers)
    rare = dict(risk_at(customer(*weekly_orders(3, late={1, 2})), 0).drivers)
    assert rare["late_fulfilment"] > 0.05
    assert frequent.get("late_fulfilment", 0.0) < rare["late_fulfilment"] / 10


def test_experience_drop_against_own_history_survives_silence():
    good = [touchpoint(when=at(days=d), csat=5, ratings={"reliability": 5, "empathy": 5}) for d in range(0, 60, 4)]
    poor = [touchpoint(when=at(days=60 + d), csat=2, ratings={"reliability": 2, "empathy": 3}) for d in range(0, 8, 2)]
    steady = customer(*good)
    dropped = customer(*good, *poor)
    assert experience_drop(steady) == pytest.approx(0.0, abs=1e-9)
    assert experience_drop(dropped) > 15   # ~19 points: recent ≈ 70 against a long run ≈ 90
    # the measure is as of the latest event: silence does not erase the last experiences
    assert "experience_drop" in dict(risk_at(dropped, 0).drivers)
    assert "experience_drop" in dict(risk_at(dropped, 20).drivers)
    assert risk_at(dropped, 0).risk > risk_at(steady, 0).risk


def test_contributions_are_shares_of_the_risk_above_the_baseline():
    s = customer(*weekly_orders(3, late={0, 1, 2}),
                 touchpoint(when=at(days=18), csat=1, nps=2, ratings={"reliability": 1}))
    a = risk_at(s, 25)
    assert [c for _, c in a.drivers] == sorted((c for _, c in a.drivers), reverse=True)
    assert all(c > 0 for _, c in a.drivers)
    assert sum(c for _, c in a.drivers) <= a.risk
    assert {"inactivity", "late_fulfilment", "detractor"} <= set(dict(a.drivers))


def test_incident_rates_are_fitted_from_the_population_and_keep_the_prior_when_thin():
    states = [customer(*weekly_orders(5, late={2} if i % 2 else set())) for i in range(10)]
    rates = fit_incident_rates(states, churn.PRIOR_INCIDENT_RATES)
    # 5 late deliveries in 50 (the middle ones, so decay hardly matters): about 10 %
    assert rates["late_fulfilment"] == pytest.approx(0.1, abs=0.02)
    assert rates["detractor"] == churn.PRIOR_INCIDENT_RATES["detractor"]   # no NPS answers at all
    assert fit_incident_rates(states[:2], churn.PRIOR_INCIDENT_RATES)["late_fulfilment"] \
        == churn.PRIOR_INCIDENT_RATES["late_fulfilment"]   # too few chances


def test_no_churn_alert_without_a_reason():
    base = profile(customer(order(when=at())), T0.timestamp(), P, POP)
    unexplained = replace(base, churn=ChurnAssessment(0.45, 0.5, [("inactivity", 0.05)]))
    explained = replace(base, churn=ChurnAssessment(0.45, 0.5, [("inactivity", 0.3)]))
    assert alerts.update_alerts(CustomerState(customer_id="c1"), unexplained) == []
    fired = alerts.update_alerts(CustomerState(customer_id="c1"), explained)
    assert [a["status"] for a in fired] == ["firing"]


def _alert(cid: str, status: str, when: datetime, aid: str = "a1") -> dict:
    return {"type": "churn_risk", "customer_id": cid, "status": status, "as_of": when.isoformat(), "alert_id": aid}


def test_lead_time_is_measured_from_the_alert_standing_at_departure():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    left = t + timedelta(days=40)
    alerts_ = [_alert("c", "firing", t, "early"), _alert("c", "resolved", t + timedelta(days=5), "early"),
               _alert("c", "firing", t + timedelta(days=30), "real"),
               _alert("c", "firing", t + timedelta(days=32), "real"),   # severity change, same episode
               _alert("x", "firing", t + timedelta(days=45), "late")]
    eps = churn_alert_episodes(alerts_)
    assert len(eps["c"]) == 2 and eps["c"][1] == (t + timedelta(days=30), None)
    assert lead_time_days(eps["c"], left) == pytest.approx(10.0)
    assert lead_time_days(eps["x"], left) == pytest.approx(-5.0)          # warned only after leaving
    assert lead_time_days(eps["c"][:1], left) is None                      # a false start long before


def test_a_failed_recovery_counts_once_under_its_own_factor():
    # opened, never acknowledged within the sunset rule, resolved late, then reopened:
    # one complaint, one factor (failed_recovery), not also an SLA breach or unresolved
    def flow(cid: str, reopen: bool) -> list[dict]:
        steps = [("opened", 24.0), ("resolved", 33.0)] + ([("reopened", 34.0)] if reopen else [])
        return [complaint(when=at(days=d), complaint_id=cid, status=st, category="reliability",
                          severity="high", **({"satisfied": True} if st == "resolved" else {}))
                for st, d in steps]
    s = customer(*weekly_orders(4), *flow("k1", reopen=True))
    p = profile(s, s.wm, P, POP)
    assert p.sla_breaches == 1 and p.open_complaints == 1   # the score record still reports both
    drivers = dict(p.churn.drivers)
    assert "failed_recovery" in drivers
    assert "sla_breaches" not in drivers and "unresolved_complaints" not in drivers
    late_only = dict(risk_at(customer(*weekly_orders(4), *flow("k1", reopen=False)), 0).drivers)
    assert "sla_breaches" in late_only and "failed_recovery" not in late_only


def test_shrinking_baskets_are_declining_spend():
    def orders(amounts):
        return [order(when=at(days=7 * i), order_id=f"o{i}", amount=a) for i, a in enumerate(amounts)]
    shrinking = dict(risk_at(customer(*orders([80, 90, 85, 80, 20, 25])), 0).drivers)
    steady = dict(risk_at(customer(*orders([80, 90, 85, 80, 85, 75])), 0).drivers)
    few = dict(risk_at(customer(*orders([80, 90, 20, 25])), 0).drivers)
    assert "declining_spend" in shrinking
    assert "declining_spend" not in steady and "declining_spend" not in few
    # the usual basket is the mean over all purchases, not only the six kept: after twelve
    # baskets of 80 and four of 30, two of 40 are more than the kept earlier ones (30) but
    # about 0.7 halvings below the customer's usual basket (64)
    s = customer(*orders([80] * 12 + [30] * 4 + [40, 40]))
    assert s.spent == 80 * 12 + 30 * 4 + 80 and s.n_orders == 18
    assert churn._declining_spend(s) == pytest.approx(math.log2((s.spent / 18) / 40), abs=1e-6)
    # the same order seen again (another event id) is not spent twice
    again = order(when=at(days=7 * 17 + 1), order_id="o17", amount=40)
    assert apply(s, ev(again), P) == "applied" and s.spent == 80 * 12 + 30 * 4 + 80
    assert decode_state(encode_state(s), "c1").spent == s.spent


def test_one_answer_counts_under_one_incident_factor():
    # answers with an NPS are judged as detractors only; their poor CSAT is not also a low rating
    def answers(**fields):
        return [touchpoint(when=at(days=24 + i), stage="loyalty", kind="survey", **fields) for i in range(3)]
    with_nps = dict(risk_at(customer(*weekly_orders(4), *answers(nps=3, csat=1)), 0).drivers)
    without = dict(risk_at(customer(*weekly_orders(4), *answers(csat=1)), 0).drivers)
    assert "detractor" in with_nps and "low_ratings" not in with_nps
    assert "low_ratings" in without and "detractor" not in without


def test_chasing_an_open_complaint_is_the_complaints_effort():
    # repeat contacts with hand-offs while a complaint is open: one reason (the complaint),
    # carrying the effort's weight; once it is resolved, the effort is named again
    contacts = [touchpoint(when=at(days=20 + 0.2 * i), kind="support", stage="usage", handoffs=2)
                for i in range(4)]
    opened = complaint(when=at(days=19.5), complaint_id="k1", status="opened", severity="high")
    resolved = complaint(when=at(days=21.5), complaint_id="k1", status="resolved", satisfied=True)
    as_of = T0.timestamp() + 22 * DAY

    def drivers(*records) -> dict[str, float]:
        return dict(profile(customer(*weekly_orders(3), *records), as_of, P, POP).churn.drivers)

    chasing, complaint_only = drivers(opened, *contacts), drivers(opened)
    assert "high_effort" not in chasing
    assert chasing["unresolved_complaints"] > complaint_only["unresolved_complaints"]
    after = drivers(opened, *contacts, resolved)
    assert "high_effort" in after and "unresolved_complaints" not in after


def test_declining_frequency_is_judged_against_the_whole_purchase_history():
    # twenty weekly purchases, a burst of four on consecutive days, then two weekly gaps:
    # the kept purchases alone (a burst, then weeks) would read as a sharp slowdown; against
    # the customer's usual weekly gap it is none. Gaps of three and four weeks after weekly
    # buying are about two doublings.
    weekly = [order(when=at(days=7 * i), order_id=f"w{i}") for i in range(20)]
    burst = [order(when=at(days=133 + i), order_id=f"b{i}") for i in range(1, 4)]
    steady = customer(*weekly, *burst, order(when=at(days=143), order_id="n1"), order(when=at(days=150), order_id="n2"))
    assert churn._declining_frequency(steady) < 0.2
    slowing = customer(*weekly, order(when=at(days=154), order_id="s1"), order(when=at(days=182), order_id="s2"))
    assert churn._declining_frequency(slowing) == pytest.approx(math.log2(((154 - 133) + 28) / 2 / (182 / 21)), abs=0.01)
    assert churn._declining_frequency(customer(*weekly[:4])) == 0.0      # too few purchases
