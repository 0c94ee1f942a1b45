"""The core's entry point for streams: decode raw records, apply them per customer in
micro-batches, and say what to publish and store. Used unchanged by the Faust agents
(the shell) and by `cxpulse replay`; no Kafka or ClickHouse here.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AbstractSet, Callable, Iterable, Mapping, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

from pipeline.domain import alerts
from pipeline.domain.churn import PopulationParams, fit_population
from pipeline.domain.churn_model import ChurnModel, learned_profile
from pipeline.domain.scoring import Profile, ScoringParams, apply, iso, profile, score_record
from pipeline.domain.case import alert_resolved, apply_action, open_case, prune_cases
from schemas.id_policy import id_problem
from pipeline.domain.plausible_time import PlausibleWindow
from pipeline.domain.state import CustomerState, legacy_fingerprint
from pipeline.service.sweep_index import next_deadline
from schemas.actions import ActionRecord, parse_action
from schemas.events import EVENT_ADAPTER, Complaint, Order, Timestamp, Touchpoint
from schemas.outputs import DeadLetterReason
from schemas.records import AlertDict, DeadLetterDict, ScoreDict

MAX_RECORD_BYTES = 64 * 1024
Event = Touchpoint | Order | Complaint
ID_FIELDS = ("event_id", "customer_id", "staff_id", "order_id", "complaint_id")
TIME_FIELDS = ("occurred_at", "promised_at", "fulfilled_at")
_TIMESTAMP: TypeAdapter = TypeAdapter(Timestamp)
OFFSET_SLOT = {"touchpoint": 0, "order": 1, "complaint": 2}   # CustomerState.offs slot per event type (= input topic)


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class BatchResult:
    states: dict[str, CustomerState] = field(default_factory=dict)   # changed states, to store
    scores: list[ScoreDict] = field(default_factory=list)
    alerts: list[AlertDict] = field(default_factory=list)
    dead_letters: list[DeadLetterDict] = field(default_factory=list)
    events: list[tuple[Event, str]] = field(default_factory=list)   # applied events with the tier after the batch
    complaints: list[dict] = field(default_factory=list)
    case_events: list[dict] = field(default_factory=list)          # applied operator actions (cx_case_events rows)
    applied: int = 0
    duplicates: int = 0
    consumed: dict[str, int] = field(default_factory=dict)          # by topic
    applied_by_topic: dict[str, int] = field(default_factory=dict)
    duplicates_by_topic: dict[str, int] = field(default_factory=dict)
    erased_by_topic: dict[str, int] = field(default_factory=dict)     # events of erased customers, dropped
    past_sla: dict[str, tuple[str, int]] = field(default_factory=dict)  # customer -> (tier, open complaints past SLA)
    latest_event_time: float = 0.0
    # customer -> (next deadline, evaluated as of): for the sweep index (pipeline/service/sweep_index.py)
    deadlines: dict[str, tuple[float, float]] = field(default_factory=dict)

    def merge(self, other: "BatchResult") -> None:
        """Fold a later result into this one (states and scores: the later one wins)."""
        self.states.update(other.states)
        scored = {s["customer_id"] for s in other.scores}
        self.scores = [s for s in self.scores if s["customer_id"] not in scored] + other.scores
        self.alerts += other.alerts
        self.dead_letters += other.dead_letters
        self.events += other.events
        self.complaints += other.complaints
        self.case_events += other.case_events
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.past_sla.update(other.past_sla)
        self.deadlines.update(other.deadlines)
        for mine, theirs in ((self.consumed, other.consumed), (self.applied_by_topic, other.applied_by_topic),
                             (self.duplicates_by_topic, other.duplicates_by_topic),
                             (self.erased_by_topic, other.erased_by_topic)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        self.latest_event_time = max(self.latest_event_time, other.latest_event_time)


def event_time(value: bytes | None) -> float | None:
    """The record's `occurred_at` (epoch seconds) if it has one the contract reads (the schema's
    own timestamp type), without validating the rest (`Core.decode` does): what the worker
    aligns the input topics on. None when there is none (the record is dead-lettered)."""
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
        return _TIMESTAMP.validate_python(obj["occurred_at"]).timestamp() if isinstance(obj, dict) else None
    except Exception:   # not JSON, no occurred_at, not a time
        return None


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _reason_of(exc: ValidationError) -> DeadLetterReason:
    """The dead-letter reason of a schema error: personal data in an id first (it is what
    an operator must hear about), then a bad id, then not JSON, then any other breach."""
    kinds = {e["type"] for e in exc.errors(include_url=False)}
    if "personal_data" in kinds:
        return "personal_data"
    if "invalid_id" in kinds:
        return "invalid_id"
    return "invalid_json" if kinds & {"json_invalid", "json_type"} else "invalid_record"


def dead_letter(rec: RawRecord, reason: DeadLetterReason, error: str, received_at: float) -> DeadLetterDict:
    """The `cx.deadletter` record for `rec`; `received_at` is the shell's wall-clock time."""
    return {
        "schema_version": 1,
        "reason": reason,
        "error": error[:2000],
        "source_topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key_b64": base64.b64encode(rec.key).decode() if rec.key is not None else None,
        "original_b64": base64.b64encode(rec.value or b"").decode(),
        "received_at": iso(received_at),
    }



