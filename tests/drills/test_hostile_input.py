"""Hostile input (issue 8): fuzzed records must all become dead letters with a reason —
never an exception, never a silent drop — and personal data must not leak into outputs.
Valid-looking hostile input (issue 20): records that pass a loose reading of the contract
but carry extreme or hostile values (a poison pill, a batch over 101 months, personal data
in ids, null keys, ...) go through a real worker at the end of this file.

The unit part runs >= 10k fuzzed records through `Core.process` (fast, no broker). The
integration part sends the same records through a real worker (real broker, chDB):
the dead-letter count equals the records sent, the worker stays alive with bounded RSS,
and no e-mail- or phone-like string reaches cx.scores, cx.alerts or any ClickHouse table.
Dead letters keep the original bytes by design (`original_b64`): the dead-letter topic is
the one place raw input is kept (see docs/fault-tolerance.md, restricted access).
"""
from __future__ import annotations

import base64
import random
import re
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from pipeline.adapters.kafka import kafka_io, topics
from pipeline.adapters.clickhouse import queries
from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.domain.vocabulary import DEAD_LETTER_REASONS as VOCABULARY
from pipeline.tools.generator import generate
from pipeline.service.processor import MAX_RECORD_BYTES, RawRecord
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from schemas.outputs import DeadLetter
from tests.factories import RECEIVED_AT

N_FUZZ = 10_500
REASONS = {"invalid_json", "invalid_record", "wrong_topic", "wrong_key", "too_large"}   # what the fuzz may cause
assert REASONS <= set(VOCABULARY)
TOPIC_OF = {"touchpoint": "touchpoints", "order": "orders", "complaint": "complaints"}

# Personal data planted in the hostile records. Outputs must never carry anything like it.
EMAILS = ["jane.doe@example.com", "j.smith+cx@mail.example.org", "kunde@beispiel.de"]
PHONES = ["+44 20 7946 0958", "+1 (555) 010-4477", "+4915112345678", "555-010-9999"]
EMAIL_RE = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE_RE = re.compile(rb"\+\d[\d ()-]{7,}\d|\(\d{3}\) ?\d{3}-\d{4}|\b\d{3}-\d{3}-\d{4}\b")


def templates(now: datetime) -> dict[str, dict]:
    base = {"event_id": "ev-0", "customer_id": "H000001", "occurred_at": now.isoformat(),
            "channel": "web", "schema_version": 1}
    return {
        "touchpoint": {**base, "type": "touchpoint", "stage": "usage", "kind": "support", "csat": 4,
                       "ratings": {"empathy": 3}, "wait_seconds": 12.5, "resolved": True, "handoffs": 1},
        "order": {**base, "type": "order", "order_id": "o-1", "status": "paid", "amount": "19.90",
                  "currency": "EUR"},
        "complaint": {**base, "type": "complaint", "complaint_id": "k-1", "status": "opened",
                      "category": "reliability", "severity": "high"},
    }


