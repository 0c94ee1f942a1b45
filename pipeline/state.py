"""Per-customer state: what the core keeps between events, versioned and compact.

Times are epoch seconds (floats). Decayed accumulators (`acc`) are all referenced to the
state's watermark `wm` (latest event time seen): advancing `wm` scales them down, and a
late event adds its contribution already decayed to `wm`. That makes the result
independent of arrival order (up to float rounding).

Serialized with orjson; typical customer well under 1 KB (see tests/test_scoring.py).
Format 1 grew one optional field (`offs`, source offsets for exact redelivery dedup):
states written before it read as "no offsets known" and fall back to the event-id window.
It grew a second one, `erased` (see `erasure_marker`); states written before it have none;
and `spent` (paid amount over all purchases): states written before it judge spend from the
purchases they keep.

One encoding, no loss: `from_bytes(to_bytes(s))` is `s` (up to accumulators that are 0,
which read as absent) for every state the core produces, so the worker (which stores and
reloads a state after every micro-batch) and `cxpulse replay` (which keeps live states)
compute the same results whatever the batch boundaries. A field is left out only when it
equals its default (`nps_last = 0` is kept: it is an answer, not a default). The decayed
accumulators are stored exactly (`"acc"`: base64 of a little-endian u64 mask of the
non-zero slots followed by their float64 values). States written before that store `"acc"` as a list of numbers rounded to 7
significant digits and still read; so do states that dropped an `nps_last` of 0 (they read
as "no answer", as they did).
"""
from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import MISSING, dataclass, field, fields

import orjson

STATE_FORMAT = 1

MAX_IDS = 32            # recent event ids kept for deduplication
MAX_ORDERS = 6          # recent purchases (order id hash, second, amount) kept for cadence
MAX_REVERSALS = 8       # recent refunded/returned order ids
DAY_MASK_BITS = (1 << 64) - 1   # active-day bitmap over the last 64 days
MAX_CONTACTS = 8        # recent support/inquiry contact times (repeat-contact detection)
MAX_COMPLAINTS = 12     # complaint records kept (open ones first)
REVENUE_MONTHS = 13     # monthly revenue buckets kept (trailing 12 months + current)


# Every decayed accumulator the core keeps, in the order they are stored (a list, not a
# dict: the keys would be a third of a typical state). Add new ones at the end.
ACC_SLOTS = tuple(
    [f"{p}.{d}.{x}" for p in ("d", "b") for d in ("t", "r", "s", "a", "e") for x in ("w", "s")]
    + ["k.csat_n", "k.csat_ok", "k.nps_n", "k.nps_p", "k.nps_d"]
    + ["f.dt", "f.lr", "f.he", "f.lf", "f.rr", "f.fr", "f.sb"]
    + ["r.w", "r.s", "p.w", "p.s"]   # perceived experience: recent (weeks) and long-run means
    + ["f.no", "f.nd", "f.nr", "f.nn", "f.nc"]   # opportunities: orders, deliveries, rated answers, NPS answers, contacts
)
_ACC_INDEX = {k: i for i, k in enumerate(ACC_SLOTS)}


