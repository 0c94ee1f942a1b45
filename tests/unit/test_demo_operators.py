"""The demo's operator team (pipeline/tools/demo_operators.py): which cases it works and what it sends."""
from __future__ import annotations

from datetime import datetime, timezone

import orjson

from pipeline.tools.demo_operators import POLICY, case_actions, generated_uplift, open_alerts
from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import PRESETS
from schemas.actions import parse_action

END = datetime(2025, 3, 1, tzinfo=timezone.utc)
NOW = datetime(2025, 3, 1, 0, 5, tzinfo=timezone.utc)


def alert(aid: str, cid: str, kind: str = "churn_risk", status: str = "firing", control: bool = False) -> dict:
    return {"alert_id": aid, "customer_id": cid, "type": kind, "status": status, "control": control}


def test_the_team_works_only_the_open_cases_with_its_stated_policy():
    stream = generate(customers=60, days=30, seed=3, end=END, model=PRESETS["strong"], operators=POLICY)
    left = next(c for c, t in stream.truth.items() if t.churned)
    stayed = next(c for c, t in stream.truth.items() if not t.churned)
    alerts = [alert("a" * 20, stayed), alert("a" * 20, stayed, status="resolved"),       # resolved: no case work
              alert("b" * 20, stayed, control=True), alert("c" * 20, left, kind="sla_breach"),
              alert("d" * 20, left, kind="escalation")]                                # no case of its own
    assert [a["alert_id"][0] for a in open_alerts(alerts)] == ["b", "c"]
    sent = case_actions(alerts, stream, NOW)
    records = [(key.decode(), parse_action(value)) for key, value in sent]
    steps = [(r.alert_id[0], r.action.value, r.outcome and r.outcome.value,
              r.playbook_action and r.playbook_action.value) for _, r in records]
    assert steps == [("b", "acknowledged", None, None), ("b", "closed", "retained", "none"),     # control: no call
                     ("c", "acknowledged", None, None), ("c", "contacted", None, None),
                     ("c", "closed", "lost", "callback")]
    assert all(key == r.customer_id and r.occurred_at == NOW for key, r in records)
    assert records[3][1].channel is not None and records[3][1].channel.value == "call_center"
    assert case_actions(alerts, stream, NOW) == sent                          # same ids: a resend is a duplicate
    assert len({orjson.loads(v)["action_id"] for _, v in sent}) == len(sent)


def test_generated_uplift_reports_planted_and_measured():
    stream = generate(customers=400, days=60, seed=5, end=END, model=PRESETS["strong"], operators=POLICY)
    u = generated_uplift(stream)
    assert u["cases"] == u["treated"] + u["control"] > 0
    assert u["planted"] is not None and u["planted"] > 0 and u["measured"] is not None
    lo, hi = u["ci"]
    assert lo <= u["measured"] <= hi
