"""Cases in ClickHouse (chDB): the rows of applied operator actions, the outcome shares and
times by tier / channel / staff / playbook action, and erasure — from the core's own rows."""
from __future__ import annotations

from typing import Iterator

import pytest

from pipeline import queries
from pipeline.config import Settings
from pipeline.processor import Core, RawRecord
from pipeline.rows import batch_rows
from pipeline.sink import ClickHouseSink
from tests.factories import T0, at, complaint, order, raw
from tests.test_cases import action

pytestmark = pytest.mark.integration   # the real engine (chDB)

HOUR = 3600.0


@pytest.fixture
def sink(tmp_path) -> Iterator[ClickHouseSink]:
    s = ClickHouseSink(f"chdb://{tmp_path / 'ch'}").open()
    yield s
    s.close()


def breach_of(core: Core, states: dict, customer: str, spend: str) -> str:
    """A high complaint of Monday 09:00 nobody answered: its sla_breach alert id (fired 18:30)."""
    recs = [RawRecord(core.settings.topic_orders, 0, 0, customer.encode(), raw(order(customer, when=at(-1), amount=spend))),
            RawRecord(core.settings.topic_complaints, 0, 1, customer.encode(),
                      raw(complaint(customer, when=at(0), severity="high")))]
    states.update(core.process(recs, states.get).states)
    swept = core.sweep([states[customer]], T0.timestamp() + 9.5 * HOUR)
    states.update(swept.states)
    return next(a["alert_id"] for a in swept.alerts if a["type"] == "sla_breach")


def test_case_events_and_outcome_shares(sink):
    core, states = Core(Settings()), {}
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
                                   states.get)
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
    assert std["median_hours_to_ack"] == pytest.approx(1.0)
    assert std["median_hours_to_contact"] == pytest.approx(1.5)   # c1 1.0, c2 2.0 (c5 never contacted)
    # c4 has no case events (nobody acted), so gold shows c3 only
    gold = by_tier["gold"]
    assert (gold["cases"], gold["retained_share"], gold["median_hours_to_ack"]) == (1, 1.0, pytest.approx(0.25))

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
