"""Valid-looking hostile input (issue 20): records that pass a loose reading of the
contract but carry extreme or hostile values. One test (or more) per defect of the issue;
each failed on the code before the fix. The worker's poison-pill and null-key cases run
through a real worker in tests/drills/test_hostile_input.py (`make faults`)."""
from __future__ import annotations

import threading
import unicodedata
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from pipeline.adapters.clickhouse import rows as ch_rows
from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.service.processor import Core, RawRecord
from pipeline.service.replay import replay
from pipeline.domain.scoring import apply, profile
from pipeline.adapters.clickhouse.sink import ClickHouseSink, is_transient
from pipeline.domain.plausible_time import HARD_CEILING
from pipeline.domain.state import CustomerState
from schemas.events import parse_event
from tests.factories import T0, at, complaint, order, raw, touchpoint

SETTINGS = Settings()
TOPIC = SETTINGS.topic_for_type
CLOCK = (T0 + timedelta(days=30)).timestamp()   # the processing clock (received_at) of these tests
# received_at at the hard limit: only the limit applies (no processing clock to speak of)
NO_CLOCK = HARD_CEILING


def rec(d: dict, offset: int = 0, key: bytes | None | str = "customer") -> RawRecord:
    k = d["customer_id"].encode() if key == "customer" else key
    return RawRecord(TOPIC[d["type"]], 0, offset, k, raw(d))


def run(records: list[dict], core: Core | None = None, clock: float | None = CLOCK, states=None, **kw):
    core = core or build_core(SETTINGS)
    states = {} if states is None else states
    out = core.process([rec(d, i) for i, d in enumerate(records)], states.get,
                       received_at=NO_CLOCK if clock is None else clock, **kw)
    states.update(out.states)
    return out, states


def reasons(out) -> list[str]:
    return [dl["reason"] for dl in out.dead_letters]


# --- 1. ClickHouse: a data error is not retried forever ----------------------------------

def test_code_252_too_many_partitions_is_a_data_error_not_a_retryable_one():
    from clickhouse_connect.driver.exceptions import DatabaseError

    parts = DatabaseError("Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). "
                          "(TOO_MANY_PARTS)")
    merges = DatabaseError("Code: 252. DB::Exception: Too many parts (300 with average size of 1.00 MiB) in table. "
                           "Merges are processing significantly slower than inserts. (TOO_MANY_PARTS)")
    assert not is_transient(parts)
    assert is_transient(merges)   # back-pressure: worth retrying


