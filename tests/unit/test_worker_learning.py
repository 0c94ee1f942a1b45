"""The worker learns the churn model as `cxpulse replay` does: the same event-time ticks (the
tick gate), the same snapshots, the same trainings, and the model it publishes on the models
channel, once installed from its wire form, is the one replay trains on the same events.
In-memory fakes of the worker's ports (tests/unit/test_worker_loop.py); the broker-level run
is tests/integration/test_worker_integration.py."""
from __future__ import annotations

import asyncio
import multiprocessing
import gc
import json
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime, timezone

import numpy as np
import pytest

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.learning import churn_trainer
from pipeline.learning.churn_model_codec import decode_published, encode_model
from pipeline.service import shared_training_set
from pipeline.domain.churn import PopulationParams
from pipeline.service.churn_history import (
    FEATURE_SET, covered, in_scope, pooled_rows, progress_of, read_history, record_rows)
from pipeline.service.churn_learning import ChurnLearner, TrainingSet
from pipeline.domain.churn_snapshots import MAX_PER_SNAPSHOT, SnapshotBook
from pipeline.service.shared_training_set import share
from pipeline.service.processor import RawRecord
from pipeline.service.replay import replay
from pipeline.service.worker_loop import TICK_LOAD_TURN_SECONDS, Delivered, LoopConfig, WorkerLoop
from tests.factories import RECEIVED_AT, T0, at, raw, touchpoint
from tests.unit.test_worker_loop import TOPIC, TP, Clock, Inputs, Metrics, Outputs, Rows, Store

DAY = 86400.0
END = datetime(2026, 6, 1, tzinfo=timezone.utc)
NOW = END.timestamp() + 30 * DAY


