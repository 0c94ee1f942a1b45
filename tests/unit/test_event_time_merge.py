"""Event-time-aligned release of co-partitioned partitions (pipeline/service/event_time_merge.py)."""
from __future__ import annotations

import random

from pipeline.service.event_time_merge import EventTimeMerge


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def merge(clock: Clock, **kw) -> EventTimeMerge:
    kw = {"idle_seconds": 0.5, "fetch_wait_seconds": 30.0, "ahead_seconds": 100.0, "max_buffered": 10, **kw}
    return EventTimeMerge(lambda tp: tp[1], clock=clock, **kw)


def times(released) -> list[float]:
    return [item for _, _, item in released.records]


def ask(m: EventTimeMerge, clock: Clock, ends: dict | None = None) -> set:
    """The worker's part: ask "the broker" for the end offsets of the partitions the merge
    wants confirmed (by default: nothing beyond what was received) and tell the merge."""
    asked = m.unconfirmed()
    for tp in asked:
        m.observe_end(tp, (ends or {}).get(tp, m.expected(tp)), asked_at=clock.t)
    return asked


def drain(m: EventTimeMerge, clock: Clock) -> list:
    """Release until nothing more comes, letting idle partitions' waits pass (0.5 s each)."""
    out = []
    for _ in range(100):
        ask(m, clock)
        got = m.release(1000).records
        out += got
        if not got and not m.buffered():
            break
        clock.t += 0.5
    return out


def feed(m: EventTimeMerge, tp, first: int, stamps: list[float], end: int | None = None) -> None:
    for i, ts in enumerate(stamps):
        m.add(tp, first + i, ts, ts)
    m.observe_end(tp, end if end is not None else first + len(stamps))


def test_lowest_event_time_first_across_the_topics_of_a_group():
    clock = Clock()
    m = merge(clock)
    for topic in ("tp", "or", "cp"):
        m.start((topic, 0), 0)
    feed(m, ("tp", 0), 0, [1, 4, 7])
    feed(m, ("or", 0), 0, [2, 3, 5, 8])
    feed(m, ("cp", 0), 0, [6])
    assert times(m.release(100)) == [1, 2, 3, 4, 5, 6]   # then cx.complaints ran empty: it may get more
    clock.t += 0.4
    assert not ask(m, clock) and times(m.release(100)) == []
    clock.t += 0.1                                        # ... but it is caught up: wait idle_seconds only
    assert ask(m, clock) == {("cp", 0)}                   # (as the broker confirms)
    out = m.release(100)
    assert times(out) == [7] and out.cursor == {("tp", 0): 3}
    assert [ts for _, _, ts in drain(m, clock)] == [8]


def test_a_partition_known_to_have_more_records_holds_its_group_until_they_come():
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    feed(m, ("or", 0), 0, [10, 11, 12])
    m.observe_end(("tp", 0), 5)             # five touchpoints not fetched yet
    clock.t += 10
    assert times(m.release(100)) == []       # the orders wait for them (backlog catch-up)
    feed(m, ("tp", 0), 0, [1, 2, 3, 11.5, 13], end=5)
    assert times(m.release(100)) == [1, 2, 3, 10, 11, 11.5, 12]
    m.observe_end(("or", 0), 9)              # orders lag but deliver nothing for fetch_wait: go on
    clock.t += 29
    assert times(m.release(100)) == []
    clock.t += 1
    assert times(m.release(100)) == [13]


def test_an_idle_partition_does_not_hold_its_group_longer_than_idle_seconds():
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("cp", 0), 0)
    m.observe_end(("cp", 0), 0)             # no complaints at all
    feed(m, ("tp", 0), 0, [1, 2])
    assert times(m.release(100)) == []
    clock.t += 0.5
    assert ask(m, clock) == {("cp", 0)}
    assert times(m.release(100)) == [1, 2]
    feed(m, ("tp", 0), 2, [3])               # later records: the complaints partition is long idle,
    assert times(m.release(100)) == []       # but it may have got records since it was asked
    clock.t += 0.5
    assert ask(m, clock) == {("cp", 0)} and times(m.release(100)) == [3]


def test_groups_are_independent():
    clock = Clock()
    m = merge(clock)
    for p in (0, 1):
        m.start(("tp", p), 0)
        m.start(("or", p), 0)
    feed(m, ("tp", 0), 0, [5])
    m.observe_end(("or", 0), 3)              # group 0 waits for its orders
    feed(m, ("tp", 1), 0, [1])
    feed(m, ("or", 1), 0, [2])
    clock.t += 1
    out = m.release(100).records
    clock.t += 0.5
    assert ask(m, clock) == {("tp", 1)}
    out += m.release(100).records
    assert [(tp, ts) for tp, _, ts in out] == [(("tp", 1), 1), (("or", 1), 2)]
    assert m.held() == {("tp", 0)}


