"""Cases in ClickHouse (chDB): the rows of applied operator actions, the outcome shares and
times by tier / channel / staff / playbook action, and erasure — from the core's own rows."""
from __future__ import annotations

from typing import Iterator

import pytest

from pipeline.bootstrap import build_core
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.adapters.clickhouse import queries
from pipeline.config import Settings
from pipeline.service.processor import Core, RawRecord
from pipeline.adapters.clickhouse.rows import batch_rows
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from tests.factories import RECEIVED_AT, T0, at, complaint, order, raw
from tests.unit.test_cases import action

pytestmark = pytest.mark.integration   # the real engine (chDB)

HOUR = 3600.0


@pytest.fixture
def sink(tmp_path) -> Iterator[ClickHouseSink]:
    s = ClickHouseSink(f"chdb://{tmp_path / 'ch'}").open()
    yield s
    s.close()


def breach_of(core: Core, states: dict, customer: str, spend: str) -> str:
    """A high complaint of Monday 09:00 nobody answered: its sla_breach alert id (fired 18:30)."""
    recs = [RawRecord(Settings().topic_orders, 0, 0, customer.encode(), raw(order(customer, when=at(-1), amount=spend))),
            RawRecord(Settings().topic_complaints, 0, 1, customer.encode(),
                      raw(complaint(customer, when=at(0), severity="high")))]
    states.update(core.process(recs, states.get, received_at=RECEIVED_AT).states)
    swept = core.sweep([states[customer]], T0.timestamp() + 9.5 * HOUR)
    states.update(swept.states)
    return next(a["alert_id"] for a in swept.alerts if a["type"] == "sla_breach")


def test_case_events_and_outcome_shares(sink):
    core, states = build_core(Settings()), {}
    plan = [  # customer, spend (tier), hours to ack, to contact, channel, outcome, action
        ("c1", "100.00", 0.5, 1.0, "call_center", "retained", "callback"),
        ("c2", "100.00", 1.5, 2.0, "email", "lost", "callback"),
        ("c3", "2500.00", 0.25, 0.5, "call_center", "retained", "account_manager"),
        ("c4", "2500.00", None, None, None, None, None),   # nobody acted
        ("c5", "100.00", 1.0, None, None, "unreachable", "callback"),
    ]
    written = 0
    for cid, spend, ack, contact, channel, outcome, code in plan:
        aid = breach_of(core, states, cid, spend)
        acts = []
        if ack is not None:
            acts.append(action(aid, "acknowledged", 9.5 + ack, customer=cid))
        if contact is not None:
            acts.append(action(aid, "contacted", 9.5 + contact, customer=cid, channel=channel))
        if outcome is not None:
            acts.append(action(aid, "closed", 9.5 + 3, customer=cid, outcome=outcome, playbook_action=code,
                               staff_id="S900"))
        out = core.process_actions([RawRecord("cx.actions", 0, i, cid.encode(), raw(a)) for i, a in enumerate(acts)],
                                   states.get, received_at=RECEIVED_AT)
        states.update(out.states)
        assert not out.dead_letters
        rows = batch_rows(out)
        written += len(rows["cx_case_events"])
        sink.write(rows)
        sink.write(rows)   # a retried batch: the same rows, no double count
    assert queries.table_counts(sink.client)["cx_case_events"] == written == 11

    by_tier = {r["key"]: r for r in queries.case_outcomes(sink.client, by="tier")}
    std = by_tier["standard"]
    assert (std["cases"], std["closed"]) == (3, 3)
    assert std["retained_share"] == pytest.approx(1 / 3) and std["lost_share"] == pytest.approx(1 / 3)
    assert std["unreachable_share"] == pytest.approx(1 / 3)
    # a breach's case starts at the deadline it missed (18:00), not at the sweep that saw it (18:30)
    assert std["median_hours_to_ack"] == pytest.approx(1.5)       # c1 1.0, c2 2.0, c5 1.5
    assert std["median_hours_to_contact"] == pytest.approx(2.0)   # c1 1.5, c2 2.5 (c5 never contacted)
    # c4 has no case events (nobody acted), so gold shows c3 only
    gold = by_tier["gold"]
    assert (gold["cases"], gold["retained_share"], gold["median_hours_to_ack"]) == (1, 1.0, pytest.approx(0.75))

    by_action = {r["key"]: r for r in queries.case_outcomes(sink.client, by="playbook_action")}
    assert by_action["callback"]["closed"] == 3 and by_action["account_manager"]["retained_share"] == 1.0
    by_channel = {r["key"]: r["cases"] for r in queries.case_outcomes(sink.client, by="channel")}
    assert by_channel == {"call_center": 2, "email": 1, "": 1}
    by_staff = {r["key"]: r["closed"] for r in queries.case_outcomes(sink.client, by="staff_id")}
    assert by_staff == {"S900": 4}
    with pytest.raises(ValueError, match="grouped by"):
        queries.case_outcomes(sink.client, by="customer_id")

    assert sink.erase("c1") > 0
    assert queries.table_counts(sink.client)["cx_case_events"] == written - 3


