"""The worker learns the churn model as `cxpulse replay` does: the same event-time ticks (the
tick gate), the same snapshots, the same trainings, and the model it publishes on the models
channel, once installed from its wire form, is the one replay trains on the same events.
In-memory fakes of the worker's ports (tests/unit/test_worker_loop.py); the broker-level run
is tests/integration/test_worker_integration.py."""
from __future__ import annotations

import asyncio
import zlib
from datetime import datetime, timezone

import numpy as np
import pytest

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.learning import churn_trainer
from pipeline.learning.churn_model_codec import decode_model, encode_model
from pipeline.service.churn_learning import ChurnLearner
from pipeline.service.processor import RawRecord
from pipeline.service.replay import replay
from pipeline.service.worker_loop import Delivered, LoopConfig, WorkerLoop
from tests.factories import RECEIVED_AT, T0, at, raw, touchpoint
from tests.unit.test_worker_loop import TOPIC, TP, Clock, Inputs, Metrics, Outputs, Rows, Store

DAY = 86400.0
END = datetime(2026, 6, 1, tzinfo=timezone.utc)
NOW = END.timestamp() + 30 * DAY


class Models:
    """The models channel: what the worker publishes, in wire form."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    async def publish(self, model, card) -> None:
        self.published.append(encode_model(model, card))


# labels come 2H after a snapshot (gone, or no activity within H): a 75-day stream needs a short H
HORIZON_DAYS = 14.0


@pytest.fixture
def small_minimums(monkeypatch):
    monkeypatch.setattr(churn_trainer, "MIN_POSITIVES", 100)
    monkeypatch.setattr(churn_trainer, "MIN_NEGATIVES", 100)
    monkeypatch.setattr(churn_trainer, "MIN_LEAVERS", 20)
    monkeypatch.setattr("pipeline.service.churn_learning.better_than_reference", lambda card: True)


def _stream():
    from pipeline.tools.generator import generate

    stream = generate(customers=250, days=75, seed=3, end=END, invalid_ratio=0.0, duplicate_ratio=0.0)
    return [r.value for r in stream.records], [r.key for r in stream.records], [TOPIC[r.kind] for r in stream.records]


async def _run_worker(values, keys, topics, chunk: int = 400):
    settings = Settings()
    log: list = []
    ends: dict = {}
    inputs = Inputs(log, ends)
    models = Models()
    learner = ChurnLearner(HORIZON_DAYS)
    core = build_core(settings)
    loop = WorkerLoop(core, LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0),
                      store=Store(log), outputs=Outputs(log), rows=Rows(log), inputs=inputs, clock=Clock(NOW),
                      metrics=Metrics(), learner=learner, models=models)
    delivered = []
    for value, key, topic in zip(values, keys, topics):
        tp = TP(topic, zlib.crc32(key) % 2)
        offset = ends.get(tp, 0)
        ends[tp] = offset + 1
        delivered.append(Delivered(tp, RawRecord(tp.topic, tp.partition, offset, key, value)))
    for i in range(0, len(delivered), chunk):
        await loop.deliver(delivered[i:i + chunk])
    while loop.trainings:
        await asyncio.gather(*list(loop.trainings))
    return loop, learner, models, inputs


def test_the_worker_trains_and_publishes_the_model_replay_trains(small_minimums):
    values, keys, topics = _stream()
    assert set(topics) <= set(TOPIC.values())
    r_learner = ChurnLearner(HORIZON_DAYS)
    r_core = build_core(Settings())
    replay(values, r_core, clock=lambda: NOW, learner=r_learner)
    assert r_learner.cards and r_core.churn_model is not None

    loop, w_learner, models, inputs = asyncio.run(_run_worker(values, keys, topics))

    # the same snapshots at the same event-time points
    assert [s.t for s in w_learner.book.labelled] == [s.t for s in r_learner.book.labelled]
    for a, b in zip(w_learner.book.labelled + w_learner.book.pending, r_learner.book.labelled + r_learner.book.pending):
        assert a.customer_ids == b.customer_ids and np.array_equal(a.features, b.features, equal_nan=True)
    # the same trainings, the same model, published on the models channel
    assert [c.to_dict() for c in w_learner.cards] == [c.to_dict() for c in r_learner.cards]
    assert len(models.published) == len(r_learner.cards)
    other = WorkerLoop(build_core(Settings()), LoopConfig(topic_for_type=Settings().topic_for_type),
                       store=Store([]), outputs=Outputs([]), rows=Rows([]), inputs=Inputs([], {}), clock=Clock(NOW),
                       metrics=Metrics())
    other.install_model(models.published[-1])          # any worker installs what the trainer published
    installed, want = other.core.churn_model, r_core.churn_model
    assert installed is not None and installed.version == want.version
    assert np.array_equal(installed.coef, want.coef) and installed.intercept == want.intercept
    assert installed.platt == want.platt and np.array_equal(installed.mean, want.mean)
    assert installed.card.to_dict() == want.card.to_dict()
    x = np.linspace(0.1, 3.0, len(want.feature_names))
    assert installed.explain(x) == want.explain(x)


def _learning_world():
    settings = Settings()
    log: list = []
    ends: dict = {}
    inputs, store = Inputs(log, ends), Store(log)
    loop = WorkerLoop(build_core(settings), LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0),
                      store=store, outputs=Outputs(log), rows=Rows(log), inputs=inputs, clock=Clock(RECEIVED_AT),
                      metrics=Metrics(), learner=ChurnLearner(HORIZON_DAYS), models=Models())

    def records(events):
        out = []
        for e in events:
            tp = TP(TOPIC[e["type"]], 0)
            offset = ends.get(tp, 0)
            ends[tp] = offset + 1
            out.append(Delivered(tp, RawRecord(tp.topic, 0, offset, e["customer_id"].encode(), raw(e))))
        return out
    return loop, inputs, store, records


def test_a_record_after_the_next_tick_waits_for_it_and_its_offset_is_not_committed():
    """T0 is 09:00; the first tick is midnight (+15 h). b's event after midnight waits; b's
    next record waits behind it although it is before midnight (a customer's records of one
    topic stay in offset order: the source-offset dedup needs it; such a record misses the
    tick's snapshot, which replay would include); a's and c's are applied. Commits stop below
    the first held offset until the tick has run."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())   # the assigned partitions and their (empty) logs are known
    tp = TP(TOPIC["touchpoint"], 0)
    first = records([touchpoint("a"), touchpoint("b", when=at(hours=15.5)), touchpoint("c", when=at(hours=14.9)),
                     touchpoint("b", when=at(hours=14.95)), touchpoint("a", when=at(hours=1))])
    asyncio.run(loop.deliver(first))
    assert store.load("a").n == 2 and store.load("c").n == 1 and store.load("b") is None
    assert [off for _, off, _ in loop.gate.held()] == [1, 3]
    asyncio.run(loop.commit_completed_inputs())
    assert inputs.commits[-1] == {tp: 1}                 # not past b's held record
    assert not loop.learner.book.pending                  # no tick yet
    # an event at 02:00: the tick (midnight + the 1-hour lateness bound) has passed
    asyncio.run(loop.deliver(records([touchpoint("d", when=at(hours=17))])))
    [snap] = loop.learner.book.pending
    assert snap.t == (T0.timestamp() // DAY + 1) * DAY and snap.customer_ids == ["a", "c"]
    assert store.load("b").n == 2 and store.load("d").n == 1 and not loop.gate.held()
    asyncio.run(loop.commit_completed_inputs())
    assert inputs.commits[-1] == {tp: 6}


def test_the_model_channel_round_trips_both_kinds_and_the_hand_set_handover():
    rng = np.random.default_rng(1)
    n = 3000
    X = rng.normal(size=(n, len(churn_trainer.FEATURE_NAMES)))
    y = (X[:, 0] + rng.normal(size=n) > 0.5)
    t = np.repeat(np.arange(30) * DAY, n // 30)
    for kind in ("logistic", "lightgbm"):
        model = churn_trainer.train(X, y, t, version=f"{kind}-1", trained_at=float(t[-1]), kind=kind)
        back, card = decode_model(encode_model(model, model.card))
        assert back is not None and back.version == model.version and card == model.card
        assert np.array_equal(back.predict(X[:50]), model.predict(X[:50]))
        assert back.explain(X[7]) == model.explain(X[7])
    served, card = decode_model(encode_model(None, model.card))
    assert served is None and card == model.card
    with pytest.raises(ValueError):
        decode_model(b'{"format": 99}')


def test_a_quiet_stream_runs_its_ticks_by_the_stream_time_once_quiet():
    """No record comes after b's (after midnight): the tick runs once the stream time (the
    latest event time advancing with the wall clock) is past midnight + the lateness bound
    and nothing was delivered for `tick_quiet_seconds` — not before."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())
    asyncio.run(loop.deliver(records([touchpoint("a", when=at(hours=14)), touchpoint("b", when=at(hours=15.5))])))
    assert store.load("b") is None and len(loop.gate) == 1
    loop.clock.t += 3 * 3600                    # stream time: 15:30 + 3 h > midnight + 1 h
    asyncio.run(loop.advance_ticks())
    assert store.load("b") is None               # records came < 60 s ago (monotonic): not quiet yet
    loop.clock.mono += 61
    asyncio.run(loop.advance_ticks())
    [snap] = loop.learner.book.pending
    assert snap.customer_ids == ["a"] and store.load("b").n == 1 and not loop.gate.held()