def nested(depth: int, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def fuzz(n: int, seed: int = 8, prefix: str = "x") -> list[tuple[str, bytes | None, bytes | None, str]]:
    """n hostile records: (kind of the topic they are sent to, key, value, mutation name).
    Every one of them is invalid for the topic it goes to."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    tmpl = templates(now)
    out = []

    def rec(kind: str, obj: dict, i: int) -> dict:
        obj = dict(obj)
        obj["event_id"] = f"{prefix}-{i}"
        obj["customer_id"] = f"H{i % 500:06d}"
        return obj

    mutations = []

    def mutation(fn):
        mutations.append(fn)
        return fn

    @mutation
    def random_bytes(kind, obj, i):
        return rng.randbytes(rng.randint(0, 300))

    @mutation
    def not_an_object(kind, obj, i):
        return rng.choice([b"[]", b"42", b'"touchpoint"', b"null", b"true", b"[1,2,3]", b"", b" ", b"{}"])

    @mutation
    def truncated_json(kind, obj, i):
        raw = orjson.dumps(obj)
        return raw[:rng.randint(1, len(raw) - 1)]

    @mutation
    def wrong_types(kind, obj, i):
        field = rng.choice(["customer_id", "event_id", "occurred_at", "channel", "schema_version"]
                           + {"touchpoint": ["csat", "nps", "handoffs", "resolved", "ratings", "wait_seconds"],
                              "order": ["amount", "currency", "status", "order_id"],
                              "complaint": ["severity", "satisfied", "compensation", "complaint_id"]}[kind])
        bad = {"customer_id": 12345, "event_id": ["a"], "occurred_at": 1767225600, "channel": 7,
               "schema_version": "1", "csat": "5", "nps": 9.5, "handoffs": "2", "resolved": "yes",
               "ratings": "great", "wait_seconds": "fast", "amount": [19.9], "currency": 978,
               "status": {"s": 1}, "order_id": None, "severity": 3, "satisfied": 1,
               "compensation": "lots", "complaint_id": {"id": 1}}[field]
        return orjson.dumps({**obj, field: bad})

    @mutation
    def out_of_range(kind, obj, i):
        if kind == "touchpoint":
            obj = {**obj, **rng.choice([{"csat": 6}, {"nps": 11}, {"sentiment": 1.5}, {"wait_seconds": -1},
                                        {"ratings": {"empathy": 0}}, {"handoffs": -3}])}
        elif kind == "order":
            obj = {**obj, **rng.choice([{"amount": "-5"}, {"amount": "1e400"}, {"currency": "euro"},
                                        {"amount": "NaN"}])}
        else:
            obj = {**obj, **rng.choice([{"compensation": "-1"}, {"compensation": "Infinity"}])}
        return orjson.dumps(obj)

    @mutation
    def huge_string(kind, obj, i):
        field = rng.choice(["customer_id", "event_id", "channel", "staff_id" if kind == "touchpoint" else "event_id"])
        return orjson.dumps({**obj, field: "Z" * rng.choice([129, 5000, 60_000])})

    @mutation
    def too_large(kind, obj, i):
        return orjson.dumps({**obj, "padding": "P" * (MAX_RECORD_BYTES + rng.randint(1, 100_000))})

    @mutation
    def unknown_enum(kind, obj, i):
        field, value = rng.choice({"touchpoint": [("stage", "checkout"), ("kind", "poke"), ("channel", "fax")],
                                   "order": [("status", "lost"), ("channel", "pigeon")],
                                   "complaint": [("severity", "apocalyptic"), ("category", "price"),
                                                 ("status", "ignored")]}[kind])
        return orjson.dumps({**obj, field: value})

    @mutation
    def bad_timestamp(kind, obj, i):
        # ("1767225600" — Unix seconds in a string — is rejected too: see the test below.)
        ts = rng.choice(["2026-11-01T12:00:00", "2026-11-01 12:00", "yesterday", "", "2026-13-45T99:00:00Z",
                         "2026-11-01T12:00:00+25:00", "T12:00Z", "01/11/2026 12:00 +00:00"])
        field = "occurred_at" if kind != "order" or rng.random() < 0.5 else "promised_at"
        return orjson.dumps({**obj, field: ts})

    @mutation
    def numeric_timestamp(kind, obj, i):
        return orjson.dumps({**obj, "occurred_at": rng.choice([1767225600, 1767225600.5, -1, 0])})

    @mutation
    def missing_field(kind, obj, i):
        obj = dict(obj)
        required = ["event_id", "customer_id", "occurred_at", "channel", "schema_version", "type"] + {
            "touchpoint": ["stage", "kind"], "order": ["order_id", "status", "amount", "currency"],
            "complaint": ["complaint_id", "status", "category", "severity"]}[kind]
        del obj[rng.choice(required)]
        return orjson.dumps(obj)

    @mutation
    def deeply_nested(kind, obj, i):
        if rng.random() < 0.5:
            return nested(rng.choice([300, 2000, 20_000]), rng)
        raw = orjson.dumps({**obj, "ratings": None})
        return raw.replace(b'"ratings":null', b'"ratings":' + nested(rng.choice([300, 5000]), rng))

    @mutation
    def wrong_type_for_topic(kind, obj, i):
        other = rng.choice([k for k in tmpl if k != kind])
        return orjson.dumps(rec(other, tmpl[other], i))

    @mutation
    def unknown_type(kind, obj, i):
        return orjson.dumps({**obj, "type": rng.choice(["refund", "Touchpoint", "", None, 1])})

    @mutation
    def personal_data(kind, obj, i):
        extra = rng.choice([{"email": rng.choice(EMAILS)}, {"phone": rng.choice(PHONES)},
                            {"email": rng.choice(EMAILS), "phone": rng.choice(PHONES), "name": "Jane Doe"},
                            {"customer": {"email": rng.choice(EMAILS)}}])
        return orjson.dumps({**obj, **extra})

    @mutation
    def personal_data_nested(kind, obj, i):
        if kind != "touchpoint":
            return orjson.dumps({**obj, "contact_phone": rng.choice(PHONES)})
        return orjson.dumps({**obj, "ratings": {"empathy": 2, "email": rng.choice(EMAILS)}})

    @mutation
    def wrong_key(kind, obj, i):
        return orjson.dumps(obj)   # the key below is another customer's

    @mutation
    def invalid_utf8(kind, obj, i):
        raw = orjson.dumps(obj)
        cut = raw.index(b'"channel"')
        return raw[:cut] + b'"staff_id":"\xff\xfe\xc3",' + raw[cut:]

    @mutation
    def lone_surrogate(kind, obj, i):
        raw = orjson.dumps({**obj, "schema_version": 2})
        return raw.replace(b'"schema_version":2', b'"staff_id":"\\ud800","schema_version":2')

    @mutation
    def null_value(kind, obj, i):
        return None

    @mutation
    def schema_version_2(kind, obj, i):
        # (1.0 and true pass `Literal[1]` in pydantic's lax mode: equal to 1, so not tested as invalid.)
        return orjson.dumps({**obj, "schema_version": rng.choice([2, 0, -1, "v1", "1", None])})

    for i in range(n):
        kind = rng.choice(list(tmpl))
        obj = rec(kind, tmpl[kind], i)
        m = mutations[i % len(mutations)]
        value = m(kind, obj, i)
        key: bytes | None = obj["customer_id"].encode()
        if m is wrong_key:
            key = b"someone-else"
        elif rng.random() < 0.05:
            key = None if rng.random() < 0.5 and value is not None else rng.randbytes(8)
        out.append((kind, key, value, m.__name__))
    return out


def wire(settings: Settings) -> dict[str, str]:
    return settings.topic_for_type


def test_templates_are_valid():
    """The fuzz starts from valid records: every failure below is due to the mutation."""
    core = build_core(Settings())
    for kind, obj in templates(datetime(2026, 11, 1, tzinfo=timezone.utc)).items():
        rec = RawRecord(f"cx.{TOPIC_OF[kind]}", 0, 0, obj["customer_id"].encode(), orjson.dumps(obj))
        assert not isinstance(core.decode(rec, received_at=RECEIVED_AT), dict), kind


def test_fuzzed_records_are_all_dead_lettered():
    settings = Settings()
    core = build_core(settings)
    records = fuzz(N_FUZZ)
    raws = [RawRecord(wire(settings)[kind], i % 4, i, key, value) for i, (kind, key, value, _) in enumerate(records)]
    started = time.perf_counter()
    result = core.process(raws, lambda cid: None, received_at=RECEIVED_AT)
    elapsed = time.perf_counter() - started
    assert result.applied == 0 and not result.scores and not result.states and not result.events
    assert len(result.dead_letters) == len(records) >= 10_000
    by_reason: Counter = Counter()
    for raw, dl, (_, _, value, mutation) in zip(raws, result.dead_letters, records):
        DeadLetter.model_validate(dl)
        assert dl["offset"] == raw.offset and dl["reason"] in REASONS and dl["error"], (mutation, dl)
        assert base64.b64decode(dl["original_b64"]) == (value or b"")
        # The error text says what is wrong, never echoes the personal data it found.
        assert not EMAIL_RE.search(dl["error"].encode()) and not PHONE_RE.search(dl["error"].encode()), dl
        by_reason[dl["reason"]] += 1
    per_mutation = Counter((m, dl["reason"]) for (_, _, _, m), dl in zip(records, result.dead_letters))
    assert {m for m, r in per_mutation if r == "wrong_topic"} == {"wrong_type_for_topic"}
    assert all(r == "too_large" for m, r in per_mutation if m == "too_large")
    assert all(r == "invalid_record" for m, r in per_mutation if m in ("personal_data", "personal_data_nested"))
    print("FIGURES", orjson.dumps({"scenario": "hostile unit", "records": len(records), "by_reason": by_reason,
                                   "seconds": round(elapsed, 2)}).decode())


def test_unexpected_fields_are_rejected_by_the_schemas():
    core = build_core(Settings())
    for kind, obj in templates(datetime(2026, 11, 1, tzinfo=timezone.utc)).items():
        for extra in ({"email": EMAILS[0]}, {"phone": PHONES[0]}, {"name": "Jane Doe"}, {"address": "1 Main St"}):
            rec = RawRecord(f"cx.{TOPIC_OF[kind]}", 0, 0, b"H000001", orjson.dumps({**obj, **extra}))
            dl = core.decode(rec, received_at=RECEIVED_AT)
            assert isinstance(dl, dict) and dl["reason"] == "invalid_record", (kind, extra)
            assert "Extra inputs are not permitted" in dl["error"] and next(iter(extra)) in dl["error"]
            assert extra[next(iter(extra))] not in dl["error"]


def test_unix_time_in_a_string_is_rejected():
    core = build_core(Settings())
    obj = {**templates(datetime(2026, 11, 1, tzinfo=timezone.utc))["order"], "occurred_at": "1767225600"}
    assert isinstance(core.decode(RawRecord("cx.orders", 0, 0, b"H000001", orjson.dumps(obj)), received_at=RECEIVED_AT), dict)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def scan_for_personal_data(blobs: list[bytes]) -> list[bytes]:
    found = []
    for blob in blobs:
        for rx in (EMAIL_RE, PHONE_RE):
            found += rx.findall(blob)
    return found


@pytest.mark.integration
def test_hostile_stream_through_a_worker(make_settings, start_worker):
    settings = make_settings(lateness_seconds=60 * 86400, sweep_seconds=3600)
    # Few records over the size limit here: dead letters keep the original bytes, and a
    # fetch of the whole dead-letter topic must stay under the reader's frame limit.
    records, big = [], 0
    for r in fuzz(N_FUZZ + 600, seed=9, prefix="w"):
        big += r[3] == "too_large"
        if r[3] != "too_large" or big <= 40:
            records.append(r)
    assert len(records) >= 10_000
    valid = generate(customers=60, days=10, seed=5, invalid_ratio=0.0, duplicate_ratio=0.0)
    worker = start_worker(settings)
    t = wire(settings)
    # Valid events first: the baseline RSS is taken with ClickHouse (chDB) open and warm.
    kafka_io.produce(settings, [(t[r.kind], r.key, r.value) for r in valid.records])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=60,
                          alive=lambda: worker.alive)
    rss_start = rss_kib(worker.pid)
    sent = kafka_io.produce(settings, [(t[kind], key, value) for kind, key, value, _ in records])
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=120,
                          alive=lambda: worker.alive)
    assert worker.alive, worker.log_tail()
    rss_end = rss_kib(worker.pid)

    dead = kafka_io.read_topic(settings, settings.topic_deadletter)
    assert len(dead) == sent == len(records)
    reasons = Counter(orjson.loads(m.value)["reason"] for m in dead)
    assert set(reasons) <= REASONS
    scores = kafka_io.read_topic(settings, settings.topic_scores)
    alerts = kafka_io.read_topic(settings, settings.topic_alerts)
    assert {m.key.decode() for m in scores} == {r.key.decode() for r in valid.records}

    # Personal data: none in scores, alerts or ClickHouse (the dead letters keep raw bytes).
    leaks = scan_for_personal_data([m.value for m in scores if m.value] + [m.value for m in alerts])
    assert not leaks, leaks[:5]
    assert worker.alive
    worker.stop()
    with ClickHouseSink(settings.dsn) as sink:
        counts = queries.table_counts(sink.client)
        dumps = []
        for table in queries.TABLES:
            cols = [r[0] for r in sink.client.query(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
                "AND type NOT LIKE '%AggregateFunction%'", parameters={"t": table}).result_rows]
            rows = sink.client.query(f"SELECT {', '.join(f'toString(`{c}`)' for c in cols)} FROM {table}").result_rows
            dumps.append(orjson.dumps(rows))
    assert counts["cx_events"] == len(valid.records)
    leaks = scan_for_personal_data(dumps)
    assert not leaks, leaks[:5]
    raw_dead = b"".join(base64.b64decode(orjson.loads(m.value)["original_b64"]) for m in dead)
    assert all(e.encode() in raw_dead for e in EMAILS), "the planted personal data is kept only in the dead letters"

    growth_mib = (rss_end - rss_start) / 1024
    assert growth_mib < 100, f"worker RSS grew {growth_mib:.0f} MiB over {sent} hostile records"
    print("FIGURES", orjson.dumps({"scenario": "hostile integration", "records": sent,
                                   "dead_letters": len(dead), "by_reason": reasons,
                                   "valid_events": len(valid.records), "scores": len(scores),
                                   "rss_start_mib": round(rss_start / 1024), "rss_end_mib": round(rss_end / 1024),
                                   "ch_counts": counts}).decode())


# --- valid-looking hostile input through a worker (issue 20) -----------------------------

BIDI = "\u202e".encode()


def _months_back(now: datetime, n: int) -> datetime:
    ym = now.year * 12 + now.month - 1 - n
    return datetime(ym // 12, ym % 12 + 1, 15, 12, tzinfo=timezone.utc)


def _tp(cid: str, when: datetime | str, eid: str, **kw) -> dict:
    when = when if isinstance(when, str) else when.isoformat()
    return {"type": "touchpoint", "event_id": eid, "customer_id": cid, "occurred_at": when, "channel": "web",
            "schema_version": 1, "stage": "usage", "kind": "support", **kw}


def _order(cid: str, when: datetime | str, eid: str, **kw) -> dict:
    when = when if isinstance(when, str) else when.isoformat()
    return {"type": "order", "event_id": eid, "customer_id": cid, "occurred_at": when, "channel": "web",
            "schema_version": 1, "order_id": f"o-{eid}", "status": "paid", "amount": "10.00", "currency": "EUR", **kw}


def _complaint(cid: str, when: datetime | str, eid: str, **kw) -> dict:
    when = when if isinstance(when, str) else when.isoformat()
    return {"type": "complaint", "event_id": eid, "customer_id": cid, "occurred_at": when, "channel": "chat",
            "schema_version": 1, "complaint_id": f"k-{eid}", "status": "opened", "category": "reliability",
            "severity": "high", **kw}


def _send(settings: Settings, records: list[tuple[dict, bytes | None | str]], linger_ms: int = 20) -> int:
    """Send records; key "customer" = the record's customer_id (as producers must)."""
    t = wire(settings)
    return kafka_io.produce(settings, [(t[d["type"]], d["customer_id"].encode() if k == "customer" else k,
                                        orjson.dumps(d)) for d, k in records], linger_ms=linger_ms)


@pytest.mark.integration
def test_a_poison_pill_and_a_101_month_batch_do_not_stop_the_worker(make_settings, start_worker):
    """The order whose fulfilled_at is 9999-12-31T23:00:00-12:00 crashed `emit` (rows), and a
    batch over more than 100 months was refused by ClickHouse (Code 252) and retried for
    ever: the worker must stay up, dead-letter the poison pill and the null-keyed record,
    store the history, and commit past all of it."""
    settings = make_settings(lateness_seconds=20 * 365 * 86400, sweep_seconds=3600)
    now = datetime.now(timezone.utc)
    history = [(_tp(f"hist-{c}", _months_back(now, m), f"h{c}-{m}", csat=4), "customer")
               for m in range(1, 122) for c in range(4)]
    poison = (_order("pp-1", now - timedelta(hours=1), "poison", status="delivered",
                     promised_at=(now - timedelta(hours=1)).isoformat(), fulfilled_at="9999-12-31T23:00:00-12:00"),
              "customer")
    null_key = (_tp("nk-1", now - timedelta(hours=1), "null-key"), None)
    # All sent before the worker starts, the history as one record batch per partition: the
    # worker applies a partition's history in one micro-batch, over more than 100 months.
    # (with the default 20 ms linger a busy machine cut it into batches that came in two
    # fetches, and the worker applied it in two micro-batches)
    sent = _send(settings, [poison, null_key]) + _send(settings, history, linger_ms=60_000)
    worker = start_worker(settings)
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=180,
                          alive=lambda: worker.alive)
    assert worker.alive, worker.log_tail()
    log = worker.log_tail(200_000)
    assert "Too many partitions" in log and "inserting them in" in log, "the 101-month batch was not exercised"
    dead = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
    assert sorted((d["reason"], orjson.loads(base64.b64decode(d["original_b64"]))["event_id"]) for d in dead) == \
        [("implausible_time", "poison"), ("wrong_key", "null-key")]
    scores = kafka_io.read_topic(settings, settings.topic_scores)
    assert {m.key.decode() for m in scores} == {f"hist-{c}" for c in range(4)}
    worker.stop()
    with ClickHouseSink(settings.dsn) as sink:
        stored = sink.client.query("SELECT count() FROM cx_events WHERE occurred_at > now() - INTERVAL 390 DAY"
                                   ).result_rows[0][0]
    recent = sum(1 for d, _ in history if datetime.fromisoformat(d["occurred_at"]) > now - timedelta(days=390))
    assert stored == recent > 0   # older rows are past the table's 400-day TTL
    print("FIGURES", orjson.dumps({"scenario": "poison pill + 101 months", "sent": sent, "dead_letters": len(dead),
                                   "history_events": len(history), "stored_recent": stored}).decode())


