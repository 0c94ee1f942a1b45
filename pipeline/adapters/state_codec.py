"""How a customer's state is stored: compact JSON (orjson), fields equal to their default
left out, short field names and the decayed accumulators packed exactly (ACC_SLOTS). The
Faust table keeps these bytes per customer; the Quix peer keeps them in its state store.

One encoding, no loss: `decode_state(encode_state(s))` is `s` (up to accumulators that are
0, which read as absent) for every state the core produces, so the worker (which stores and
reloads a state after every micro-batch) and `cxpulse replay` (which keeps live states)
compute the same results whatever the batch boundaries. A field is left out only when it
equals its default (`nps_last = 0` is kept: it is an answer, not a default). The decayed
accumulators are stored exactly (`"acc"`: base64 of a little-endian u64 mask of the
non-zero slots followed by their float64 values). States written before that store `"acc"`
as a list of numbers rounded to 7 significant digits and still read; so do states that
dropped an `nps_last` of 0 (they read as "no answer", as they did).

Format 1 (`v`) grew optional fields over time (`offs`, `erased`, `spent`, `cases`, `skip`,
`churn_episodes`, a complaint's `recovery_episodes`); a state
written before one of them reads with its default (see pipeline/domain/state.py). The
dedup ids are stored as `sid` (64-bit fingerprint + event second each); a state written
before them holds 32-bit fingerprints as `ids`, read as entries of its watermark's second.
"""
from __future__ import annotations

import base64
import struct
from dataclasses import MISSING, Field, fields

import orjson

from pipeline.domain.state import (
    DIM_KEY, FACTOR_KEY, OPPORTUNITY_KEY, RECENT_FACTOR_KEY, STATE_FORMAT, ComplaintRec, CustomerState, seen_entries_of_legacy_ids,
)

# Every decayed accumulator the core keeps, in the order they are stored (a list, not a
# dict: the keys would be a third of a typical state). Add new ones at the end.
ACC_SLOTS = tuple(
    [f"{p}.{d}.{x}" for p in ("d", "b") for d in DIM_KEY.values() for x in ("w", "s")]
    + ["k.csat_n", "k.csat_ok", "k.nps_n", "k.nps_p", "k.nps_d"]
    + ["f.dt", "f.lr", "f.he", "f.lf", "f.rr", "f.fr", "f.sb"]
    + ["r.w", "r.s", "p.w", "p.s"]   # perceived experience: recent (weeks) and long-run means
    + ["f.no", "f.nd", "f.nr", "f.nn", "f.nc"]   # opportunities: orders, deliveries, rated answers, NPS answers, contacts
    + ["q.dt", "q.lr", "q.he", "q.lf", "q.rr", "q.fr", "q.sb"]   # the incident counters again, one-week half-life
)
_ACC_INDEX = {k: i for i, k in enumerate(ACC_SLOTS)}
assert set(FACTOR_KEY.values()) | set(OPPORTUNITY_KEY.values()) | set(RECENT_FACTOR_KEY.values()) <= set(ACC_SLOTS)
assert len(ACC_SLOTS) <= 64   # one u64 mask of the non-zero slots


def encode_state(state: CustomerState) -> bytes:
    """Compact JSON: fields equal to their default are left out. (orjson serializes the
    containers as they are; no deep copy as dataclasses.asdict would make.)"""
    d: dict[str, object] = {}
    for name, short, default, default_type in _STORED:
        v = getattr(state, name)
        # _is_default, inline (once per field of every stored state)
        if default_type is not type(v) or v != default:
            if not (default_type is float and type(v) is int and v == 0):
                d[short] = v
    if state.ids:
        d[_SHORT["ids"]] = base64.b64encode(state.ids).decode()
    if state.acc:
        d[_SHORT["acc"]] = _pack_acc(state.acc)
    if state.complaints:
        d[_SHORT["complaints"]] = [
            {_SHORT_C[k]: v for k in _COMPLAINT_FIELDS
             if not _is_default(v := getattr(c, k), _COMPLAINT_DEFAULTS[k])}
            for c in state.complaints
        ]
    # Copy to an exact-size object: orjson's result keeps its larger working buffer
    # allocated, which costs several KB per stored state in the table.
    return bytes(memoryview(orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS)))


