"""The `cxpulse` command line: one entry point for operators."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from pipeline.config import Settings, load

EXAMPLES = {
    "worker": "cxpulse worker                      # one Faust worker; scale out by starting more\n"
              "CXPULSE_KAFKA_BOOTSTRAP=kafka:9092 cxpulse worker",
    "demo": "cxpulse demo                        # 20k+ events, 2k customers, 60 days\n"
            "cxpulse demo --customers 500 --days 30 --quiet",
    "replay": "cxpulse replay events.jsonl --scores-out scores.jsonl\n"
              "cxpulse replay events.jsonl --as-of 2026-03-01T00:00:00Z --scores-out scores.jsonl",
}


def _parse_time(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
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
    p.add_argument("--alerts-out", type=Path, default=None)
    p.add_argument("--deadletters-out", type=Path, default=None)
    p.add_argument("--tick-hours", type=float, default=24.0, help="event-time interval of time-driven rules")
    p.add_argument("--quiet", action="store_true")
    return parser


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from agents.app import main as worker_main

    worker_main(args.faust_args)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.demo import print_report, run_demo
    from pipeline.progress import quiet_default

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
    from datetime import timedelta

    import orjson

    from pipeline.progress import bar, quiet_default
    from pipeline.replay import read_lines, replay, write_scores

    if not args.events.exists():
        print(f"cxpulse replay: {args.events}: no such file", file=sys.stderr)
        return 2
    quiet = args.quiet or quiet_default()
    started = time.perf_counter()
    with bar("replay", None, quiet) as b:
        result = replay(read_lines(args.events), settings, as_of=args.as_of,
                        tick=timedelta(hours=args.tick_hours) if args.tick_hours > 0 else None,
                        on_progress=lambda n: b.update(completed=n))
    elapsed = time.perf_counter() - started
    if args.scores_out:
        write_scores(result, args.scores_out)
    for path, items in ((args.alerts_out, result.alerts), (args.deadletters_out, result.dead_letters)):
        if path:
            path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in items))
    print(f"read {result.read:,} records in {elapsed:.2f} s ({result.read / max(elapsed, 1e-9):,.0f} events/s): "
          f"applied {result.applied:,}, duplicates {result.duplicates:,}, dead-lettered {len(result.dead_letters):,}, "
          f"after --as-of {result.after_as_of:,}; customers {len(result.scores):,}; alerts {len(result.alerts):,}")
    if args.scores_out:
        print(f"scores written to {args.scores_out}")
    return 0


COMMANDS = {"worker": cmd_worker, "demo": cmd_demo, "replay": cmd_replay}


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
        from pipeline.broker import BrokerError
        from pipeline.topics import TopicLayoutError
        from pipeline.worker_process import WorkerError

        if isinstance(exc, (BrokerError, TopicLayoutError, WorkerError, TimeoutError)):
            print(f"cxpulse {args.command}: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