@pytest.mark.integration
def test_erasure_requests_that_name_no_customer_do_not_stop_the_worker(make_settings, start_worker):
    """The erasure topic is an input too. A request without a key, or whose key is no UTF-8
    text, names no customer: it is dead-lettered with the reason and erases nothing, and the
    requests after it are applied. (The null key was skipped silently; the key not UTF-8
    raised in the erasure agent.)"""
    settings = make_settings()
    now = datetime.now(timezone.utc)
    _send(settings, [(_tp("er-1", now - timedelta(minutes=5), "er1"), "customer"),
                     (_tp("er-2", now - timedelta(minutes=5), "er2"), "customer")])
    worker = start_worker(settings)
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=120,
                          alive=lambda: worker.alive)
    body = orjson.dumps({"requested_at": now.isoformat()})
    kafka_io.produce(settings, [(settings.topic_erasures, None, body), (settings.topic_erasures, b"\xff\xfe", body)])
    kafka_io.produce(settings, [(settings.topic_erasures, b"er-1", body)])
    topics.wait_caught_up(settings, settings.app_id, [settings.topic_erasures], timeout=60, alive=lambda: worker.alive)
    deadline = time.monotonic() + 30
    while True:   # the requests are committed; the tombstone of er-1's score follows its erasure
        scores = [m for m in kafka_io.read_topic(settings, settings.topic_scores) if m.key == b"er-1"]
        if scores and scores[-1].value is None:
            break
        assert time.monotonic() < deadline, "the erasure after the bad requests was not applied"
        time.sleep(0.5)
    dead = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
    assert sorted((d["reason"], d["source_topic"], d["key_b64"]) for d in dead) == \
        [("invalid_id", settings.topic_erasures, base64.b64encode(b"\xff\xfe").decode()),
         ("wrong_key", settings.topic_erasures, None)]
    assert worker.alive and "Traceback" not in worker.log_tail(200_000)
    er2 = [m for m in kafka_io.read_topic(settings, settings.topic_scores) if m.key == b"er-2"]
    assert er2 and er2[-1].value is not None   # nobody else was erased


