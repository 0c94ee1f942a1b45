"""The sweep index (pipeline/service/sweep_index.py): a heap of each customer's next check time
with lazy invalidation, and the deadlines it holds against what a full sweep finds."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.state import CustomerState
from pipeline.domain.utc_month import next_month
from pipeline.service.sweep_index import NEVER, SweepIndex
from pipeline.tools import core_loop

DEADLINE_ALERTS = {"sla_breach", "sla_at_risk", "escalation"}
SLA_ALERTS = {"sla_breach", "sla_at_risk"}
TICK = 6 * 3600.0


def test_due_pops_in_time_order_and_skips_replaced_entries():
    index = SweepIndex()
    index.schedule("a", 30.0)
    index.schedule("b", 10.0)
    index.schedule("c", 20.0)
    index.schedule("a", 5.0)      # earlier: the entry at 30 is stale
    index.schedule("b", 40.0)     # later: the entry at 10 is stale
    assert index.next_at() == 5.0
    assert index.due(4.0) == []
    assert index.due(25.0) == ["a", "c"]
    assert "a" not in index and len(index) == 1
    assert index.due(35.0) == []  # a's stale entry at 30 is gone with it
    assert index.due(40.0) == ["b"] and index.next_at() == NEVER


def test_schedule_takes_the_sooner_of_deadline_and_recheck_and_never_drops():
    index = SweepIndex()
    assert index.schedule("a", 500.0, as_of=100.0, recheck=60.0) == 160.0
    assert index.schedule("b", 120.0, as_of=100.0, recheck=60.0) == 120.0
    assert index.schedule("c", NEVER) == NEVER and "c" not in index
    index.schedule("a", NEVER)
    assert "a" not in index
    index.schedule_all(50.0)
    assert index.due(50.0) == ["b"]


def test_the_heap_is_rebuilt_when_stale_entries_pile_up():
    index = SweepIndex()
    for i in range(5000):
        index.schedule("a", float(i))
    assert len(index._heap) <= 2 * len(index) + 1024
    assert index.due(10_000.0) == ["a"]


def test_next_month_is_the_first_instant_of_the_following_utc_month():
    t = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc).timestamp()
    assert next_month(t) == datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()
    first = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
    assert next_month(first) == datetime(2026, 4, 1, tzinfo=timezone.utc).timestamp()


def _run(mode: str, tmp_path, events: int = 4000, recheck: float = NEVER):
    """A replay-like run (live states, the stream's batches, a sweep every TICK of event time):
    `full` sweeps every customer at every tick and checks that each deadline alert it emits
    belongs to a customer the index holds due; `index` sweeps only the customers due."""
    settings = Settings(data_dir=tmp_path)
    core = build_core(settings)
    records, received_at = core_loop.generated_records(events, 5, settings)
    states: dict[str, CustomerState] = {}
    index = SweepIndex()
    sla_alerts: list[tuple[float, str, str, str]] = []
    evaluated = missed = deadline_alerts = 0
    next_tick = None

    def schedule(out) -> None:
        for cid, (deadline, as_of) in out.deadlines.items():
            index.schedule(cid, deadline, as_of, recheck)

    for i in range(0, len(records), 100):
        out = core.process(records[i:i + 100], states.get, received_at=received_at, source_offsets=True)
        states.update(out.states)
        schedule(out)
        if not out.latest_event_time:
            continue
        if next_tick is None:
            next_tick = (out.latest_event_time // TICK + 1) * TICK
        while next_tick <= out.latest_event_time:
            due = index.due(next_tick)
            swept = list(states.values()) if mode == "full" else [states[c] for c in due]
            evaluated += len(swept)
            res = core.sweep(swept, next_tick)
            due_set = set(due)
            # drift (churn risk) can change a churn alert's severity to critical in a sweep, and
            # a critical alert unacknowledged for long enough escalates in that same evaluation:
            # that escalation is drift's, which the index re-checks every `recheck` seconds
            drifted = {a["customer_id"] for a in res.alerts if a["type"] == "churn_risk"}
            for a in res.alerts:
                if a["type"] in DEADLINE_ALERTS and not (a["type"] == "escalation" and a["customer_id"] in drifted):
                    deadline_alerts += 1
                    missed += a["customer_id"] not in due_set
                if a["type"] in SLA_ALERTS:
                    sla_alerts.append((next_tick, a["alert_id"], a["status"], orjson_dumps(a)))
            states.update(res.states)
            schedule(res)
            next_tick += TICK
    return {"sla_alerts": sla_alerts, "evaluated": evaluated, "missed": missed, "deadline_alerts": deadline_alerts,
            "customers": len(states)}


def orjson_dumps(a) -> str:
    import orjson

    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS).decode()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    return _run("full", tmp), _run("index", tmp)


def test_every_deadline_alert_of_a_full_sweep_falls_on_a_customer_due_in_the_index(runs):
    full, _ = runs
    assert full["deadline_alerts"] >= 20   # the stream has SLA deadlines passing between events
    assert full["missed"] == 0


def test_a_sweep_of_the_due_customers_emits_the_same_sla_alerts_as_a_full_sweep(runs):
    full, index = runs
    # the same records at the same ticks (within a tick the index sweeps its customers in
    # deadline order, the full sweep in table order)
    assert sorted(index["sla_alerts"]) == sorted(full["sla_alerts"])
    assert len(full["sla_alerts"]) >= 20
    # and it looked at a small share of what the full sweep looked at
    assert index["evaluated"] < full["evaluated"] / 10
