"""The `cxpulse` command line: one entry point for operators."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from pipeline.config import Settings, load

EXAMPLES = {
    "broker": "cxpulse broker                             # the embedded broker on CXPULSE_KAFKA_PORT (19092)\n"
              "CXPULSE_KAFKA_PORT=29092 cxpulse broker",
    "worker": "cxpulse worker                      # one Faust worker; scale out by starting more\n"
              "CXPULSE_KAFKA_BOOTSTRAP=kafka:9092 cxpulse worker",
    "demo": "cxpulse demo                        # 20k+ events, 2k customers, 60 days\n"
            "cxpulse demo --customers 500 --days 30 --quiet",
    "replay": "cxpulse replay events.jsonl --scores-out scores.jsonl\n"
              "cxpulse replay events.jsonl --as-of 2026-03-01T00:00:00Z --scores-out scores.jsonl",
    "produce": "cxpulse produce events.jsonl              # send valid lines, report the rest (exit 1 if any)\n"
               "cxpulse produce events.jsonl --strict     # all or nothing\n"
               "cxpulse produce events.jsonl --dry-run    # validate only\n"
               "generate-events | cxpulse produce -",
    "tail": "cxpulse tail alerts                        # new alerts as they are published (Ctrl-C stops)\n"
            "cxpulse tail scores --from-beginning --max 10\n"
            "cxpulse tail deadletter --from-beginning --timeout 5 --raw > deadletters.jsonl\n"
            "cxpulse tail scores --customer C000042",
    "score": "cxpulse score C000042                      # asks the worker on CXPULSE_WEB_HOST:CXPULSE_WEB_PORT\n"
             "cxpulse score C000042 --url http://worker-2:6066 --json",
    "erase": "cxpulse erase C000042                      # Kafka tombstone + erasure request + ClickHouse rows\n"
             "cxpulse erase C000042 --skip-clickhouse     # while a worker holds the embedded chDB\n"
             "cxpulse erase C000042 --clickhouse http://default:pw@clickhouse:8123/cxpulse",
    "ack": "cxpulse ack 3f1c0a9e5b7d2c4e6a81 --staff S017          # the customer id is looked up on cx.alerts\n"
           "cxpulse ack 3f1c0a9e5b7d2c4e6a81 --staff S017 --customer C000042",
    "assign": "cxpulse assign 3f1c0a9e5b7d2c4e6a81 --staff S023",
    "contact": "cxpulse contact 3f1c0a9e5b7d2c4e6a81 --staff S017 --channel call_center",
    "close": "cxpulse close 3f1c0a9e5b7d2c4e6a81 --outcome retained --action callback --staff S017",
    "cases": "cxpulse cases                              # open cases by tier and age, oldest first (stop the worker: chDB)\n"
             "cxpulse cases --clickhouse http://default:pw@clickhouse:8123/cxpulse --limit 50",
    "doctor": "cxpulse doctor                             # broker, topics, ClickHouse, worker port, versions\n"
              "CXPULSE_KAFKA_BOOTSTRAP=kafka:9092 cxpulse doctor --timeout 10",
    "evaluate": "cxpulse evaluate                           # synthetic stream with planted churners\n"
                "cxpulse evaluate --customers 500 --days 90 --json eval.json\n"
                "cxpulse evaluate --mode causal --hazard strong,weak --seeds 3,7,11   # judged against an oracle\n"
                "cxpulse evaluate --mode causal --hazard weak --hazard-ratios failed_recovery=4 --cut-day 120\n"
                "cxpulse evaluate --transactions purchases.csv --cutoff 2011-09-30 --window-days 90\n"
                "cxpulse evaluate --transactions cdnow.csv --cutoff 1997-09-30 --holdout-weeks 39\n"
                "cxpulse evaluate --live                    # backtest of the published risks, from ClickHouse",
    "bench": "cxpulse bench                              # full run: results in bench/results/latest.json\n"
             "cxpulse bench --quick --no-peer",
}

TAIL_TOPICS = ("scores", "alerts", "deadletter")


def has_module(name: str) -> bool:
    """Whether an optional pipeline module (bench, evaluate) is installed."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _parse_time(text: str) -> datetime:
    dt = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone offset, e.g. 2026-03-01T00:00:00Z")
    return dt


