"""Per-customer state: what the core keeps between events, versioned and compact.

Times are epoch seconds (floats). Decayed accumulators (`acc`) are all referenced to the
state's watermark `wm` (latest event time seen): advancing `wm` scales them down, and a
late event adds its contribution already decayed to `wm`. That makes the result
independent of arrival order (up to float rounding).

Stored by pipeline/adapters/state_codec.py (compact JSON; typical customer well under 1 KB,
see the state-size tests). Format 1 grew one optional field (`offs`, source offsets for exact redelivery dedup):
states written before it read as "no offsets known" and fall back to the event-id window.
It grew a second one, `erased` (see `erasure_marker`); states written before it have none;
and `spent` (paid amount over all purchases): states written before it judge spend from the
purchases they keep; and `cases` (what operators did about each alert): none before it;
and `skip` (held source offsets below the last applied one, see `redelivered`): none before it;
and `churn_episodes` (churn alert episodes started, which number their alert ids): 0 before it;
and a complaint's `recovery_episodes` (the same for its failed-recovery alerts): 0 before it.
Event-id dedup moved from the last 32 ids as 32-bit fingerprints
(stored as `ids`) to every id within the lateness bound as 64-bit fingerprints with the
event second (stored as `sid`, see `seen`): a state written before reads its 32-bit ids
as entries of its watermark's second, which leave the window one lateness bound later.
Order fingerprints in `orders` / `reversals` grew from 32 to 64 bits the same way: an
entry written before still matches its order by the 32-bit fingerprint.

The stored form loses nothing (pipeline/adapters/state_codec.py: a stored and reloaded state
is the same state, `nps_last = 0` included, accumulators exact), so the worker, which stores
and reloads a state after every micro-batch, and `cxpulse replay` compute the same results.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.domain.vocabulary import DIMENSIONS

STATE_FORMAT = 1

MAX_SEEN_IDS = 4096     # event ids kept for deduplication: those within the lateness bound, at most this many,
MIN_SEEN_IDS = 6        # and at least the last 6 whatever their age (a redelivery of those is a duplicate, not too_late)
MAX_ORDERS = 6          # recent purchases (order id hash, second, amount) kept for cadence
MAX_REVERSALS = 8       # recent refunded/returned order ids
DAY_MASK_BITS = (1 << 64) - 1   # active-day bitmap over the last 64 days
MAX_CONTACTS = 8        # recent support/inquiry contact times (repeat-contact detection)
MAX_COMPLAINTS = 12     # complaint records kept: closed ones beyond it are folded first; open ones never are
                        # (they are capped by Settings.max_open_complaints instead)
REVENUE_MONTHS = 13     # monthly revenue buckets kept (trailing 12 months + current)


# Short accumulator keys keep the stored state small (`acc`): "d.r.w" = decayed weight of
# reliability's evidence. The keys' first letter names the decay rate (ScoringParams.rates):
# d/b dimension evidence (score, baseline), k csat/nps counts, f churn-factor counters and
# their chances, r/p perceived experience (recent, long-run). Their stored order is
# pipeline/adapters/state_codec.ACC_SLOTS.
DIM_KEY = dict(zip(DIMENSIONS, "trsae"))
# Counters of the churn factors that are incidents (decayed like the factor).
FACTOR_KEY = {"detractor": "f.dt", "low_ratings": "f.lr", "high_effort": "f.he", "late_fulfilment": "f.lf",
              "refunds_returns": "f.rr", "failed_recovery": "f.fr", "sla_breaches_folded": "f.sb"}
FACTOR_OF_KEY = {v: k for k, v in FACTOR_KEY.items()}
# The same incidents counted again with a one-week half-life ("q", quick): beside the 45-day
# counters they tell a fresh incident from an old one (the learned churn model's features).
RECENT_FACTOR_KEY = {name: "q" + key[1:] for name, key in FACTOR_KEY.items()}
# The chances each incident factor had (decayed like the factor): late deliveries per
# delivery, refunds/returns per order, low ratings per rated answer, detractors per NPS
# answer, effort per contact. Churn counts incidents above the population's usual rate.
OPPORTUNITY_KEY = {"refunds_returns": "f.no", "late_fulfilment": "f.nd", "low_ratings": "f.nr",
                   "detractor": "f.nn", "high_effort": "f.nc"}


def fingerprint(text: str) -> int:
    """64-bit id fingerprint (event and order ids). A new id is taken for one already seen
    with probability k / 2^64 when k ids are remembered: with k = 4096 (MAX_SEEN_IDS, a
    customer's whole dedup window at most) that is 2.2e-16 per event, so about 2e-7 over
    10^9 events; the 32-bit fingerprints used before collided at 7.5e-9 per event with only
    32 ids kept (e.g. `tp-18044` / `tp-39193`), 1 in about 10^8 events."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def legacy_fingerprint(text: str) -> int:
    """The 32-bit fingerprint states written before format 1's 64-bit ids hold (event and
    order ids); case action ids (`cases`, pipeline/domain/cases) are still kept as these."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


_SEEN = struct.Struct(">QI")            # fingerprint, event second (u32: the plausible window ends before 2106)
_LEGACY_MARK = 0xFFFFFFFF << 32         # a 32-bit fingerprint read from an old state, in a 64-bit slot
_LEGACY_PREFIX = b"\xff\xff\xff\xff"     # the packed (big-endian) form of _LEGACY_MARK's high half


def _holds(ids: bytes, fingerprint8: bytes) -> bool:
    """Whether a packed entry of `ids` starts with these 8 bytes (big-endian fingerprint)."""
    i = ids.find(fingerprint8)
    while i >= 0:
        if i % _SEEN.size == 0:
            return True
        i = ids.find(fingerprint8, i + 1)
    return False


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
    # which event `satisfied` came from: [event time, status rank, 1 if dissatisfied] (the
    # greatest wins, whatever the arrival order); None in states written before it was kept
    satisfied_by: list | None = None
    compensation: float = 0.0
    reopened: int = 0
    version: int = 0
    recovery_episodes: int = 0       # failed-recovery alert episodes started: the next one's number (its alert id)

    @property
    def start(self) -> float:
        return self.opened if self.opened is not None else self.first_seen

    @property
    def is_open(self) -> bool:
        return self.status not in ("resolved", "closed")

    # Two failed-recovery rules, for two uses:
    @property
    def recovery_ever_failed(self) -> bool:
        """Resolved to the customer's dissatisfaction, or ever reopened (even if resolved
        again since): the churn model's rule — the customer lived through a failed recovery."""
        return self.reopened > 0 or self.satisfied is False

    @property
    def recovery_failure_stands(self) -> bool:
        """Resolved to the customer's dissatisfaction, or reopened and still open: the alert's
        rule — there is a failed recovery to act on now (a reopened complaint resolved again
        resolves the alert)."""
        return self.satisfied is False or (self.reopened > 0 and self.is_open)


