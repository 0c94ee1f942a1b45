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


def drain(m: EventTimeMerge, clock: Clock) -> list:
    """Release until nothing more comes, letting idle partitions' waits pass (0.5 s each)."""
    out = []
    for _ in range(100):
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
    assert times(m.release(100)) == []
    clock.t += 0.1                                        # ... but it is caught up: wait idle_seconds only
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
    assert times(m.release(100)) == [1, 2]
    feed(m, ("tp", 0), 2, [3])               # later records: the complaints partition is long idle
    assert times(m.release(100)) == [3]


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
    assert times(m.release(100)) == [1, 2]   # it has been empty (and now known caught up) for 5 s