class Models:
    """The models channel: what the worker publishes, in wire form."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    async def publish(self, model, card, early_warning=None) -> None:
        self.published.append(encode_model(model, card, early_warning))


# labels come 2H after a snapshot (gone, or no activity within H): a 75-day stream needs a short H
HORIZON_DAYS = 14.0
SCOPE = "0,1"   # the input partitions of the fake worker (tests/unit/test_worker_loop.py Inputs)


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


def _delivered(values, keys, topics) -> tuple[list[Delivered], dict]:
    """The stream's records on two partitions per topic (by a hash of the key), with the log
    end offsets they make."""
    ends: dict = {}
    delivered = []
    for value, key, topic in zip(values, keys, topics):
        tp = TP(topic, zlib.crc32(key) % 2)
        offset = ends.get(tp, 0)
        ends[tp] = offset + 1
        delivered.append(Delivered(tp, RawRecord(tp.topic, tp.partition, offset, key, value)))
    return delivered, ends


async def _run_worker(values, keys, topics, chunk: int = 400, train_executor=None, history=None):
    settings = Settings()
    log: list = []
    delivered, ends = _delivered(values, keys, topics)
    inputs = Inputs(log, ends)
    models = Models()
    learner = ChurnLearner(HORIZON_DAYS)
    core = build_core(settings)
    loop = WorkerLoop(core, LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0),
                      store=Store(log), outputs=Outputs(log), rows=Rows(log), inputs=inputs, clock=Clock(NOW),
                      metrics=Metrics(), learner=learner, models=models, train_executor=train_executor,
                      history=history)
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

    # trainings in an executor of their own: the arrays go there through shared memory
    with ThreadPoolExecutor(max_workers=1) as executor:
        loop, w_learner, models, inputs = asyncio.run(_run_worker(values, keys, topics, train_executor=executor))

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
    # and the early-warning model trained with it, which every worker installs as well
    ew, want_ew = other.core.early_warning, r_core.early_warning
    assert want_ew is not None and want_ew.version.startswith("ew-") and ew is not None
    assert ew.version == want_ew.version and np.array_equal(ew.coef, want_ew.coef)
    assert ew.card.to_dict() == want_ew.card.to_dict() and ew.explain(x) == want_ew.explain(x)
    assert [args for name, args in other.metrics.calls if name == "churn_early_warning"] == [(ew.card,)]


def test_the_first_tick_and_the_trainings_do_not_depend_on_which_event_around_a_midnight_comes_first(small_minimums):
    """Two events 10 minutes either side of a midnight, in either order (both within the
    lateness bound), then the stream: the same ticks, snapshots and trainings. The first
    tick once followed the first event seen (that midnight, or the next), and with it the
    retraining schedule."""
    from pipeline.service.processor import event_time

    values, _, _ = _stream()
    midnight = (min(event_time(v) for v in values) // DAY) * DAY
    around = [raw(touchpoint(c, when=datetime.fromtimestamp(midnight + d, timezone.utc).isoformat()))
              for c, d in (("x", -600.0), ("y", 600.0))]
    learners = []
    for first in (around, around[::-1]):
        learner = ChurnLearner(HORIZON_DAYS)
        replay(first + values, build_core(Settings()), clock=lambda: NOW, learner=learner)
        learners.append(learner)
    a, b = learners
    assert a.cards and [c.to_dict() for c in a.cards] == [c.to_dict() for c in b.cards]
    snaps = [[(s.t, s.customer_ids) for s in lr.book.labelled + lr.book.pending] for lr in learners]
    assert snaps[0] == snaps[1] and snaps[0][0] == (midnight, ["x"])


def _learning_world():
    settings = Settings()
    log: list = []
    ends: dict = {}
    inputs, store = Inputs(log, ends), Store(log)
    loop = WorkerLoop(build_core(settings), LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0),
                      store=store, outputs=Outputs(log), rows=Rows(log), inputs=inputs, clock=Clock(RECEIVED_AT),
                      metrics=Metrics(), learner=ChurnLearner(HORIZON_DAYS), models=Models())

    def records(events, partition: int = 0):
        out = []
        for e in events:
            tp = TP(TOPIC[e["type"]], partition)
            offset = ends.get(tp, 0)
            ends[tp] = offset + 1
            out.append(Delivered(tp, RawRecord(tp.topic, partition, offset, e["customer_id"].encode(), raw(e))))
        return out
    return loop, inputs, store, records


def test_a_record_after_the_next_tick_waits_for_it_and_its_offset_is_not_committed():
    """T0 is 09:00; the first tick is midnight (+15 h). b's event after midnight waits; b's
    next record is applied although it comes behind it, since it is before midnight (the
    tick's snapshot has it, as replay's does), and b's state keeps the held offset new for
    the source-offset dedup; a's and c's are applied. Commits stop below the first held
    offset until the tick has run."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())   # the assigned partitions and their (empty) logs are known
    tp = TP(TOPIC["touchpoint"], 0)
    first = records([touchpoint("a"), touchpoint("b", when=at(hours=15.5)), touchpoint("c", when=at(hours=14.9)),
                     touchpoint("b", when=at(hours=14.95)), touchpoint("a", when=at(hours=1))])
    asyncio.run(loop.deliver(first))
    assert store.load("a").n == 2 and store.load("c").n == 1 and store.load("b").n == 1
    assert store.load("b").skip == [0, 1]                # slot 0 (touchpoints), offset 1: held, not applied
    assert [off for _, off, _ in loop.gate.held()] == [1]
    asyncio.run(loop.commit_completed_inputs())
    assert inputs.commits[-1] == {tp: 1}                 # not past b's held record
    assert not loop.learner.book.pending                  # no tick yet
    # an event at 02:00: the tick (midnight + the 1-hour lateness bound) has passed
    asyncio.run(loop.deliver(records([touchpoint("d", when=at(hours=17))])))
    [snap] = loop.learner.book.pending
    assert snap.t == (T0.timestamp() // DAY + 1) * DAY and snap.customer_ids == ["a", "b", "c"]
    assert store.load("b").n == 2 and store.load("b").skip == [] and store.load("d").n == 1
    assert not loop.gate.held()
    asyncio.run(loop.commit_completed_inputs())
    assert inputs.commits[-1] == {tp: 6}


def test_a_held_record_applied_after_a_later_offset_is_applied_once_after_a_restart():
    """b's record at offset 1 is held for the tick, its record at offset 3 applied; the worker
    stops before the tick. A new one, over the same store, reads the partition again (from
    its start: the fake consumer's start offset): b's held record is applied (its offset was
    kept new), b's offset 3 and a's and c's records are redeliveries. Every event counts once."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())
    first = records([touchpoint("a"), touchpoint("b", when=at(hours=15.5)), touchpoint("c", when=at(hours=14.9)),
                     touchpoint("b", when=at(hours=14.95)), touchpoint("a", when=at(hours=1))])
    asyncio.run(loop.deliver(first))
    asyncio.run(loop.commit_completed_inputs())
    assert inputs.commits[-1] == {TP(TOPIC["touchpoint"], 0): 1} and store.load("b").n == 1
    settings = Settings()
    again = WorkerLoop(build_core(settings), LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0),
                       store=store, outputs=Outputs([]), rows=Rows([]), inputs=inputs, clock=Clock(RECEIVED_AT),
                       metrics=Metrics(), learner=ChurnLearner(HORIZON_DAYS), models=Models())
    asyncio.run(again.watch_stalls())
    asyncio.run(again.deliver(first + records([touchpoint("d", when=at(hours=17))])))
    assert {c: store.load(c).n for c in "abcd"} == {"a": 2, "b": 2, "c": 1, "d": 1}
    assert store.load("b").skip == []


def test_a_tick_waits_until_the_broker_confirms_a_partition_that_looks_caught_up():
    """A backfill: partition 1 looks caught up (the consumer's copy of its log end, from its
    last fetch, is old) while its producer's last batch, e's event before midnight, lands only
    after partition 0's event at 02:00 has been read. That event lets the midnight tick run;
    the tick waits for the broker to confirm partition 1 caught up, which it does not while
    e's record is still to be received. e's event then makes the tick's snapshot, as in
    replay; the tick runs once the broker confirms partition 1 at its end. Before, the tick
    ran at once and its snapshot missed e."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())   # the assigned partitions and their (empty) logs are known
    fetched = dict(inputs.ends)   # the consumer's copies of the log ends, as of its last fetches
    inputs.log_end = fetched.get
    p1 = TP(TOPIC["touchpoint"], 1)
    first = records([touchpoint("a")]) + records([touchpoint("b", when=at(hours=1))], partition=1)
    fetched.update(inputs.ends)
    asyncio.run(loop.deliver(first))
    late = records([touchpoint("e", when=at(hours=14.9))], partition=1)   # produced, not yet fetched
    loop.clock.mono += 1.0   # the confirmations so far were asked before d's record came
    asyncio.run(loop.deliver(records([touchpoint("d", when=at(hours=17))])))
    assert not loop.learner.book.pending and store.load("d") is None   # the tick and d wait
    assert loop.ticks_waiting() and not loop.merge.caught_up(p1)          # the broker showed e's record
    asyncio.run(loop.deliver(late))
    [snap] = loop.learner.book.pending
    assert snap.t == (T0.timestamp() // DAY + 1) * DAY and snap.customer_ids == ["a", "b", "e"]
    assert store.load("d").n == 1 and not loop.gate.held() and not loop.ticks_waiting()


def _training_rows(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows a model trains on (X, y, t): the label follows the first feature, over 45 days."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(churn_trainer.FEATURE_NAMES)))
    y = X[:, 0] + rng.normal(size=n) > 0.5
    return X, y, np.repeat(np.arange(30) * 1.5 * DAY, n // 30)


def test_the_model_channel_round_trips_both_kinds_and_the_hand_set_handover():
    X, y, t = _training_rows(1)
    for kind in ("logistic", "lightgbm"):
        model = churn_trainer.train(X, y, t, version=f"{kind}-1", trained_at=float(t[-1]), kind=kind)
        back, card = decode_published(encode_model(model, model.card))[:2]
        assert back is not None and back.version == model.version and card == model.card
        assert np.array_equal(back.predict(X[:50]), model.predict(X[:50]))
        assert back.explain(X[7]) == model.explain(X[7])
    served, card = decode_published(encode_model(None, model.card))[:2]
    assert served is None and card == model.card
    with pytest.raises(ValueError):
        decode_published(b'{"format": 99}')


def test_the_model_channel_carries_each_features_fitted_range_and_reads_a_document_without_it():
    X, y, t = _training_rows(2)
    X[:, 3] = np.nan                      # a feature never known in training: unbounded
    model = churn_trainer.train(X, y, t, version="lr-1", trained_at=float(t[-1]))
    assert np.isneginf(model.low[3]) and np.isposinf(model.high[3])
    doc = json.loads(encode_model(model, model.card))   # standard JSON: ±inf travel as null
    assert doc["model"]["low"][3] is None and doc["model"]["high"][3] is None
    back = decode_published(json.dumps(doc).encode()).model
    assert np.array_equal(back.low, model.low) and np.array_equal(back.high, model.high)
    far = X[:20] * 50.0                   # far outside the fitted range
    assert np.array_equal(back.predict(far), model.predict(far))
    # a document of a build before the range: read as unbounded, scoring as it did then
    del doc["model"]["low"], doc["model"]["high"]
    old = decode_published(json.dumps(doc).encode()).model
    assert old.low is None and old.high is None
    z = (np.nan_to_num(far, nan=0.0) - old.mean) / old.scale
    z[:, 3] = 0.0
    assert old.raw(far) == pytest.approx(z @ old.coef + old.intercept, rel=1e-9)
    doc["model"]["low"] = [0.0]
    with pytest.raises(ValueError, match="fitted range"):
        decode_published(json.dumps(doc).encode())


def test_the_model_channel_carries_the_early_warning_model_also_when_the_hand_set_model_serves():
    X, y, t = _training_rows(3)
    ew = churn_trainer.train(X, y, t, version="ew-1", trained_at=float(t[-1]))
    assert isinstance(ew, churn_trainer.LinearChurnModel)
    for served in (None, churn_trainer.train(X, ~y, t, version="lr-1", trained_at=float(t[-1]))):
        value = encode_model(served, ew.card, ew)
        back = decode_published(value).early_warning
        assert back is not None and back.version == "ew-1" and back.card == ew.card
        assert back.explain(X[3]) == ew.explain(X[3])
        assert (decode_published(value).model is None) == (served is None)
    assert decode_published(encode_model(None, None)).early_warning is None   # a record of a build before it: none
    doc = json.loads(encode_model(None, None, ew))
    doc["early_warning"]["feature_names"] = doc["early_warning"]["feature_names"][:-1]
    with pytest.raises(ValueError, match="other features"):
        decode_published(json.dumps(doc).encode())


def test_a_model_record_this_build_cannot_serve_is_refused_and_the_served_model_stays():
    """The compacted models channel can hold what this build cannot serve: a model published
    by a build with other features (an upgrade), or a record that is no model document. Such
    a record is refused with a clear error, and scoring goes on with the model serving. (A
    model of other features was installed, and every event was then dead-lettered
    `processing_error`; a JSON value that is no object raised AttributeError in the feed.)"""
    X, y, t = _training_rows(2)
    good = churn_trainer.train(X, y, t, version="lr-good", trained_at=float(t[-1]))
    doc = json.loads(encode_model(good, good.card))
    older = json.loads(json.dumps(doc))
    older["model"].update(version="lr-older", feature_names=doc["model"]["feature_names"][:-1],
                          mean=doc["model"]["mean"][:-1], scale=doc["model"]["scale"][:-1],
                          coef=doc["model"]["coef"][:-1])
    short = json.loads(json.dumps(doc))
    short["model"]["coef"] = doc["model"]["coef"][:-1]
    trees = json.loads(encode_model(churn_trainer.train(X, y, t, version="gbt-1", trained_at=float(t[-1]),
                                                        kind="lightgbm"), None))
    trees["model"]["booster"] = "not a tree"
    refused = [b"null", b"[]", b'"x"', b"1", b"\xff\x00garbage", json.dumps(older).encode(),
               json.dumps(short).encode(), json.dumps(trees).encode()]
    for value in refused:
        with pytest.raises(ValueError):
            decode_published(value)

    loop, inputs, store, records = _learning_world()
    loop.install_model(encode_model(good, good.card))
    for value in refused:
        loop.install_model(value)
    assert loop.core.churn_model is not None and loop.core.churn_model.version == "lr-good"
    # each refusal is counted (cxpulse_churn_model_records_refused_total, alert CxpulseChurnModelRefused)
    assert [name for name, _ in loop.metrics.calls if name.startswith("churn_model")] == (
        ["churn_model"] + ["churn_model_refused"] * len(refused))
    asyncio.run(loop.watch_stalls())
    asyncio.run(loop.deliver(records([touchpoint("a", when=at(hours=1)), touchpoint("b", when=at(hours=2))])))
    outputs = loop.outputs
    assert isinstance(outputs, Outputs) and outputs.dead_letters == []
    assert [(s["customer_id"], s["churn_model"]) for s in outputs.scores] == [("a", "lr-good"), ("b", "lr-good")]


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


def test_a_tick_gives_the_event_loop_turns_while_it_loads_the_states_and_loads_each_owned_one():
    """Decoding every stored state at a tick takes seconds at 100k customers: the tick loads
    them with a turn of the event loop after each TICK_LOAD_TURN_SECONDS of loading (here a
    monotonic clock advancing 1 ms a load), and gets the very states `owned_states` gives at
    once (a customer fed from a partition another worker owns is left out)."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.deliver(records([touchpoint(f"c{i:03d}", when=at(hours=1)) for i in range(400)])))
    foreign = store.load("c007")
    store.states["c007"] = replace(foreign, offs=[9, 0, -1, -1, -1, -1])   # fed from partition 9: not assigned
    turns = 0
    turns_seen: list[int] = []
    clock = loop.clock

    def load(customer_id):
        clock.mono += 0.001
        turns_seen.append(turns)
        return store.states.get(customer_id)
    loop.load_state = load   # type: ignore[method-assign]

    async def tick():
        nonlocal turns
        running = True

        async def probe():
            nonlocal turns
            while running:
                await asyncio.sleep(0)
                turns += 1
        task = asyncio.create_task(probe())
        await asyncio.sleep(0)
        states = await loop._owned_states_in_slices()
        running = False
        await task
        return states

    states = asyncio.run(tick())
    assert len(turns_seen) == 400
    longest = max(sum(1 for t in turns_seen if t == k) for k in set(turns_seen))   # loads between two turns
    assert len(set(turns_seen)) > 10 and longest <= round(TICK_LOAD_TURN_SECONDS / 0.001) + 1
    want = loop.owned_states(sorted(store.states))
    assert "c007" not in states and len(want) == 399
    assert sorted(states) == [s.customer_id for s in want] and all(states[s.customer_id] is s for s in want)


def test_the_garbage_collector_is_off_during_a_tick_only():
    """A collection of the older generations walks every decoded state the tick holds: the
    collector is off from the first load to the last state freed, and as it was afterwards."""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.deliver(records([touchpoint(f"c{i:03d}", when=at(hours=1)) for i in range(50)])))
    collecting: list[bool] = []

    def load(customer_id):
        collecting.append(gc.isenabled())
        return store.states.get(customer_id)
    loop.load_state = load   # type: ignore[method-assign]
    tick = (T0.timestamp() // DAY + 1) * DAY
    assert gc.isenabled()
    asyncio.run(loop._tick(tick))
    assert collecting and not any(collecting) and gc.isenabled()
    assert loop.learner.book.pending[-1].customer_ids == sorted(store.states)   # the tick saw every state
    gc.disable()
    try:
        asyncio.run(loop._tick(tick + DAY))
        assert not gc.isenabled()                 # not switched on by a tick that found it off
    finally:
        gc.enable()


def test_a_training_set_goes_to_another_process_through_shared_memory_unchanged():
    rng = np.random.default_rng(2)
    n = 40_000   # several slices of SLICE_BYTES (here 64 KB)
    X = rng.normal(size=(n, 52)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    data = TrainingSet(X, rng.random(n) < 0.2, np.arange(n, dtype=float), rng.random(n).astype(np.float32), 17, 30.0)

    async def handed(executor):
        shared, block = await share(data)
        try:
            return shared, await asyncio.get_running_loop().run_in_executor(executor, shared.load)
        finally:
            block.close()
            block.unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shared_training_set, "SLICE_BYTES", 1 << 16)
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as executor:
            shared, back = asyncio.run(handed(executor))
    for field in ("X", "y", "t", "reference"):
        a, b = getattr(data, field), getattr(back, field)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    assert (back.leavers, back.horizon_days) == (17, 30.0)
    with pytest.raises(FileNotFoundError):   # the creator unlinked the block
        shared.load()


class History:
    """The ChurnHistory port in memory: the rows ClickHouse holds (a row written twice counts once)."""

    def __init__(self) -> None:
        self.snaps: list = []
        self.labels: list = []
        self.ticks: list = []
        self.trainings: list = []
        self.restored = None   # what the last `load` gave

    def save(self, record) -> None:
        snaps, labels, tick = record_rows(record)
        self.snaps += [(*row, record.scope) for row in snaps]
        self.labels += labels
        self.ticks.append(tick)

    def trained(self, row) -> None:
        self.trainings.append(row)

    def _snaps(self, scope: str | None):
        return [r[:4] for r in self.snaps if scope is None or in_scope(r[4], scope)]

    def _counts(self, scope: str | None):
        return sorted(Counter(t for t, _ in {(r[0], r[1]) for r in self._snaps(scope)}).items())

    def _rows_since(self, scope: str | None, until: float = float("inf")):
        return lambda since: ([r for r in self._snaps(scope) if since <= r[0] <= until],
                              [r for r in self.labels if since <= r[0] <= until])

    def covered(self, t: float, horizon_days: float):
        return covered(self.ticks, t, horizon_days)

    def pooled(self, horizon_days: float, max_rows: int, as_of: float, max_per_snapshot: int):
        return pooled_rows(self.ticks, self._counts(None), lambda since, until: self._rows_since(None, until)(since),
                           horizon_days, max_rows, as_of, max_per_snapshot)

    def load(self, horizon_days: float, max_rows: int, scope: str, lost_book: bool = True):
        self.restored = read_history(self.ticks, lambda: self._counts(scope), self._rows_since(scope), horizon_days,
                                     max_rows, self.trainings, scope, lost_book)
        return self.restored


class Resumed(Inputs):
    """The input partitions of a restarted worker: it starts at the committed offsets."""

    def __init__(self, log: list, ends: dict, committed: dict) -> None:
        super().__init__(log, ends)
        self.committed = committed

    async def start_offset(self, tp) -> int:
        return self.committed.get(tp, 0)


def _dies_training(loop: WorkerLoop, tick: float | None) -> asyncio.Event:
    """Make `loop`'s training at `tick` never end (its worker is stopped while it runs); the
    event is set once that training has started."""
    started = asyncio.Event()
    if tick is not None:
        fit = loop._fit

        async def dying_fit(kind, now, data):
            if now == tick:
                started.set()
                await asyncio.Event().wait()
            return await fit(kind, now, data)
        loop._fit = dying_fit   # type: ignore[method-assign]
    return started


async def _run_with_restart(values, keys, topics, history: History, restart_at: float, chunk: int = 400,
                            dies_training: float | None = None):
    """A learning worker over the first `restart_at` of the stream, stopped once its trainings
    are done and its offsets committed; a new one (new core, new learner) over the same state
    store and history, fed from the committed offsets on (what was applied but not committed
    comes again). `dies_training`: the first worker's training at that tick never ends (it is
    stopped while the training runs)."""
    settings = Settings()
    log: list = []
    store = Store(log)
    delivered, ends = _delivered(values, keys, topics)

    def worker(inputs):
        learner, models = ChurnLearner(HORIZON_DAYS), Models()
        loop = WorkerLoop(build_core(settings), LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0),
                          store=store, outputs=Outputs(log), rows=Rows(log), inputs=inputs, clock=Clock(NOW),
                          metrics=Metrics(), learner=learner, models=models, history=history)
        return loop, learner, models

    first, first_learner, first_models = worker(Inputs(log, ends))
    hung = _dies_training(first, dies_training)
    cut = int(len(delivered) * restart_at)
    for i in range(0, cut, chunk):
        await first.deliver(delivered[i:min(i + chunk, cut)])
    while first.trainings and not (hung.is_set() and len(first.trainings) == 1):
        await asyncio.wait(list(first.trainings), timeout=0.05)
    assert hung.is_set() == (dies_training is not None)
    for task in list(first.trainings):   # the worker dies: the training in flight is lost
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await first.commit_completed_inputs()
    committed = first.inputs.commits[-1]
    second, second_learner, second_models = worker(Resumed(log, ends, committed))
    rest = [d for d in delivered if d.record.offset >= committed.get(d.tp, 0)]
    assert len(rest) > len(delivered) - cut   # some records applied before the restart come again
    for i in range(0, len(rest), chunk):
        await second.deliver(rest[i:i + chunk])
    while second.trainings:
        await asyncio.gather(*list(second.trainings))
    return first, first_learner, first_models, second, second_learner, second_models


@pytest.mark.parametrize("restart_at", [0.45, 0.8])
def test_a_restarted_learning_worker_reads_its_history_back_and_trains_what_replay_trains(small_minimums, restart_at):
    """Stopped part-way (after some trainings at 0.8, before the first at 0.45) and started again
    with a new core and learner over the same states and history: the book, the population
    parameters and the retraining schedule come back, and the two workers' trainings together
    are replay's, down to the model served at the end."""
    values, keys, topics = _stream()
    r_learner = ChurnLearner(HORIZON_DAYS)
    r_core = build_core(Settings())
    replay(values, r_core, clock=lambda: NOW, learner=r_learner)

    history = History()
    first, first_learner, _, second, second_learner, second_models = asyncio.run(
        _run_with_restart(values, keys, topics, history, restart_at))
    # read back to the first worker's last tick
    assert history.restored is not None and history.restored.progress.last_tick == first_learner.book.pending[-1].t
    assert [s.t for s in second_learner.book.labelled] == [s.t for s in r_learner.book.labelled]
    for a, b in zip(second_learner.book.labelled + second_learner.book.pending,
                    r_learner.book.labelled + r_learner.book.pending):
        assert a.t == b.t and a.customer_ids == b.customer_ids
        assert np.array_equal(a.features, b.features, equal_nan=True) and np.array_equal(a.reference, b.reference)
        assert (a.labels is None and b.labels is None) or np.array_equal(a.labels, b.labels)
        assert a.within == b.within
    assert second.core.population == r_core.population
    cards = [c.to_dict() for c in first_learner.cards + second_learner.cards]
    assert cards == [c.to_dict() for c in r_learner.cards] and len(second_learner.cards) >= 1
    assert second.core.churn_model is not None and second.core.churn_model.version == r_core.churn_model.version
    assert np.array_equal(second.core.churn_model.coef, r_core.churn_model.coef)
    # the early-warning model too: its rows (`still_here`) come back with the labelled snapshots
    assert r_core.early_warning is not None and second.core.early_warning is not None
    assert second.core.early_warning.card.to_dict() == r_core.early_warning.card.to_dict()
    assert np.array_equal(second.core.early_warning.coef, r_core.early_warning.coef)


def test_a_training_in_flight_when_the_worker_dies_is_trained_again_after_the_restart(small_minimums):
    """The first worker is stopped while its last training runs: its tick is written, the
    training never ends. The restarted worker trains it again, from the book as it stood at
    that tick, before its own trainings: the two workers' cards together are still replay's.
    (Before, the lost training's card was missing, and the served model stayed the previous
    one until the next retraining, a week of event time later.)"""
    values, keys, topics = _stream()
    r_learner = ChurnLearner(HORIZON_DAYS)
    r_core = build_core(Settings())
    replay(values, r_core, clock=lambda: NOW, learner=r_learner)
    _, whole, *_ = asyncio.run(_run_with_restart(values, keys, topics, History(), 0.8))
    lost = whole.cards[-1].trained_at   # the first worker's last training
    assert lost > whole.cards[0].trained_at

    history = History()
    first, first_learner, _, second, second_learner, second_models = asyncio.run(
        _run_with_restart(values, keys, topics, history, 0.8, dies_training=lost))
    assert [c.trained_at for c in first_learner.cards] == [c.trained_at for c in whole.cards[:-1]]
    assert history.restored is not None and history.restored.progress.last_train == lost
    assert history.restored.lost is not None and history.restored.training_lost
    assert history.restored.progress.last_tick > lost   # ticks went on while it ran: the book of that tick is read again
    assert second_learner.cards[0].trained_at == lost
    cards = [c.to_dict() for c in first_learner.cards + second_learner.cards]
    assert cards == [c.to_dict() for c in r_learner.cards]
    assert second.core.churn_model is not None and second.core.churn_model.version == r_core.churn_model.version
    # every retraining's end is recorded: a second restart would train none again
    # (the earlier rows are the cold starts: nothing trained)
    trained = [row for row in history.trainings if row[3]]
    assert [(row[0], row[3]) for row in trained] == [(c["trained_at"], c["version"]) for c in cards]
    assert all(row[0] < trained[0][0] and row[4] == "hand-set" for row in history.trainings if not row[3])
    assert history.load(HORIZON_DAYS, second_learner.book.max_rows, SCOPE).lost is None


async def _two_workers(values, keys, topics, history: History, models: Models, restart_second_at: float | None = None,
                       first_dies_training: float | None = None, per_snapshot: int = MAX_PER_SNAPSHOT,
                       second_absent: bool = False, chunk: int = 400):
    """Two learning workers sharing the history and the models channel: the first owns input
    partition 0 of every topic, the second partition 1. The second is stopped at
    `restart_second_at` of its records and started again over its store from its committed
    offsets, with a new core and learner. `first_dies_training`: the first worker's training at
    that tick never ends; it is stopped then and started again the same way. `second_absent`:
    the second gets no records (its worker is down), and the first waits for it not at all.
    Returns the two workers at the end and the ones stopped (or the same)."""
    settings = Settings()
    log: list = []
    delivered, ends = _delivered(values, keys, topics)

    def worker(partition: int, store, inputs):
        inputs.assigned = {TP(topic, partition) for topic in TOPIC.values()}
        config = LoopConfig(topic_for_type=settings.topic_for_type, align_idle_seconds=0.0, partitions=2,
                            pool_poll_seconds=0.0, pool_wait_seconds=0.0 if second_absent else 3600.0)
        learner = ChurnLearner(HORIZON_DAYS, book=SnapshotBook(HORIZON_DAYS, max_per_snapshot=per_snapshot))
        return WorkerLoop(build_core(settings), config, store=store, outputs=Outputs(log), rows=Rows(log), inputs=inputs,
                          clock=Clock(NOW), metrics=Metrics(), learner=learner, models=models, history=history)

    async def restart(loop, partition: int, store, records):
        await loop.commit_completed_inputs()
        committed = loop.inputs.commits[-1]
        again = worker(partition, store, Resumed(log, ends, committed))
        rest = [d for d in records if d.record.offset >= committed.get(d.tp, 0)]
        for i in range(0, len(rest), chunk):
            await again.deliver(rest[i:i + chunk])
        if not again.read_back_done:
            await again.read_back()
        return again

    mine = [[d for d in delivered if d.tp.partition == p] for p in (0, 1)]
    if second_absent:
        mine[1] = []
    first_store, second_store = Store(log), Store(log)
    first, second = worker(0, first_store, Inputs(log, ends)), worker(1, second_store, Inputs(log, ends))
    hung = _dies_training(first, first_dies_training)
    cut = len(mine[1]) if restart_second_at is None else int(len(mine[1]) * restart_second_at)
    for i in range(0, max(len(mine[0]), cut), chunk):
        await first.deliver(mine[0][i:i + chunk])
        await second.deliver(mine[1][i:min(i + chunk, cut)])
    stopped_first, stopped_second = first, second
    if restart_second_at is not None:
        second = await restart(second, 1, second_store, mine[1])
    if first_dies_training is not None:
        await asyncio.wait_for(hung.wait(), timeout=120)
        for task in list(first.trainings):   # the worker dies: the training in flight is lost
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        first = await restart(first, 0, first_store, mine[0])
    for loop in (first, second):
        while loop.trainings:   # a pooled training waits for the other worker's tick: not forever here
            await asyncio.wait_for(asyncio.gather(*list(loop.trainings)), timeout=120)
    return first, second, stopped_first, stopped_second


def test_with_two_learning_workers_the_owner_of_partition_0_trains_and_each_restores_its_own_history(small_minimums):
    """Two learning workers share the ClickHouse history and the models channel. Only the owner
    of input partition 0 trains and publishes, from the rows of both (before, both trained on
    their own customers and published in turn on the one channel). Each writes its own rows
    under its scope, and the
    second, stopped and started again, reads back its own book, population and schedule, not the
    first's: it ends with the book it has without the restart (before, it read the first worker's
    rows and ticks as its own)."""
    values, keys, topics = _stream()
    models, history = Models(), History()
    first, second, _, _ = asyncio.run(_two_workers(values, keys, topics, history, models))
    assert first.learner.cards and not second.learner.cards
    assert len(models.published) == len(first.learner.cards)
    assert [row[3] for row in history.trainings if row[3]] == [c.version for c in first.learner.cards]
    for loop, partition in ((first, 0), (second, 1)):
        owned = {k.decode() for k, tp in zip(keys, _delivered(values, keys, topics)[0]) if tp.tp.partition == partition}
        assert all(set(s.customer_ids) <= owned for s in loop.learner.book.labelled + loop.learner.book.pending)
    assert {t[6] for t in history.ticks} == {"0", "1"}

    restarted_history = History()
    _, again, _, stopped = asyncio.run(_two_workers(values, keys, topics, restarted_history, Models(),
                                                   restart_second_at=0.8))
    restored = restarted_history.restored
    assert restored is not None and restored.progress.last_tick == stopped.learner.book.pending[-1].t
    a, b = again.learner.book, second.learner.book
    assert [s.t for s in a.labelled] == [s.t for s in b.labelled] and [s.t for s in a.pending] == [s.t for s in b.pending]
    for x, y in zip(a.labelled + a.pending, b.labelled + b.pending):
        assert x.customer_ids == y.customer_ids and np.array_equal(x.features, y.features, equal_nan=True)
        assert (x.labels is None and y.labels is None) or np.array_equal(x.labels, y.labels)
    assert again.core.population == second.core.population


@pytest.mark.parametrize("per_snapshot", [MAX_PER_SNAPSHOT, 60])
def test_two_learning_workers_train_on_the_rows_of_both_what_replay_trains(small_minimums, monkeypatch, per_snapshot):
    """The trainer waits at each retraining for the other worker's tick and trains on the rows
    of both, read back from the history: with the population re-fits off (each worker fits its
    own population, replay one for all) its models are replay's, card for card. With 60 rows a
    snapshot (fewer than the customers), each worker keeps 60 of its own and the trainer keeps
    the 60 of the union replay keeps."""
    monkeypatch.setattr("pipeline.service.replay.REFIT_EVERY", float("inf"))
    monkeypatch.setattr("pipeline.service.worker_loop.REFIT_EVERY", float("inf"))
    values, keys, topics = _stream()
    r_learner = ChurnLearner(HORIZON_DAYS, book=SnapshotBook(HORIZON_DAYS, max_per_snapshot=per_snapshot))
    r_core = build_core(Settings())
    replay(values, r_core, clock=lambda: NOW, learner=r_learner)
    assert len(r_learner.cards) >= 2
    models, history = Models(), History()
    first, second, _, _ = asyncio.run(_two_workers(values, keys, topics, history, models, per_snapshot=per_snapshot))
    assert [c.to_dict() for c in first.learner.cards] == [c.to_dict() for c in r_learner.cards]
    assert not second.learner.cards and len(models.published) == len(r_learner.cards)
    assert first.core.churn_model is not None and np.array_equal(first.core.churn_model.coef, r_core.churn_model.coef)
    pooled = [args for name, args in first.metrics.calls if name == "churn_pool_missing"]   # cold starts too
    assert set(pooled) == {(0,)} and len(pooled) >= len(r_learner.cards)
    # each worker's own book is half of it
    rows = sum(len(s.customer_ids) for s in first.learner.book.labelled)
    assert 0 < rows < sum(len(s.customer_ids) for s in r_learner.book.labelled)

    if per_snapshot != MAX_PER_SNAPSHOT:
        # each kept up to 60 of its own: together more than replay's 60, cut to replay's sample
        both = zip(first.learner.book.labelled, second.learner.book.labelled)
        assert any(len(a.customer_ids) + len(b.customer_ids) > per_snapshot for a, b in both)
        return
    # the trainer dies during its last training: started again, it trains it on the rows of both
    lost = r_learner.cards[-1].trained_at
    history = History()
    first, _, dead, _ = asyncio.run(_two_workers(values, keys, topics, history, Models(), first_dies_training=lost))
    assert [c.trained_at for c in dead.learner.cards] == [c.trained_at for c in r_learner.cards[:-1]]
    # it trains on every worker's rows, so it did not read its own book of that tick
    assert history.restored is not None and history.restored.training_lost and history.restored.lost is None
    assert [c.to_dict() for c in dead.learner.cards + first.learner.cards] == [c.to_dict() for c in r_learner.cards]


def test_a_cold_start_retraining_is_recorded_as_ended():
    """A retraining due while the history is too small trains nothing; it is recorded as ended
    at once, so a restart does not take it again."""
    history = History()
    restored = read_history([(10 * DAY, HORIZON_DAYS, FEATURE_SET, False, True, "", SCOPE)], lambda: [],
                            lambda since: ([], []), HORIZON_DAYS, 1000, scope=SCOPE)
    assert restored is not None and restored.lost is not None and restored.lost.rows == []
    loop, inputs, store, records = _learning_world()
    loop.history = history
    asyncio.run(loop.watch_stalls())
    asyncio.run(loop.deliver(records([touchpoint("a"), touchpoint("d", when=at(hours=17))])))   # the first tick ran
    assert [t[4] for t in history.ticks] == [True]   # a retraining was due at the first tick: a cold start
    assert [(row[0], row[3], row[4]) for row in history.trainings] == [(history.ticks[0][0], "", "hand-set")]
    assert history.load(HORIZON_DAYS, 1000, SCOPE).lost is None


def test_without_its_history_a_restarted_learning_worker_starts_a_new_book(small_minimums):
    """The contrast: the same restart with the history lost trains other models than replay."""
    values, keys, topics = _stream()
    r_learner = ChurnLearner(HORIZON_DAYS)
    replay(values, build_core(Settings()), clock=lambda: NOW, learner=r_learner)
    history = History()
    history.load = lambda horizon_days, max_rows, scope: None   # type: ignore[method-assign]
    _, first_learner, _, _, second_learner, _ = asyncio.run(_run_with_restart(values, keys, topics, history, 0.8))
    assert [c.to_dict() for c in first_learner.cards + second_learner.cards] != [c.to_dict() for c in r_learner.cards]
    assert len(second_learner.book.labelled) < len(r_learner.book.labelled)


def test_history_of_another_horizon_feature_set_or_scope_is_not_read():
    tick = (10 * DAY, HORIZON_DAYS, FEATURE_SET, True, True, json.dumps(asdict(PopulationParams(r=1.5))), SCOPE)
    progress = progress_of([tick], HORIZON_DAYS, scope=SCOPE)
    assert progress is not None and progress.population == PopulationParams(r=1.5)
    assert progress.last_tick == progress.last_train == progress.last_refit == 10 * DAY
    assert progress_of([tick], 30.0, scope=SCOPE) is None
    assert progress_of([(11 * DAY, HORIZON_DAYS, "another build", False, False, "", SCOPE)] + [tick], HORIZON_DAYS,
                       scope=SCOPE) is None
    assert progress_of([], HORIZON_DAYS, scope=SCOPE) is None
    # another worker's ticks (scope "2,3") are not this worker's progress; rows from before
    # scopes ("") are read by any scope
    other = (12 * DAY, HORIZON_DAYS, FEATURE_SET, False, True, "", "2,3")
    assert progress_of([tick, other], HORIZON_DAYS, scope=SCOPE).last_tick == 10 * DAY
    assert progress_of([tick, other], HORIZON_DAYS, scope="0") is None
    legacy = (*tick[:6], "")
    assert progress_of([legacy], HORIZON_DAYS, scope="0") == progress


def test_an_erased_customer_leaves_the_churn_models_snapshots():
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())
    asyncio.run(loop.deliver(records([touchpoint("a"), touchpoint("c", when=at(hours=2)),
                                      touchpoint("d", when=at(hours=17))])))   # past midnight + 1 h: the tick ran
    [snap] = loop.learner.book.pending
    assert snap.customer_ids == ["a", "c"]
    asyncio.run(loop.erase(b"a", T0.timestamp() + 18 * 3600))
    [snap] = loop.learner.book.pending
    assert snap.customer_ids == ["c"] and snap.features.shape[0] == 1 and len(snap.reference) == 1


def test_a_trainer_whose_other_worker_is_down_trains_on_the_rows_stored_and_says_so(small_minimums):
    """The second worker never stores a tick: once the wait is over (none here) the trainer trains
    on its own rows and exports how many input partitions it went without."""
    values, keys, topics = _stream()
    first, second, _, _ = asyncio.run(_two_workers(values, keys, topics, History(), Models(), second_absent=True))
    assert first.learner.cards and not second.learner.cards
    assert {args for name, args in first.metrics.calls if name == "churn_pool_missing"} == {(1,)}


def test_a_pooled_read_runs_with_the_garbage_collector_off_and_frees_its_rows():
    """The read makes millions of objects (500,000 rows of 52 features): collections walking them
    held the event loop up to 2.2 s. The collector is off while it runs, on again after, and the
    rows read are freed (a slice at a time) before the training set is handed back."""
    values, keys, topics = _stream()
    history = History()
    seen: list = []
    pooled = history.pooled

    def watched(*args):
        rows = pooled(*args)
        seen.append((gc.isenabled(), rows))
        return rows
    history.pooled = watched   # type: ignore[method-assign]
    first, _, _, _ = asyncio.run(_two_workers(values, keys, topics, history, Models()))
    assert seen and not any(on for on, _ in seen) and gc.isenabled()
    assert any(len(first_rows.ticks) for _, first_rows in seen) and all(rows.rows == [] for _, rows in seen)


def test_learning_workers_pool_only_over_a_shared_clickhouse():
    """Each worker process holds its embedded chDB store alone: the trainer does not wait for
    partitions whose rows it can never read. A ClickHouse server is shared: it pools."""
    from agents.factory import loop_config

    assert loop_config(Settings(clickhouse_dsn="chdb:///tmp/cx/clickhouse")).partitions is None
    assert loop_config(Settings()).partitions is None   # the default: chDB under the data dir
    assert loop_config(Settings(clickhouse_dsn="http://default:@ch:8123/cx", partitions=6)).partitions == 6


def test_a_learning_worker_does_not_label_the_customers_of_a_partition_it_gave_away():
    """After a rebalance takes a partition away, the worker's ticks no longer see the states of
    its customers (another worker owns them now), so their snapshots still pending cannot be
    labelled here: their rows are dropped. (Before, a state not seen read as no activity at
    all: every such row was labelled churned, false leavers in the training rows.)"""
    loop, inputs, store, records = _learning_world()
    asyncio.run(loop.watch_stalls())
    sent: list[Delivered] = []
    for day in range(60):
        events = records([touchpoint("mine", when=at(days=day))], partition=0)
        if day < 10:
            events += records([touchpoint("theirs", when=at(days=day))], partition=1)
        elif day == 10:   # a rebalance (eager, as Faust's): all revoked, partition 0 assigned again
            asyncio.run(loop.commit_completed_inputs())
            committed = inputs.commits[-1]
            asyncio.run(loop.on_revoked(set(inputs.assigned)))
            inputs.assigned = {TP(t, 0) for t in TOPIC.values()}
            loop.on_assigned(inputs.assignment())

            async def start_offset(tp) -> int:
                return committed.get(tp, 0)
            inputs.start_offset = start_offset
            asyncio.run(loop.watch_stalls())
            # what was not committed comes again from the committed offsets
            events = [d for d in sent if d.tp in inputs.assigned and d.record.offset >= committed.get(d.tp, 0)] + events
        sent += events
        asyncio.run(loop.deliver(events))
    book = loop.learner.book
    snapshotted = {c for s in book.pending + book.labelled for c in s.customer_ids}
    labelled = [(c, bool(y)) for s in book.labelled for c, y in zip(s.customer_ids, s.labels)]
    assert ("mine", False) in labelled and all(not y for c, y in labelled if c == "mine")   # daily: never churned
    assert "theirs" not in {c for c, _ in labelled}
    assert "theirs" not in snapshotted
    assert store.load("theirs").n == 10   # the store keeps the state of the partition given away (the new owner's now)
