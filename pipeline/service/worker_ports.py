"""The ports of the worker loop (pipeline/service/worker_loop.py): what it needs from the
outside world, as typing.Protocols. The Faust worker implements them in agents/ports.py;
tests/unit/test_worker_loop.py implements them with in-memory fakes.

An input partition (`TP`) is whatever the consumer names it: any hashable with `.topic` and
`.partition` (Faust's and aiokafka's `TP` named tuples; the loop never builds one).
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol, TypeVar

from pipeline.domain.churn import PopulationParams
from pipeline.domain.state import CustomerState
from pipeline.service.churn_history import BookRows, Restored, TickRecord, TrainingRow
from pipeline.service.processor import BatchResult
from schemas.records import DeadLetterDict

TP = Hashable
R = TypeVar("R")

Rows = dict[str, list[dict[str, Any]]]   # ClickHouse table -> rows


class StateStore(Protocol):
    """Customer states by customer id: the Faust table (with the state codec) in the worker,
    a dict of encoded states in tests.

    `encode` / `put` split `store` in two for a batch whose ClickHouse write is in flight
    (pipeline/service/pending_states.py): its states are encoded when it is processed (the
    bytes are what the batch computed, whatever a later batch does to the objects) and put
    into the store once its rows are durable and its outputs on the broker."""

    def load(self, customer_id: str) -> CustomerState | None: ...
    def store(self, customer_id: str, state: CustomerState) -> None:
        """`put(customer_id, encode(state), state)`."""
    def encode(self, state: CustomerState) -> bytes:
        """The bytes the store keeps for `state`."""
    def decode(self, customer_id: str, raw: bytes) -> CustomerState:
        """The state `raw` (from `encode`) holds."""
    def put(self, customer_id: str, raw: bytes, state: CustomerState | None) -> None:
        """Store `raw`, encoded from `state` (None: that object was handed out since and may
        have changed; the next load decodes `raw`)."""
    def keys(self) -> Iterable[str]: ...


class OutputsPublisher(Protocol):
    """cx.scores, cx.alerts and cx.deadletter. `send` buffers (no await per record); `flush`
    returns once everything sent is acknowledged by the broker."""

    def send(self, kind: str, key: bytes | None, value: bytes) -> None:
        """`kind` is "score", "alert" or "deadletter" (pipeline.service.emit_guard.Message)."""
    async def flush(self) -> None: ...
    async def delete_score(self, key: bytes) -> None:
        """Tombstone a customer's key on the compacted score topic (erasure), awaited."""


