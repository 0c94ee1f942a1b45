"""The guard around a micro-batch's whole emit path: a record that cannot be applied, turned
into ClickHouse rows or serialized for publishing becomes a `processing_error` dead letter,
never an exception that stops the worker (a record that crashes the agent is redelivered
after every restart: a poison pill). Rows ClickHouse refuses as data become `unstorable`
dead letters (pipeline/adapters/clickhouse/sink.py, `sink_dead_letters`). Pure: no Kafka,
no ClickHouse, no clock; the shell gives the row builder (`build_rows`, the ClickHouse
adapter's `batch_rows`) and the wall time.

`guarded_batch` first tries the batch as a whole; if any step fails it redoes the batch
record by record, each on a copy of the states the earlier records produced, so a record
that fails leaves no trace in any state, row or message.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import orjson

from pipeline.service.processor import BatchResult, RawRecord, dead_letter
from pipeline.domain.state import CustomerState

Load = Callable[[str], CustomerState | None]
Process = Callable[[list[RawRecord], Load], BatchResult]
BuildRows = Callable[[BatchResult], dict[str, list[dict[str, Any]]]]   # table -> rows


@dataclass
class Message:
    kind: str            # "score" | "alert" | "deadletter"
    key: bytes | None
    value: bytes


@dataclass
class PreparedBatch:
    """A processed batch with everything the shell sends and stores, already built."""
    result: BatchResult
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)


def messages_of(result: BatchResult) -> list[Message]:
    """The records to publish: scores and alerts keyed by customer, dead letters by their key."""
    out = [Message("score", s["customer_id"].encode(), orjson.dumps(s)) for s in result.scores]
    out += [Message("alert", a["customer_id"].encode(), orjson.dumps(a)) for a in result.alerts]
    out += [Message("deadletter", None if dl["key_b64"] is None else dl["key_b64"].encode(), orjson.dumps(dl))
            for dl in result.dead_letters]
    return out


def prepare(result: BatchResult, build_rows: BuildRows) -> PreparedBatch:
    """Rows and messages of a result (raises what building them raises)."""
    return PreparedBatch(result, build_rows(result), messages_of(result))


def _copy(state: CustomerState | None) -> CustomerState | None:
    return None if state is None else copy.deepcopy(state)


def guarded_batch(records: Sequence[RawRecord], process: Process, load: Load, received_at: float,
                  build_rows: BuildRows) -> PreparedBatch:
    """Process and prepare a micro-batch; a record failing any step is dead-lettered
    `processing_error` with the error, the others go through."""
    try:
        return prepare(process(list(records), load), build_rows)
    except Exception:
        pass
    merged = BatchResult()
    for rec in records:
        try:
            one = process([rec], lambda cid: _copy(merged.states.get(cid)) or load(cid))
            prepare(one, build_rows)   # the rows and messages of this record alone must build too
        except Exception as exc:
            merged.dead_letters.append(dead_letter(rec, "processing_error", f"{type(exc).__name__}: {exc}", received_at))
            merged.consumed[rec.topic] = merged.consumed.get(rec.topic, 0) + 1
            continue
        merged.merge(one)
    return prepare(merged, build_rows)