def test_records_of_a_partition_stay_in_offset_order():
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    feed(m, ("tp", 0), 0, [5, 1, 6])        # not sorted within the partition: FIFO still
    feed(m, ("or", 0), 0, [2, 7])
    clock.t += 1
    out = drain(m, clock)
    assert [(tp[0], off) for tp, off, _ in out] == [("or", 0), ("tp", 0), ("tp", 1), ("tp", 2), ("or", 1)]


def test_release_respects_the_limit_and_continues():
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    feed(m, ("tp", 0), 0, [1, 2, 3, 4, 5])
    clock.t += 1
    assert times(m.release(2)) == [1, 2]
    assert times(m.release(2)) == [3, 4]
    assert m.expected(("tp", 0)) == 5 and m.buffered() == 1


def test_partitions_running_ahead_are_paused_and_resumed_as_the_others_catch_up():
    clock = Clock()
    m = merge(clock, ahead_seconds=100.0, max_buffered=1000)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    feed(m, ("or", 0), 0, [float(t) for t in range(0, 500, 10)], end=100)   # orders fetched far ahead
    feed(m, ("tp", 0), 0, [0.5, 1.5], end=50)
    pause, resume = m.flow()
    assert pause == {("or", 0)} and not resume
    assert ("or", 0) in m.held() and m.flow() == ({("or", 0)}, set())   # still paused
    m.release(1000)                          # up to the touchpoints' 1.5, then they are awaited (lag)
    feed(m, ("tp", 0), 2, [float(t) for t in range(5, 460, 10)], end=50)
    m.release(1000)
    pause, resume = m.flow()
    assert resume == {("or", 0)} and not pause


def test_a_full_buffer_is_paused():
    clock = Clock()
    m = merge(clock, max_buffered=4)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    m.observe_end(("tp", 0), 10)
    feed(m, ("or", 0), 0, [1, 2, 3, 4], end=100)
    assert m.flow() == ({("or", 0)}, set())
    assert m.resume_all() == {("or", 0)}


def test_drop_and_forget_lose_only_unreleased_records():
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    feed(m, ("tp", 0), 0, [1, 2])
    feed(m, ("or", 0), 0, [3])
    m.drop(("tp", 0), 0)                     # sought back to 0: read again
    assert m.expected(("tp", 0)) == 0 and m.buffered() == 1
    m.forget([("or", 0)])
    assert not m.knows(("or", 0)) and m.buffered() == 0 and m.expected(("or", 0)) is None


def test_a_backlog_read_at_uneven_speeds_comes_out_in_event_time_order():
    """Three topics of one group, orders 3x the touchpoints, complaints rare, each partition
    in event-time order, fetched in chunks of random sizes with orders read fastest: what is
    released is in event-time order, so no event is later than its group's progress."""
    rng = random.Random(4)
    clock = Clock()
    m = merge(clock, max_buffered=200, ahead_seconds=3600.0)
    logs = {"tp": sorted(rng.uniform(0, 6 * 3600) for _ in range(1000)),
            "or": sorted(rng.uniform(0, 6 * 3600) for _ in range(3000)),
            "cp": sorted(rng.uniform(0, 6 * 3600) for _ in range(40))}
    pos = {t: 0 for t in logs}
    for t in logs:
        m.start((t, 0), 0)
        m.observe_end((t, 0), len(logs[t]))
    speed = {"tp": 20, "or": 300, "cp": 5}
    paused: set = set()
    out: list[float] = []
    while len(out) < sum(map(len, logs.values())):
        for t, log in logs.items():
            if (t, 0) in paused:
                continue
            n = rng.randint(0, speed[t])
            for ts in log[pos[t]:pos[t] + n]:
                m.add((t, 0), pos[t], ts, ts)
                pos[t] += 1
        ask(m, clock)
        out += times(m.release(500))
        pause, resume = m.flow()
        paused = (paused | pause) - resume
        assert m.buffered() <= 3 * 200 + 300
        clock.t += 0.01
    assert out == sorted(out)