class RowSink(Protocol):
    """ClickHouse. `build_rows` turns a batch result into rows (pure; raises on a record whose
    rows cannot be built, which the emit guard dead-letters). `write` stores them durably
    (opening and migrating the store on first use) and returns the rows ClickHouse refused as
    data, as `unstorable` dead letters."""

    def build_rows(self, result: BatchResult) -> Rows: ...
    async def write(self, rows: Rows) -> list[DeadLetterDict]: ...
    @property
    def is_open(self) -> bool: ...
    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(*args)` where the sink's client lives (its thread), e.g. the live backtest
        (opening the store on first use, as `write`)."""


class InputPartitions(Protocol):
    """The consumer of the input topics, as far as the offset books and event-time alignment
    need it."""

    def assignment(self) -> Iterable[TP]:
        """Partitions (all topics) currently assigned to this worker."""
    async def start_offset(self, tp: TP) -> int:
        """Where the consumer reads an assigned partition from: the group's committed offset,
        or the log start when nothing is committed yet."""
    async def commit(self, offsets: Mapping[TP, int]) -> bool: ...
    async def seek(self, tp: TP, offset: int) -> None:
        """Read `tp` from `offset` next (a failed seek is logged, not raised)."""
    async def log_ends(self, tps: list[TP]) -> Mapping[TP, int]:
        """The log end offsets, asked from the broker."""
    def log_end(self, tp: TP) -> int | None:
        """The log end offset as of the consumer's last fetch (no request); None before it knows."""
    async def first_offset_at(self, tp: TP, offset: int) -> int | None:
        """The first offset at or after `offset` the log really holds (holes: compaction, markers)."""
    def last_committed(self, tp: TP) -> int | None:
        """The consumer's own record of the partition's committed offset (before the loop knows it)."""
    def pause(self, tps: set[TP]) -> None:
        """Stop fetching `tps` (event-time alignment: they run ahead of their group)."""
    def resume(self, tps: set[TP]) -> None:
        """Fetch `tps` again (those still assigned)."""


class ModelChannel(Protocol):
    """The compacted `cx.models` topic: the churn model every worker serves."""

    async def publish(self, model: Any, card: Any, early_warning: Any = None) -> None:
        """Publish `model` (a learned churn model, or None: the hand-set model serves) with the
        card of the latest trained model and the early-warning model trained with it (None:
        none), awaited until the broker has it."""


class ChurnHistory(Protocol):
    """Where a learning worker keeps what each tick changed, across restarts
    (pipeline/service/churn_history.py; ClickHouse in the worker). Called in the row sink's
    thread (`RowSink.run`)."""

    def save(self, record: TickRecord) -> None: ...
    def trained(self, row: TrainingRow) -> None:
        """A retraining due at a tick has ended (`training_row`)."""
    def load(self, horizon_days: float, max_rows: int, scope: str, lost_book: bool = True) -> Restored | None:
        """The history a learner of `horizon_days` and `scope` (`scope_of` its input partitions)
        restores (None: none for it); `lost_book`: with the book of a lost training (`read_history`)."""
    def covered(self, t: float, horizon_days: float) -> set[int]:
        """The input partitions whose tick at `t` is stored, by any worker (`covered`)."""
    def pooled(self, horizon_days: float, max_rows: int, as_of: float, max_per_snapshot: int) -> BookRows:
        """A pooled training's rows: every worker's labelled snapshots as the book stood after
        the tick at `as_of` (`pooled_rows`). Called in a thread of its own, not the sink's."""


class PopulationStore(Protocol):
    """Where the worker keeps the population parameters of its wall-clock re-fits, the latest
    read back after a restart (ClickHouse in the worker). Called in the row sink's thread."""

    def save(self, params: PopulationParams, fitted_at: float) -> None: ...
    def load(self) -> PopulationParams | None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Wall clock, Unix seconds."""
    def monotonic(self) -> float: ...


class WorkerMetrics(Protocol):
    """What the loop reports (pipeline.adapters.observability.metrics.Metrics implements it)."""

    def consumed(self, topic: str, n: int = 1) -> None: ...
    def applied(self, topic: str, n: int = 1, last_occurred_at: float | None = None) -> None: ...
    def deadlettered(self, topic: str, reason: str, n: int = 1) -> None: ...
    def duplicate(self, topic: str, n: int = 1) -> None: ...
    def erased(self, topic: str, n: int = 1) -> None: ...
    def batch(self, size: int, seconds: float) -> None: ...
    def consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None: ...
    def scores_published(self, n: int = 1) -> None: ...
    def churn_risk(self, risk: float, tier: str) -> None: ...
    def alert_raised(self, type: str, tier: str, severity: str) -> None: ...  # noqa: A002
    def alert_resolved(self, type: str, tier: str, severity: str) -> None: ...  # noqa: A002
    def complaints_past_sla(self, by_tier: Mapping[str, int]) -> None: ...
    def churn_backtest(self, figures: Mapping[str, object], horizon_days: float, at: float) -> None: ...
    def churn_model(self, card: Any) -> None:
        """The serving churn model changed (its ModelCard; None: the hand-set model)."""
    def churn_early_warning(self, card: Any) -> None:
        """The early-warning model installed (its ModelCard; None: none serves)."""
    def churn_model_refused(self) -> None:
        """A record of the models topic this build cannot serve was refused (the model serving stays)."""
    def churn_pool_missing(self, partitions: int) -> None:
        """The input partitions whose rows the last pooled training went without (0: none)."""
