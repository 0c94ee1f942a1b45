"""Exact redelivery dedup by source offset (CustomerState.offs, Core.process(source_offsets=True))
and the worker's offset bookkeeping (pipeline.service.offset_guard), without a broker."""
from __future__ import annotations

import time

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.tools.generator import generate
from pipeline.service.offset_guard import OffsetGuard
from pipeline.service.processor import RawRecord
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.domain.state import CustomerState
from tests.factories import RECEIVED_AT, at, complaint, order, raw, touchpoint

SETTINGS = Settings(lateness_seconds=60 * 86400)
TOPIC = SETTINGS.topic_for_type


def records_of(events: list[dict], partition: int = 0) -> list[RawRecord]:
    """Wire records at increasing offsets per topic, as one partition of each topic holds them."""
    next_offset: dict[str, int] = {}
    out = []
    for e in events:
        topic = TOPIC[e["type"]]
        offset = next_offset.get(topic, 0)
        next_offset[topic] = offset + 1
        out.append(RawRecord(topic, partition, offset, e["customer_id"].encode(), raw(e)))
    return out


def run(core: Core, batches: list[list[RawRecord]], **kw):
    states: dict[str, CustomerState] = {}
    applied = duplicates = 0
    for batch in batches:
        out = core.process(batch, states.get, **kw, received_at=RECEIVED_AT)
        states.update(out.states)
        applied += out.applied
        duplicates += out.duplicates
    return states, applied, duplicates


def test_redelivery_from_far_back_is_a_duplicate_not_a_second_application():
    """A re-delivery that reaches back further than the event-id window (the lateness
    bound) is still recognised: the offsets say it was applied."""
    core = build_core(SETTINGS)
    n = 96   # one a day: the first 36 are beyond the 60-day lateness bound of the last
    events = [(touchpoint, order, complaint)[i % 3]("c1", at(days=i), complaint_id=f"k{i}")
              if i % 3 == 2 else (touchpoint, order)[i % 3]("c1", at(days=i)) for i in range(n)]
    recs = records_of(events)
    once, applied, _ = run(core, [recs], source_offsets=True)
    assert applied == n and once["c1"].n == n
    again, applied2, dups = run(core, [recs, recs], source_offsets=True)
    assert applied2 == n and dups == n
    assert again["c1"].n == n and encode_state(again["c1"]) == encode_state(once["c1"])
    # without source offsets the ids within the lateness bound are duplicates and the older
    # events are too_late: nothing applies twice, but those are dead letters, not duplicates
    _, applied3, dups3 = run(core, [recs, recs])
    assert applied3 == n and 0 < dups3 < n


def test_offsets_are_per_topic_and_partition():
    state = CustomerState(customer_id="c1")
    state.applied_at(1, partition=3, offset=40)
    assert state.redelivered(1, 3, 40) and state.redelivered(1, 3, 7)
    assert not state.redelivered(1, 3, 41)
    assert not state.redelivered(0, 3, 7) and not state.redelivered(2, 3, 7)   # other topics: nothing known
    assert not state.redelivered(1, 4, 7)     # another partition (topic repartitioned): offsets not comparable
    assert decode_state(encode_state(state), "c1").offs == state.offs


def test_a_held_offset_below_an_applied_one_stays_new_until_it_is_applied():
    """A learning worker holds a record for the next tick and applies a later record of the
    same customer and topic first (pipeline/service/tick_gate.py): the held offset is not a
    redelivery until it has been applied, also once stored and read back."""
    core = build_core(SETTINGS)
    recs = records_of([touchpoint("c1", at(hours=i)) for i in range(4)])
    held = {recs[1].offset, recs[2].offset}   # offsets 1 and 2 held when offset 3 comes
    states, applied, _ = run(core, [[recs[0]], [recs[3]]], source_offsets=True, held=lambda rec: sorted(held))
    state = decode_state(encode_state(states["c1"]), "c1")
    assert applied == 2 and state.offs == [0, 3] and state.skip == [0, 1, 0, 2]
    assert not state.redelivered(0, 0, 1) and not state.redelivered(0, 0, 2) and state.redelivered(0, 0, 3)
    states = {"c1": state}
    out = core.process([recs[1], recs[3], recs[1]], states.get, source_offsets=True, received_at=RECEIVED_AT)
    assert out.applied == 1 and out.duplicates == 2   # offset 1 once; offset 3 and 1 again are redeliveries
    state = out.states["c1"]
    assert state.n == 3 and state.offs == [0, 3] and state.skip == [0, 2]
    assert state.erasure_marker(0.0).skip == [0, 2]   # an erased customer's held records stay new too