def test_101_months_in_one_insert_are_stored_by_partition(tmp_path):
    """101 events in 101 months: ClickHouse refuses the block (Code 252); the sink splits it
    by month and stores all of it, instead of retrying the same block forever."""
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}", retry_initial=0.05, retry_max=0.1).open()
    safety = threading.Timer(60, sink.close)   # the old sink retried forever: fail, don't hang
    safety.start()
    try:
        end = datetime(2026, 11, 15, tzinfo=timezone.utc)
        months = [(end.year * 12 + end.month - 1) - m for m in range(101)]
        events = [parse_event(raw(order(f"C{m % 3}", datetime(ym // 12, ym % 12 + 1, 15, tzinfo=timezone.utc).isoformat(),
                                        f"e-{m}"))) for m, ym in enumerate(months)]
        rows = [ch_rows.event_row(e, "standard") for e in events]
        assert sink.write({"cx_events": rows}) == 101
        assert sink.take_rejected() == []
        # rows older than the table's 400-day TTL (from the wall clock) are ClickHouse's to drop, in a
        # merge that may come later: count the rows within it, on both sides by the same clock
        recent = sum(1 for e in events if e.occurred_at > datetime.now(timezone.utc) - timedelta(days=400))
        stored = sink.client.query("SELECT count() FROM cx_events "
                                   "WHERE occurred_at > now() - INTERVAL 400 DAY").result_rows[0][0]
        assert stored == recent > 0
    finally:
        safety.cancel()
        sink.close()


def test_rows_refused_as_data_are_set_aside_and_dead_lettered(tmp_path):
    """A row ClickHouse refuses whatever the split is set aside (not retried) and becomes an
    `unstorable` dead letter; its neighbours are stored."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    from pipeline.adapters.clickhouse.sink import sink_dead_letters
    from schemas.outputs import DeadLetter

    class Refusing:
        def __init__(self, real):
            self.real = real

        def insert(self, table, data, column_names, **kw):
            if table == "cx_events" and any(r[column_names.index("event_id")] == "bad" for r in data):
                raise DatabaseError("Code: 53. DB::Exception: Type mismatch. (TYPE_MISMATCH)")
            return self.real.insert(table, data, column_names=column_names, **kw)

        def __getattr__(self, name):
            return getattr(self.real, name)

    from pipeline.adapters.clickhouse.sink import default_client_factory
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}", client_factory=lambda dsn: Refusing(default_client_factory(dsn)))
    sink.open()
    try:
        evs = [parse_event(raw(touchpoint("C1", at(hours=i), eid))) for i, eid in enumerate(["a", "bad", "c", "d"])]
        assert sink.write({"cx_events": [ch_rows.event_row(e, "standard") for e in evs]}) == 3
        rejected = sink.take_rejected()
        assert [r.row["event_id"] for r in rejected] == ["bad"] and "TYPE_MISMATCH" in rejected[0].error
        dl = sink_dead_letters(rejected, CLOCK)[0]
        DeadLetter.model_validate(dl)
        assert dl["reason"] == "unstorable" and dl["source_topic"] == "clickhouse.cx_events"
    finally:
        sink.close()


# --- 2. extreme dates crash nothing -------------------------------------------------------

POISON = [
    touchpoint("c1", "9999-12-31T23:00:00-12:00"),
    complaint("c1", "9999-12-31T23:59:59Z"),
    touchpoint("c1", "0001-01-01T00:00:00+14:00"),
    order("c1", at(), status="delivered", promised_at=at(), fulfilled_at="9999-12-31T23:00:00-12:00"),
]


@pytest.mark.parametrize("clock", [CLOCK, None])
def test_extreme_dates_are_dead_lettered_not_raised(clock):
    from pipeline.service.emit_guard import prepare

    out, states = run(POISON, clock=clock)
    assert reasons(out) == ["implausible_time"] * 4
    assert not states and not out.events
    prepare(out, ch_rows.batch_rows)   # rows and messages build


def test_a_record_whose_rows_cannot_be_built_is_a_processing_error_not_a_crash(monkeypatch):
    """The emit path (rows, messages) runs inside the guard: a record that breaks it is
    dead-lettered `processing_error`, the rest of the batch goes through, and the failing
    record leaves no trace in the state."""
    from pipeline.service.emit_guard import guarded_batch

    real = ch_rows.event_row

    def event_row(event, tier):
        if event.event_id == "poison":
            raise OverflowError("date value out of range")
        return real(event, tier)

    monkeypatch.setattr(ch_rows, "event_row", event_row)
    core = build_core(SETTINGS)
    records = [rec(touchpoint("c1", at(0), "a"), 0), rec(touchpoint("c1", at(1), "poison", csat=1), 1),
               rec(touchpoint("c2", at(1), "b"), 2)]
    batch = guarded_batch(records, lambda rs, load: core.process(rs, load, received_at=CLOCK), lambda cid: None, CLOCK,
                          ch_rows.batch_rows)
    assert [(dl["reason"], dl["offset"]) for dl in batch.result.dead_letters] == [("processing_error", 1)]
    assert "OverflowError" in batch.result.dead_letters[0]["error"]
    assert {r["event_id"] for r in batch.rows["cx_events"]} == {"a", "b"}
    assert batch.result.states["c1"].n == 1 and batch.result.applied == 2
    assert sum(m.kind == "deadletter" for m in batch.messages) == 1


# --- 3. an upper bound on event time ------------------------------------------------------

def test_an_event_from_a_fast_clock_is_implausible_and_moves_no_watermark():
    clock = (T0 + timedelta(hours=1)).timestamp()
    out, states = run([touchpoint("c1", at(0.5), "first"), touchpoint("c1", at(3), "fast")], clock=clock)
    assert reasons(out) == ["implausible_time"] and "processing clock" in out.dead_letters[0]["error"]
    assert states["c1"].wm == (T0 + timedelta(hours=0.5)).timestamp()
    # the customer's next correct event (a critical complaint) is applied, not too_late
    out2, _ = run([complaint("c1", at(0.9), "k", severity="critical")], clock=clock, states=states)
    assert out2.applied == 1 and not out2.dead_letters


def test_skew_is_configurable_and_within_it_events_apply():
    clock = T0.timestamp()
    out, _ = run([touchpoint("c1", at(0.2))], clock=clock)                       # 12 min ahead: within 15
    assert out.applied == 1
    out, _ = run([touchpoint("c1", at(0.2))], core=build_core(Settings(clock_skew_seconds=60)), clock=clock)
    assert reasons(out) == ["implausible_time"]


def _history(customers: int = 30, days: int = 20) -> list[bytes]:
    out = []
    for d in range(days):
        for c in range(customers):
            out.append(raw(touchpoint(f"c{c}", at(days=d, hours=c % 8), f"e{c}-{d}", csat=1 + (c + d) % 5)))
    return out


def test_one_event_far_in_the_future_changes_nothing_in_a_replay():
    """One event in 2100 (an unrelated new customer) and one in 2027: with the file's clock
    both are implausible, the replay does not tick to them, and no other score changes."""
    history = _history()
    end = T0 + timedelta(days=20)
    stray = [raw(touchpoint("new-1", "2100-01-01T00:00:00Z", "far")),
             raw(touchpoint("new-2", "2027-06-01T00:00:00Z", "near"))]
    base = replay(history, build_core(SETTINGS), clock=end.timestamp)
    mixed = replay(history[:100] + stray + history[100:], build_core(SETTINGS), clock=end.timestamp)
    assert sorted(dl["reason"] for dl in mixed.dead_letters) == ["implausible_time"] * 2
    assert mixed.scores.keys() == base.scores.keys()
    for cid, score in base.scores.items():
        assert mixed.scores[cid] == score, cid
    assert len(mixed.alerts) == len(base.alerts)


def test_replay_ticks_are_capped_across_a_gap_of_decades():
    """With received_at at the hard limit only the limit applies: an event in 2100 is accepted, but the
    replay runs a bounded number of sweeps to reach it (it used to step day by day)."""
    from pipeline.service.replay import MAX_TICKS_PER_STEP

    core = build_core(SETTINGS)
    sweeps = []
    real = core.sweep
    core.sweep = lambda states, now: (sweeps.append(now), real(states, now))[1]
    replay(_history(3, 3) + [raw(touchpoint("new-1", "2100-01-01T00:00:00Z", "far"))], core,
           clock=lambda: NO_CLOCK)
    assert 0 < len(sweeps) <= MAX_TICKS_PER_STEP + 3


# --- 4. personal data in ids ----------------------------------------------------------------

@pytest.mark.parametrize("record, field", [
    (touchpoint("jane.doe@example.com"), "customer_id"),
    (touchpoint("c1", staff_id="agent.smith@corp.example.org"), "staff_id"),
    (touchpoint("c1", event_id="+44 20 7946 0958"), "event_id"),
    (touchpoint("c1", event_id="555-010-9999"), "event_id"),
    (order("c1", order_id="(555) 010-4477"), "order_id"),
    (order("c1", order_id="ord-030.1234.5678"), "order_id"),
    (complaint("c1", complaint_id="Jane Doe, 1 Main St, +1 555 010 4477"), "complaint_id"),
])
def test_personal_data_in_an_id_is_dead_lettered_without_echoing_it(record, field):
    out, states = run([record])
    assert reasons(out) == ["personal_data"] and not states and not out.scores
    dl = out.dead_letters[0]
    assert field in dl["error"] and record[field] not in dl["error"]


@pytest.mark.parametrize("value", ["c1 ", " c1", "c 1", "c1\x00", "c1\u202e", "\u202ec1", "Zo\u0065\u0301",
                                   "Zo\u00e9", "c1\n", "Jane Doe, 1 Main St", "", "-c1", "c/1"])
def test_ids_outside_the_pattern_are_invalid_id(value):
    out, states = run([touchpoint(value)] if value else [dict(touchpoint("c1"), event_id="")])
    assert reasons(out) == (["invalid_id"] if value else ["invalid_record"]) and not states


def test_ids_of_the_contract_shape_are_accepted():
    out, _ = run([touchpoint("C000123", "2026-03-02T09:00:00Z", "3f2b8a9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
                  order("cust:eu:42", order_id="O-0000017"), complaint("acct_7.x", complaint_id="K-2026-000001"),
                  touchpoint("4915112345678")])   # a bare digit run is a customer number, not a phone
    assert out.applied == 4 and not out.dead_letters


def test_a_configured_id_pattern_narrows_the_contract():
    core = build_core(Settings(id_pattern=r"^[A-Za-z0-9-]{1,36}$"))
    out, _ = run([touchpoint("C000001", event_id="ev-1"), touchpoint("cust:1", event_id="ev-2")], core=core)
    assert reasons(out) == ["invalid_id"] and out.applied == 1


# --- 5. duplicates over the lateness bound, not 32 events ---------------------------------

def test_an_event_resent_after_41_others_within_the_lateness_bound_is_a_duplicate():
    events = [touchpoint("c1", at(minutes / 60), f"e{i}", csat=5) for i, minutes in enumerate(range(0, 42))]
    resent = dict(events[0])
    out, states = run(events + [resent])
    assert out.applied == 42 and out.duplicates == 1 and states["c1"].n == 42


def test_the_dedup_window_is_bounded_and_follows_the_lateness_bound():
    from pipeline.domain.state import MAX_SEEN_IDS, MIN_SEEN_IDS

    state = CustomerState(customer_id="c1")
    params = build_core(SETTINGS).params
    for i in range(MAX_SEEN_IDS + 50):   # a burst within one second: the cap holds
        apply(state, parse_event(raw(touchpoint("c1", at(), f"b{i}"))), params)
    assert state.seen_ids == MAX_SEEN_IDS
    apply(state, parse_event(raw(touchpoint("c1", at(hours=5), "later"))), params)
    assert state.seen_ids == MIN_SEEN_IDS + 1   # the burst is beyond the 1-hour bound: its last few stay


def test_states_written_with_32_bit_ids_still_deduplicate():
    import base64
    import struct

    from pipeline.domain.state import legacy_fingerprint

    state = CustomerState(customer_id="c1", n=1, wm=T0.timestamp())
    old = orjson.loads(encode_state(state))
    old["ids"] = base64.b64encode(struct.pack(">I", legacy_fingerprint("e-old"))).decode()
    loaded = decode_state(orjson.dumps(old), "c1")
    assert loaded.seen("e-old") and not loaded.seen("e-new")
    out, _ = run([touchpoint("c1", at(0.1), "e-old"), touchpoint("c1", at(0.1), "e-new")], states={"c1": loaded})
    assert out.duplicates == 1 and out.applied == 1


# --- 6. open complaints are never forgotten -----------------------------------------------

def test_thirteen_open_complaints_are_all_kept_and_the_oldest_breaches():
    events = [complaint("c1", at(i * 0.1), f"k-open-{i}", complaint_id=f"k{i}") for i in range(13)]
    out, states = run(events)
    assert out.applied == 13 and len([c for c in states["c1"].complaints if c.is_open]) == 13
    core = build_core(SETTINGS)
    p = profile(states["c1"], (T0 + timedelta(days=2)).timestamp(), core.params, core.population)
    assert p.slas["k0"].breached and p.open_complaints == 13
    # resolved days late: judged late, not as answered at once
    assert states["c1"].acc.get("f.sb", 0.0) == 0.0
    out, states = run([complaint("c1", at(days=2), "k0-res", complaint_id="k0", status="resolved")], states=states)
    assert out.applied == 1 and all(c.id != "k0" or not c.is_open for c in states["c1"].complaints)
    assert states["c1"].acc.get("f.sb", 0.0) > 0   # its breach is counted (it was folded once closed)


def test_closed_complaints_are_folded_first_and_open_ones_are_capped():
    events = [complaint("c1", at(i * 0.01), f"o{i}", complaint_id=f"k{i}") for i in range(20)]
    events += [complaint("c1", at(0.3), f"r{i}", complaint_id=f"k{i}", status="closed") for i in range(10)]
    out, states = run(events)
    kept = states["c1"].complaints
    assert sum(c.is_open for c in kept) == 10 and len(kept) == 12   # 2 closed kept, 8 folded
    core = build_core(Settings(max_open_complaints=3))
    out, states = run([complaint("c2", at(i * 0.01), f"x{i}", complaint_id=f"x{i}") for i in range(4)]
                      + [complaint("c2", at(0.1), "x0-closed", complaint_id="x0", status="closed")], core=core)
    assert reasons(out) == ["too_many_open_complaints"] and out.applied == 4
    assert "3 open complaints" in out.dead_letters[0]["error"]


# --- 7. `z` in occurred_at and replay --as-of ---------------------------------------------

def test_a_lowercase_z_event_after_as_of_is_left_out():
    records = [raw(touchpoint("c1", "2026-03-02T09:00:00Z", "a")), raw(touchpoint("c1", "2026-03-05t09:00:00z", "b"))]
    as_of = datetime(2026, 3, 3, tzinfo=timezone.utc)
    result = replay(records, build_core(SETTINGS), clock=as_of.timestamp, as_of=as_of)
    assert result.after_as_of == 1 and result.applied == 1 and result.scores["c1"]["events"] == 1


# --- 8. records without a Kafka key ---------------------------------------------------------

def test_a_record_without_a_key_from_kafka_is_wrong_key():
    d = touchpoint("c1")
    core = build_core(SETTINGS)
    out = core.process([RawRecord(TOPIC["touchpoint"], 0, 0, None, raw(d))], lambda cid: None,
                       source_offsets=True, received_at=CLOCK)
    assert reasons(out) == ["wrong_key"] and "without a key" in out.dead_letters[0]["error"]
    # a file (replay) has no keys: not an error there
    out = core.process([RawRecord(TOPIC["touchpoint"], 0, 0, None, raw(d))], lambda cid: None, received_at=CLOCK)
    assert out.applied == 1


# --- 9. one business currency, ISO 4217 -----------------------------------------------------

def test_orders_in_another_currency_are_rejected_and_revenue_stays_in_one():
    out, states = run([order("c1", at(0), "eur", amount="10"), order("c1", at(1), "jpy", amount="150000", currency="JPY")])
    assert reasons(out) == ["unsupported_currency"] and "JPY" in out.dead_letters[0]["error"]
    assert out.scores[-1]["revenue_365d"] == 10.0 and out.scores[-1]["tier"] == "standard"


def test_a_currency_that_is_not_iso_4217_breaks_the_schema_and_the_setting_is_validated():
    out, _ = run([order("c1", currency="ZZZ")])
    assert reasons(out) == ["invalid_record"] and "ISO 4217" in out.dead_letters[0]["error"]
    out, _ = run([order("c1", currency="JPY", amount="150000")], core=build_core(Settings(currency="JPY")))
    assert out.applied == 1
    with pytest.raises(ValueError):
        Settings(currency="ZZZ")


# --- 10. "ratings": {} is no answer ---------------------------------------------------------

@pytest.mark.parametrize("ratings", [{}, {"empathy": None}])
def test_empty_ratings_are_rejected(ratings):
    out, _ = run([touchpoint("c1", ratings=ratings)])
    assert reasons(out) == ["invalid_record"] and "ratings" in out.dead_letters[0]["error"]


# --- 11. fingerprints wide enough -----------------------------------------------------------

def test_ids_that_collide_in_32_bits_are_distinct_events_and_orders():
    from pipeline.domain.state import legacy_fingerprint

    assert legacy_fingerprint("tp-18044") == legacy_fingerprint("tp-39193")
    out, states = run([touchpoint("c1", at(0), "tp-18044"), touchpoint("c1", at(0.1), "tp-39193")])
    assert out.applied == 2 and out.duplicates == 0
    out, states = run([order("c2", at(0), "o1", order_id="tp-18044", amount="300"),
                       order("c2", at(0.1), "o2", order_id="tp-39193", amount="400")])
    assert out.scores[-1]["revenue_365d"] == 700.0 and states["c2"].n_orders == 2


# --- 12. times before 1970 or after 2106 ----------------------------------------------------

@pytest.mark.parametrize("when", ["1899-12-31T23:00:00Z", "1969-12-31T23:59:59Z", "1999-12-31T23:59:59Z",
                                  "2106-02-07T06:28:16Z", "2150-01-01T00:00:00Z"])
def test_times_outside_the_storable_range_are_implausible_even_without_a_clock(when):
    out, states = run([touchpoint("c1", when)], clock=None)
    assert reasons(out) == ["implausible_time"] and not states


def test_the_floor_is_configurable_but_not_before_1970():
    out, _ = run([touchpoint("c1", "1995-01-01T00:00:00Z")],
                 core=build_core(Settings(time_floor=datetime(1990, 1, 1, tzinfo=timezone.utc))))
    assert out.applied == 1
    with pytest.raises(ValueError):
        Settings(time_floor=datetime(1960, 1, 1, tzinfo=timezone.utc))


# --- 13. strict JSON types, no loose coercion -----------------------------------------------

@pytest.mark.parametrize("record", [
    touchpoint("c1", wait_seconds=True), touchpoint("c1", wait_seconds="95"), touchpoint("c1", handle_seconds="1"),
    touchpoint("c1", sentiment="0.5"), touchpoint("c1", sentiment=False),
    order("c1", amount="\u0663"), order("c1", amount="1_000"), order("c1", amount="1e3"), order("c1", amount=" 3"),
    order("c1", amount=True), order("c1", amount="12.34567"), complaint("c1", compensation="\u0663"),
    complaint("c1", compensation=False),
])
def test_loose_coercion_is_rejected(record):
    out, _ = run([record])
    assert reasons(out) == ["invalid_record"]


def test_numbers_and_decimal_strings_of_the_contract_are_accepted():
    out, states = run([touchpoint("c1", at(0), wait_seconds=95, handle_seconds=12.5, sentiment=0),
                       order("c1", at(0.1), amount="19.90"), order("c1", at(0.2), amount=12.5),
                       order("c1", at(0.3), amount=7), complaint("c1", at(0.4), compensation="10")])
    assert out.applied == 5 and not out.dead_letters


def test_ids_differing_by_invisible_characters_are_not_separate_customers():
    variants = ["c1 ", "c1\x00", "c1\u202e", unicodedata.normalize("NFD", "Zo\u00e9"), "Zo\u00e9"]
    out, states = run([touchpoint(v, at(i * 0.1), f"v{i}") for i, v in enumerate(variants)])
    assert out.applied == 0 and set(reasons(out)) == {"invalid_id"} and not states
    for dl in out.dead_letters:   # the override character never reaches an output
        assert "\u202e" not in dl["error"]


def test_exported_json_schemas_say_what_is_accepted():
    from schemas.export import render

    order_schema = orjson.loads(render()["order.schema.json"])
    props = order_schema["properties"]
    assert props["order_id"]["pattern"].startswith("^[A-Za-z0-9]") and "not" in props["order_id"]
    assert "EUR" in props["currency"]["enum"] and "ZZZ" not in props["currency"]["enum"]
    amount = {k: v for alt in props["amount"]["anyOf"] for k, v in alt.items()}
    assert amount.get("pattern", "").startswith("^[0-9]")
    tp = orjson.loads(render()["touchpoint.schema.json"])
    assert tp["$defs"]["Ratings"]["minProperties"] == 1
    wait = tp["properties"]["wait_seconds"]["anyOf"][0]
    assert wait["type"] == "number"
