"""pipeline/service/tick_gate.py: the event-time ticks `cxpulse replay` and the worker share."""
from __future__ import annotations

from pipeline.domain.scoring import ScoringParams, apply
from pipeline.domain.state import CustomerState
from pipeline.service.tick_gate import TickGate, before_every_event
from tests.factories import ev, touchpoint

DAY = 86400.0


def test_first_tick_is_the_next_multiple_after_the_first_event_minus_the_lateness_bound():
    g: TickGate[str] = TickGate(DAY, 3600.0)
    g.start(10 * DAY + 7200)
    g.start(3 * DAY)            # only the first event time counts
    assert g.next_tick == 11 * DAY
    # an event within the lateness bound after midnight may come after one before it: the tick
    # at that midnight comes either way (empty if nothing is before it)
    for first in (10 * DAY + 5, 10 * DAY - 600):
        g = TickGate(DAY, 3600.0)
        g.start(first)
        assert g.next_tick == 10 * DAY


def test_a_tick_runs_only_once_the_lateness_bound_has_passed_it():
    g: TickGate[str] = TickGate(DAY, 3600.0)
    g.start(0.5 * DAY)
    assert not g.due(DAY + 3599) and list(g.ticks(DAY + 3599 - 3600)) == []
    assert g.due(DAY + 3600)
    assert list(g.ticks(DAY + 3600 - 3600)) == [DAY]
    assert g.next_tick == 2 * DAY


def test_records_after_the_next_tick_wait_for_it_and_go_in_arrival_order():
    g: TickGate[str] = TickGate(DAY, 3600.0)
    g.start(0.5 * DAY)
    for ts, item in [(DAY + 10, "b"), (0.9 * DAY, "late"), (2 * DAY + 1, "c"), (DAY + 5, "a")]:
        if g.holds(ts):
            g.hold(ts, item)
    assert g.held() == ["b", "c", "a"]          # "late" is before the tick: applied at once
    released = []
    for tick in g.ticks(DAY):
        released += g.release()                  # up to the new next tick (2 days)
    assert released == ["b", "a"] and g.held() == ["c"]
    assert g.release_all() == ["c"] and len(g) == 0


def test_a_record_before_the_tick_is_not_held_behind_a_later_one_of_its_key():
    g: TickGate[str] = TickGate(DAY, 3600.0)
    g.start(0.5 * DAY)
    g.hold(DAY + 10, "a1", key="a")
    assert not g.holds(0.9 * DAY)                # before the tick: applied, though a1 of its key is held
    assert not g.holds(None)                     # no event time: the core dead-letters it
    g.hold(3 * DAY, "a3", key="a")
    g.hold(DAY + 20, "b1", key="b")
    g.hold(DAY + 30, "a4", key="a")
    assert g.held_of("a") == ["a1", "a3", "a4"] and g.held_of("b") == ["b1"] and g.held_of("c") == []
    list(g.ticks(DAY))
    assert g.release() == ["a1", "b1", "a4"]     # up to the next tick, in arrival order
    assert g.held() == ["a3"] and g.held_of("a") == ["a3"] and g.held_of("b") == []
    assert g.drop(lambda item: item != "a3") == 1 and g.held_of("a") == []


def test_a_gap_of_years_runs_a_bounded_number_of_ticks():
    g: TickGate[str] = TickGate(DAY, 0.0, max_ticks=5)
    g.start(0.0)
    ticks = list(g.ticks(1000 * DAY + 7))
    assert len(ticks) == 6 and ticks[:5] == [DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY]
    assert ticks[-1] == 1000 * DAY and g.next_tick == 1001 * DAY


def test_drop_forgets_held_records_of_revoked_partitions():
    g: TickGate[tuple[int, str]] = TickGate(DAY, 0.0)
    g.start(0.0)
    g.hold(2 * DAY, (0, "x"))
    g.hold(2 * DAY, (1, "y"))
    assert g.drop(lambda item: item[0] != 1) == 1 and g.held() == [(0, "x")]


def test_a_tick_whose_states_hold_no_event_is_one_before_every_event():
    """Replay and the worker skip such a tick (no re-fit, no snapshot): the first tick may come
    before every event (the first event time minus the lateness bound)."""
    assert before_every_event([]) and before_every_event([CustomerState(customer_id="c1")])
    state = CustomerState(customer_id="c1")
    apply(state, ev(touchpoint("c1")), ScoringParams())
    assert not before_every_event([CustomerState(customer_id="c0"), state])