def test_a_held_record_that_ends_not_applied_leaves_no_skip_entry():
    """A held record below an applied offset that is then not applied (here a duplicate
    event id: the producer sent it twice) is done with: its skip entry goes, the state is
    stored without it, and no score is published for a batch that applied nothing."""
    core = build_core(SETTINGS)
    first = touchpoint("c1", at(hours=0))
    recs = records_of([first, touchpoint("c1", at(hours=1)), dict(first), touchpoint("c1", at(hours=3))])
    held = {recs[1].offset, recs[2].offset}   # offsets 1 and 2 held when offset 3 comes
    states, applied, _ = run(core, [[recs[0]], [recs[3]]], source_offsets=True, held=lambda rec: sorted(held))
    assert applied == 2 and states["c1"].skip == [0, 1, 0, 2]
    out = core.process([recs[1]], states.get, source_offsets=True, received_at=RECEIVED_AT)
    assert out.applied == 1 and out.states["c1"].skip == [0, 2]
    states.update(out.states)
    out = core.process([recs[2]], states.get, source_offsets=True, received_at=RECEIVED_AT)
    assert out.applied == 0 and out.duplicates == 1 and out.scores == []
    state = decode_state(encode_state(out.states["c1"]), "c1")   # stored without its entry
    assert state.skip == [] and state.n == 3 and state.offs == [0, 3] and state.redelivered(0, 0, 2)


def test_state_without_offsets_still_reads():
    """States stored before the field existed decode as 'no offsets known'."""
    old = encode_state(CustomerState(customer_id="c1", n=3))
    assert b'"of"' not in old
    state = decode_state(old, "c1")
    assert state.offs == [] and not state.redelivered(0, 0, 0)


