"""pipeline.service.recovery_check.stalled: which changelog partitions a stuck table recovery must re-read."""
from pipeline.service.recovery_check import stalled

A, B = ("changelog", 0), ("changelog", 1)


def check(**kw):
    args = dict(last_applied={A: -1, B: 100}, last_offsets={A: 218, B: 322}, positions={A: 219, B: 101},
                last_event_at={}, started_at=0.0, now=10.0, stall_seconds=3.0)
    args.update(kw)
    return stalled(**args)


def test_records_consumed_but_never_delivered_are_read_again_from_the_next_needed_offset():
    # the drill's case: nothing of A reached the recovery, yet the consumer is past A's end
    assert check() == {A: 0}
    assert check(last_applied={A: 49, B: 100}) == {A: 50}


def test_not_before_stall_seconds_without_records():
    assert check(now=2.9) == {}
    assert check(last_event_at={A: 8.0}) == {}
    assert check(last_event_at={A: 7.0}) == {A: 0}


def test_a_restored_partition_is_left_alone():
    assert check(last_applied={A: 218, B: 322}) == {}
    assert check(last_offsets={A: -1, B: -1}, last_applied={}) == {}   # empty changelogs


def test_a_consumer_still_at_or_before_the_needed_offset_is_left_alone():
    assert check(positions={A: 0, B: 101}) == {}
    assert check(positions={A: None, B: None}) == {}
    assert check(last_applied={A: 49, B: 100}, positions={A: 50, B: 101}) == {}


def test_partitions_without_an_applied_offset_count_as_none_applied():
    assert check(last_applied={}) == {A: 0, B: 0}
    assert check(last_applied={A: None, B: 100}) == {A: 0}