@dataclass(slots=True)
class CustomerState:
    v: int = STATE_FORMAT
    customer_id: str = ""
    version: int = 0                 # score version published last (monotonic)
    n: int = 0                       # events applied
    wm: float = 0.0                  # latest event time seen (watermark)
    ids: bytes = b""                 # packed (u64 fingerprint, u32 event second) ids within the lateness bound
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
    pub: list[float] = field(default_factory=list)          # last published [churn_risk, sla_breaches, open(, early_warning)]
    offs: list[int] = field(default_factory=list)           # per input slot: [partition, last applied offset] * 3
    skip: list[int] = field(default_factory=list)           # [slot, offset] * k: below the last applied, not applied yet
    erased: float | None = None                             # events up to this time are erased (`cxpulse erase`)
    cases: dict[str, dict] = field(default_factory=dict)    # alert id -> case (pipeline/domain/case.py)
    churn_episodes: int = 0                                 # churn alert episodes started: the next one's number (its alert id)

    # --- erasure --------------------------------------------------------------------
    def erasure_marker(self, requested_at: float) -> "CustomerState":
        """What is kept of a customer after an erasure request: no personal data, only
        the time of the request (events that occurred up to it are dropped when they
        arrive later, e.g. still in the topic or redelivered), the source offsets already
        applied (redeliveries stay duplicates), the score version (a later profile
        continues it, so a newer score always carries a higher version) and the number of
        churn alert episodes (a later episode gets an id of its own: the erased customer's
        ids stay counted in cx_alert_facts)."""
        return CustomerState(customer_id=self.customer_id, version=self.version, offs=list(self.offs),
                             skip=list(self.skip), erased=max(requested_at, self.erased or requested_at),
                             churn_episodes=self.churn_episodes)

    def is_erased_event(self, occurred_at: float) -> bool:
        return self.erased is not None and occurred_at <= self.erased

    # --- exact redelivery dedup by source offset ----------------------------------
    # Input topics are co-partitioned by customer_id, so one customer's records in one
    # input topic sit in one partition at increasing offsets. The worker applies them in
    # offset order, so a record at or below the last applied offset of its slot is a
    # redelivery, however far back it reaches (the id window below covers the lateness bound).
    # One exception: a learning worker holds a record later than the next event-time tick
    # and applies the records after it that are before the tick (pipeline/service/tick_gate.py).
    # The held offsets below an applied one are kept in `skip` until they are applied, so
    # they are not taken for redeliveries (after a restart too: no input offset is committed
    # at or past a held record), or until they end not applied (a duplicate id, too late:
    # `settled`).
    def redelivered(self, slot: int, partition: int, offset: int) -> bool:
        i = 2 * slot
        if not (i < len(self.offs) and self.offs[i] == partition and offset <= self.offs[i + 1]):
            return False
        return not (self.skip and self._skipped(slot, offset))

    def _skipped(self, slot: int, offset: int) -> bool:
        skip = self.skip
        return any(skip[j] == slot and skip[j + 1] == offset for j in range(0, len(skip), 2))

    def applied_at(self, slot: int, partition: int, offset: int, held: Iterable[int] = ()) -> None:
        """The record at `offset` of the slot's partition is applied. `held`: offsets of this
        customer's records of the slot that are held, not applied yet (those below `offset`
        stay new until they are)."""
        i = 2 * slot
        if len(self.offs) <= i:
            self.offs.extend([-1] * (i + 2 - len(self.offs)))
        if self.offs[i] == partition and offset <= self.offs[i + 1]:   # a skipped record, applied now
            self._unskip(slot, offset)
            return
        last = self.offs[i + 1] if self.offs[i] == partition else -1
        for held_offset in held:
            if last < held_offset < offset and not self._skipped(slot, held_offset):
                self.skip += [slot, held_offset]
        self.offs[i:i + 2] = [partition, offset]

    def settled(self, slot: int, partition: int, offset: int) -> bool:
        """A record that is no redelivery ended not applied (a duplicate id, too late): if it
        was a held one below the last applied offset, its skip entry goes (it is done with;
        a redelivery of it is one from now on). True when an entry went."""
        i = 2 * slot
        if not (self.skip and i < len(self.offs) and self.offs[i] == partition and offset <= self.offs[i + 1]):
            return False
        self._unskip(slot, offset)
        return True

    def _unskip(self, slot: int, offset: int) -> None:
        skip = self.skip
        self.skip = [x for j in range(0, len(skip), 2) if (skip[j], skip[j + 1]) != (slot, offset)
                     for x in skip[j:j + 2]]

    def fed_from(self, assigned: set[tuple[int, int]]) -> bool:
        """Whether this customer's input partitions are among `assigned` ((slot, partition)
        pairs): after a rebalance a worker's in-memory table still holds the customers of
        partitions it gave away, and only the owner may evaluate or store them. A state that
        records no partition (written before offsets were kept) counts as fed from here."""
        fed = {(i // 2, self.offs[i]) for i in range(0, len(self.offs) - 1, 2) if self.offs[i] >= 0}
        return not fed or bool(fed & assigned)

    # --- dedup ids ----------------------------------------------------------------
    # Every event id applied within the lateness bound is remembered (older events are
    # `too_late` anyway, so their ids are not needed beyond the last MIN_SEEN_IDS, kept so
    # that their redelivery counts as a duplicate): 12 bytes each (16 base64 characters in
    # the stored state), at most MAX_SEEN_IDS per customer (48 KiB, 64 KiB stored) -- a
    # customer with 10 events an hour and a 1-hour bound keeps 10 (120 bytes). Beyond
    # MAX_SEEN_IDS within one lateness bound, the oldest ids are forgotten first.
    def seen(self, event_id: str) -> bool:
        """Whether an entry holds the id's fingerprint (or, read from an old state, its 32-bit
        one): a search of the packed bytes for the fingerprint's 8 bytes at an entry start
        (the same test as comparing every entry, without unpacking them)."""
        ids = self.ids
        if _holds(ids, hashlib.blake2b(event_id.encode(), digest_size=8).digest()):
            return True
        return _LEGACY_PREFIX in ids and _holds(
            ids, _LEGACY_PREFIX + hashlib.blake2b(event_id.encode(), digest_size=4).digest())

    def remember(self, event_id: str, t: float, horizon: float) -> None:
        """Remember an id applied at event time `t`; forget those before `horizon`."""
        self.forget_ids_before(horizon)
        entry = _SEEN.pack(fingerprint(event_id), max(0, min(int(t), 0xFFFFFFFF)))
        self.ids = (self.ids + entry)[-_SEEN.size * MAX_SEEN_IDS:]

    def forget_ids_before(self, horizon: float) -> None:
        """Forget ids of events before `horizon`, except the last MIN_SEEN_IDS."""
        n = len(self.ids) // _SEEN.size
        if n > MIN_SEEN_IDS and _SEEN.unpack_from(self.ids)[1] + 1 <= horizon:
            entries = list(_SEEN.iter_unpack(self.ids))
            old, recent = entries[:n - MIN_SEEN_IDS], entries[n - MIN_SEEN_IDS:]
            self.ids = b"".join(_SEEN.pack(h, t) for h, t in old if t + 1 > horizon) + \
                b"".join(_SEEN.pack(h, t) for h, t in recent)

    @property
    def seen_ids(self) -> int:
        return len(self.ids) // _SEEN.size


def seen_entries_of_legacy_ids(legacy: bytes, wm: float) -> bytes:
    """The `ids` of a state written before 64-bit ids: its 32-bit fingerprints, read as
    entries of its watermark's second (they leave the dedup window one lateness bound later)."""
    second = max(0, min(int(wm), 0xFFFFFFFF))
    return b"".join(_SEEN.pack(_LEGACY_MARK | h, second)
                    for (h,) in struct.iter_unpack(">I", legacy[:len(legacy) // 4 * 4]))
