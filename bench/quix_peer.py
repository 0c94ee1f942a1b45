"""The peer for `cxpulse bench`: the same per-customer logic on Quix Streams.

Run by `pipeline.tools.bench` as a subprocess with the Python of a separate virtualenv that
has `quixstreams` (it pins its own pydantic and confluent-kafka, which must not replace
the project's pins), with the project root on PYTHONPATH:

    python bench/quix_peer.py --bootstrap 127.0.0.1:19092 --topics a,b,c --types touchpoint,order,complaint \
        --group g --expected 100000 --output o --state-dir /tmp/s --lateness 8000000

The three co-partitioned input topics are concatenated into one StreamingDataFrame
whose stateful `apply` keeps one RocksDB state entry per customer (the message key) and
calls `pipeline.service.processor.Core.process` on every message, exactly the decode → apply →
profile → score path of the Faust worker; scores, alerts and dead letters are produced
to one output topic. No ClickHouse writes (the Faust pipeline does them; see README).

Prints one JSON line on stdout: {"events", "seconds", "events_per_s", "outputs", "version"}
or {"error": "..."} (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback


def run(args: argparse.Namespace) -> dict:
    import orjson
    import quixstreams
    from quixstreams import Application, message_context

    from pipeline.config import Settings
    from pipeline.adapters.state_codec import decode_state, encode_state
    from pipeline.bootstrap import build_core
    from pipeline.service.processor import RawRecord

    names = args.topics.split(",")
    kinds = args.types.split(",")
    by_kind = dict(zip(kinds, names))
    settings = Settings(
        topic_touchpoints=by_kind["touchpoint"], topic_orders=by_kind["order"],
        topic_complaints=by_kind["complaint"], lateness_seconds=args.lateness,
        data_dir=args.state_dir,
    )
    core = build_core(settings)

    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
        state_dir=args.state_dir, loglevel="WARNING", use_changelog_topics=True,
        commit_interval=1.0, auto_create_topics=True,
    )
    inputs = [app.topic(name, key_deserializer="bytes", value_deserializer="bytes") for name in names]
    output = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")

    progress = {"n": 0, "first": None, "last": None, "outputs": 0}

    def process(value: bytes, key: bytes, timestamp: int, headers, state) -> list[bytes]:
        now = time.perf_counter()
        if progress["first"] is None:
            progress["first"] = now
        ctx = message_context()
        rec = RawRecord(ctx.topic, ctx.partition, ctx.offset, key, value)
        stored = state.get("s")
        loaded = decode_state(stored.encode(), key.decode() if key else "") if stored else None
        out = core.process([rec], lambda cid: loaded, received_at=time.time())
        for cid, st in out.states.items():
            if key is not None and cid.encode() == key:
                state.set("s", encode_state(st).decode())
        msgs = [orjson.dumps(x) for x in (*out.scores, *out.alerts, *out.dead_letters)]
        progress["outputs"] += len(msgs)
        progress["n"] += 1
        progress["last"] = time.perf_counter()
        if progress["n"] >= args.expected:
            app.stop()
        return msgs

    sdf = app.dataframe(inputs[0])
    for topic in inputs[1:]:
        sdf = sdf.concat(app.dataframe(topic))
    sdf = sdf.apply(process, stateful=True, metadata=True, expand=True)
    sdf.to_topic(output)

    started = time.perf_counter()
    app.run(timeout=args.idle_timeout if args.idle_timeout > 0 else 0.0)
    if progress["first"] is None:
        raise RuntimeError(f"Quix Streams consumed no message within {time.perf_counter() - started:.0f}s")
    if progress["n"] < args.expected:
        raise RuntimeError(f"Quix Streams stopped after {progress['n']} of {args.expected} messages "
                           f"(no new message for {args.idle_timeout}s)")
    seconds = max(progress["last"] - progress["first"], 1e-9)
    return {"events": progress["n"], "seconds": seconds, "events_per_s": progress["n"] / seconds,
            "outputs": progress["outputs"], "version": quixstreams.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topics", required=True, help="comma-separated input topics")
    p.add_argument("--types", required=True, help="record type each input topic carries, same order")
    p.add_argument("--group", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--expected", type=int, required=True, help="stop after this many input messages")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--lateness", type=int, default=3600)
    p.add_argument("--idle-timeout", type=float, default=60.0, help="give up after this long without a message")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except BaseException as exc:  # report why, in one line the bench can record
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
