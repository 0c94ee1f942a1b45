"""The hot path's exact speed-ups (#18): each gives the very answer of the code it replaces.

- `LiveStates` (decoded states kept between batches): the worker-like loop of
  pipeline/tools/core_loop.py digests every output (messages, ClickHouse rows, every stored
  state) with and without it;
- `CustomerState.seen` (a byte search instead of unpacking every entry) against the
  entry-by-entry comparison, legacy 32-bit entries and misaligned matches included;
- `id_problem` (a fast path for ids of the pattern) against the checks in their old order.
"""
from __future__ import annotations

import re
import struct

from hypothesis import given, settings as hsettings, strategies as st

from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.state import CustomerState, fingerprint, legacy_fingerprint
from pipeline.service.live_states import LiveStates
from pipeline.tools import core_loop
from schemas import id_policy


# ----------------------------------------------------------------------------- live states


def test_the_loop_with_live_states_outputs_the_same_bytes(tmp_path):
    settings = Settings(data_dir=tmp_path)
    records, received_at = core_loop.generated_records(3000, 11, settings)
    stored = core_loop.run(records, build_core(settings), received_at, batch=200, sweep_every=3)
    live = core_loop.run(records, build_core(settings), received_at, batch=200, sweep_every=3, live=True)
    assert stored.counts["score"] > 500 and stored.counts["alert"] > 10 and stored.counts["deadletter"] > 10
    assert stored.sweeps >= 4
    assert live.digest == stored.digest
    assert live.states == stored.states


def test_live_states_serve_only_the_bytes_they_were_encoded_from():
    decoded: list[str] = []

    def decode(raw: bytes, cid: str) -> CustomerState:
        decoded.append(cid)
        return decode_state(raw, cid)

    live: LiveStates[CustomerState] = LiveStates(decode, max_entries=2)
    a = CustomerState(customer_id="a", n=1, wm=10.0)
    raw = encode_state(a)
    live.stored("a", raw, a)
    assert live.load("a", raw) is a and decoded == []          # the very bytes: the live object
    assert live.load("a", raw) is not a and decoded == ["a"]   # a load took it out: decoded again
    live.stored("a", raw, a)
    assert live.load("a", bytes(bytearray(raw))) is not a                # equal bytes, another object: decoded
    live.stored("a", raw, a)
    assert live.load("a", None) is None and len(live) == 0     # no longer stored
    for cid in "bcd":
        s = CustomerState(customer_id=cid, n=1)
        live.stored(cid, encode_state(s), s)
    assert len(live) == 2                                     # the least recently stored went first


# ----------------------------------------------------------------------------- seen ids

_SEEN = struct.Struct(">QI")


def _seen_reference(state: CustomerState, event_id: str) -> bool:
    fp, legacy = fingerprint(event_id), (0xFFFFFFFF << 32) | legacy_fingerprint(event_id)
    return any(h == fp or h == legacy for h, _ in _SEEN.iter_unpack(state.ids))


@hsettings(max_examples=300, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=12), max_size=12),
       legacy=st.lists(st.text(min_size=1, max_size=12), max_size=4),
       probe=st.text(min_size=1, max_size=12), seconds=st.integers(0, 2**32 - 1))
def test_seen_is_the_entry_by_entry_comparison(ids, legacy, probe, seconds):
    state = CustomerState()
    state.ids = b"".join(_SEEN.pack((0xFFFFFFFF << 32) | legacy_fingerprint(x), seconds) for x in legacy) + \
        b"".join(_SEEN.pack(fingerprint(x), seconds) for x in ids)
    for event_id in [probe, *ids, *legacy]:
        assert state.seen(event_id) == _seen_reference(state, event_id)


def test_seen_ignores_a_fingerprint_found_across_entries():
    target = fingerprint("evt-1").to_bytes(8, "big")
    # an entry whose second and the next entry's start spell the fingerprint at offset 8
    state = CustomerState()
    state.ids = _SEEN.pack(1, int.from_bytes(target[:4], "big")) + target[4:] + b"\0\0\0\0" + b"\0" * 4
    assert state.ids.find(target) == 8
    assert not state.seen("evt-1") and not _seen_reference(state, "evt-1")
    state.ids += _SEEN.pack(fingerprint("evt-1"), 5)
    assert state.seen("evt-1")


# ----------------------------------------------------------------------------- ids


def _id_problem_reference(value: str, narrower: re.Pattern[str] | None = None):
    if id_policy.EMAIL_SHAPE.search(value):
        return id_policy.PERSONAL_DATA, "looks like it contains an e-mail address (ids must be pseudonymous)"
    if id_policy.PHONE_SHAPE.search(value):
        return id_policy.PERSONAL_DATA, "looks like it contains a phone number (ids must be pseudonymous)"
    if not id_policy._ID.fullmatch(value):
        return id_policy.INVALID_ID, f"must match {id_policy.ID_PATTERN} (ASCII letters, digits and . _ : -; " \
                                     f"no whitespace, control, bidi or other non-ASCII characters)"
    if narrower is not None and not narrower.fullmatch(value):
        return id_policy.INVALID_ID, f"must match the configured id pattern {narrower.pattern}"
    return None


ID_ALPHABET = "0123456789aZ.-_:@+() \n\u202e"


@hsettings(max_examples=1500, deadline=None)
@given(value=st.text(alphabet=ID_ALPHABET, min_size=0, max_size=40), narrow=st.booleans())
def test_id_problem_is_the_checks_in_their_order(value, narrow):
    narrower = re.compile(r"^[A-Za-z0-9-]{1,36}$") if narrow else None
    assert id_policy.id_problem(value, narrower) == _id_problem_reference(value, narrower)


def test_id_problem_fast_path_on_known_shapes():
    for value in ("555-010-9999", "030.1234.5678", "C000083", "e9a49084-a0de-45c0-b0d2-59a1772894cd",
                  "a@b.com", "+44 20 7946 0958", "x" * 129, "tp-18044"):
        assert id_policy.id_problem(value) == _id_problem_reference(value), value
