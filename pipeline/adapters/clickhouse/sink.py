"""ClickHouse sink: durable, idempotent batch inserts (imperative shell over clickhouse-connect).

`write(batch)` is what the worker calls before it commits Kafka offsets: it returns only
when every table's rows are stored or refused. Errors are classified by what they mean
(`is_transient`): while ClickHouse is unavailable or overloaded it retries with
exponential backoff (until it succeeds or `close()` is called); a *data* error (the rows
themselves are refused, e.g. Code 252 "too many partitions for a single INSERT block",
a value out of a column's range) is never retried as is: the insert is split by the
table's partition (month) and then in halves, down to single rows, and the rows that
are still refused are set aside with ClickHouse's error (`take_rejected`; the worker and
the backfill dead-letter them `unstorable`). So a batch whose rows ClickHouse cannot take
never blocks the pipeline. Each table's insert carries
`insert_deduplication_token` = a hash of that table's rows, so an insert retried after a
lost response is dropped by ClickHouse instead of being stored (and aggregated) twice.

`add` / `flush_if_due` / `flush` are the buffered mode for offline replay and backfill.
The DSN decides the backend: `chdb:///abs/path` (embedded engine) or
`http(s)://user:pass@host:8123/db` (a ClickHouse server) -- the same code.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol, Sequence

import clickhouse_connect
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.adapters.clickhouse.migrations import apply_migrations
from pipeline.adapters.clickhouse.rows import erasure_row, with_alert_facts
from pipeline.adapters.clickhouse.tables import CUSTOMER_TABLES, ERASURES
from pipeline.domain.scoring import iso
from schemas.records import DeadLetterDict

log = logging.getLogger(__name__)

Rows = Sequence[Mapping[str, Any]]
Batch = Mapping[str, Rows]


# ClickHouse error codes that mean "try again later", not "this data is wrong".
RETRYABLE_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS: merges behind inserts (back-pressure). NOT its other meaning, too many
          # partitions in one INSERT block, which is the data's shape (see DATA_ERROR_MESSAGES)
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
})


# Messages that make a retryable code a data error: the same rows fail the same way.
DATA_ERROR_MESSAGES = ("partitions for single insert block", "partitions per insert block")

# The column each table is partitioned by (PARTITION BY toYYYYMM(column), deploy/clickhouse/):
# an insert refused as data is split by its month first. Materialized views partition by
# the hour/day of the same column, so one month of cx_events is one partition for them too.
PARTITION_COLUMN = {"cx_events": "occurred_at", "cx_scores_history": "as_of", "cx_complaints": "opened_at"}


@dataclass(frozen=True)
class RejectedRow:
    """A row ClickHouse refused as data (not a transport failure), with its error."""
    table: str
    row: Mapping[str, Any]
    error: str


class SinkMetrics(Protocol):
    """What the sink reports; pipeline metrics implement it (no prometheus import here)."""

    def sink_rows(self, table: str, n: int) -> None: ...
    def sink_flush(self) -> None: ...
    def sink_failure(self) -> None: ...
    def sink_retry(self) -> None: ...
    def sink_queue(self, n: int) -> None: ...


class SinkClosed(RuntimeError):
    """close() was called while a write was still waiting for ClickHouse; nothing to ack."""


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying (connection trouble, overload), not a data error."""
    if isinstance(exc, (OperationalError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code is None:   # some drivers (chDB) carry the code in the message only
            m = _CODE.search(str(exc))
            code = int(m.group(1)) if m else None
        text = str(exc).lower()
        return code in RETRYABLE_CODES and not any(m in text for m in DATA_ERROR_MESSAGES)
    return isinstance(exc, OSError)


_CODE = re.compile(r"\bCode:? ?(\d+)")


def dedup_token(table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> str:
    """A deterministic token for one table's rows: the same rows give the same token."""
    h = hashlib.sha256(table.encode())
    h.update(orjson.dumps(list(columns)))
    h.update(orjson.dumps(data, default=str, option=orjson.OPT_PASSTHROUGH_SUBCLASS))
    return f"{table}:{h.hexdigest()}"


def table_data(rows: Rows) -> tuple[list[str], list[list[Any]]]:
    """Rows (dicts with the same keys) -> (column names, row-major data) for client.insert."""
    columns = list(rows[0].keys())
    return columns, [[r[c] for c in columns] for r in rows]


def split_rows(table: str, rows: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Parts of a refused insert: by the table's partition month when it spans several,
    else two halves (so a bad row is isolated in log2(n) steps)."""
    column = PARTITION_COLUMN.get(table)
    if column is not None:
        months: dict[object, list[Mapping[str, Any]]] = {}
        for r in rows:
            v = r.get(column)
            months.setdefault((v.year, v.month) if isinstance(v, datetime) else v, []).append(r)
        if len(months) > 1:
            return list(months.values())
    half = len(rows) // 2
    return [rows[:half], rows[half:]]


def default_client_factory(dsn: str) -> Client:
    # tz_mode='aware': DateTime64(3, 'UTC') columns come back as tz-aware UTC datetimes.
    return clickhouse_connect.get_client(dsn=dsn, tz_mode="aware")


class ClickHouseSink:
    def __init__(
        self,
        dsn: str,
        batch_rows: int = 5000,
        flush_seconds: float = 1.0,
        max_queue_rows: int = 200_000,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        client_factory: Callable[[str], Client] | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.dsn = dsn
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_queue_rows = max_queue_rows
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._factory = client_factory or default_client_factory
        self._metrics = metrics
        self._client: Client | None = None
        self._closed = threading.Event()
        self._lock = threading.RLock()  # one statement at a time on the client
        self._buffer: dict[str, list[Mapping[str, Any]]] = {}
        self._buffered = 0
        self._buffer_since: float | None = None
        self._rejected: list[RejectedRow] = []

    # -- lifecycle --------------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("ClickHouseSink.open() was not called")
        return self._client

    def open(self) -> "ClickHouseSink":
        """Connect (retrying while ClickHouse is unavailable) and apply pending migrations."""
        self._closed.clear()
        self._client = self._retrying("connect", lambda: self._factory(self.dsn))
        applied = self._retrying("migrate", lambda: apply_migrations(self.client))
        if applied:
            log.info("clickhouse migrations applied: %s", ", ".join(applied))
        return self

    def close(self) -> None:
        """Stop retrying (a waiting write raises SinkClosed) and close the client.

        Buffered rows that were not flushed are dropped: call flush() first if wanted.
        """
        self._closed.set()
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None

    def __enter__(self) -> "ClickHouseSink":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- synchronous, durable writes --------------------------------------------------
    def write(self, batch: Batch) -> int:
        """Insert every table's rows now; return when stored or refused (rows written).

        Retries transient failures with exponential backoff until success or close().
        Each table is inserted with its own dedup token, so when a retry repeats a table
        that was in fact stored, ClickHouse drops the repeat. Rows refused as data are
        split out and set aside (`take_rejected`), never retried as they are. Alert rows are
        also written to cx_alert_facts, as an insert of its own (`with_alert_facts`).
        """
        total = 0
        for table, rows in with_alert_facts(batch).items():
            if not rows:
                continue
            written = self._store(table, list(rows))
            total += written
            if self._metrics and written:
                self._metrics.sink_rows(table, written)
        if self._metrics and total:
            self._metrics.sink_flush()
        return total

    def take_rejected(self) -> list[RejectedRow]:
        """The rows refused as data since the last call (and forget them)."""
        out, self._rejected = self._rejected, []
        return out

    def _store(self, table: str, rows: list[Mapping[str, Any]]) -> int:
        columns, data = table_data(rows)
        token = dedup_token(table, columns, data)
        try:
            self._retrying(f"insert {table}", lambda: self._insert(table, columns, data, token))
            return len(data)
        except SinkClosed:
            raise
        except Exception as exc:   # not transient: the data itself is refused
            if len(rows) == 1:
                log.error("clickhouse refused a %s row as data (%s); setting it aside", table, exc)
                self._rejected.append(RejectedRow(table, rows[0], f"{type(exc).__name__}: {exc}"[:1500]))
                return 0
            parts = split_rows(table, rows)
            log.warning("clickhouse refused %d %s rows as data (%s); inserting them in %d parts",
                        len(rows), table, exc, len(parts))
            return sum(self._store(table, part) for part in parts)

    def _insert(self, table: str, columns: list[str], data: list[list[Any]], token: str) -> None:
        with self._lock:
            self.client.insert(
                table, data, column_names=columns,
                settings={"insert_deduplication_token": token, "insert_deduplicate": 1,
                          "deduplicate_blocks_in_dependent_materialized_views": 1},
            )

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        delay = self.retry_initial
        while True:
            if self._closed.is_set():
                raise SinkClosed(f"sink closed during {what}")
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    if self._metrics:
                        self._metrics.sink_failure()
                    raise
                if self._metrics:
                    self._metrics.sink_failure()
                log.warning("clickhouse %s failed (%s); retrying in %.2fs", what, exc, delay)
            if self._closed.wait(delay):
                raise SinkClosed(f"sink closed during {what}")
            if self._metrics:
                self._metrics.sink_retry()
            delay = min(delay * 2, self.retry_max)

    # -- buffered mode (replay / backfill) --------------------------------------------
    @property
    def buffered_rows(self) -> int:
        return self._buffered

    def add(self, batch: Batch) -> None:
        """Buffer rows; flush first if they would overflow max_queue_rows, and after
        if the buffer reached batch_rows (bounded memory, natural backpressure)."""
        n = sum(len(rows) for rows in batch.values())
        if self._buffered and self._buffered + n > self.max_queue_rows:
            self.flush()
        for table, rows in batch.items():
            if rows:
                self._buffer.setdefault(table, []).extend(rows)
        self._buffered += n
        if self._buffer_since is None and n:
            self._buffer_since = time.monotonic()
        self._report_queue()
        if self._buffered >= self.batch_rows:
            self.flush()

    def flush_if_due(self) -> int:
        """Flush when batch_rows are buffered or the oldest row waited flush_seconds."""
        if not self._buffered:
            return 0
        waited = time.monotonic() - (self._buffer_since or time.monotonic())
        if self._buffered >= self.batch_rows or waited >= self.flush_seconds:
            return self.flush()
        return 0

    def flush(self) -> int:
        """Write everything buffered (durably, see write); return rows written."""
        if not self._buffered:
            return 0
        written = self.write(self._buffer)
        self._buffer, self._buffered, self._buffer_since = {}, 0, None
        self._report_queue()
        return written

    def _report_queue(self) -> None:
        if self._metrics:
            self._metrics.sink_queue(self._buffered)

    # -- erasure ----------------------------------------------------------------------
    def erase(self, customer_id: str) -> int:
        """Delete the customer's rows from every table that holds customer ids, record
        the request in cx_erasures, and return the number of rows deleted.

        Uses `ALTER TABLE ... DELETE` with mutations_sync=2, which rewrites the affected
        parts, so the data is physically gone (not just masked) when this returns.
        """
        params = {"cid": customer_id}
        deleted = 0
        for table in CUSTOMER_TABLES:
            n = self._retrying(f"count {table}", lambda: self._command(
                f"SELECT count() FROM {table} WHERE customer_id = {{cid:String}}", params))
            deleted += int(n)
            if int(n):
                self._retrying(f"erase {table}", lambda: self._command(
                    f"ALTER TABLE {table} DELETE WHERE customer_id = {{cid:String}}",
                    params, settings={"mutations_sync": 2}))
        self.write({ERASURES: [erasure_row(customer_id, datetime.now(timezone.utc), deleted)]})
        return deleted

    def _command(self, sql: str, params: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> Any:
        with self._lock:
            return self.client.command(sql, parameters=dict(params), settings=dict(settings or {}))


def sink_dead_letters(rejected: Sequence[RejectedRow], received_at: float) -> list[DeadLetterDict]:
    """Dead letters (`unstorable`) for rows ClickHouse refused as data. The source is the
    table (`clickhouse.<table>`, no partition or offset); the original is the row as JSON
    (ids and derived measures only, see pipeline/adapters/clickhouse/rows.py)."""
    out: list[DeadLetterDict] = []
    for r in rejected:
        cid = r.row.get("customer_id")
        out.append({
            "schema_version": 1, "reason": "unstorable", "error": r.error[:2000],
            "source_topic": f"clickhouse.{r.table}", "partition": -1, "offset": -1,
            "key_b64": base64.b64encode(cid.encode()).decode() if isinstance(cid, str) else None,
            "original_b64": base64.b64encode(orjson.dumps(dict(r.row), default=str)).decode(),
            "received_at": iso(received_at),
        })
    return out