def hostile_values(now: datetime) -> tuple[list[tuple[dict, bytes | None | str]], Counter, int]:
    """Valid-looking hostile records: (records with their keys, expected dead letters by
    reason, events expected to be applied)."""
    h = now - timedelta(hours=2)
    recs: list[tuple[dict, bytes | None | str]] = []
    expect: Counter = Counter()

    def dead(reason: str, *records: dict, key: bytes | None | str = "customer") -> None:
        for d in records:
            recs.append((d, key))
            expect[reason] += 1

    dead("implausible_time",
         _tp("hv-t1", "9999-12-31T23:00:00-12:00", "t1"), _complaint("hv-t2", "9999-12-31T23:59:59Z", "t2"),
         _tp("hv-t3", "0001-01-01T00:00:00+14:00", "t3"), _tp("hv-t4", "1899-12-31T23:00:00Z", "t4"),
         _tp("hv-t5", "2106-02-07T06:28:16Z", "t5"), _tp("hv-t6", "2100-01-01T00:00:00Z", "t6"),
         _tp("hv-t7", now + timedelta(hours=2), "t7"),
         _order("hv-t8", h, "t8", status="delivered", promised_at=h.isoformat(),
                fulfilled_at="9999-12-31T23:00:00-12:00"))
    dead("personal_data",
         _tp("jane.doe@example.com", h, "p1"), _tp("hv-p2", h, "+44 20 7946 0958"),
         _tp("hv-p3", h, "p3", staff_id="agent.smith@corp.example.org"), _order("hv-p4", h, "p4", order_id="555-010-9999"),
         _complaint("hv-p5", h, "p5", complaint_id="Jane Doe, 1 Main St, +1 555 010 4477"))
    dead("invalid_id", _tp("hv-i1 ", h, "i1"), _tp("hv-i2\x00", h, "i2"), _tp("hv-i3\u202e", h, "i3"),
         _tp("Zoe\u0301", h, "i4"))
    dead("wrong_key", _tp("hv-k1", h, "k1"), key=None)
    dead("unsupported_currency", _order("hv-c1", h, "c1", amount="150000", currency="JPY"))
    dead("invalid_record", _order("hv-c2", h, "c2", currency="ZZZ"), _tp("hv-r1", h, "r1", ratings={}),
         _tp("hv-r2", h, "r2", wait_seconds=True), _tp("hv-r3", h, "r3", wait_seconds="95"),
         _order("hv-r4", h, "r4", amount="\u0663"), _order("hv-r5", h, "r5", amount="1_000"))
    # applied: 42 events, then the first re-sent (a producer retry: a new offset) -> a duplicate
    dup = [_tp("hv-dup", h + timedelta(seconds=i), f"d{i}", csat=5) for i in range(42)]
    recs += [(d, "customer") for d in dup] + [(dict(dup[0]), "customer")]
    # applied: 13 open complaints of one customer, ids colliding in 32 bits, two orders 300 + 400
    recs += [(_complaint("hv-open", h + timedelta(seconds=i), f"o{i}"), "customer") for i in range(13)]
    recs += [(_tp("hv-fp", h, "tp-18044"), "customer"), (_tp("hv-fp", h, "tp-39193"), "customer")]
    recs += [(_order("hv-rev", h, "r300", order_id="tp-18044", amount="300"), "customer"),
             (_order("hv-rev", h, "r400", order_id="tp-39193", amount="400"), "customer")]
    return recs, expect, 42 + 13 + 2 + 2


