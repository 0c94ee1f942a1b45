"""Decoded customer states kept between micro-batches, so a customer seen again is not
decoded from its stored bytes every batch (the worker stores every touched state after every
batch; decoding it back was about a tenth of the core's time).

The stored bytes stay the truth. An entry is the pair (stored bytes, the state object they
were encoded from) and serves a load only while the store still holds *those very bytes*
(identity, not equality): anything that wrote the store since — a table recovery from the
changelog, an erasure, another code path — makes the load decode the bytes as before.

A load takes the entry out. The caller then either stores the state again (`stored`: the
entry comes back with the new bytes) or drops it, and the next load decodes the stored
bytes: a micro-batch that fails half-way (pipeline/service/emit_guard.py redoes it record by
record) or a sweep that evaluates a customer without storing it (and may have changed the
object, e.g. pruned cases) never leaves a changed object behind that the store does not hold.

Exact: a state decoded from `encode_state(s)` equals `s` (pipeline/adapters/state_codec.py),
so a live object and its decoded bytes give the same outputs; `pipeline/tools/core_loop.py`
digests every output with and without this cache (tests/unit/test_hot_path.py).
At most `max_entries` objects are kept, the least recently stored go first (a decoded
state takes about 4 times its stored bytes: ~4 KB for a customer of ~30 events).
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

S = TypeVar("S")


class LiveStates(Generic[S]):
    def __init__(self, decode: Callable[[bytes, str], S], max_entries: int = 5_000):
        self._decode = decode
        self._live: dict[str, tuple[bytes, S]] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def load(self, customer_id: str, raw: bytes | None) -> S | None:
        """The state of `customer_id` whose stored bytes are `raw` (None: not stored)."""
        entry = self._live.pop(customer_id, None)
        if raw is None:
            return None
        if entry is not None and entry[0] is raw:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return self._decode(raw, customer_id)

    def stored(self, customer_id: str, raw: bytes, state: S) -> None:
        """`state` was just stored as `raw` (the very object the store now holds)."""
        live = self._live
        live.pop(customer_id, None)
        live[customer_id] = (raw, state)
        if len(live) > self.max_entries:
            del live[next(iter(live))]

    def forget(self, customer_id: str) -> None:
        self._live.pop(customer_id, None)

    def clear(self) -> None:
        self._live.clear()

    def __len__(self) -> int:
        return len(self._live)