_T = TypeVar("_T")


def _parse(rec: RawRecord, parse: Callable[[bytes], _T], received_at: float) -> _T | DeadLetterDict:
    """The first checks every input record gets (a value, within MAX_RECORD_BYTES, valid JSON
    of its model): the parsed record, or the dead letter saying why not."""
    value = rec.value
    if value is None:
        return dead_letter(rec, "invalid_json", "empty message (null value)", received_at)
    if len(value) > MAX_RECORD_BYTES:
        return dead_letter(rec, "too_large", f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}", received_at)
    try:
        return parse(value)
    except ValidationError as exc:
        return dead_letter(rec, _reason_of(exc), _error_text(exc), received_at)
    except (ValueError, RecursionError) as exc:
        return dead_letter(rec, "invalid_json", str(exc) or type(exc).__name__, received_at)

class Core:
    """Scoring parameters + population model + the topic contract, bound once. Built from
    the settings by pipeline/bootstrap.py (`build_core`); everything arrives as values."""

    def __init__(self, params: ScoringParams, population: PopulationParams, topic_type: Mapping[str, str],
                 window: PlausibleWindow | None = None, currency: str = "EUR", id_pattern: str = ""):
        self.params = params
        self.rates = params.rates
        self._population = population
        self.topic_type = dict(topic_type)   # input topic -> the record `type` it carries
        self.window = window or PlausibleWindow()   # plausible event times (its ceiling follows received_at)
        self.currency = currency                     # the business currency (ISO 4217)
        self.id_pattern = re.compile(id_pattern) if id_pattern else None   # narrows the contract's id pattern
        # the learned churn model that scores churn_risk (pipeline/domain/churn_model.py);
        # None: the hand-set model serves (cold start). Set by the learning loop.
        self.churn_model: ChurnModel | None = None
        # the early-warning model (P(leaves within H | still here)) trained with the latest
        # learned model; None: no early_warning in the score records
        self.early_warning: ChurnModel | None = None

    @property
    def population(self) -> PopulationParams:
        """The churn model's population parameters in use (changed by `refit_population`, or
        `use_population`)."""
        return self._population

    def use_population(self, params: PopulationParams) -> None:
        """Use `params` from now on (a restarted learning worker: those of its last re-fit)."""
        self._population = params

    def refit_population(self, states: Iterable[CustomerState], as_of: float) -> PopulationParams:
        """Re-fit the population parameters from these customers' states as of `as_of`
        (the worker on a timer, replay at event-time ticks) and use them from now on."""
        self._population = fit_population(states, self._population, as_of=as_of)
        return self._population

    # --- decoding ---------------------------------------------------------------------
    def decode(self, rec: RawRecord, expected_type: str | None = None, *, received_at: float,
               keyed: bool = False) -> Event | DeadLetterDict:
        """A validated event, or a dead-letter record saying why not (stamped `received_at`).
        `received_at` is the processing clock: the shell's wall time, stamped on dead letters and
        the plausible window's ceiling; `keyed`: the record comes from Kafka and must be keyed
        by its customer_id."""
        ev = _parse(rec, EVENT_ADAPTER.validate_json, received_at)
        if isinstance(ev, dict):
            return ev
        expected = expected_type or self.topic_type.get(rec.topic)
        if expected is not None and ev.type != expected:
            return dead_letter(rec, "wrong_topic", f"a {ev.type} record on {rec.topic}, which carries {expected} records",
                               received_at)
        if keyed and rec.key is None:
            return dead_letter(rec, "wrong_key", "message without a key (records must be keyed by customer_id, "
                                                 "or they spread over partitions)", received_at)
        if rec.key is not None and rec.key != ev.customer_id.encode():
            return dead_letter(rec, "wrong_key", "message key differs from customer_id (records must be keyed by customer_id)",
                               received_at)
        if self.id_pattern is not None:
            for name in ID_FIELDS:
                v = getattr(ev, name, None)
                if v is not None and (bad_id := id_problem(v, self.id_pattern)) is not None:
                    return dead_letter(rec, bad_id[0], f"{name}: {bad_id[1]}", received_at)
        bad_time = self.window.problem({f: getattr(ev, f, None) for f in TIME_FIELDS}, received_at)
        if bad_time is not None:
            return dead_letter(rec, "implausible_time", bad_time, received_at)
        if isinstance(ev, Order) and ev.currency != self.currency:
            return dead_letter(rec, "unsupported_currency",
                               f"currency {ev.currency}: this deployment sums revenue in {self.currency} only "
                               f"(CXPULSE_CURRENCY)", received_at)
        return ev

    # --- micro-batches ------------------------------------------------------------------
    def process(self, records: Iterable[RawRecord], load: Callable[[str], CustomerState | None],
                expected_type: Callable[[RawRecord], str | None] | None = None, *,
                received_at: float, source_offsets: bool = False,
                held: Callable[[RawRecord], Iterable[int]] | None = None) -> BatchResult:
        """Apply a micro-batch received at wall-clock `received_at` (the time stamped on its
        dead letters). `load(customer_id)` returns the stored state (or None).
        Scores are coalesced: one per touched customer, as of its latest event.

        `source_offsets=True` (the worker: records carry real Kafka partitions/offsets and
        arrive in offset order per partition) also deduplicates exactly by source offset:
        a record at or below the customer's last applied offset for its topic is a
        redelivery and counts as a duplicate, however many events ago it was applied.
        Replay and tests feed synthetic offsets and leave it off. Records from Kafka must
        carry their customer_id as key: with `source_offsets` a null key is `wrong_key`.
        `held(record)`: the offsets of the held records (not applied yet) of the record's
        customer and topic (a learning worker's tick gate); they stay new for the dedup.

        `received_at` is also the processing clock (epoch seconds; the worker: the wall
        clock of the batch; replay: its `clock`): timestamps later than it plus the allowed
        skew are dead-lettered `implausible_time` (pipeline/domain/plausible_time.py)."""
        out = BatchResult()
        touched: dict[str, CustomerState] = out.states
        complaint_ids: dict[str, set[str]] = {}
        applied_events: list[Event] = []
        settled: dict[str, CustomerState] = {}   # stored, not scored: a held record ended not applied
        for rec in records:
            out.consumed[rec.topic] = out.consumed.get(rec.topic, 0) + 1
            ev = self.decode(rec, expected_type(rec) if expected_type else None, received_at=received_at,
                             keyed=source_offsets)
            if isinstance(ev, dict):
                out.dead_letters.append(ev)
                continue
            cid = ev.customer_id
            state = touched.get(cid) or settled.get(cid)
            if state is None:
                state = load(cid) or CustomerState(customer_id=cid)
            slot = OFFSET_SLOT[ev.type]
            if source_offsets and state.redelivered(slot, rec.partition, rec.offset):
                outcome = "duplicate"
            elif state.is_erased_event(ev.occurred_at.timestamp()):
                # the customer asked to be erased after this happened: drop it (no dead
                # letter either, which would keep the record's bytes)
                out.erased_by_topic[rec.topic] = out.erased_by_topic.get(rec.topic, 0) + 1
                if source_offsets:
                    state.applied_at(slot, rec.partition, rec.offset, held(rec) if held else ())
                touched[cid] = state
                continue
            else:
                outcome = apply(state, ev, self.params, self.rates)
                if (outcome in ("duplicate", "too_late", "too_many_open_complaints") and source_offsets
                        and state.settled(slot, rec.partition, rec.offset) and cid not in touched):
                    settled[cid] = state
            if outcome == "duplicate":
                out.duplicates += 1
                out.duplicates_by_topic[rec.topic] = out.duplicates_by_topic.get(rec.topic, 0) + 1
                continue
            if outcome == "too_late":
                out.dead_letters.append(dead_letter(
                    rec, "too_late",
                    f"occurred_at {ev.occurred_at.isoformat()} is more than {self.params.lateness_seconds:.0f}s "
                    f"older than this customer's latest event {iso(state.wm)}", received_at))
                continue
            if outcome == "too_many_open_complaints":
                out.dead_letters.append(dead_letter(
                    rec, "too_many_open_complaints",
                    f"the customer already has {self.params.max_open_complaints} open complaints "
                    f"(CXPULSE_MAX_OPEN_COMPLAINTS); resolve or close some first", received_at))
                touched[cid] = state
                continue
            if source_offsets:
                state.applied_at(slot, rec.partition, rec.offset, held(rec) if held else ())
            touched[cid] = state
            out.applied += 1
            out.applied_by_topic[rec.topic] = out.applied_by_topic.get(rec.topic, 0) + 1
            applied_events.append(ev)
            if isinstance(ev, Complaint):
                complaint_ids.setdefault(cid, set()).add(ev.complaint_id)
        tiers: dict[str, str] = {}
        for cid, state in touched.items():
            if not state.n:
                continue   # an erasure marker (only erased events so far): nothing to score
            p = self.publish(state, state.wm, out, force=True, complaint_ids=complaint_ids.get(cid, set()))
            tiers[cid] = p.tier
            out.latest_event_time = max(out.latest_event_time, state.wm)
        out.events = [(ev, tiers[ev.customer_id]) for ev in applied_events]
        for cid, state in settled.items():
            touched.setdefault(cid, state)
        return out

    def publish(self, state: CustomerState, as_of: float, out: BatchResult, *, force: bool,
                complaint_ids: AbstractSet[str] = frozenset()) -> Profile:
        """View the state at `as_of`, evaluate alerts, and add a score when forced or when
        something an operator or a subscriber would see changed (alerts, breaches, open
        complaints, churn_risk ±0.05, early_warning ±0.05 or its first value)."""
        p = learned_profile(state, profile(state, as_of, self.params, self.population, self.rates),
                            self.churn_model, self.population, self.early_warning)
        out.past_sla[state.customer_id] = (p.tier, sum(
            1 for rec in state.complaints if rec.is_open and p.slas[rec.id].breached))
        changes = alerts.update_alerts(state, p, self.params.control_share)
        track_cases(state, changes)
        changes += alerts.update_escalations(state, p, self.params.escalate_after_seconds)
        prune_cases(state.cases, p.as_of)
        out.deadlines[state.customer_id] = (next_deadline(state, p, self.params.escalate_after_seconds), p.as_of)
        summary = [round(p.churn.risk, 4), p.sla_breaches, p.open_complaints]
        if p.early_warning is not None:
            summary.append(round(p.early_warning.risk, 4))
        moved = (not state.pub or abs(summary[0] - state.pub[0]) >= 0.05 or summary[1:3] != state.pub[1:3]
                 or _early_warning_moved(summary[3:], state.pub[3:]))
        if force or changes or moved:
            state.version += 1
            state.pub = summary
            out.scores.append(score_record(state, p))
            out.alerts.extend(changes)
            out.states[state.customer_id] = state
            for rec in state.complaints:
                if rec.id in complaint_ids or (not force and f"sla:{rec.id}" in state.alerts):
                    out.complaints.append(complaint_row(state, rec, p))
        return p

    # --- operator actions (cx.actions) -------------------------------------------------
    def decode_action(self, rec: RawRecord, *, received_at: float) -> ActionRecord | DeadLetterDict:
        """A validated action, or a dead-letter record saying why not. Actions only ever come
        from Kafka (cx.actions), so, like events read by the worker, a null key is `wrong_key`."""
        a = _parse(rec, parse_action, received_at)
        if isinstance(a, dict):
            return a
        if rec.key is None:
            return dead_letter(rec, "wrong_key", "message without a key (records must be keyed by customer_id, "
                                                 "or they spread over partitions)", received_at)
        if rec.key != a.customer_id.encode():
            return dead_letter(rec, "wrong_key", "message key differs from customer_id (records must be keyed by customer_id)", received_at)
        return a

    @staticmethod
    def erasure_of(rec: RawRecord, *, received_at: float) -> str | DeadLetterDict:
        """The customer id an erasure request (cx.erasures, keyed by it) erases, or a dead-letter
        record saying why it erases nothing: no key (`wrong_key`), or a key that is no UTF-8
        text (`invalid_id`: no customer id is, so no state has it). Any other key is erased as
        given, whatever the id pattern says: a state may hold an id from before a narrower
        pattern, and its erasure must not be refused."""
        if not rec.key:
            return dead_letter(rec, "wrong_key", "erasure request without a key (the key is the customer id to "
                                                 "erase: `cxpulse erase`)", received_at)
        try:
            return rec.key.decode()
        except UnicodeDecodeError:
            return dead_letter(rec, "invalid_id", "erasure request whose key is not UTF-8 text (no customer id is)",
                               received_at)

    def process_actions(self, records: Iterable[RawRecord],
                        load: Callable[[str], CustomerState | None], *, received_at: float) -> BatchResult:
        """Apply operator actions to the cases of their alerts. A bad record, an unknown alert
        or an action after the close is dead-lettered with the reason and changes nothing;
        a repeated action id is a duplicate. Acknowledging resolves an escalation at once."""
        out = BatchResult()
        for rec in records:
            out.consumed[rec.topic] = out.consumed.get(rec.topic, 0) + 1
            a = self.decode_action(rec, received_at=received_at)
            if isinstance(a, dict):
                out.dead_letters.append(a)
                continue
            cid = a.customer_id
            state = out.states.get(cid) or load(cid)
            if state is None or not state.n:
                out.dead_letters.append(dead_letter(rec, "unknown_alert", f"no customer state for {cid!r} here", received_at))
                continue
            outcome, case, why = apply_action(state.cases, a, legacy_fingerprint(a.action_id))
            if outcome == "duplicate":
                out.duplicates += 1
                out.duplicates_by_topic[rec.topic] = out.duplicates_by_topic.get(rec.topic, 0) + 1
                continue
            if outcome == "unknown_alert" or outcome == "case_closed":
                out.dead_letters.append(dead_letter(rec, outcome, why, received_at))
                continue
            out.applied += 1
            out.applied_by_topic[rec.topic] = out.applied_by_topic.get(rec.topic, 0) + 1
            out.states[cid] = state
            out.case_events.append(case_event_row(a, case))
            self.publish(state, max(state.wm, a.occurred_at.timestamp()), out, force=False)
        return out

    # --- time-driven rules ------------------------------------------------------------
    def sweep(self, states: Iterable[CustomerState], now: float,
              observe: Callable[[CustomerState, Profile], None] | None = None) -> BatchResult:
        """Re-evaluate customers at `now` (SLA deadlines, silence), never before a customer's own
        latest event (the worker's `now` may be held back behind it while it catches up).
        Publishes only changes. `observe` sees every customer's profile (the churn model's
        snapshots reuse them)."""
        out = BatchResult()
        for state in states:
            if state.n:   # erasure markers have no profile
                p = self.publish(state, max(now, state.wm), out, force=False)
                if observe is not None:
                    observe(state, p)
        return out


