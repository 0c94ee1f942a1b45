"""`cxpulse erase CUSTOMER_ID`: remove one customer everywhere cxpulse keeps them.

1. A tombstone (value None) for the key on cx.scores: compaction drops the profile.
2. An erasure request `{"customer_id", "requested_at"}` on the erasures topic, keyed by the
   customer id (co-partitioned with the input topics): the worker that owns the
   customer's partition replaces its state by an erasure marker (`CustomerState.erasure_marker`:
   no personal data; events that occurred up to the request are dropped when they arrive
   later) and tombstones cx.scores.
3. `ClickHouseSink.erase`: deletes the customer's rows from every table holding customer
   ids and records the request in cx_erasures. With the embedded chDB only one process
   may open the data path, so this step needs the worker stopped; when the path is
   locked the step is reported as not done (re-run `cxpulse erase` once the worker is
   stopped: every step is idempotent).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from pipeline.config import Settings


@dataclass
class ErasureResult:
    customer_id: str
    requested_at: datetime
    tombstone_topic: str | None = None
    request_topic: str | None = None
    clickhouse_rows: int | None = None          # rows deleted; None = step not done
    clickhouse_skipped: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """What was done, one line per step."""
        out = []
        if self.tombstone_topic:
            out.append(f"tombstone published on {self.tombstone_topic} (key {self.customer_id})")
        if self.request_topic:
            out.append(f"erasure request published on {self.request_topic}: "
                       "the owning worker drops the customer's state when it consumes it")
        if self.clickhouse_rows is not None:
            out.append(f"ClickHouse: {self.clickhouse_rows} rows deleted; request recorded in cx_erasures")
        elif self.clickhouse_skipped:
            out.append("ClickHouse: skipped (--skip-clickhouse)")
        return out


def request_record(customer_id: str, requested_at: datetime) -> bytes:
    return orjson.dumps({"customer_id": customer_id, "requested_at": requested_at.isoformat()})


def requested_at(value: bytes | None, default: float) -> float:
    """The request time (epoch seconds) of an erasure request record; `default` (the time
    it was consumed) when the record carries none or cannot be read, and at most that: a
    request is not made after it is read, and a time in the future (a wrong clock, a typo
    in the year) would drop every later event of the customer as erased, up to that time."""
    if value is None:
        return default
    try:
        return min(default, datetime.fromisoformat(orjson.loads(value)["requested_at"]).timestamp())
    except (TypeError, ValueError, KeyError, orjson.JSONDecodeError):
        return default


def erase(settings: Settings, customer_id: str, clickhouse_dsn: str | None = None,
          skip_clickhouse: bool = False, now: datetime | None = None) -> ErasureResult:
    """Run the three steps; a failing step is recorded in `problems`, not raised, so the
    operator sees what was and was not done. Broker errors do raise (nothing was done)."""
    from pipeline.adapters.kafka import kafka_io

    if not customer_id or len(customer_id) > 128:
        raise ValueError("customer id must be 1..128 characters")
    result = ErasureResult(customer_id, now or datetime.now(timezone.utc))
    key = customer_id.encode()
    kafka_io.produce(settings, [
        (settings.topic_scores, key, None),
        (settings.topic_erasures, key, request_record(customer_id, result.requested_at)),
    ])
    result.tombstone_topic = settings.topic_scores
    result.request_topic = settings.topic_erasures

    if skip_clickhouse:
        result.clickhouse_skipped = True
        return result
    result.clickhouse_rows = _erase_clickhouse(clickhouse_dsn or settings.dsn, customer_id, result.problems)
    return result


def _erase_clickhouse(dsn: str, customer_id: str, problems: list[str], timeout: float = 30.0) -> int | None:
    import logging
    import threading

    from pipeline.adapters.clickhouse.dsn import chdb_lock_holder, chdb_path, redact
    from pipeline.adapters.clickhouse.sink import ClickHouseSink

    path = chdb_path(dsn)
    if path is not None:
        holder = chdb_lock_holder(path)
        if holder is not None:
            who = f"pid {holder}" if holder > 0 else "another process"
            problems.append(f"ClickHouse: NOT erased: the embedded chDB {path} is in use by {who} (a running "
                            f"worker); chDB allows one process per path. Stop the worker and run "
                            f"`cxpulse erase {customer_id}` again")
            return None

    sink = ClickHouseSink(dsn, retry_initial=0.2, retry_max=2.0)
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            sink.open()
            out["rows"] = sink.erase(customer_id)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            out["error"] = exc

    noisy = logging.getLogger("pipeline.adapters.clickhouse.sink")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        t = threading.Thread(target=target, name="erase-clickhouse", daemon=True)
        t.start()
        t.join(timeout)
        timed_out = t.is_alive()
        sink.close()
        t.join(5)
    finally:
        noisy.setLevel(level)
    if timed_out:
        problems.append(f"ClickHouse: NOT erased: no answer from {redact(dsn)} within {timeout:.0f}s; "
                        f"fix CXPULSE_CLICKHOUSE_DSN / start ClickHouse and run `cxpulse erase {customer_id}` again")
        return None
    if "error" in out:
        exc = out["error"]
        problems.append(f"ClickHouse: NOT erased: {type(exc).__name__}: {str(exc)[:300]}")
        return None
    return int(out["rows"])