@pytest.mark.integration
def test_valid_looking_hostile_stream_through_a_worker(make_settings, start_worker):
    """The drill of `make faults` for issue 20: a valid stream mixed with valid-looking hostile
    records. The worker stays alive, every record is accounted for exactly (applied, a
    duplicate, or dead-lettered with the expected reason), nothing is lost, and no personal
    data or bidi character reaches scores, alerts or ClickHouse."""
    settings = make_settings(lateness_seconds=60 * 86400, sweep_seconds=3600)
    now = datetime.now(timezone.utc)
    valid = generate(customers=40, days=10, seed=11, invalid_ratio=0.0, duplicate_ratio=0.0)
    hostile, expect, applied_hostile = hostile_values(now)
    rng = random.Random(20)
    rng.shuffle(hostile)   # customers' own events keep their order below (stable per customer)
    hostile.sort(key=lambda r: r[0]["customer_id"] if r[0]["customer_id"].startswith("hv-") else "")
    worker = start_worker(settings)
    t = wire(settings)
    sent = kafka_io.produce(settings, [(t[r.kind], r.key, r.value) for r in valid.records])
    sent += _send(settings, hostile)
    topics.wait_caught_up(settings, settings.app_id, list(settings.input_topics), timeout=180,
                          alive=lambda: worker.alive)
    assert worker.alive, worker.log_tail()
    dead = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_deadletter)]
    assert Counter(d["reason"] for d in dead) == expect
    scores = [orjson.loads(m.value) for m in kafka_io.read_topic(settings, settings.topic_scores) if m.value]
    alerts = kafka_io.read_topic(settings, settings.topic_alerts)
    latest = {}
    for s in scores:
        latest[s["customer_id"]] = s
    assert latest["hv-dup"]["events"] == 42 and latest["hv-fp"]["events"] == 2
    assert latest["hv-open"]["open_complaints"] == 13 and latest["hv-rev"]["revenue_365d"] == 700.0
    blobs = [orjson.dumps(s) for s in scores] + [m.value for m in alerts]
    assert not scan_for_personal_data(blobs) and not any(BIDI in b for b in blobs)
    worker.stop()
    with ClickHouseSink(settings.dsn) as sink:
        counts = queries.table_counts(sink.client)
        dumps = [orjson.dumps(sink.client.query(f"SELECT * FROM {table}").result_rows, default=str)
                 for table in ("cx_events", "cx_scores_history", "cx_alerts", "cx_complaints")]
    assert counts["cx_events"] == len(valid.records) + applied_hostile   # nothing lost, nothing twice
    assert sent == len(valid.records) + applied_hostile + 1 + sum(expect.values())   # + the duplicate
    assert not scan_for_personal_data(dumps) and not any(BIDI in b for b in dumps)
    print("FIGURES", orjson.dumps({"scenario": "valid-looking hostile drill", "sent": sent, "valid": len(valid.records),
                                   "dead_letters": Counter(d["reason"] for d in dead),
                                   "cx_events": counts["cx_events"]}).decode())
