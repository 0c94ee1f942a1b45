"""The states of the micro-batch whose ClickHouse write is in flight: computed and encoded,
not stored yet (pipeline/service/worker_loop.py, "Overlapped write").

The worker writes batch N's rows to ClickHouse (in the sink's thread) while it processes
batch N+1 on the event loop. N's states may reach the store (its changelog) only once N's
rows are durable and its outputs are on the broker, yet N+1 must compute from them, as it
would in the serial order. So the loop loads through this overlay first: a customer of the
pending batch is served from here, every other one from the store.

An entry is (the bytes encoded when N was processed, the object they were encoded from).
As in pipeline/service/live_states.py, a load takes the object out: the caller (N+1, an
operator action, the web view) may change it in place, so what N stores is the bytes, which
hold what N computed whatever happens to the object later; a second load of the customer
(the emit guard's record-by-record redo after a failed batch) decodes the bytes. When N's
write completes, `release` hands back each entry's bytes, with the object only if nobody
took it (the store keeps it live; a taken one may have changed since it was encoded).

The loop keeps two overlays: the states of the write in flight, and those of the batches
emitted while it was in flight, which wait to be written together next (`add` merges a later
batch's states over an earlier one's). When the write in flight completes, its overlay is
released and the waiting one takes its place.
"""
from __future__ import annotations

from typing import Callable, Generic, Mapping, TypeVar

S = TypeVar("S")


class PendingStates(Generic[S]):
    def __init__(self, encode: Callable[[S], bytes], decode: Callable[[str, bytes], S]) -> None:
        self._encode = encode
        self._decode = decode
        self._entries: dict[str, tuple[bytes, S | None]] = {}

    def hold(self, states: Mapping[str, S]) -> None:
        """The states of the batch whose write starts now (encoded here)."""
        if self._entries:
            raise RuntimeError("a pending batch's states are held already (complete it first)")
        self.add(states)

    def add(self, states: Mapping[str, S]) -> None:
        """The states of one more batch, written with those held already (encoded here): a
        customer's entry is replaced by the later batch's state."""
        encode = self._encode
        self._entries.update({cid: (encode(state), state) for cid, state in states.items()})

    def __contains__(self, customer_id: str) -> bool:
        return customer_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, customer_id: str) -> S:
        """The pending state of `customer_id` (held here: check `in` first)."""
        raw, state = self._entries[customer_id]
        if state is None:
            return self._decode(customer_id, raw)
        self._entries[customer_id] = (raw, None)
        return state

    def release(self) -> list[tuple[str, bytes, S | None]]:
        """Each held (customer id, bytes, the object or None if it was taken); the overlay is
        empty afterwards."""
        entries, self._entries = self._entries, {}
        return [(cid, raw, state) for cid, (raw, state) in entries.items()]