def _sub(subs, name: str, help_: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_, description=help_, epilog="examples:\n" + EXAMPLES.get(name, ""),
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxpulse", description="Real-time customer-experience scores and churn early warnings.",
        epilog="Settings come from CXPULSE_* environment variables (see README.md).")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(subs, "worker", "run a Faust worker (consumes the input topics, publishes scores and alerts)")
    p.add_argument("faust_args", nargs=argparse.REMAINDER, help="extra Faust worker options")

    _sub(subs, "broker", "run the embedded Kafka broker in the foreground for a hands-on session (Ctrl-C stops it)")

    p = _sub(subs, "demo", "run the whole pipeline on the embedded defaults and print a summary")
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--invalid-ratio", type=float, default=0.03)
    p.add_argument("--charts-dir", type=Path, default=None, help="where to write PNG charts (default DATA_DIR/charts)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = _sub(subs, "replay", "run the scoring core offline over a JSON Lines file of events")
    p.add_argument("events", type=Path)
    p.add_argument("--as-of", type=_parse_time, default=None, help="score every customer as of this instant")
    p.add_argument("--scores-out", type=Path, default=None, help="write one score per customer (JSON Lines)")
    p.add_argument("--alerts-out", type=Path, default=None, help="write every alert record (JSON Lines)")
    p.add_argument("--deadletters-out", type=Path, default=None,
                   help="write every dead letter (JSON Lines: reason, error, the original record base64; `offset` "
                        "counts the file's non-blank lines from 0)")
    p.add_argument("--tick-hours", type=float, default=24.0, help="event-time interval of time-driven rules")
    p.add_argument("--now", type=_parse_time, default=None,
                   help="the replay's processing clock: events later than it (+ CXPULSE_CLOCK_SKEW_SECONDS) are "
                        "dead-lettered implausible_time (default: --as-of, else the wall clock)")
    p.add_argument("--learn-churn", action="store_true",
                   help="learn the churn model from the stream's own outcomes (daily snapshots, weekly retraining; "
                        "the hand-set model serves until enough leavers are labelled)")
    p.add_argument("--to-clickhouse", action="store_true",
                   help="backfill: also write events, scores, alerts and complaints to ClickHouse "
                        "(CXPULSE_CLICKHOUSE_DSN; batched by CXPULSE_SINK_BATCH_ROWS / CXPULSE_SINK_FLUSH_SECONDS)")
    p.add_argument("--quiet", action="store_true")

    p = _sub(subs, "produce", "validate a JSON Lines file of input events and send the valid ones to Kafka")
    p.add_argument("file", metavar="FILE.jsonl", help="one input record per line; - reads standard input")
    p.add_argument("--strict", action="store_true", help="send nothing if any line is invalid")
    p.add_argument("--dry-run", action="store_true", help="validate only, send nothing")
    p.add_argument("--max-errors", type=int, default=50, help="rejects listed in full (default 50)")

    p = _sub(subs, "tail", "follow an output topic and pretty-print its JSON records")
    p.add_argument("topic", choices=TAIL_TOPICS)
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not at the end")
    p.add_argument("--max", type=int, default=None, metavar="N", help="stop after N records")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--customer", default=None, metavar="ID", help="only records keyed by this customer id")
    p.add_argument("--raw", action="store_true", help="one JSON record per line, no decoration")

    p = _sub(subs, "score", "ask a running worker for one customer's score and churn drivers")
    p.add_argument("customer_id", metavar="CUSTOMER_ID")
    p.add_argument("--url", default=None, help="worker base URL (default http://CXPULSE_WEB_HOST:CXPULSE_WEB_PORT)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="HTTP timeout (default 10)")
    p.add_argument("--json", action="store_true", help="print the score record as JSON")

    p = _sub(subs, "erase", "erase a customer: tombstone on cx.scores, erasure request to the workers, "
                            "ClickHouse rows deleted")
    p.add_argument("customer_id", metavar="CUSTOMER_ID")
    p.add_argument("--clickhouse", default=None, metavar="DSN",
                   help="ClickHouse to delete from (default CXPULSE_CLICKHOUSE_DSN / the embedded chDB); "
                        "the embedded chDB can only be opened while the worker is stopped")
    p.add_argument("--skip-clickhouse", action="store_true", help="only the Kafka steps")

    for name, action, text in (("ack", "acknowledged", "acknowledge an alert: you own its case now"),
                               ("assign", "assigned", "assign an alert's case to a staff member (--staff)"),
                               ("contact", "contacted", "record that the customer of an alert was contacted"),
                               ("close", "closed", "close an alert's case with an outcome and the playbook action used")):
        p = _sub(subs, name, text + " (written to the actions topic)")
        p.set_defaults(case_action=action)
        p.add_argument("alert_id", metavar="ALERT_ID")
        p.add_argument("--staff", required=True, metavar="CODE", help="staff code, e.g. S017 (never a name)")
        p.add_argument("--customer", default=None, metavar="ID",
                       help="the alert's customer id (default: looked up on the alerts topic)")
        if name == "contact":
            p.add_argument("--channel", required=True, help="how the customer was contacted, e.g. call_center")
        if name == "close":
            from schemas.actions import Outcome, PlaybookAction
            p.add_argument("--outcome", required=True, choices=[o.value for o in Outcome])
            p.add_argument("--action", required=True, dest="playbook_action", metavar="CODE",
                           choices=[a.value for a in PlaybookAction],
                           help="playbook action code: " + ", ".join(a.value for a in PlaybookAction))

    p = _sub(subs, "cases", "open alert cases (not closed by an operator) by tier and age, from ClickHouse")
    p.add_argument("--clickhouse", default=None, metavar="DSN",
                   help="ClickHouse to read (default CXPULSE_CLICKHOUSE_DSN / the embedded chDB, which can "
                        "only be opened while the worker is stopped)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="oldest open cases listed (default 20)")

    p = _sub(subs, "doctor", "check broker, topics, ClickHouse, worker port and versions; say how to fix failures")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per-connection timeout (default 5)")

    if has_module("pipeline.tools.evaluate"):
        from pipeline.tools.evaluate import WARNING_THRESHOLD
        p = _sub(subs, "evaluate", "judge churn risk on data with known outcomes (synthetic or a CSV purchase history)")
        p.add_argument("--customers", type=int, default=2000)
        p.add_argument("--days", type=int, default=None, help="stream length (default 120; causal mode 180)")
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--mode", choices=("planted", "causal"), default="planted",
                       help="planted: churners with planted signals (default); causal: experiences raise a "
                            "daily hazard of leaving, judged at a cut against an oracle")
        p.add_argument("--seeds", default=None, metavar="S,S,...", help="causal mode: several seeds, one summary table")
        p.add_argument("--hazard", default="strong", metavar="NAME[,NAME]",
                       help="causal mode: hazard-ratio setting(s): strong, weak (default strong)")
        p.add_argument("--hazard-ratios", default=None, metavar="FACTOR=HR,...",
                       help="causal mode: override hazard ratios, e.g. failed_recovery=6,detractor=2")
        p.add_argument("--baseline-hazard", type=float, default=None, help="causal mode: daily hazard with no incident")
        p.add_argument("--decay-days", type=float, default=None, help="causal mode: days an incident stays in force")
        p.add_argument("--cut-day", type=int, default=None,
                       help="causal mode: the cut, in whole days since the stream start (default days - 30)")
        p.add_argument("--threshold", type=float, default=WARNING_THRESHOLD,
                       help="churn_risk counted as predicted churn (default: the standard tier's warning threshold)")
        p.add_argument("--horizon-days", type=float, default=28.0, help="early cutoff before the end (0 = skip)")
        p.add_argument("--transactions", type=Path, default=None, metavar="CSV",
                       help="evaluate on a purchase history (customer_id,date,amount) instead")
        p.add_argument("--cutoff", default=None, help="with --transactions: ISO date; a date means the end of that day")
        p.add_argument("--window-days", type=float, default=90.0, help="with --transactions: churn window")
        p.add_argument("--date-format", default=None, metavar="STRPTIME",
                       help="with --transactions: the dates' format when the file cannot show it, "
                            "e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO, or slashed dates whose order the file shows)")
        p.add_argument("--columns", type=_column_names, default=None, metavar="NAMES",
                       help="with --transactions: the columns' names in order, for a file without a header row "
                            "(e.g. customer_id,date,quantity,amount: CDNOW's master file) or in place of a header row "
                            "whose names do not read (it is skipped)")
        p.add_argument("--holdout-weeks", type=float, default=None,
                       help="with --transactions: churn window in weeks (overrides --window-days)")
        p.add_argument("--resamples", type=int, default=1000,
                       help="with --transactions: bootstrap resamples for the AUC intervals (default 1000)")
        p.add_argument("--live", action="store_true",
                       help="live backtest from ClickHouse: churn_risk published one horizon ago against "
                            "activity since (AUC, Brier, precision/recall at the alert thresholds)")
        p.add_argument("--clickhouse", default=None, metavar="DSN",
                       help="with --live: ClickHouse to read (default CXPULSE_CLICKHOUSE_DSN / the embedded chDB, "
                            "which can only be opened while no worker holds it)")
        p.add_argument("--backtest-days", type=float, default=None,
                       help="with --live: horizon H in days (default CXPULSE_CHURN_HORIZON_DAYS)")
        p.add_argument("--as-of", type=_parse_time, default=None,
                       help="with --live: the end of the outcome window (default: the latest event time stored)")
        p.add_argument("--uplift", action="store_true",
                       help="did the action work? treated vs control churn_risk cases per action with 95 %% "
                            "intervals: from --alerts/--events files, else a causal stream with operators")
        p.add_argument("--alerts", type=Path, default=None, metavar="JSONL",
                       help="with --uplift: published alerts (JSON Lines); needs --events")
        p.add_argument("--events", type=Path, default=None, metavar="JSONL",
                       help="with --uplift --alerts: the input events (JSON Lines) to judge the outcomes")
        p.add_argument("--control-share", type=float, default=0.5,
                       help="with --uplift on the generator: share of operator cases nobody calls (default 0.5)")
        p.add_argument("--operator-effect", type=float, default=0.5,
                       help="with --uplift on the generator: share of the leaving hazard a call removes (default 0.5)")
        p.add_argument("--operator-effect-days", type=int, default=30,
                       help="with --uplift on the generator: days the call's effect lasts (default 30)")
        p.add_argument("--operator-threshold", type=float, default=0.10,
                       help="with --uplift on the generator: generator-view 30-day risk that opens a case (default 0.10)")
        p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
        p.add_argument("--churn-model", choices=("learned", "lightgbm", "hand-set"), default="hand-set",
                       help="hand-set: the fixed-weight model the worker serves (default); learned: the model "
                            "trained in-stream on the stream's own outcomes (opt-in until it beats the hand-set "
                            "model on held-out streams, docs/evaluation.md); lightgbm: the same with trees")

    bench = _optional("pipeline.tools.bench")
    if bench is not None and hasattr(bench, "add_arguments") and hasattr(bench, "main"):
        p = _sub(subs, "bench", "throughput, latency and memory of the real pipeline next to the raw "
                                "consume limit and a peer")
        bench.add_arguments(p)
    return parser


def _optional(name: str):
    """An optional module (bench), or None when absent or broken: `--help` must always work."""
    if not has_module(name):
        return None
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        print(f"cxpulse: {name} is unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.adapters.kafka import topics

    # First run: the data folder (Faust creates only the last level of its own) and the
    # topics with CXPULSE_PARTITIONS partitions, before Faust would auto-create the input
    # topics with one; refuse input topics that are not co-partitioned that way.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    topics.ensure_worker_topics(settings)
    from agents.app import main as worker_main

    worker_main(args.faust_args)
    return 0


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from pipeline.adapters.kafka.broker import EmbeddedBroker

    if not settings.embedded_broker:
        _err("broker", f"CXPULSE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} points at another broker; "
                       "unset it to run the embedded one")
        return 2
    broker = EmbeddedBroker(settings).start()
    print(f"embedded Kafka broker on {broker.bootstrap}, data in {broker.data_dir}, log {broker.log_path}; "
          "Ctrl-C stops it", flush=True)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):   # explicit: a shell may start it with SIGINT ignored
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        while not stop and broker.running:
            time.sleep(0.5)
    finally:
        crashed = not broker.running
        broker.stop()
    if crashed:
        _err("broker", f"the broker exited; see {broker.log_path}")
        return 1
    print("broker stopped", flush=True)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.tools.demo import print_report, run_demo
    from pipeline.tools.progress import quiet_default

    quiet = args.quiet or quiet_default()
    # The demo owns a subfolder of the data dir and starts it afresh on every run.
    settings = settings.model_copy(update={"data_dir": settings.data_dir / "demo"})
    charts = args.charts_dir or settings.data_dir.parent / "charts"
    report = run_demo(settings, customers=args.customers, days=args.days, seed=args.seed,
                      invalid_ratio=args.invalid_ratio, quiet=quiet, charts_dir=charts)
    print_report(report)
    dead = sum(report.deadletters.values())
    if dead != report.invalid_generated:
        print(f"warning: {dead} dead letters but {report.invalid_generated} invalid records generated", file=sys.stderr)
        return 1
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:

    import orjson

    from pipeline.bootstrap import build_core, build_sink
    from pipeline.service.replay import read_lines, replay, write_scores
    from pipeline.tools.progress import bar, quiet_default

    if not args.events.exists():
        print(f"cxpulse replay: {args.events}: no such file", file=sys.stderr)
        return 2
    quiet = args.quiet or quiet_default()
    # The processing clock (received_at, the plausible window's ceiling): --now, else --as-of, else the wall clock.
    fixed = args.now or args.as_of
    clock: Callable[[], float] = (lambda: fixed.timestamp()) if fixed is not None else time.time
    sink = None
    on_batch = None  # set below when backfilling ClickHouse
    if args.to_clickhouse:
        from pipeline.adapters.clickhouse.rows import batch_rows
        from pipeline.adapters.clickhouse.sink import sink_dead_letters

        sink = build_sink(settings).open()

        def backfill(out) -> None:
            sink.add(batch_rows(out))
            sink.flush_if_due()
            out.dead_letters.extend(sink_dead_letters(sink.take_rejected(), clock()))

        on_batch = backfill

    learner = None
    if args.learn_churn:
        from pipeline.service.churn_learning import ChurnLearner

        learner = ChurnLearner(settings.churn_horizon_days)
    started = time.perf_counter()
    try:
        with bar("replay", None, quiet) as b:
            core = build_core(settings)
            result = replay(read_lines(args.events), core, clock=clock, as_of=args.as_of,
                            tick=timedelta(hours=args.tick_hours) if args.tick_hours > 0 else None,
                            on_progress=lambda n: b.update(completed=n), on_batch=on_batch, learner=learner)
        if sink is not None:
            sink.flush()
            result.dead_letters.extend(sink_dead_letters(sink.take_rejected(), clock()))
    finally:
        if sink is not None:
            sink.close()
    elapsed = time.perf_counter() - started
    if args.scores_out:
        write_scores(result, args.scores_out)
    for path, items in ((args.alerts_out, result.alerts), (args.deadletters_out, result.dead_letters)):
        if path:
            path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in items))
    print(f"read {result.read:,} records in {elapsed:.2f} s ({result.read / max(elapsed, 1e-9):,.0f} events/s): "
          f"applied {result.applied:,}, duplicates {result.duplicates:,}, dead-lettered {len(result.dead_letters):,}, "
          f"after --as-of {result.after_as_of:,}; customers {len(result.scores):,}; alerts {len(result.alerts):,}")
    if result.dead_letters:
        # nothing lost silently: say why records were refused, and where to read them in full
        reasons = Counter(d["reason"] for d in result.dead_letters)
        first = result.dead_letters[0]
        where = (f"all written to {args.deadletters_out}" if args.deadletters_out
                 else "--deadletters-out FILE writes them all (reason, error, the original record)")
        line = (f"non-blank line {first['offset'] + 1}"
                if first.get("source_topic") == "replay" and isinstance(first.get("offset"), int)
                else first.get("source_topic") or "?")
        print(f"dead letters by reason: {', '.join(f'{r} {n:,}' for r, n in reasons.most_common())}; "
              f"first ({line}): {first['error']}; {where}")
    if args.as_of is not None and result.after_as_of and not result.scores:
        _err("replay", f"every event read is after --as-of {args.as_of.isoformat()}: no customer to score as of "
                       "then (without --as-of, each customer keeps its last score of the stream)")
    if learner is not None:
        served = learner.served.version if learner.served is not None else None
        pos, neg, leavers = learner.book.counts()
        print(f"churn model: {len(learner.cards)} trained on up to {pos + neg:,} labelled snapshots "
              f"({pos:,} leaving, {leavers:,} leavers); serving: {served or 'the hand-set model (cold start)'}; "
              f"early warning: {getattr(core.early_warning, 'version', None) or 'none yet'}")
    if args.scores_out:
        print(f"scores written to {args.scores_out}")
    return 0