def test_open_cases_by_age_and_tier(sink):
    """Open = firing and not closed, or resolved by the score but acknowledged and not closed."""
    from datetime import timedelta

    from pipeline.adapters.clickhouse.rows import alert_row

    now = T0 + timedelta(days=5)

    def alert(aid: str, tier: str, severity: str, fired_hours_ago: float, resolved: bool = False,
              kind: str = "churn_risk") -> list[dict]:
        base = {"alert_id": aid, "type": kind, "severity": severity, "customer_id": f"cust-{aid}", "tier": tier,
                "churn_risk": 0.5, "revenue_at_risk": 10.0, "reasons": [], "recommended_action": ""}
        out = [alert_row({**base, "status": "firing", "as_of": now - timedelta(hours=fired_hours_ago)})]
        if resolved:
            out.append(alert_row({**base, "status": "resolved", "as_of": now - timedelta(hours=1)}))
        return out

    def event(aid: str, kind: str, hours_ago: float, fired_hours_ago: float) -> dict:
        t = now - timedelta(hours=hours_ago)
        return {"customer_id": f"cust-{aid}", "alert_id": aid, "action_id": f"{aid}-{kind}", "action": kind,
                "occurred_at": t, "staff_id": "S017", "channel": "", "outcome": "retained" if kind == "closed" else "",
                "playbook_action": "callback" if kind == "closed" else "", "alert_type": "churn_risk",
                "severity": "warning", "tier": "gold", "alert_fired_at": now - timedelta(hours=fired_hours_ago),
                "acknowledged_at": t, "first_contact_at": None, "closed_at": t if kind == "closed" else None}

    alerts = (alert("a" * 20, "gold", "critical", 2) + alert("b" * 20, "gold", "warning", 30)
              + alert("c" * 20, "standard", "warning", 100) + alert("d" * 20, "gold", "warning", 50, resolved=True)
              + alert("e" * 20, "gold", "warning", 10, resolved=True) + alert("f" * 20, "platinum", "critical", 5)
              + alert("9" * 20, "gold", "critical", 1, kind="escalation"))
    events = [event("d" * 20, "acknowledged", 40, 50),    # resolved by the score, still being worked on: open
              event("f" * 20, "acknowledged", 4, 5), event("f" * 20, "closed", 3, 5)]   # closed: not open
    sink.write({"cx_alerts": alerts, "cx_case_events": events})
    summary, cases = queries.open_cases(sink.client, now)
    assert [c["alert_id"][0] for c in cases] == ["c", "d", "b", "a"]   # oldest first; e resolved unworked, f closed
    assert [(r["tier"], r["age"], r["open"], r["unacknowledged"], r["critical"]) for r in summary] == [
        ("gold", "< 4 h", 1, 1, 1), ("gold", "1-3 days", 2, 1, 0), ("standard", "> 3 days", 1, 1, 0)]
    assert cases[1]["staff_id"] == "S017" and cases[1]["age_hours"] == pytest.approx(50)


def test_cases_command_lists_open_cases(tmp_path, capsys, monkeypatch):
    from datetime import datetime, timezone

    from pipeline.tools.cli import main
    from pipeline.adapters.clickhouse.rows import alert_row
    from pipeline.adapters.kafka.worker_process import settings_env

    settings = Settings(data_dir=tmp_path / "data")
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert main(["cases"]) == 0 and "no open cases" in capsys.readouterr().out
    with ClickHouseSink(settings.dsn) as s:
        s.write({"cx_alerts": [alert_row({
            "alert_id": "ab" * 10, "type": "sla_breach", "status": "firing", "severity": "critical",
            "customer_id": "C1", "tier": "platinum", "as_of": datetime.now(timezone.utc), "churn_risk": 0.1,
            "revenue_at_risk": 1.0, "reasons": [], "recommended_action": ""})]})
    assert main(["cases"]) == 0
    out = capsys.readouterr().out
    assert "open cases by tier and age (1)" in out and "ab" * 10 in out and "platinum" in out
