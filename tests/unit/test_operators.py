"""Operators in the causal generator (pipeline.tools.operators) and the uplift they plant."""
import json
from datetime import datetime, timezone

import pytest

from pipeline.domain.uplift import CaseOutcome, is_control
from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import PRESETS, oracle_probability
from pipeline.tools.operators import OperatorCase, OperatorPolicy, treated_on
from pipeline.tools.uplift_evaluate import alert_cases, generated_cases

END = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _values(s):
    return [r.value for r in s.records]


def test_policy_validation_and_effect_window():
    with pytest.raises(ValueError):
        OperatorPolicy(effect=1.0)
    with pytest.raises(ValueError):
        OperatorPolicy(control_share=1.5)
    pol = OperatorPolicy(effect_days=3)
    case = OperatorCase("c", "c|churn|10", 10, False, 10.4)
    assert [d for d in range(8, 16) if treated_on(case, d, pol)] == [11, 12, 13]
    assert not treated_on(OperatorCase("c", "c|churn|10", 10, True, None), 11, pol)
    assert not treated_on(None, 11, pol)


def test_no_call_departure_is_the_same_draws_without_the_cut():
    s = generate(customers=400, days=90, seed=6, end=END, model=PRESETS["strong"],
                 operators=OperatorPolicy(effect=0.0, control_share=0.5))
    called = [k for k in s.causal.cases if not k.control]
    assert called and all(s.causal.no_call_departure[k.customer_id] == s.causal.customers[k.customer_id].departed_day
                          for k in called)     # no effect: the call changes nothing
    s = generate(customers=400, days=90, seed=6, end=END, model=PRESETS["strong"],
                 operators=OperatorPolicy(effect=0.8, control_share=0.5))
    earlier = 0
    for k in (k for k in s.causal.cases if not k.control):
        cf, dep = s.causal.no_call_departure[k.customer_id], s.causal.customers[k.customer_id].departed_day
        assert dep is None or (cf is not None and k.trigger_day <= cf <= dep)
        earlier += cf is not None and (dep is None or cf < dep)
    assert earlier > 0


def test_all_control_changes_no_event_and_cases_follow_the_hash():
    pol = OperatorPolicy(control_share=1.0)
    a = generate(customers=150, days=60, seed=2, end=END, model=PRESETS["strong"])
    b = generate(customers=150, days=60, seed=2, end=END, model=PRESETS["strong"], operators=pol)
    assert _values(a) == _values(b)      # nobody is called: the stream is the one without operators
    assert b.causal.cases and all(k.control and k.call_at is None for k in b.causal.cases)
    c = generate(customers=150, days=60, seed=2, end=END, model=PRESETS["strong"],
                 operators=OperatorPolicy(control_share=0.5))
    for k in c.causal.cases:
        assert k.control == is_control(k.case_id, 0.5)
        assert k.control or k.trigger_day < k.call_at < k.trigger_day + 1
        t = c.causal.customers[k.customer_id]
        assert oracle_probability(t.incidents, k.trigger_day, c.causal.model, 30) >= 0.10
    with pytest.raises(ValueError):
        generate(customers=10, days=30, seed=1, end=END, operators=pol)


def test_a_strong_call_keeps_customers():
    pol = OperatorPolicy(effect=0.9, control_share=0.5)
    s = generate(customers=600, days=120, seed=4, end=END, model=PRESETS["strong"], operators=pol)
    cases, planted = generated_cases(s.causal, 30)
    treated = [c for c in cases if not c.control]
    control = [c for c in cases if c.control]
    assert len(treated) > 50 and len(control) > 50 and planted > 0.1
    assert sum(c.churned for c in treated) / len(treated) < sum(c.churned for c in control) / len(control)
    lines = s.causal.to_json_lines()
    assert lines[-len(s.causal.cases) - 1]["kind"] == "operators"
    assert {ln["kind"] for ln in lines[-len(s.causal.cases):]} == {"case"}


def test_alert_cases_from_published_alerts():
    alerts = [
        {"alert_id": "a1", "type": "churn_risk", "status": "firing", "customer_id": "c1",
         "as_of": "2025-01-01T00:00:00Z", "recommended_action": "call"},
        {"alert_id": "a1", "type": "churn_risk", "status": "resolved", "customer_id": "c1",
         "as_of": "2025-01-05T00:00:00Z", "recommended_action": "call"},
        {"alert_id": "a2", "type": "churn_risk", "status": "firing", "customer_id": "c2", "control": True,
         "as_of": "2025-01-01T00:00:00Z", "recommended_action": "none", "withheld_action": "call"},
        {"alert_id": "a3", "type": "churn_risk", "status": "firing", "customer_id": "c3",
         "as_of": "2025-01-30T00:00:00Z", "recommended_action": "call"},     # window not over yet
        {"alert_id": "s1", "type": "sla_breach", "status": "firing", "customer_id": "c1",
         "as_of": "2025-01-01T00:00:00Z", "recommended_action": "x"},
    ]
    events = [
        {"type": "order", "status": "paid", "amount": "20.00", "customer_id": "c1", "occurred_at": "2025-01-10T00:00:00Z"},
        {"type": "order", "status": "placed", "amount": "20.00", "customer_id": "c1", "occurred_at": "2025-01-10T00:00:00Z"},
        {"type": "order", "status": "paid", "amount": "99.00", "customer_id": "c1", "occurred_at": "2025-03-10T00:00:00Z"},
        {"type": "touchpoint", "customer_id": "c2", "occurred_at": "2024-12-30T00:00:00Z"},
    ]
    got = alert_cases(alerts, events, 30, datetime(2025, 2, 15, tzinfo=timezone.utc))
    assert sorted(got, key=lambda c: c.control) == [
        CaseOutcome("call", False, False, 20.0),
        CaseOutcome("call", True, True, 0.0)]


def test_cli_uplift_from_files_without_a_control_group(tmp_path, capsys):
    from pipeline.tools.cli import main

    alerts = tmp_path / "alerts.jsonl"
    events = tmp_path / "events.jsonl"
    alerts.write_text("\n".join(json.dumps(
        {"alert_id": f"a{i}", "type": "churn_risk", "status": "firing", "customer_id": f"c{i}",
         "as_of": "2025-01-01T00:00:00Z", "recommended_action": "call"}) for i in range(4)) + "\n")
    events.write_text('{"type": "touchpoint", "customer_id": "c0", "occurred_at": "2025-01-05T00:00:00Z"}\n'
                      'not json\n'
                      '{"type": "touchpoint", "customer_id": "c1", "occurred_at": "2025-03-01T00:00:00Z"}\n')
    assert main(["evaluate", "--uplift", "--alerts", str(alerts), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "1 lines of" in out and "4 customers' first churn alert" in out
    assert "treated 4 (churned 75.0%" in out and "uplift needs a control group" in out
    assert main(["evaluate", "--uplift", "--alerts", str(alerts)]) == 2
