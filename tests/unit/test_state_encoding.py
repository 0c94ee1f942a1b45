"""One state encoding for the worker and replay: storing and reloading a state changes nothing.

The worker stores every touched state after each micro-batch and reloads it for the next;
replay keeps live states. They agree exactly only if `decode_state(encode_state(s)) == s` for
every state the core produces, whatever the micro-batch boundaries.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import replace

import orjson
import pytest

from pipeline.adapters.state_codec import _SHORT, ACC_SLOTS, decode_state, encode_state
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.tools.generator import generate
from pipeline.service.processor import RawRecord
from pipeline.service.replay import replay
from pipeline.domain.scoring import ScoringParams, apply
from pipeline.domain.state import STATE_FORMAT, ComplaintRec, CustomerState
from tests.factories import at, complaint, ev, touchpoint

P = ScoringParams()


def round_trip(state: CustomerState) -> CustomerState:
    return decode_state(encode_state(state), state.customer_id)


def without_zeros(state: CustomerState) -> CustomerState:
    """The state as stored: accumulators that are 0 read as absent (every reader uses .get(k, 0.0))."""
    return replace(state, acc={k: v for k, v in state.acc.items() if v})


def test_an_nps_answer_of_zero_is_kept():
    s = CustomerState(customer_id="c1")
    apply(s, ev(touchpoint(nps=0, when=at(1))), P)
    assert s.nps_last == 0
    back = round_trip(s)
    assert back.nps_last == 0 and back == without_zeros(s)


def test_falsy_values_that_are_not_defaults_are_kept():
    s = CustomerState(customer_id="c1", stage="", first_order=0.0, last_day=0, first_day=0, erased=0.0,
                      complaints=[ComplaintRec(id="k", opened=0.0, ack=0.0, resolved=0.0, satisfied=False,
                                               status="resolved", channel="")])
    back = round_trip(s)
    assert back == s
    assert back.stage == "" and back.first_order == 0.0 and back.erased == 0.0
    assert back.complaints[0].satisfied is False and back.complaints[0].opened == 0.0


def test_defaults_are_left_out():
    assert orjson.loads(encode_state(CustomerState(customer_id="c1"))) == {"v": STATE_FORMAT}


def test_states_written_by_the_previous_encoding_still_read():
    # acc as a list of 7-digit numbers; nps_last 0 was dropped (it reads as "no answer", as before)
    old = orjson.dumps({"v": 1, "n": 2, "wm": 1.7e9, "acc": [0.5, 0, 1.234567], "cp": [{"id": "k", "s": "opened"}]})
    s = decode_state(old, "c1")
    assert s.acc == {ACC_SLOTS[0]: 0.5, ACC_SLOTS[2]: 1.234567}
    assert s.nps_last is None and s.n == 2 and s.complaints[0].status == "opened"
    assert round_trip(s) == s


def test_every_state_the_core_produces_survives_storage_unchanged():
    """Event by event over a generated stream (invalid records and duplicates included):
    the reloaded state equals the live one and encodes to the same bytes."""
    settings = Settings(lateness_seconds=60 * 86400)
    core = build_core(settings)
    stream = generate(customers=150, days=40, seed=5, invalid_ratio=0.03)
    states: dict[str, CustomerState] = {}
    checked = 0
    for offset, r in enumerate(stream.records):
        out = core.process([RawRecord(settings.topic_for_type[r.kind], 0, offset, r.key, r.value)], states.get, received_at=time.time())
        for cid, state in out.states.items():
            raw = encode_state(state)
            back = decode_state(raw, cid)
            assert back == without_zeros(state), cid
            assert encode_state(back) == raw
            checked += 1
        states.update(out.states)
    assert checked > len(stream.records) // 2


def test_stored_micro_batches_of_any_size_give_the_replay_scores():
    """The worker's path (random micro-batch sizes, each state stored as bytes and reloaded
    for the next batch) equals `replay` (live states, batches of 1000) in every field of
    every final score record except `version`, which counts publications and so depends on
    the batch boundaries by definition."""
    settings = Settings(lateness_seconds=60 * 86400)
    stream = generate(customers=300, days=60, seed=9, invalid_ratio=0.03)
    topic_for = settings.topic_for_type
    offline = replay((r.value for r in stream.records), build_core(settings), clock=time.time, tick=None,
                     topic_of={r.value: topic_for[r.kind] for r in stream.records}.__getitem__)

    core = build_core(settings)
    stored: dict[str, bytes] = {}
    scores: dict[str, dict] = {}
    rng = random.Random(3)
    records = [RawRecord(topic_for[r.kind], 0, i, r.key, r.value) for i, r in enumerate(stream.records)]
    i = 0
    while i < len(records):
        n = rng.choice((1, 2, 7, 50, 333))
        out = core.process(records[i:i + n], lambda cid: decode_state(stored[cid], cid) if cid in stored else None,
                           received_at=time.time())
        stored.update({cid: encode_state(s) for cid, s in out.states.items()})
        scores.update({s["customer_id"]: s for s in out.scores})
        i += n
    assert set(scores) == set(offline.scores)
    nps_zero = 0
    for cid, online in scores.items():
        want = offline.scores[cid]
        assert {k: v for k, v in online.items() if k != "version"} == {k: v for k, v in want.items() if k != "version"}, cid
        nps_zero += decode_state(stored[cid], cid).nps_last == 0
    assert nps_zero, "the stream should hold customers whose latest NPS answer is 0 (the case that was lost)"


def test_an_accumulator_without_a_slot_is_refused_by_name():
    s = CustomerState(customer_id="c1", acc={ACC_SLOTS[0]: 0.5, "x.unknown": 1.0})
    with pytest.raises(ValueError, match=r"x\.unknown"):
        encode_state(s)


def test_the_stored_fields_keep_the_state_s_field_order():
    """The stored bytes are the digest's input: packed fields (ids, acc, complaints) stay at
    their field's place, not appended."""
    s = CustomerState(customer_id="c1", n=3, wm=1.7e9, ids=b"\x01" * 16, acc={ACC_SLOTS[1]: 2.0},
                      complaints=[ComplaintRec(id="k", status="opened")], stage="buy", offs=[0, 5])
    stored = list(orjson.loads(encode_state(s)))
    names = [f.name for f in dataclasses.fields(CustomerState) if f.name != "customer_id"]
    assert stored == [_SHORT[n] for n in names if _SHORT[n] in stored]
    assert {"sid", "acc", "cp", "st", "of"} <= set(stored)