def test_a_partition_whose_position_is_not_known_yet_holds_its_group():
    """Assigned but not started (its committed offset not read yet): the others must not run
    ahead of it; once its position and end are known and it is caught up, they go on."""
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0))
    m.start(("or", 0), 0)
    feed(m, ("or", 0), 0, [1, 2])
    clock.t += 5
    assert times(m.release(100)) == []
    m.start(("tp", 0), 7)
    m.observe_end(("tp", 0), 7)
    assert times(m.release(100)) == []       # a fetched end alone does not confirm it caught up
    m.observe_end(("tp", 0), 7, asked_at=clock.t)
    assert times(m.release(100)) == [1, 2]   # the broker says so, 5 s after the orders came


def test_a_partition_that_only_looks_caught_up_does_not_let_its_group_run_ahead():
    """A backfill produced while the worker runs: the consumer's copy of a partition's log end
    (from its last fetch) says it is caught up, but the producer has written days of event
    time to it since. The others wait until the broker is asked; its answer shows the lag,
    and they wait for the records (issue #17: the demo's 15,149 `too_late`)."""
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    day = 86400.0
    feed(m, ("tp", 0), 0, [1 * day])                     # fetched end 1: looks caught up
    feed(m, ("or", 0), 0, [2 * day, 3 * day, 4 * day])
    assert times(m.release(100)) == [1 * day]
    clock.t += 60
    assert times(m.release(100)) == []                   # no idle timeout without the broker's word
    assert ask(m, clock, ends={("tp", 0): 3}) == {("tp", 0)}   # two touchpoints were written since
    assert not m.unconfirmed() and times(m.release(100)) == []
    feed(m, ("tp", 0), 1, [2.5 * day, 3.5 * day], end=3)
    assert times(m.release(100)) == [2 * day, 2.5 * day, 3 * day, 3.5 * day]


def test_a_confirmation_counts_only_when_asked_idle_seconds_after_the_record_came():
    """Producers batch and send per partition: a record of another topic written at the same
    time may reach the broker a little later. An end asked before idle_seconds have passed
    since the waiting record came does not release it; unconfirmed() asks only after."""
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("cp", 0), 0)
    feed(m, ("tp", 0), 0, [5])
    clock.t += 0.1
    assert m.unconfirmed() == set()
    m.observe_end(("cp", 0), 0, asked_at=clock.t)        # asked too early
    assert times(m.release(100)) == []
    clock.t += 0.4
    assert m.unconfirmed() == {("cp", 0)}
    m.drop(("cp", 0), 0)                                 # a seek forgets any confirmation
    m.observe_end(("cp", 0), 0, asked_at=clock.t)
    assert times(m.release(100)) == [5]


def test_a_fetched_end_older_than_a_known_one_does_not_hide_a_lag():
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    feed(m, ("or", 0), 0, [1, 2])
    m.observe_end(("tp", 0), 4, asked_at=clock.t)        # the broker: four touchpoints
    m.observe_end(("tp", 0), 0)                          # an older fetch's copy
    clock.t += 1
    assert m.unconfirmed() == set() and times(m.release(100)) == []


def test_a_seek_behind_released_records_does_not_deliver_them_for_applying_again():
    """The stall watchdog may seek a partition back to the last *applied* offset while a
    micro-batch with its records is still being emitted (released, not applied yet): their
    re-read copies are redeliveries, not records to apply (and dead-letter) a second time."""
    from pipeline.service.offset_guard import OffsetGuard

    clock = Clock()
    m = merge(clock)
    guard: OffsetGuard = OffsetGuard(clock=clock)
    tp = ("cp", 0)
    guard.start(tp, 0)
    m.start(tp, 0)
    selection = guard.select([(tp, o, o) for o in range(6)], m.expected)
    for o in selection.accepted:
        m.add(tp, o, float(o), o)
    in_flight = m.release(100)                 # being applied; guard.next is still 0
    assert in_flight.cursor == {tp: 6}
    m.drop(tp, guard.next[tp])                 # the watchdog seeks back to 0 meanwhile
    guard.advance(in_flight.cursor)            # the batch is emitted
    again = guard.select([(tp, o, o) for o in range(8)], m.expected)
    assert again.accepted == [6, 7] and again.redelivered == 6
    m.drop(tp, 9)                              # a seek ahead (a hole in the log) still moves on
    assert m.expected(tp) == 9