def test_worker_states_with_offsets_stay_small_and_apply_what_replay_applies():
    """The worker mode (source offsets) keeps the median state within 1 KB and
    applies exactly the events the offline replay applies (it has no real offsets)."""
    from pipeline.service.replay import replay

    stream = generate(customers=300, days=90, seed=2)
    events = [r.value for r in stream.records]
    recs = []
    offsets: dict[tuple[str, int], int] = {}
    for r in stream.records:
        topic, partition = TOPIC[r.kind], hash(r.key) % 4
        o = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = o + 1
        recs.append(RawRecord(topic, partition, o, r.key, r.value))
    core = build_core(Settings())
    states, applied, _ = run(core, [recs[i:i + 500] for i in range(0, len(recs), 500)], source_offsets=True)
    sizes = sorted(len(encode_state(s)) for s in states.values())
    # 1.1 KB: the accumulators are stored exactly (float64) since the worker must equal replay
    assert sizes[len(sizes) // 2] <= 1100, sizes[len(sizes) // 2]
    sent_to = {r.value: TOPIC[r.kind] for r in stream.records}
    offline = replay(events, build_core(Settings()), clock=time.time, tick=None, topic_of=sent_to.__getitem__)
    assert applied == offline.applied
    assert {c: s.n for c, s in states.items()} == {c: s.n for c, s in offline.states.items()}


# --- OffsetGuard ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_guard_applies_in_order_and_drops_rereads():
    g = OffsetGuard()
    g.start("a", 10)
    sel = g.select([("a", 8, "x8"), ("a", 9, "x9"), ("a", 10, "x10"), ("a", 11, "x11"), ("b", 0, "b0")])
    assert sel.accepted == ["x10", "x11"] and sel.redelivered == 2 and not sel.ahead
    assert g.to_commit() == {}           # nothing is done before the batch is emitted
    g.advance(sel.cursor)
    assert g.next["a"] == 12 and g.to_commit() == {"a": 12}
    g.committed_at({"a": 12})
    assert g.to_commit() == {}


def test_guard_never_applies_past_a_gap_and_seeks_back_once():
    clock = Clock()
    g = OffsetGuard(retry_seconds=2, max_seeks=2, clock=clock)
    g.start("a", 0)
    sel = g.select([("a", 0, "x0"), ("a", 5, "x5"), ("a", 6, "x6")])
    assert sel.accepted == ["x0"] and sel.ahead == {"a": 5}
    g.advance(sel.cursor)
    assert g.seeks_due(sel.ahead) == ({"a": 1}, [])
    assert g.seeks_due({"a": 7}) == ({}, [])            # the seek is under way: stale records
    clock.t = 2.5
    assert g.seeks_due({"a": 9}) == ({"a": 1}, [])      # still nothing at 1: seek again
    clock.t = 5
    assert g.seeks_due({"a": 9}) == ({}, ["a"])         # a hole in the log? ask the broker
    assert not g.accept_gap("a", 1)                     # there is a record at 1 after all
    assert g.accept_gap("a", 5) and g.next["a"] == 5


def test_guard_seek_episode_ends_when_the_skipped_records_come_back():
    clock = Clock()
    g = OffsetGuard(retry_seconds=2, clock=clock)
    g.start("a", 0)
    g.seeks_due(g.select([("a", 3, "x3")]).ahead)
    sel = g.select([("a", 0, "x0"), ("a", 1, "x1"), ("a", 2, "x2"), ("a", 3, "x3")])
    assert sel.accepted == ["x0", "x1", "x2", "x3"]
    g.advance(sel.cursor)
    assert g.seeks_due(g.select([("a", 9, "x9")]).ahead) == ({"a": 4}, [])   # a new gap: a new seek


def test_guard_stall_watchdog_and_revocation():
    clock = Clock()
    g = OffsetGuard(clock=clock)
    g.start("a", 0)
    g.start("b", 0)
    g.advance({"a": 10, "b": 10})
    clock.t = 4
    g.advance({"b": 12})
    assert g.stalled({"a": 10, "b": 20}, stall_seconds=5) == {}     # a is caught up, b moved recently
    clock.t = 10
    assert g.stalled({"a": 10, "b": 20}, stall_seconds=5) == {"b": 12}
    assert g.stalled({"a": 10, "b": 20}, stall_seconds=5) == {}     # once per stall period
    g.forget(["b"])
    assert not g.knows("b") and g.select([("b", 12, "y")]).accepted == []
    assert g.to_commit() == {"a": 10}


def test_a_partition_quiet_for_a_while_is_not_stalled_by_its_next_record():
    """Caught up (log end at `next`) is progress: the first record after a quiet spell gets
    `stall_seconds` to be applied before the watchdog seeks back."""
    clock = Clock()
    g = OffsetGuard(clock=clock)
    g.start("a", 0)
    g.advance({"a": 10})
    for t in (2, 4, 6, 8, 30):           # the watchdog's ticks while nothing is produced to a
        clock.t = t
        assert g.stalled({"a": 10}, stall_seconds=5) == {}
    clock.t = 31                         # a record arrives
    assert g.stalled({"a": 11}, stall_seconds=5) == {}
    clock.t = 34
    assert g.stalled({"a": 11}, stall_seconds=5) == {}
    clock.t = 35                         # ... and is not applied within stall_seconds
    assert g.stalled({"a": 11}, stall_seconds=5) == {"a": 10}


def test_a_state_knows_which_input_partitions_feed_it():
    """After a rebalance the worker's in-memory table still holds customers of partitions it
    gave away; `fed_from` tells its own (the sweep and the population fit use only those)."""
    core = build_core(SETTINGS)
    recs = [RawRecord(r.topic, 3, r.offset, r.key, r.value)
            for r in records_of([touchpoint("c1", at(1)), order("c1", at(2))])]
    state = core.process(recs, {}.get, source_offsets=True, received_at=RECEIVED_AT).states["c1"]
    assert state.fed_from({(0, 3)}) and state.fed_from({(1, 3), (2, 0)})
    assert not state.fed_from({(0, 1), (1, 1), (2, 3)}) and not state.fed_from(set())
    assert CustomerState(customer_id="old").fed_from(set())   # no partition recorded: counts as ours