def _early_warning_moved(now: list[float], published: list[float]) -> bool:
    """Whether early_warning (a one-element list, empty without one) moved enough since the last
    published record to publish again: by 0.05 as churn_risk, or it appeared or went."""
    if not now or not published:
        return bool(now) != bool(published)
    return abs(now[0] - published[0]) >= 0.05


def complaint_row(state: CustomerState, rec, p: Profile) -> dict:
    sla = p.slas[rec.id]

    def dt(ts: float | None) -> datetime | None:
        return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)

    return {
        "customer_id": state.customer_id, "complaint_id": rec.id, "channel": rec.channel,
        "category": rec.category, "severity": rec.severity, "tier": p.tier, "status": rec.status,
        "opened_at": dt(rec.start), "due_at": dt(sla.ack_due), "acknowledged_at": dt(rec.ack),
        "resolved_at": dt(rec.resolved), "breached": sla.breached, "satisfied": rec.satisfied,
        "compensation": rec.compensation, "updated_at": dt(p.as_of), "version": state.version,
    }


def track_cases(state: CustomerState, changes: list[AlertDict]) -> None:
    """Open a case for each alert episode that starts firing; mark the case when it resolves."""
    started = {v[0]: v[2] for v in state.alerts.values()}
    for alert in changes:
        if alert["status"] == "firing":
            open_case(state.cases, alert, started.get(alert["alert_id"], 0.0))
        else:
            alert_resolved(state.cases, alert["alert_id"])


def case_event_row(a: ActionRecord, case) -> dict:
    """The cx_case_events row of an applied action: the action and the case's times so far."""
    def dt(ts: float | None) -> datetime | None:
        return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)

    return {
        "alert_id": a.alert_id, "action_id": a.action_id, "customer_id": a.customer_id,
        "action": a.action.value, "occurred_at": a.occurred_at.astimezone(timezone.utc),
        "staff_id": a.staff_id, "channel": a.channel.value if a.channel else "",
        "outcome": a.outcome.value if a.outcome else "", "playbook_action": a.playbook_action.value if a.playbook_action else "",
        "alert_type": case.kind, "severity": case.severity, "tier": case.tier, "alert_fired_at": dt(case.opened),
        "acknowledged_at": dt(case.acked), "first_contact_at": dt(case.contacted), "closed_at": dt(case.closed),
    }
