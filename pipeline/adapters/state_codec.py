"""How a customer's state is stored: compact JSON (orjson), defaults left out, short field
names and the decayed accumulators as a positional list (ACC_SLOTS). The Faust table keeps
these bytes per customer; the Quix peer keeps them in its state store.

Format 1 (`v`) grew optional fields over time (`offs`, `erased`, `spent`, `cases`); a state
written before one of them reads with its default (see pipeline/domain/state.py). The
dedup ids are stored as `sid` (64-bit fingerprint + event second each); a state written
before them holds 32-bit fingerprints as `ids`, read as entries of its watermark's second.
"""
from __future__ import annotations

import base64
from dataclasses import fields

import orjson

from pipeline.domain.state import (
    DIM_KEY, FACTOR_KEY, OPPORTUNITY_KEY, STATE_FORMAT, ComplaintRec, CustomerState, seen_entries_of_legacy_ids,
)

# Every decayed accumulator the core keeps, in the order they are stored (a list, not a
# dict: the keys would be a third of a typical state). Add new ones at the end.
ACC_SLOTS = tuple(
    [f"{p}.{d}.{x}" for p in ("d", "b") for d in DIM_KEY.values() for x in ("w", "s")]
    + ["k.csat_n", "k.csat_ok", "k.nps_n", "k.nps_p", "k.nps_d"]
    + ["f.dt", "f.lr", "f.he", "f.lf", "f.rr", "f.fr", "f.sb"]
    + ["r.w", "r.s", "p.w", "p.s"]   # perceived experience: recent (weeks) and long-run means
    + ["f.no", "f.nd", "f.nr", "f.nn", "f.nc"]   # opportunities: orders, deliveries, rated answers, NPS answers, contacts
)
_ACC_INDEX = {k: i for i, k in enumerate(ACC_SLOTS)}
assert set(FACTOR_KEY.values()) | set(OPPORTUNITY_KEY.values()) <= set(ACC_SLOTS)


def encode_state(state: CustomerState) -> bytes:
    """Compact JSON: defaults are left out. (orjson serializes the containers as they
    are; no deep copy as dataclasses.asdict would make.)"""
    d = {}
    for name in _FIELDS:
        v = getattr(state, name)
        if v in (None, [], {}, "", 0, b"") and name != "v" or name == "customer_id":
            continue   # customer_id is the table's key: decode_state(raw, customer_id) restores it
        d[_SHORT[name]] = v
    if state.ids:
        d[_SHORT["ids"]] = base64.b64encode(state.ids).decode()
    if state.acc:
        unknown = state.acc.keys() - _ACC_INDEX.keys()
        if unknown:
            raise ValueError(f"accumulators without a slot in ACC_SLOTS: {sorted(unknown)}")
        slots = [0.0] * len(ACC_SLOTS)
        for k, v in state.acc.items():
            if v > 1e-9:
                slots[_ACC_INDEX[k]] = float(f"{v:.7g}")
        while slots and slots[-1] == 0.0:
            slots.pop()
        d[_SHORT["acc"]] = [x if x else 0 for x in slots]
    if state.complaints:
        d[_SHORT["complaints"]] = [
            {_SHORT_C[k]: v for k in _COMPLAINT_FIELDS
             if (v := getattr(c, k)) is not None and not (type(v) in (int, float) and v == 0)}
            for c in state.complaints
        ]
    # Copy to an exact-size object: orjson's result keeps its larger working buffer
    # allocated, which costs several KB per stored state in the table.
    return bytes(memoryview(orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS)))


def decode_state(raw: bytes, customer_id: str = "") -> CustomerState:
    d = {_LONG.get(k, k): v for k, v in orjson.loads(raw).items()}
    d.setdefault("customer_id", customer_id)
    d["acc"] = {ACC_SLOTS[i]: float(v) for i, v in enumerate(d.get("acc", ())) if v}
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


_FIELDS = tuple(f.name for f in fields(CustomerState))
_COMPLAINT_FIELDS = tuple(f.name for f in fields(ComplaintRec))

# Stored field names (short: the state is stored once per customer). "v" stays "v".
_SHORT = {"v": "v", "customer_id": "c", "version": "ver", "n": "n", "wm": "wm", "ids": "sid", "acc": "acc",
          "orders": "o", "n_orders": "no", "spent": "sp", "first_order": "fo", "reversals": "rv", "revenue": "rev",
          "last_day": "ld", "day_mask": "dm", "n_days": "nd", "first_day": "fd", "contacts": "ct", "stage": "st", "stage_t": "stt",
          "nps_last": "nps", "nps_t": "npt", "complaints": "cp", "alerts": "al", "pub": "pub",
          "offs": "of", "erased": "er", "cases": "cs"}
_SHORT_C = {"id": "id", "channel": "ch", "category": "cat", "severity": "sev", "opened": "op", "first_seen": "fs",
            "ack": "ack", "resolved": "res", "status": "s", "status_t": "st", "satisfied": "sat",
            "compensation": "cmp", "reopened": "ro", "version": "ver"}
assert set(_SHORT) == set(_FIELDS) and set(_SHORT_C) == set(_COMPLAINT_FIELDS)
assert len(set(_SHORT.values())) == len(_SHORT) and len(set(_SHORT_C.values())) == len(_SHORT_C)
_LONG = {v: k for k, v in _SHORT.items()} | {"ids": "ids32"}   # "ids": the 32-bit ids of older states
_LONG_C = {v: k for k, v in _SHORT_C.items()}