def test_a_record_without_an_event_time_goes_with_the_record_before_it():
    """An invalid record with no readable occurred_at (dead-lettered anyway) must not hold its
    partition back: it used to take the Kafka record timestamp, the send time, days after
    the event times of a backfill, and the other topics of its group ran days ahead of the
    records behind it (the demo's `too_late`, issue #17)."""
    clock = Clock()
    m = merge(clock)
    m.start(("tp", 0), 0)
    m.start(("or", 0), 0)
    m.add(("or", 0), 0, None, "first, no time")          # heads its partition: as early as possible
    feed(m, ("or", 0), 1, [10.0])
    m.add(("or", 0), 2, None, "no time")                 # after 10: goes with it
    feed(m, ("or", 0), 3, [30.0], end=4)
    feed(m, ("tp", 0), 0, [5.0, 20.0, 40.0], end=3)
    out = [item for _, _, item in m.release(100).records]
    assert out == ["first, no time", 5.0, 10.0, "no time", 20.0, 30.0]


def test_the_worker_reads_event_time_as_the_contract_does():
    from pipeline.service.processor import event_time

    assert event_time(b'{"occurred_at": "2026-10-04T03:53:56+02:00"}') == 1791078836.0
    assert event_time(b'{"occurred_at": "2026-10-04 01:53:56z"}') == 1791078836.0   # RFC 3339 forms
    for bad in (None, b"", b"{", b"[]", b'{"occurred_at": 1714557600}', b'{"occurred_at": "2026-10-04T03:53:56"}'):
        assert event_time(bad) is None, bad


def test_timer_rules_are_held_back_to_the_slowest_group_catching_up():
    """While a backfill is read the groups progress at their own pace: the sweep's time is
    held to what a group still catching up has applied, so its customers are not judged days
    after their last applied event; a group that is caught up does not hold it."""
    clock = Clock()
    m = merge(clock)
    for p in (0, 1):
        m.start(("tp", p), 0)
        m.start(("or", p), 0)
    assert m.hold_back(500.0) == float("-inf")          # nothing known yet: nobody is judged
    feed(m, ("tp", 0), 0, [10.0, 20.0])
    feed(m, ("or", 0), 0, [15.0])
    feed(m, ("tp", 1), 0, [200.0, 300.0], end=5)        # group 1: more touchpoints to fetch
    feed(m, ("or", 1), 0, [250.0])
    clock.t += 1
    m.release(100)
    assert m.hold_back(500.0) == 15.0                   # group 0's 20 waits: are there more orders?
    ask(m, clock)
    m.release(100)
    assert m.hold_back(500.0) == 300.0                  # group 1 applied up to 300, waits for more touchpoints
    feed(m, ("tp", 1), 2, [310.0, 320.0, 330.0], end=5)
    clock.t += 1
    ask(m, clock)
    m.release(100)
    assert m.hold_back(500.0) == 500.0                  # every group caught up: the clock as it is
    feed(m, ("tp", 1), 5, [600.0], end=6)               # a live record waits a moment for alignment:
    assert m.hold_back(700.0) == 500.0                  # the time holds, it does not go back to 330
    clock.t += 1
    ask(m, clock)
    m.release(100)
    assert m.hold_back(700.0) == 700.0


def test_a_record_within_the_slack_of_an_empty_partitions_last_record_does_not_wait_for_it():
    """A live stream: the empty partition delivered a record a moment (of event time) before
    the one waiting, so its records still to come are not earlier than that (producers send
    in event-time order); the waiting record goes without the idle wait or the broker's word.
    One further after the empty partition's last record than the slack waits as before."""
    clock = Clock()
    m = merge(clock, in_order_slack_seconds=60.0)
    m.start(("tp", 0), 0)
    m.start(("cp", 0), 0)
    feed(m, ("cp", 0), 0, [100.0])
    feed(m, ("tp", 0), 0, [101.0, 160.0, 161.0])
    assert times(m.release(100)) == [100.0, 101.0, 160.0]   # cp ran empty at 100: up to 160 goes
    assert m.unconfirmed() == set()
    clock.t += 0.5                                          # 161 waits as without the slack ...
    assert times(m.release(100)) == []
    assert ask(m, clock) == {("cp", 0)} and times(m.release(100)) == [161.0]   # ... for the broker's word
    feed(m, ("cp", 0), 1, [130.0])                          # a record of the slack's span comes late:
    assert times(m.release(100)) == [130.0]                 # applied after 160, which it precedes by < 60 s


def test_the_slack_does_not_let_a_partition_that_delivered_nothing_yet_be_overtaken():
    clock = Clock()
    m = merge(clock, in_order_slack_seconds=60.0)
    m.start(("tp", 0), 0)
    m.start(("cp", 0), 0)
    m.observe_end(("cp", 0), 0)
    feed(m, ("tp", 0), 0, [1.0])
    assert times(m.release(100)) == []                      # nothing from cp yet: its last time is unknown
    clock.t += 0.5
    assert ask(m, clock) == {("cp", 0)} and times(m.release(100)) == [1.0]