def short_hash(text: str) -> int:
    """32-bit id fingerprint for bounded dedup memory (collision odds ~1e-8 per event)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


@dataclass(slots=True)
class ComplaintRec:
    id: str
    channel: str = "other"
    category: str = "other"
    severity: str = "medium"
    opened: float | None = None      # time of the `opened` event
    first_seen: float = 0.0          # earliest event time of this complaint
    ack: float | None = None         # first answer: acknowledged/escalated/resolved/closed
    resolved: float | None = None    # first resolved/closed
    status: str = "opened"           # status of the latest event by event time
    status_t: float = 0.0
    satisfied: bool | None = None
    compensation: float = 0.0
    reopened: int = 0
    version: int = 0

    @property
    def start(self) -> float:
        return self.opened if self.opened is not None else self.first_seen

    @property
    def is_open(self) -> bool:
        return self.status not in ("resolved", "closed")


@dataclass(slots=True)
class CustomerState:
    v: int = STATE_FORMAT
    customer_id: str = ""
    version: int = 0                 # score version published last (monotonic)
    n: int = 0                       # events applied
    wm: float = 0.0                  # latest event time seen (watermark)
    ids: bytes = b""                 # packed (u32 hash) recent event ids
    acc: dict[str, float] = field(default_factory=dict)   # decayed accumulators, referenced to wm
    orders: list[list] = field(default_factory=list)         # [[hash, second, amount]] recent purchases, by time
    n_orders: int = 0
    spent: float = 0.0                               # paid amount over all n_orders (the usual basket = spent / n_orders)
    first_order: float | None = None
    last_day: int | None = None                      # latest active day (UTC day number)
    day_mask: int = 0                                # bit i: active on last_day - i
    n_days: int = 0                                  # distinct active days
    first_day: int | None = None
    reversals: list[list] = field(default_factory=list)      # [[hash, second, amount]] refunds/returns
    revenue: dict[str, float] = field(default_factory=dict)  # "YYYY-MM" -> net amount
    contacts: list[float] = field(default_factory=list)
    stage: str | None = None
    stage_t: float = 0.0
    nps_last: int | None = None
    nps_t: float = 0.0
    complaints: list[ComplaintRec] = field(default_factory=list)
    alerts: dict[str, list] = field(default_factory=dict)   # key -> [alert_id, severity, started_at]
    pub: list[float] = field(default_factory=list)          # last published [churn_risk, sla_breaches, open]
    offs: list[int] = field(default_factory=list)           # per input slot: [partition, last applied offset] * 3
    erased: float | None = None                             # events up to this time are erased (`cxpulse erase`)

    # --- erasure --------------------------------------------------------------------
    def erasure_marker(self, requested_at: float) -> "CustomerState":
        """What is kept of a customer after an erasure request: no personal data, only
        the time of the request (events that occurred up to it are dropped when they
        arrive later, e.g. still in the topic or redelivered), the source offsets already
        applied (redeliveries stay duplicates), and the score version (a later profile
        continues it, so a newer score always carries a higher version)."""
        return CustomerState(customer_id=self.customer_id, version=self.version, offs=list(self.offs),
                             erased=max(requested_at, self.erased or requested_at))

    def is_erased_event(self, occurred_at: float) -> bool:
        return self.erased is not None and occurred_at <= self.erased

    # --- exact redelivery dedup by source offset ----------------------------------
    # Input topics are co-partitioned by customer_id, so one customer's records in one
    # input topic sit in one partition at increasing offsets. The worker applies them in
    # offset order, so a record at or below the last applied offset of its slot is a
    # redelivery, however far back it reaches (the id window above holds only MAX_IDS).
    def redelivered(self, slot: int, partition: int, offset: int) -> bool:
        i = 2 * slot
        return i < len(self.offs) and self.offs[i] == partition and offset <= self.offs[i + 1]

    def applied_at(self, slot: int, partition: int, offset: int) -> None:
        i = 2 * slot
        if len(self.offs) <= i:
            self.offs.extend([-1] * (i + 2 - len(self.offs)))
        self.offs[i:i + 2] = [partition, offset]

    def fed_from(self, assigned: set[tuple[int, int]]) -> bool:
        """Whether this customer's input partitions are among `assigned` ((slot, partition)
        pairs): after a rebalance a worker's in-memory table still holds the customers of
        partitions it gave away, and only the owner may evaluate or store them. A state that
        records no partition (written before offsets were kept) counts as fed from here."""
        fed = {(i // 2, self.offs[i]) for i in range(0, len(self.offs) - 1, 2) if self.offs[i] >= 0}
        return not fed or bool(fed & assigned)

    # --- dedup ids ----------------------------------------------------------------
    def seen(self, h: int) -> bool:
        packed = struct.pack(">I", h)
        ids = self.ids
        return any(ids[i:i + 4] == packed for i in range(0, len(ids), 4))

    def remember(self, h: int) -> None:
        self.ids = (self.ids + struct.pack(">I", h))[-4 * MAX_IDS:]

    # --- serialization -----------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact JSON: fields equal to their default are left out. (orjson serializes
        the containers as they are; no deep copy as dataclasses.asdict would make.)"""
        d = {}
        for name in _FIELDS:
            v = getattr(self, name)
            if name == "customer_id" or (name != "v" and _is_default(v, _DEFAULTS[name])):
                continue   # customer_id is the table's key: from_bytes(raw, customer_id) restores it
            d[_SHORT[name]] = v
        if self.ids:
            d[_SHORT["ids"]] = base64.b64encode(self.ids).decode()
        if self.acc:
            d[_SHORT["acc"]] = _pack_acc(self.acc)
        if self.complaints:
            d[_SHORT["complaints"]] = [
                {_SHORT_C[k]: v for k in _COMPLAINT_FIELDS
                 if not _is_default(v := getattr(c, k), _COMPLAINT_DEFAULTS[k])}
                for c in self.complaints
            ]
        # Copy to an exact-size object: orjson's result keeps its larger working buffer
        # allocated, which costs several KB per stored state in the table.
        return bytes(memoryview(orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS)))

    @classmethod
    def from_bytes(cls, raw: bytes, customer_id: str = "") -> "CustomerState":
        d = {_LONG.get(k, k): v for k, v in orjson.loads(raw).items()}
        d.setdefault("customer_id", customer_id)
        d["acc"] = _unpack_acc(d.get("acc", ()))
        fmt = d.get("v")
        if fmt != STATE_FORMAT:
            raise ValueError(f"unsupported customer state format {fmt!r} (this build reads {STATE_FORMAT})")
        d["ids"] = base64.b64decode(d.get("ids", ""))
        d["complaints"] = [ComplaintRec(**{_LONG_C.get(k, k): v for k, v in c.items()})
                           for c in d.get("complaints", [])]
        return cls(**d)