def _err(command: str, text: str) -> None:
    print(f"cxpulse {command}: {text}", file=sys.stderr)


def _reason(exc: Exception) -> str:
    """A short reason for a rejected line (the first errors of a ValidationError)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors(include_url=False)
        parts = []
        for e in items[:3]:
            loc = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
        return "; ".join(parts) + more
    return f"{type(exc).__name__}: {exc}"


def _column_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) < 3 or not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated column names, at least three "
                                         "(e.g. customer_id,date,quantity,amount)")
    return names


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.service.processor import MAX_RECORD_BYTES
    from schemas.events import parse_event

    if args.file == "-":
        lines = sys.stdin.buffer
        name = "<stdin>"
    else:
        path = Path(args.file)
        if not path.is_file():
            _err("produce", f"{path}: no such file")
            return 2
        lines = open(path, "rb")
        name = str(path)
    topic_for = settings.topic_for_type
    records: list[tuple[str, bytes, bytes]] = []
    rejects: list[tuple[int, str]] = []
    by_topic: Counter = Counter()
    try:
        for number, line in enumerate(lines, start=1):
            value = line.strip()
            if not value:
                continue
            if len(value) > MAX_RECORD_BYTES:  # the worker would dead-letter it as too_large
                rejects.append((number, f"record of {len(value):,} bytes exceeds {MAX_RECORD_BYTES:,}"))
                continue
            try:
                event = parse_event(value)
            except Exception as exc:  # ValidationError (incl. invalid JSON) or bad bytes
                rejects.append((number, _reason(exc)))
                continue
            topic = topic_for[event.type]
            records.append((topic, event.customer_id.encode(), value))
            by_topic[topic] += 1
    finally:
        if lines is not sys.stdin.buffer:
            lines.close()

    for number, reason in rejects[: max(args.max_errors, 0)]:
        print(f"{name}:{number}: rejected: {reason}", file=sys.stderr)
    if len(rejects) > args.max_errors:
        print(f"... and {len(rejects) - args.max_errors} more rejected lines", file=sys.stderr)
    summary = f"{len(records) + len(rejects):,} records read: {len(records):,} valid, {len(rejects):,} rejected"
    if args.dry_run or (args.strict and rejects) or not records:
        why = ("--dry-run" if args.dry_run else "--strict and some lines are invalid" if args.strict and rejects
               else "no valid records")
        print(f"{summary}; nothing sent ({why})")
        return 1 if rejects else 0

    from pipeline.adapters.kafka import kafka_io, topics

    topics.ensure_topics(settings)
    sent = kafka_io.produce(settings, records)
    print(f"{summary}; sent {sent:,} to {settings.bootstrap}: "
          + ", ".join(f"{t} {n:,}" for t, n in sorted(by_topic.items())))
    return 1 if rejects else 0


TAIL_IDLE_SECONDS = 0.1   # `tail`: the wait after a poll that brought nothing (a record shows ≤ 0.1 s later)


def _follow(settings: Settings, topic: str, from_beginning: bool, deadline: float | None):
    """Yield records of `topic` as they arrive, until `deadline` (time.monotonic())."""
    from kafka import KafkaConsumer, TopicPartition

    extra = {}
    if deadline is not None:  # do not wait longer for the broker than for the records
        extra["bootstrap_timeout_ms"] = max(1000, min(30_000, int((deadline - time.monotonic()) * 1000)))
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             allow_auto_create_topics=False, client_id="cxpulse-tail", **extra)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise LookupError(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        while deadline is None or time.monotonic() < deadline:
            # poll without waiting in kafka-python, then sleep here when nothing came: a broker
            # may answer a fetch of an empty partition at once instead of waiting
            # fetch.max.wait.ms (the embedded one does), and kafka-python's poll(timeout)
            # then sends fetch after fetch until the timeout: 0.8 of a core for an idle tail.
            batches = consumer.poll(timeout_ms=0)
            for batch in batches.values():
                yield from batch
            if not batches:
                left = TAIL_IDLE_SECONDS if deadline is None else deadline - time.monotonic()
                time.sleep(max(0.0, min(TAIL_IDLE_SECONDS, left)))
    finally:
        consumer.close()


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    import orjson
    from rich.console import Console

    topic = {"scores": settings.topic_scores, "alerts": settings.topic_alerts,
             "deadletter": settings.topic_deadletter}[args.topic]
    console = Console(highlight=False, soft_wrap=True)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    key = args.customer.encode() if args.customer else None
    shown = 0
    if args.max is not None and args.max <= 0:
        return 0
    try:
        for m in _follow(settings, topic, args.from_beginning, deadline):
            if key is not None and m.key != key:
                continue
            shown += 1
            if args.raw:
                sys.stdout.write((m.value or b"null").decode("utf-8", "replace") + "\n")
                sys.stdout.flush()
            else:
                when = datetime.fromtimestamp(m.timestamp / 1000).astimezone().isoformat(timespec="seconds") \
                    if m.timestamp and m.timestamp > 0 else "?"
                k = m.key.decode("utf-8", "replace") if m.key is not None else "-"
                console.print(f"[bold]{m.topic}[/bold] partition {m.partition} offset {m.offset} "
                              f"key {k} at {when}", markup=True, highlight=False)
                if m.value is None:
                    console.print("  (tombstone: the customer was erased)")
                else:
                    try:
                        console.print_json(orjson.dumps(orjson.loads(m.value)).decode())
                    except orjson.JSONDecodeError:
                        console.print(repr(m.value))
            if args.max is not None and shown >= args.max:
                return 0
    except LookupError:
        _err("tail", f"topic {topic} does not exist on {settings.bootstrap}; run `cxpulse doctor`")
        return 1
    if args.max is not None:
        _err("tail", f"only {shown} of {args.max} records within {args.timeout:g} s")
        return 1
    return 0


def cmd_score(settings: Settings, args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    base = (args.url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
    if "://" not in base:
        base = "http://" + base
    url = f"{base}/customers/{urllib.parse.quote(args.customer_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            _err("score", f"unknown customer {args.customer_id!r}: the worker at {base} has no profile for it "
                          "(no events yet, or erased)")
        else:
            _err("score", f"the worker at {base} answered HTTP {exc.code} for {url}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _err("score", f"no worker answers at {base} ({reason}); start one with `cxpulse worker` "
                      "or point --url / CXPULSE_WEB_PORT at a running worker")
        return 1
    try:
        score = json.loads(body)
    except ValueError:
        _err("score", f"{url} did not answer JSON")
        return 1
    if args.json:
        print(json.dumps(score, indent=2))
        return 0
    print_score(score)
    return 0


def _fmt(v: object, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def print_score(score: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.domain.vocabulary import DIMENSIONS

    console = Console(highlight=False)
    risk = float(score.get("churn_risk") or 0.0)
    console.print(f"[bold]customer {score.get('customer_id')}[/bold]  tier {score.get('tier')}  "
                  f"stage {score.get('stage') or '-'}  as of {score.get('as_of')} (version {score.get('version')})")
    early = score.get("early_warning")
    console.print(f"CXI {_fmt(score.get('cxi'))}   churn risk {risk:.2f}   "
                  + (f"early warning {float(early):.2f}   " if early is not None else "")
                  + f"revenue at risk {_fmt(score.get('revenue_at_risk'), 2)}   events {score.get('events')}")
    dims = Table(show_header=True, header_style="bold", title="experience")
    columns = (*DIMENSIONS, "csat", "nps")
    for col in columns:
        dims.add_column(col, justify="right")
    dims.add_row(*(_fmt(score.get(c)) for c in columns))
    console.print(dims)
    console.print(f"revenue 365d {_fmt(score.get('revenue_365d'), 2)}   open complaints {score.get('open_complaints')}"
                  f"   SLA breaches {score.get('sla_breaches')}   NPS class {score.get('nps_class') or '-'}")
    _print_drivers(console, "churn drivers", score.get("churn_drivers") or [])
    if early is not None:
        _print_drivers(console, "early-warning drivers", score.get("early_warning_drivers") or [])


def _print_drivers(console, title: str, drivers: list[dict]) -> None:
    from rich.table import Table

    if not drivers:
        console.print(f"{title}: none")
        return
    table = Table(show_header=True, header_style="bold", title=title)
    table.add_column("driver")
    table.add_column("contribution", justify="right")
    for d in drivers:
        table.add_row(str(d.get("factor")), f"{float(d.get('contribution') or 0.0):.2f}")
    console.print(table)


def cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.tools.erasure import erase

    try:
        result = erase(settings, args.customer_id, clickhouse_dsn=args.clickhouse,
                       skip_clickhouse=args.skip_clickhouse)
    except ValueError as exc:
        _err("erase", str(exc))
        return 2
    print(f"erasure of customer {result.customer_id} requested at {result.requested_at.isoformat()}:")
    for line in result.lines():
        print(f"  done: {line}")
    for problem in result.problems:
        print(f"  {problem}", file=sys.stderr)
    return 0 if result.complete else 1


def cmd_case_action(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.tools.case_actions import ActionError, build_action, customer_of_alert, send_action

    try:
        build_action(args.alert_id, args.customer or "-", args.case_action, args.staff,
                     channel=getattr(args, "channel", None), outcome=getattr(args, "outcome", None),
                     playbook_action=getattr(args, "playbook_action", None))   # codes first, before any lookup
        customer = args.customer or customer_of_alert(settings, args.alert_id)
        record = build_action(args.alert_id, customer, args.case_action, args.staff,
                              channel=getattr(args, "channel", None), outcome=getattr(args, "outcome", None),
                              playbook_action=getattr(args, "playbook_action", None))
    except ActionError as exc:
        _err(args.command, str(exc))
        return 2
    send_action(settings, record)
    print(f"{record.action.value}: alert {record.alert_id} (customer {record.customer_id}) by {record.staff_id} "
          f"-> {settings.topic_actions} (action id {record.action_id})")
    return 0


def cmd_cases(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timezone

    from rich.console import Console
    from rich.table import Table

    from pipeline.adapters.clickhouse import queries
    from pipeline.tools.doctor import chdb_lock_holder, chdb_path
    from pipeline.adapters.clickhouse.sink import ClickHouseSink

    dsn = args.clickhouse or settings.dsn
    path = chdb_path(dsn)
    if path is not None and chdb_lock_holder(path) is not None:
        _err("cases", f"the embedded chDB {path} is in use by a running worker (one process per path): "
                      "stop the worker, or give --clickhouse a ClickHouse server")
        return 1
    now = datetime.now(timezone.utc)
    with ClickHouseSink(dsn) as sink:
        summary, cases = queries.open_cases(sink.client, now)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)   # whole alert ids in pipes
    if not cases:
        console.print("no open cases")
        return 0
    table = Table(title=f"open cases by tier and age ({len(cases)})")
    for col in ("tier", "age", "open", "unacknowledged", "critical"):
        table.add_column(col, justify="left" if col in ("tier", "age") else "right")
    for r in summary:
        table.add_row(r["tier"], r["age"], str(r["open"]), str(r["unacknowledged"]), str(r["critical"]))
    console.print(table)
    oldest = Table(title=f"oldest {min(args.limit, len(cases))}")
    for col in ("alert_id", "type", "tier", "severity", "age (h)", "acknowledged", "staff"):
        oldest.add_column(col)
    for c in cases[:args.limit]:
        oldest.add_row(c["alert_id"], c["type"], c["tier"], c["severity"], f"{float(c['age_hours']):.1f}",
                       "yes" if c["acknowledged_at"] is not None else "no", c["staff_id"] or "")
    console.print(oldest)
    return 0


def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.tools.doctor import main as doctor_main

    return doctor_main(settings, timeout=args.timeout)


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from pipeline.tools import evaluate

    result: dict | list[dict]   # a list: one figure set per cut day of the causal mode
    if args.uplift:
        try:
            uplift = _uplift_evaluate(settings, args)
        except ValueError as exc:   # a bad policy or hazard setting
            _err("evaluate", str(exc))
            return 2
        if uplift is None:
            return 2
        result = uplift
    elif args.live:
        result = _live_backtest(settings, args)
    elif args.transactions is not None:
        if not args.cutoff:
            _err("evaluate", "--transactions needs --cutoff")
            return 2
        if not args.transactions.is_file():
            _err("evaluate", f"{args.transactions}: no such file")
            return 2
        window = args.holdout_weeks * 7.0 if args.holdout_weeks is not None else args.window_days
        from pipeline.tools.transactions import TransactionError

        try:
            cutoff = evaluate.cutoff_instant(args.cutoff)
            result = evaluate.run_transactions_evaluate(settings, args.transactions, cutoff, window,
                                                        args.threshold, out=print, resamples=args.resamples,
                                                        churn_model=args.churn_model, date_format=args.date_format,
                                                        columns=args.columns)
        except (evaluate.CutoffError, TransactionError) as exc:   # the error names the line of the log
            _err("evaluate", str(exc))
            return 2
    elif args.mode == "causal":
        try:
            result = _causal_evaluate(settings, args)
        except ValueError as exc:   # a bad hazard setting, ratio or cut day
            _err("evaluate", str(exc))
            return 2
    else:
        result = evaluate.run_evaluate(settings, args.customers, args.days or 120, args.seed, args.threshold,
                                       horizon_days=args.horizon_days or None, churn_model=args.churn_model)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


def _live_backtest(settings: Settings, args: argparse.Namespace) -> dict:
    from functools import partial

    from pipeline.adapters.clickhouse.queries import early_warning_backtest_rows, live_backtest_rows
    from pipeline.adapters.clickhouse.sink import ClickHouseSink
    from pipeline.service.live_backtest import live_backtest

    horizon = args.backtest_days if args.backtest_days is not None else settings.churn_horizon_days
    with ClickHouseSink(args.clickhouse or settings.dsn) as sink:
        result = live_backtest(partial(live_backtest_rows, sink.client), horizon, args.as_of,
                               fetch_early_warning=partial(early_warning_backtest_rows, sink.client))
    if result["as_of"] is None:
        print(f"live backtest: no events stored in ClickHouse ({args.clickhouse or settings.dsn}) yet")
        return result
    print(f"live backtest: churn_risk published {horizon:g} days before {result['as_of']} against activity since")
    for k, v in result.items():
        if k != "early_warning":
            print(f"  {k:<20} {round(v, 4) if isinstance(v, float) else v}")
    if not result.get("customers"):
        since = datetime.fromisoformat(result["as_of"]) - timedelta(days=horizon)
        print(f"no churn_risk stored was published at or before {since.isoformat()}: the backtest needs more than "
              f"{horizon:g} days of stored scores (a shorter window: --backtest-days N; another instant: --as-of T)")
    warning = result["early_warning"]
    print(f"early_warning published {2 * horizon:g} days before, among the customers active in the {horizon:g} days "
          f"after it, against no activity in the last {horizon:g}")
    for k, v in warning.items():
        print(f"  {k:<20} {round(v, 4) if isinstance(v, float) else v}")
    if not warning["customers"]:
        print("no early_warning stored was published that long ago (the learned model publishes one once trained: "
              "CXPULSE_LEARN_CHURN; a shorter window: --backtest-days N)")
    return result


def _causal_evaluate(settings: Settings, args: argparse.Namespace) -> dict | list[dict]:
    from pipeline.tools.causal_evaluate import run_causal_evaluate, summary_table
    from pipeline.tools.hazard_model import hazard_model, parse_ratios

    ratios = parse_ratios(args.hazard_ratios) if args.hazard_ratios else None
    models = [hazard_model(name.strip(), ratios, args.baseline_hazard, args.decay_days)
              for name in args.hazard.split(",") if name.strip()]
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    runs = [run_causal_evaluate(settings, m, args.customers, args.days or 180, seed, args.cut_day,
                                churn_model=args.churn_model)
            for m in models for seed in seeds]
    if len(runs) == 1:
        return runs[0]
    print("\n".join(summary_table(runs)))
    return runs


def _uplift_evaluate(settings: Settings, args: argparse.Namespace) -> dict | list[dict] | None:
    from pipeline.tools import uplift_evaluate as ue

    if args.alerts is not None or args.events is not None:
        for flag, path in (("--alerts", args.alerts), ("--events", args.events)):
            if path is None or not path.is_file():
                _err("evaluate", f"--uplift {flag}: {'missing' if path is None else f'{path}: no such file'}")
                return None
        return ue.run_alerts_uplift(args.alerts, args.events, settings.churn_horizon_days, args.as_of)
    from pipeline.tools.hazard_model import hazard_model, parse_ratios
    from pipeline.tools.operators import OperatorPolicy

    ratios = parse_ratios(args.hazard_ratios) if args.hazard_ratios else None
    model = hazard_model(args.hazard.split(",")[0].strip(), ratios, args.baseline_hazard, args.decay_days)
    policy = OperatorPolicy(args.operator_threshold, args.operator_effect, args.operator_effect_days,
                            args.control_share)
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    runs = [ue.run_generated_uplift(model, policy, args.customers, args.days or 180, seed) for seed in seeds]
    if len(runs) == 1:
        return runs[0]
    print("\n".join(ue.summary_table(runs)))
    return runs


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.tools import bench

    return int(bench.main(settings, args) or 0)


COMMANDS = {"worker": cmd_worker, "broker": cmd_broker, "demo": cmd_demo, "replay": cmd_replay, "produce": cmd_produce,
            "tail": cmd_tail, "score": cmd_score, "erase": cmd_erase, "doctor": cmd_doctor,
            "evaluate": cmd_evaluate, "bench": cmd_bench,
            "cases": cmd_cases, "ack": cmd_case_action, "assign": cmd_case_action, "contact": cmd_case_action, "close": cmd_case_action}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load()
    except Exception as exc:  # pydantic ValidationError: name the variable to fix
        print(f"cxpulse: invalid settings: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from kafka.errors import KafkaError

        from pipeline.adapters.kafka.broker import BrokerError
        from pipeline.adapters.kafka.topics import TopicLayoutError
        from pipeline.adapters.kafka.worker_process import WorkerError

        if isinstance(exc, KafkaError):
            print(f"cxpulse {args.command}: Kafka at {settings.bootstrap}: {exc} (try `cxpulse doctor`)",
                  file=sys.stderr)
            return 1
        if isinstance(exc, (BrokerError, TopicLayoutError, WorkerError, TimeoutError)):
            print(f"cxpulse {args.command}: {exc}", file=sys.stderr)
            return 1
        from pipeline.domain.churn_snapshots import HorizonTooLong

        if isinstance(exc, HorizonTooLong):
            print(f"cxpulse {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
