"""pipeline.service.pending_states: the overlay of the states of the batch whose write is in
flight — a load takes the object out, a second load decodes the bytes encoded when the
batch was processed, and release hands back the object only if nobody took it."""
from __future__ import annotations

import pytest

from pipeline.adapters.state_codec import decode_state, encode_state
from pipeline.domain.state import CustomerState
from pipeline.service.pending_states import PendingStates


def _pending() -> PendingStates[CustomerState]:
    return PendingStates(encode_state, lambda cid, raw: decode_state(raw, cid))


def test_the_bytes_are_what_the_batch_computed_whatever_happens_to_the_object():
    pending = _pending()
    a, b = CustomerState(customer_id="a", n=1), CustomerState(customer_id="b", n=1)
    pending.hold({"a": a, "b": b})
    assert "a" in pending and "z" not in pending and len(pending) == 2
    taken = pending.load("a")
    assert taken is a                        # the live object, no decoding
    taken.n = 99                             # the next batch changes it in place ...
    again = pending.load("a")                # ... a second load (the emit guard's redo) decodes the bytes
    assert again is not a and again.n == 1
    released = {cid: (raw, state) for cid, raw, state in pending.release()}
    assert decode_state(released["a"][0], "a").n == 1 and released["a"][1] is None   # taken: not kept live
    assert released["b"][1] is b and decode_state(released["b"][0], "b") == b
    assert len(pending) == 0 and "a" not in pending


def test_one_batch_at_a_time():
    pending = _pending()
    pending.hold({"a": CustomerState(customer_id="a", n=1)})
    with pytest.raises(RuntimeError):
        pending.hold({"b": CustomerState(customer_id="b", n=1)})
    pending.release()
    pending.hold({"b": CustomerState(customer_id="b", n=1)})
    assert "b" in pending and "a" not in pending