def _is_default(value: object, default: object) -> bool:
    """Whether a field holds its default: same type and equal (0 is not None, False is not 0)."""
    return type(value) is type(default) and value == default or (
        type(default) is float and type(value) is int and value == 0)


def _pack_acc(acc: dict[str, float]) -> str:
    """Exact and compact: a little-endian u64 mask of the non-zero slots, then their float64s."""
    unknown = acc.keys() - _ACC_INDEX.keys()
    if unknown:
        raise ValueError(f"accumulators without a slot in ACC_SLOTS: {sorted(unknown)}")
    present = sorted((_ACC_INDEX[k], v) for k, v in acc.items() if v)
    mask = 0
    for i, _ in present:
        mask |= 1 << i
    return base64.b64encode(struct.pack(f"<Q{len(present)}d", mask, *(v for _, v in present))).decode()


def _unpack_acc(stored: str | list) -> dict[str, float]:
    if isinstance(stored, str):   # this format: mask + float64s
        raw = base64.b64decode(stored)
        (mask,) = struct.unpack_from("<Q", raw)
        values = struct.unpack_from(f"<{(len(raw) - 8) // 8}d", raw, 8)
        slots = [i for i in range(len(ACC_SLOTS)) if mask >> i & 1]
        return dict(zip((ACC_SLOTS[i] for i in slots), values))
    return {ACC_SLOTS[i]: float(v) for i, v in enumerate(stored) if v}   # before: a list of numbers


def _default_of(f) -> object:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING   # MISSING: always stored


_FIELDS = tuple(f.name for f in fields(CustomerState))
_COMPLAINT_FIELDS = tuple(f.name for f in fields(ComplaintRec))
_DEFAULTS = {f.name: _default_of(f) for f in fields(CustomerState)}
_COMPLAINT_DEFAULTS = {f.name: _default_of(f) for f in fields(ComplaintRec)}

# Stored field names (short: the state is stored once per customer). "v" stays "v".
_SHORT = {"v": "v", "customer_id": "c", "version": "ver", "n": "n", "wm": "wm", "ids": "ids", "acc": "acc",
          "orders": "o", "n_orders": "no", "spent": "sp", "first_order": "fo", "reversals": "rv", "revenue": "rev",
          "last_day": "ld", "day_mask": "dm", "n_days": "nd", "first_day": "fd", "contacts": "ct", "stage": "st", "stage_t": "stt",
          "nps_last": "nps", "nps_t": "npt", "complaints": "cp", "alerts": "al", "pub": "pub",
          "offs": "of", "erased": "er"}
_SHORT_C = {"id": "id", "channel": "ch", "category": "cat", "severity": "sev", "opened": "op", "first_seen": "fs",
            "ack": "ack", "resolved": "res", "status": "s", "status_t": "st", "satisfied": "sat",
            "compensation": "cmp", "reopened": "ro", "version": "ver"}
assert set(_SHORT) == set(_FIELDS) and set(_SHORT_C) == set(_COMPLAINT_FIELDS)
assert len(set(_SHORT.values())) == len(_SHORT) and len(set(_SHORT_C.values())) == len(_SHORT_C)
_LONG = {v: k for k, v in _SHORT.items()}
_LONG_C = {v: k for k, v in _SHORT_C.items()}
