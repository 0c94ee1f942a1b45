"""The synthetic stream: determinism, wire validity, planted defects, ordering, ground truth."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.tools.generator import DEFECTS, DRIVERS, MAX_JITTER_SECONDS, generate, write_jsonl
from schemas.events import parse_event
from schemas.outputs import ChurnFactor

END = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def small():
    return generate(customers=150, days=45, seed=3, end=END)


def _parsed(stream):
    """(record, event or None) for every record; None when the record fails validation."""
    out = []
    for r in stream.records:
        try:
            ev = parse_event(r.value)
        except ValueError:
            ev = None
        out.append((r, ev))
    return out


def test_deterministic_by_seed():
    a = generate(customers=60, days=30, seed=11, end=END)
    b = generate(customers=60, days=30, seed=11, end=END)
    c = generate(customers=60, days=30, seed=12, end=END)
    assert a.records == b.records and a.truth == b.truth
    assert a.records != c.records


def test_every_valid_record_parses_with_its_topic_and_key(small):
    for r, ev in _parsed(small):
        if r.valid:
            assert ev is not None, r.value
            assert ev.type == r.kind
            assert r.key == ev.customer_id.encode()
            assert r.defect is None
            assert small.start <= ev.occurred_at <= small.end


def test_every_invalid_record_is_rejected(small):
    seen = Counter()
    for r, ev in _parsed(small):
        if not r.valid:
            seen[r.defect] += 1
            assert r.defect in DEFECTS
            if r.defect == "wrong_topic":
                assert ev is not None and ev.type != r.kind, r.value
            else:
                assert ev is None, (r.defect, r.value)
    assert set(seen) == set(DEFECTS)


def test_invalid_and_duplicate_ratios(small):
    total = len(small.records)
    assert small.n_invalid == pytest.approx(0.03 * total, abs=2)
    ids = Counter(parse_event(r.value).event_id for r in small.records if r.valid)
    dups = sum(n - 1 for n in ids.values())
    assert dups == small.n_duplicates > 0
    # duplicates are exact: same id means same bytes
    by_id = defaultdict(set)
    for r in small.records:
        if r.valid:
            by_id[parse_event(r.value).event_id].add(r.value)
    assert all(len(v) == 1 for v in by_id.values())


def test_no_duplicates_or_invalid_when_disabled():
    s = generate(customers=40, days=20, seed=1, invalid_ratio=0, duplicate_ratio=0, end=END)
    assert s.n_invalid == 0 and s.n_duplicates == 0
    assert len({parse_event(r.value).event_id for r in s.records}) == len(s.records)


def test_ordering_jitter_is_bounded(small):
    """Out of order by at most 10 minutes: within the 1-hour lateness bound, globally and per customer."""
    latest = None
    per_customer: dict[str, datetime] = {}
    per_topic_customer: dict[tuple[str, str], datetime] = {}
    for r, ev in _parsed(small):
        if not r.valid:
            continue
        t = ev.occurred_at
        if latest is not None:
            assert (latest - t).total_seconds() <= MAX_JITTER_SECONDS
        latest = max(latest or t, t)
        prev = per_customer.get(ev.customer_id)
        assert prev is None or (prev - t) <= timedelta(hours=1)
        per_customer[ev.customer_id] = max(prev or t, t)
        k = (r.kind, ev.customer_id)
        assert per_topic_customer.get(k, t) <= t      # one producer per topic keeps its order
        per_topic_customer[k] = t


def test_ground_truth_consistent(small):
    last: dict[str, datetime] = {}
    for r, ev in _parsed(small):
        if r.valid:
            last[ev.customer_id] = max(last.get(ev.customer_id, ev.occurred_at), ev.occurred_at)
    assert set(last) == set(small.truth)             # every customer is seen
    churners = [t for t in small.truth.values() if t.churned]
    assert len(churners) == round(0.2 * 150)
    for t in small.truth.values():
        if t.churned:
            assert t.driver in DRIVERS and ChurnFactor(t.driver)
            assert t.churn_at == last[t.customer_id]    # no events after churn_at
            assert t.churn_at <= small.end - timedelta(days=3)
        else:
            assert t.churn_at is None and t.driver is None


def test_wire_content_is_realistic(small):
    events = [ev for r, ev in _parsed(small) if r.valid]
    kinds = Counter(ev.type for ev in events)
    assert all(kinds[k] > 0 for k in ("touchpoint", "order", "complaint"))
    statuses = Counter(ev.status.value for ev in events if ev.type == "order")
    assert {"placed", "paid", "shipped", "delivered", "cancelled", "refunded", "returned"} <= set(statuses)
    cstat = Counter(ev.status.value for ev in events if ev.type == "complaint")
    assert {"opened", "acknowledged", "escalated", "resolved", "reopened", "closed"} <= set(cstat)
    assert cstat["opened"] > cstat["acknowledged"]        # some are never acknowledged
    delivered = [ev for ev in events if ev.type == "order" and ev.status.value == "delivered"]
    assert all(ev.promised_at and ev.fulfilled_at for ev in delivered)
    late = sum(ev.fulfilled_at > ev.promised_at for ev in delivered)
    assert 0 < late < len(delivered) / 2
    tps = [ev for ev in events if ev.type == "touchpoint"]
    assert {ev.stage.value for ev in tps} == {"awareness", "consideration", "purchase", "usage", "loyalty"}
    assert len({ev.channel.value for ev in tps}) >= 8
    assert any(ev.nps is not None for ev in tps) and any(ev.csat is not None for ev in tps)
    assert any(ev.ratings is not None for ev in tps) and any(ev.handoffs for ev in tps)
    # no personal data in valid records: staff are ids
    assert all(ev.staff_id is None or ev.staff_id[:1] in ("S", "A") for ev in tps)


def test_lifecycles_are_causal(small):
    """Every order and complaint starts with placed / opened; delivery after shipping."""
    flows = defaultdict(list)
    for r, ev in _parsed(small):
        if r.valid:
            key = ev.order_id if ev.type == "order" else ev.complaint_id if ev.type == "complaint" else None
            if key:
                flows[key].append((ev.occurred_at, ev.status.value))
    for key, steps in flows.items():
        steps.sort()
        first = steps[0][1]
        assert first in ("placed", "opened"), (key, steps)
        statuses = [s for _, s in steps]
        if "delivered" in statuses:
            assert statuses.index("shipped") < statuses.index("delivered")
        if "acknowledged" in statuses:
            assert statuses.index("opened") < statuses.index("acknowledged")


def test_churner_signal_precedes_departure(small):
    """A few drivers leave an unmistakable trace in the 5 weeks before churn_at."""
    events = defaultdict(list)
    for r, ev in _parsed(small):
        if r.valid:
            events[ev.customer_id].append(ev)
    for t in small.truth.values():
        if not t.churned or t.driver not in ("detractor", "late_fulfilment", "sla_breaches", "failed_recovery"):
            continue
        win = [ev for ev in events[t.customer_id] if t.churn_at - timedelta(days=36) <= ev.occurred_at]
        if t.driver == "detractor":
            assert any(ev.type == "touchpoint" and ev.nps is not None and ev.nps <= 6 for ev in win)
        elif t.driver == "late_fulfilment":
            assert any(ev.type == "order" and ev.fulfilled_at and ev.fulfilled_at > ev.promised_at for ev in win)
        elif t.driver == "sla_breaches":
            opened = {ev.complaint_id: ev.occurred_at for ev in win
                      if ev.type == "complaint" and ev.status.value == "opened"}
            acked = {ev.complaint_id: ev.occurred_at for ev in win
                     if ev.type == "complaint" and ev.status.value == "acknowledged"}
            # never acknowledged, or acknowledged after more than a day
            assert any(c not in acked or acked[c] - at > timedelta(days=1) for c, at in opened.items())
        elif t.driver == "failed_recovery":
            assert any(ev.type == "complaint" and (ev.satisfied is False or ev.status.value == "reopened") for ev in win)


def test_tiers_spread_over_revenue_bands():
    s = generate(customers=600, days=60, seed=5, invalid_ratio=0, duplicate_ratio=0, end=END)
    rev: Counter[str] = Counter()
    for r in s.records:
        ev = parse_event(r.value)
        if ev.type == "order" and ev.status.value == "paid":
            rev[ev.customer_id] += float(ev.amount)
    bands = Counter("standard" if v < 500 else "silver" if v < 2000 else "gold" if v < 10000 else "platinum"
                    for v in (rev[c] for c in s.truth))
    assert bands["standard"] > bands["silver"] > bands["gold"] > bands["platinum"] > 0


def test_default_size_has_enough_events():
    s = generate(end=END)
    assert len(s.truth) == 2000
    counts = s.counts
    assert sum(counts.values()) >= 20_000 and min(counts.values()) > 500
    assert s.n_duplicates > 0 and s.n_invalid > 0
    assert s.end == END and s.start == END - timedelta(days=60)


def test_end_defaults_to_now_rounded():
    s = generate(customers=5, days=10, seed=1)
    now = datetime.now(timezone.utc)
    assert s.end.second == 0 and s.end.microsecond == 0 and abs((now - s.end).total_seconds()) < 120


def test_write_jsonl_round_trip(tmp_path, small):
    p = tmp_path / "events.jsonl"
    n = write_jsonl(small, p)
    lines = p.read_bytes().split(b"\n")
    assert n == len(small.records) and lines[-1] == b""
    assert lines[:-1] == [r.value for r in small.records]
    for line, r in zip(lines, small.records):
        if r.valid:
            json.loads(line)


@pytest.mark.parametrize("seed", [7, 21, 40])
def test_the_core_accepts_every_valid_record_and_rejects_every_invalid_one(seed):
    """What the generator means as valid passes the whole input contract of the worker's core
    (schema, topic, key, id policy, plausible window at the stream's end, currency), with the
    default settings; every planted invalid record is dead-lettered. (`cxpulse demo` exits 1
    when its dead letters do not match the planted invalid records.)"""
    from pipeline.bootstrap import build_core
    from pipeline.config import Settings
    from pipeline.service.processor import RawRecord

    settings = Settings()
    core = build_core(settings)
    stream = generate(customers=300, days=60, seed=seed, end=END)
    for offset, r in enumerate(stream.records):
        rec = RawRecord(settings.topic_for_type[r.kind], 0, offset, r.key, r.value)
        ev = core.decode(rec, received_at=END.timestamp(), keyed=True)
        if r.valid:
            assert not isinstance(ev, dict), (ev, r.value)
        else:
            assert isinstance(ev, dict), (r.defect, r.value)


def test_the_core_accepts_every_valid_record_of_the_causal_stream_with_operators():
    from pipeline.bootstrap import build_core
    from pipeline.config import Settings
    from pipeline.service.processor import RawRecord
    from pipeline.tools.hazard_model import PRESETS
    from pipeline.tools.operators import OperatorPolicy

    settings = Settings()
    core = build_core(settings)
    stream = generate(customers=300, days=60, seed=8, end=END, model=PRESETS["strong"],
                      operators=OperatorPolicy(control_share=0.5))
    rejected = []
    for offset, r in enumerate(stream.records):
        ev = core.decode(RawRecord(settings.topic_for_type[r.kind], 0, offset, r.key, r.value),
                         received_at=END.timestamp(), keyed=True)
        if r.valid == isinstance(ev, dict):
            rejected.append((r.valid, r.defect, r.value))
    assert not rejected, rejected[:3]