def decode_state(raw: bytes, customer_id: str = "") -> CustomerState:
    d = {_LONG.get(k, k): v for k, v in orjson.loads(raw).items()}
    d.setdefault("customer_id", customer_id)
    d["acc"] = _unpack_acc(d.get("acc", ()))
    fmt = d.get("v")
    if fmt != STATE_FORMAT:
        raise ValueError(f"unsupported customer state format {fmt!r} (this build reads {STATE_FORMAT})")
    d["ids"] = base64.b64decode(d.get("ids", ""))
    legacy = base64.b64decode(d.pop("ids32", ""))   # 32-bit ids of states written before `sid`
    if legacy:
        d["ids"] = seen_entries_of_legacy_ids(legacy, d.get("wm", 0)) + d["ids"]
    d["complaints"] = [ComplaintRec(**{_LONG_C.get(k, k): v for k, v in c.items()})
                       for c in d.get("complaints", [])]
    return CustomerState(**d)


def _is_default(value: object, default: object) -> bool:
    """Whether a field holds its default: same type and equal (0 is not None, False is not 0)."""
    return type(value) is type(default) and value == default or (
        type(default) is float and type(value) is int and value == 0)


def _pack_acc(acc: dict[str, float]) -> str:
    """Exact and compact: a little-endian u64 mask of the non-zero slots, then their float64s."""
    mask = 0
    values = []
    known = 0
    get = acc.get
    for i, key in enumerate(ACC_SLOTS):   # slot order: the values go in the mask's bit order
        v = get(key)
        if v is not None:
            known += 1
            if v:
                mask |= 1 << i
                values.append(v)
    if known != len(acc):
        unknown = acc.keys() - _ACC_INDEX.keys()
        raise ValueError(f"accumulators without a slot in ACC_SLOTS: {sorted(unknown)}")
    return base64.b64encode(struct.pack(f"<Q{len(values)}d", mask, *values)).decode()


def _unpack_acc(stored: str | list[float] | tuple[()]) -> dict[str, float]:
    if isinstance(stored, str):   # this format: mask + float64s
        raw = base64.b64decode(stored)
        (mask,) = struct.unpack_from("<Q", raw)
        values = struct.unpack_from(f"<{(len(raw) - 8) // 8}d", raw, 8)
        slots = [i for i in range(len(ACC_SLOTS)) if mask >> i & 1]
        return dict(zip((ACC_SLOTS[i] for i in slots), values))
    return {ACC_SLOTS[i]: float(v) for i, v in enumerate(stored) if v}   # before: a list of 7-digit numbers


def _default_of(f: Field[object]) -> object:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING   # MISSING: always stored


_FIELDS = tuple(f.name for f in fields(CustomerState))
_COMPLAINT_FIELDS = tuple(f.name for f in fields(ComplaintRec))
_DEFAULTS = {f.name: _default_of(f) for f in fields(CustomerState)}
_COMPLAINT_DEFAULTS = {f.name: _default_of(f) for f in fields(ComplaintRec)}

# Stored field names (short: the state is stored once per customer). "v" stays "v".
_SHORT = {"v": "v", "customer_id": "c", "version": "ver", "n": "n", "wm": "wm", "ids": "sid", "acc": "acc",
          "orders": "o", "n_orders": "no", "spent": "sp", "first_order": "fo", "reversals": "rv", "revenue": "rev",
          "last_day": "ld", "day_mask": "dm", "n_days": "nd", "first_day": "fd", "contacts": "ct", "stage": "st", "stage_t": "stt",
          "nps_last": "nps", "nps_t": "npt", "complaints": "cp", "alerts": "al", "pub": "pub",
          "offs": "of", "skip": "sk", "erased": "er", "cases": "cs",
          "churn_episodes": "ce"}
_SHORT_C = {"id": "id", "channel": "ch", "category": "cat", "severity": "sev", "opened": "op", "first_seen": "fs",
            "ack": "ack", "resolved": "res", "status": "s", "status_t": "st", "satisfied": "sat", "satisfied_by": "sby",
            "compensation": "cmp", "reopened": "ro", "version": "ver", "recovery_episodes": "re"}
assert set(_SHORT) == set(_FIELDS) and set(_SHORT_C) == set(_COMPLAINT_FIELDS)
# (field, stored name, default, its type) of the fields encode_state writes unless at their
# default, in field order (the stored key order); customer_id is the table's key
# (decode_state(raw, customer_id) restores it); `v` is always written (no default type).
_STORED = tuple((name, _SHORT[name], _DEFAULTS[name], type(_DEFAULTS[name]) if name != "v" else None)
                for name in _FIELDS if name != "customer_id")
assert len(set(_SHORT.values())) == len(_SHORT) and len(set(_SHORT_C.values())) == len(_SHORT_C)
_LONG = {v: k for k, v in _SHORT.items()} | {"ids": "ids32"}   # "ids": the 32-bit ids of older states
_LONG_C = {v: k for k, v in _SHORT_C.items()}
