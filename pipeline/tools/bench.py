"""`cxpulse bench`: throughput, latency and memory of the real pipeline, next to the raw
consume limit and a peer, in one run on one broker (design §4: ratios first).

One run, on the embedded broker (or CXPULSE_KAFKA_BOOTSTRAP) and chDB:

1. generate N synthetic events (pipeline.tools.generator) and produce them once to the three
   co-partitioned input topics of this run (fresh topic names, so nothing else interferes);
2. raw limit: kafka-python reads every record of the three topics with large fetches and
   decodes each value with orjson.loads — no processing (best of two passes in a full run);
3. peer: Quix Streams (bench/quix_peer.py, in its own virtualenv) runs the same
   per-customer core (pipeline.service.processor.Core per message, RocksDB state) on the same
   records; if it cannot be installed or cannot run here, the reason is recorded;
4. full pipeline: a Faust worker (WorkerProcess, fresh consumer group) consumes the same
   records: decode, per-customer state, scores/alerts/dead letters published, ClickHouse
   rows written before offsets are committed. Measured from the moment it reads its first
   input record (its cxpulse_events_consumed_total above 0, from its /metrics) to the moment
   its committed offsets reach the end offsets (committed = durable), polled every 0.1 s;
   the rate from its first score (the earliest cx.scores record), this measure until
   session 32, is reported beside it;
5. latency: with the worker caught up, the stream's events (moved to fresh customers,
   fresh event ids) are produced paced at half the measured pipeline rate (`--latency-share`); the j-th event
   of a customer is scored by the first cx.scores message of that customer counting ≥ j
   events: latency = its record timestamp − wall clock at send(); then again "live", each
   event's time set to its send time (the replayed events are weeks behind the stream time,
   so their customers are also re-evaluated by the sweep at once: a load no live stream makes);
6. memory: the worker's VmRSS before and after two bursts of M new customers (one event
   each) into the warm worker; the growth over both bursts, scaled to 100k customers (all
   the worker grows by per customer, not only the state table);
7. `--profile`: another worker (fresh group) re-consumes the topics under py-spy; where
   the samples fall and the top frames go to bench/results/profile.txt.

Results: a table (ratios first) and bench/results/latest.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.config import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from pipeline.adapters.kafka.worker_process import WorkerProcess

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
PEER_SCRIPT = PROJECT_ROOT / "bench" / "quix_peer.py"
PEER_VENV = RESULTS_DIR / "tmp" / "quix-venv"   # kept between runs; `make clean` removes it
QUIX_VERSION = "3.28.1"
PYSPY_VERSION = "0.4.3"
DEFAULT_EVENTS = 60_000
LINGER_MS = 5.0               # the paced producer's: librdkafka's default (since 1.5) and the Java client's (KIP-1030, Kafka 4.0)
QUICK_EVENTS = 3_000
EVENTS_PER_CUSTOMER = 30      # the generator yields about 30 events per customer over 60 days
DAYS = 60

JSON_KEYS = ("raw_events_per_s", "pipeline_events_per_s", "p50_latency_s", "p99_latency_s",
             "p50_live_latency_s", "p99_live_latency_s", "p99_live_latency_settled_s", "rss_bytes_per_100k_customers",
             "quix_events_per_s")


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=None,
                        help=f"events produced and measured (default {DEFAULT_EVENTS:,}; --quick {QUICK_EVENTS:,})")
    parser.add_argument("--quick", action="store_true", help="a small run for tests (a few thousand events)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="duration of the paced latency run (default 30; --quick 6)")
    parser.add_argument("--latency-share", type=float, default=0.5,
                        help="the paced latency runs' rate as a share of the measured pipeline rate (default 0.5: "
                             "half load); lower shares show where latency stops being queueing")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="the paced latency runs' rate in events/s, instead of a share of the measured "
                             "pipeline rate: the same load in every run (A/B comparisons across runs)")
    parser.add_argument("--latency-linger-ms", type=float, default=LINGER_MS,
                        help=f"how long the paced phases' producer holds a record for others to share its "
                             f"produce request (default {LINGER_MS:g}: the default of librdkafka since 1.5 and of "
                             f"the Java client since Kafka 4.0; 0 sends each record on its own)")
    parser.add_argument("--no-peer", action="store_true", help="skip the Quix Streams peer")
    parser.add_argument("--profile", action="store_true",
                        help="also profile a worker with py-spy; top frames to bench/results/profile.txt")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results")
    parser.add_argument("--work-dir", type=Path, default=RESULTS_DIR / "tmp",
                        help="broker, chDB and peer data of the run (its run/ folder is wiped per run)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(settings: Settings, args: argparse.Namespace) -> int:
    events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    latency_seconds = args.latency_seconds or (6.0 if args.quick else 30.0)
    if not 0.0 < args.latency_share <= 1.0:
        print(f"cxpulse bench: --latency-share must be in (0, 1], not {args.latency_share}", file=sys.stderr)
        return 2
    if not args.latency_linger_ms >= 0.0:
        print(f"cxpulse bench: --latency-linger-ms must be 0 or more, not {args.latency_linger_ms}", file=sys.stderr)
        return 2
    if args.latency_rate is not None and not args.latency_rate > 0.0:
        print(f"cxpulse bench: --latency-rate must be positive, not {args.latency_rate}", file=sys.stderr)
        return 2
    try:
        result = run_bench(settings, events=events, seed=args.seed, latency_seconds=latency_seconds,
                           peer=not args.no_peer, profile=args.profile, work_dir=args.work_dir,
                           quiet=args.quiet, quick=args.quick, latency_share=args.latency_share,
                           latency_rate=args.latency_rate, linger_ms=args.latency_linger_ms)
    except BenchError as exc:
        print(f"cxpulse bench: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print_table(result)
    print(f"results: {args.out}")
    if result.get("profile_file"):
        print(f"profile: {result['profile_file']}")
    return 0


# ----------------------------------------------------------------------------- helpers


def say(quiet: bool, text: str) -> None:
    if not quiet:
        from pipeline.tools.progress import console

        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rss_bytes(pid: int | None) -> int:
    if pid is None:
        raise ValueError("the process is not running")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of a process, all its threads (the ClickHouse sink thread,
    aiokafka's, chDB's), and of its waited-for children, from /proc/<pid>/stat."""
    if pid is None:
        raise ValueError("the process is not running")
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()   # after "pid (comm)": state is fields[0], utime is field 14
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def main_thread_sched(pid: int | None) -> tuple[float, float]:
    """Seconds the process's main thread (the worker's event loop) has spent running on a CPU
    and runnable but waiting for one, from /proc/<pid>/task/<pid>/schedstat; (nan, nan) where
    the kernel keeps no scheduler statistics. The wait is what a machine with too few free
    cores costs the loop: time it had work and no CPU to do it on."""
    if pid is None:
        raise ValueError("the process is not running")
    try:
        running_ns, waiting_ns = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return math.nan, math.nan
    return int(running_ns) / 1e9, int(waiting_ns) / 1e9


class CpuTrace:
    """(wall time, CPU seconds) of a process, sampled while the bench waits: the CPU it spent
    between two wall-clock instants, interpolated."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.samples: list[tuple[float, float]] = []

    def sample(self, *_: object) -> None:
        try:
            self.samples.append((time.time(), cpu_seconds(self.pid)))
        except (OSError, ValueError):
            pass

    def at(self, t: float) -> float:
        s = self.samples
        if not s:
            return math.nan
        if t <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return s[-1][1]


class FirstRead:
    """When the worker read its first input record: its `cxpulse_events_consumed_total`
    (counted as records enter the worker loop), polled from its /metrics with every sample of
    the wait until it is above 0, then no more (a scrape costs the worker CPU). `at` is the
    last poll that still saw 0: the first record was read after it."""

    def __init__(self, worker: "WorkerProcess"):
        self.worker = worker
        self.at: float | None = None
        self._before = time.time()

    def poll(self) -> None:
        if self.at is not None:
            return
        now = time.time()
        try:
            read = self.worker.counter("cxpulse_events_consumed", timeout=2)
        except OSError:   # not answering yet, or too busy to
            read = 0.0
        if read > 0:
            self.at = self._before
        else:
            self._before = now


IDLE_SECONDS = 5.0


def idle_cpu_cores(worker_pid: int | None, broker_pid: int | None, seconds: float) -> tuple[float, float | None]:
    """Cores the worker and the broker (None: not embedded) use over `seconds` with no load."""
    w0 = cpu_seconds(worker_pid)
    b0 = cpu_seconds(broker_pid) if broker_pid else None
    t = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t
    w = round((cpu_seconds(worker_pid) - w0) / wall, 3)
    return w, (round((cpu_seconds(broker_pid) - b0) / wall, 3) if b0 is not None else None)


def data_dir_mb(path: Path) -> float:
    """MB of the files under `path` (the embedded broker's data: its background CPU grows with it,
    bench/broker_storage_cost.py)."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def share(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def per_event_us(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1e6, 1)


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model or platform.processor(), "memory_bytes": mem,
            "platform": platform.platform()}


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in (("faust", "faust-streaming"), ("kafka-python", "kafka-python"), ("chdb", "chdb"),
                      ("aiokafka", "aiokafka"), ("noida-db", "noida-db"), ("orjson", "orjson"),
                      ("confluent-kafka", "confluent-kafka")):
        out[key] = installed_version(dist)
    return out


class OffsetWatch:
    """Committed offsets of one consumer group against fixed end offsets (one admin client)."""

    def __init__(self, settings: Settings, group: str, ends: dict):
        from pipeline.adapters.kafka.topics import admin

        self.group, self.ends = group, ends
        self.client = admin(settings)

    def remaining(self) -> int:
        from kafka.errors import KafkaError

        try:
            offsets = self.client.list_group_offsets({self.group: None}).get(self.group, {})
            done = {tp: meta.offset for tp, meta in offsets.items()}
        except KafkaError:
            done = {}
        return sum(max(0, end - max(done.get(tp, 0), 0)) for tp, end in self.ends.items())

    def wait(self, timeout: float, alive=lambda: True, interval: float = 0.1, on_progress=None) -> float:
        """Block until caught up; return the wall-clock time it was first seen caught up."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.remaining()
            now = time.time()
            if on_progress:
                on_progress(left)
            if left == 0:
                return now
            if not alive():
                raise BenchError("the worker stopped before consuming every event")
            if time.monotonic() > deadline:
                raise BenchError(f"consumer group {self.group} still {left:,} events behind after {timeout:.0f}s")
            time.sleep(interval)

    def close(self) -> None:
        self.client.close()


def input_end_offsets(settings: Settings) -> dict:
    from pipeline.adapters.kafka.topics import end_offsets

    return end_offsets(settings, list(settings.input_topics))


# ----------------------------------------------------------------------------- phases


def make_stream(events: int, seed: int) -> tuple[list[tuple[str, bytes | None, bytes]], list]:
    """(kind, key, value) records: exactly `events` of them, in event-time order."""
    from pipeline.tools.generator import generate

    customers = max(20, math.ceil(events / (EVENTS_PER_CUSTOMER * 0.9)))
    while True:
        records = generate(customers=customers, days=DAYS, seed=seed, invalid_ratio=0.01).records
        if len(records) >= events:
            break
        customers = math.ceil(customers * 1.3 * events / max(len(records), 1))
    records = records[:events]
    return [(r.kind, r.key, r.value) for r in records], records


def raw_consume(settings: Settings, expected: int) -> float:
    """Read and decode every record of the three input topics; events/s."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, client_id="cxpulse-bench-raw",
        fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_min_bytes=1, fetch_max_wait_ms=100, max_poll_records=50_000,
        receive_buffer_bytes=4 * 1024 * 1024,
    )
    try:
        tps = [TopicPartition(t, p) for t in settings.input_topics
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n = bad = 0
        loads = orjson.loads
        deadline = time.monotonic() + 600
        started = time.perf_counter()
        while n < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"raw consume read {n:,} of {expected:,} records in 600 s")
            for batch in consumer.poll(timeout_ms=200, max_records=50_000).values():
                for rec in batch:
                    try:
                        loads(rec.value)
                    except orjson.JSONDecodeError:
                        bad += 1
                n += len(batch)
        elapsed = time.perf_counter() - started
        return n / elapsed
    finally:
        consumer.close()


def raw_consume_confluent(settings: Settings, expected: int) -> float | None:
    """The same with confluent-kafka (librdkafka, `consume` in batches): events/s, or None
    when confluent-kafka is not installed (it is in the project's `test` extra)."""
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition as CTP
    except ImportError:
        return None
    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap, "group.id": f"cxpulse-bench-raw-ck-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False, "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024, "fetch.wait.max.ms": 100,
        "queued.max.messages.kbytes": 256 * 1024, "socket.receive.buffer.bytes": 4 * 1024 * 1024,
    })
    try:
        md = consumer.list_topics(timeout=30)
        tps = [CTP(t, p, OFFSET_BEGINNING) for t in settings.input_topics for p in sorted(md.topics[t].partitions)]
        consumer.assign(tps)
        n = 0
        loads = orjson.loads
        deadline = time.monotonic() + 600
        started = time.perf_counter()
        while n < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"raw consume (confluent-kafka) read {n:,} of {expected:,} records in 600 s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                if msg.error():
                    continue
                try:
                    loads(msg.value() or b"")
                except orjson.JSONDecodeError:
                    pass
                n += 1
        return n / (time.perf_counter() - started)
    finally:
        consumer.close()


def raw_limits(settings: Settings, expected: int, passes: int) -> dict[str, float]:
    """Events/s of every client available here (best of `passes` each)."""
    from agents.raw_consume import raw_consume_aiokafka   # aiokafka lives under agents/ only

    try:
        out = {"kafka-python": max(raw_consume(settings, expected) for _ in range(passes)),
               "aiokafka": max(raw_consume_aiokafka(settings.bootstrap, settings.input_topics, expected)
                               for _ in range(passes))}
    except TimeoutError as exc:
        raise BenchError(str(exc)) from exc
    confluent = [raw_consume_confluent(settings, expected) for _ in range(passes)]
    if all(c is not None for c in confluent):
        out["confluent-kafka"] = max(c for c in confluent if c is not None)
    return out


def quix_python(quiet: bool, venv: Path = PEER_VENV) -> tuple[Path | None, str | None]:
    """The peer's interpreter: a virtualenv of its own with quixstreams (it pins its own
    pydantic and confluent-kafka, which must not replace the project's pins in .venv)."""
    py = venv / "bin" / "python"
    # the core the peer runs reads the business calendar with `holidays` (the project's pin)
    extra = [f"holidays=={metadata.version('holidays')}"]
    probe = [str(py), "-c", f"import quixstreams, holidays, sys; sys.exit(quixstreams.__version__ != '{QUIX_VERSION}')"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py, None
    say(quiet, f"peer      installing quixstreams=={QUIX_VERSION} into {venv} (once)")
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"quixstreams=={QUIX_VERSION}", *extra], capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"could not create the peer virtualenv: {exc}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return None, f"pip install quixstreams=={QUIX_VERSION} failed: {' | '.join(tail)}"[:500]
    return py, None


def run_peer(settings: Settings, expected: int, work_dir: Path, tag: str, quiet: bool) -> dict:
    py, error = quix_python(quiet)
    if py is None:
        return {"error": error}
    cmd = [str(py), str(PEER_SCRIPT), "--bootstrap", settings.bootstrap,
           "--topics", ",".join(settings.input_topics), "--types", "touchpoint,order,complaint",
           "--group", f"quix-bench-{tag}", "--output", f"bench-{tag}.quix-out",
           "--expected", str(expected), "--state-dir", str(work_dir / "quix-state"),
           "--lateness", str(settings.lateness_seconds), "--idle-timeout", "60"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONWARNINGS": "ignore"}
    log = work_dir / "quix-peer.log"
    try:
        with open(log, "wb") as err:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, env=env, timeout=900, cwd=PROJECT_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": "the Quix Streams peer did not finish within 900 s"}
    lines = r.stdout.decode(errors="replace").strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = log.read_text(errors="replace")[-400:].strip()
        return {"error": f"the peer exited with {r.returncode} and no result; log tail: {tail}"}
    return out


def profile_worker(settings: Settings, ends: dict, work_dir: Path, tag: str, quiet: bool, out_file: Path,
                   max_seconds: float = 60.0) -> dict:
    """Re-consume the N events with a fresh worker under py-spy (at most `max_seconds`)."""
    from pipeline.adapters.kafka.worker_process import WorkerProcess

    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        say(quiet, f"profile   installing py-spy=={PYSPY_VERSION} into the venv")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"py-spy=={PYSPY_VERSION}"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not spy.exists():
            return {"profile_error": f"py-spy could not be installed: {(r.stderr or r.stdout)[-300:]}"}
    s = settings.model_copy(update={"app_id": f"cxpulse-bench-profile-{tag}", "web_port": free_port(),
                                    "data_dir": work_dir / "profile"})
    raw = work_dir / "profile.folded"
    worker = WorkerProcess(s)
    worker.start()
    spy_proc = subprocess.Popen([str(spy), "record", "--pid", str(worker.pid), "--rate", "97", "--format", "raw",
                                 "--output", str(raw), "--nonblocking"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watch = OffsetWatch(s, s.app_id, ends)
    try:
        started = time.time()
        deadline = time.monotonic() + max_seconds
        while watch.remaining() and time.monotonic() < deadline and worker.alive:
            time.sleep(0.2)
        seconds = time.time() - started
    finally:
        watch.close()
        spy_proc.send_signal(signal.SIGINT)
        try:
            spy_out = spy_proc.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            spy_proc.kill()
            spy_out = spy_proc.communicate()[0].decode(errors="replace")
        worker.stop()
    if not raw.exists() or raw.stat().st_size == 0:
        return {"profile_error": f"py-spy wrote no samples: {spy_out.strip()[-300:]}"}
    summary = summarize_profile(raw.read_text(errors="replace"), seconds)
    out_file.write_text(summary["text"])
    return {"profile_file": str(out_file), "profile_top": summary["top"]}


def _frame_path(frame: str) -> str:
    # py-spy raw frames look like "function (package/module.py:123)"
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(PROJECT_ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _frame_name(frame: str) -> str:
    return f"{frame.rpartition(' (')[0] or frame} ({_frame_path(frame)})"


AREAS = (("pipeline/", "cxpulse core (pipeline/)"), ("agents/", "cxpulse worker (agents/)"),
         ("schemas/", "cxpulse schemas"), ("pydantic", "pydantic"), ("chdb/", "chDB (ClickHouse engine)"),
         ("clickhouse_connect/", "clickhouse-connect"), ("aiokafka/", "aiokafka"), ("faust/", "faust"),
         ("mode/", "mode"), ("asyncio/", "asyncio"), ("dataclasses.py", "dataclasses (asdict)"),
         ("copy.py", "copy (deepcopy)"), ("orjson", "orjson"), ("prometheus_client/", "prometheus_client"),
         ("selectors.py", "selectors"), ("json/", "json"))

# Leaf frames where a thread is not running Python: waiting for I/O or work, or for the
# GIL after a system call (which py-spy, sampling every thread, shows in that frame).
WAITING = ("EpollSelector.select", "select (selectors.py", "_SelectorSocketTransport.write",
           "Condition.wait", "Event.wait (threading", "Queue.get (queue", "_worker (concurrent",
           "sleep (", "lock.acquire", "Thread.join")


def _area(frame: str) -> str:
    path = _frame_path(frame)
    for marker, area in AREAS:
        if path.startswith(marker) or "/" + marker in path:
            return area
    return "other"


def _thread(frames: list[str]) -> str:
    text = ";".join(frames[:12])
    if "concurrent/futures/thread.py" in text:
        return "ClickHouse sink thread (executor)"
    if "mode/threads.py" in text:
        return "Kafka consumer thread (Faust/aiokafka)"
    if frames[0].startswith("_run_module_as_main"):
        return "main thread (event loop: agent, producer, timers)"
    return "other threads / truncated stacks"


def summarize_profile(folded: str, seconds: float, top: int = 20, rate: float = 97.0) -> dict:
    per_thread: Counter = Counter()
    waiting: Counter = Counter()
    self_time: dict[str, Counter] = {}
    areas: dict[str, Counter] = {}
    total = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread (")]
        if not frames:
            continue
        total += n
        thread = _thread(frames)
        per_thread[thread] += n
        leaf = frames[-1]
        if any(w in leaf for w in WAITING):
            waiting[thread] += n
            continue
        self_time.setdefault(thread, Counter())[_frame_name(leaf)] += n
        area = next((a for a in map(_area, reversed(frames)) if a not in ("other", "asyncio", "selectors")), "other")
        areas.setdefault(thread, Counter())[area] += n
    possible = max(seconds * rate, 1.0)   # samples a thread busy all the time would get
    lines = [f"py-spy record --nonblocking --rate {rate:g} (all threads) on the cxpulse worker over {seconds:.1f} s "
             f"of catch-up; {total:,} samples", "",
             "Per thread: share of the wall time it was sampled running Python or C code (working), and waiting",
             "in a system call or for the GIL after one (select, socket send):"]
    busy_share = {}
    for thread, n in per_thread.most_common():
        work = n - waiting[thread]
        busy_share[thread] = round(work / possible, 4)
        lines.append(f"  {thread}: working {100 * work / possible:5.1f}%, waiting {100 * waiting[thread] / possible:5.1f}%")
    out_top: dict = {"threads": busy_share, "areas": {}, "self": {}}
    for thread, _ in per_thread.most_common():
        busy = sum(self_time.get(thread, Counter()).values())
        if not busy:
            continue
        lines += ["", f"{thread} — {busy:,} working samples, by area (innermost recognised frame):"]
        for area, n in areas[thread].most_common(10):
            lines.append(f"  {100 * n / busy:5.1f}%  {area}")
        lines.append(f"  top {top} frames by self time:")
        for frame, n in self_time[thread].most_common(top):
            lines.append(f"  {100 * n / busy:5.1f}%  {frame}")
        out_top["areas"][thread] = {a: round(n / busy, 4) for a, n in areas[thread].most_common(6)}
        out_top["self"][thread] = [[f, round(n / busy, 4)] for f, n in self_time[thread].most_common(6)]
    return {"text": "\n".join(lines) + "\n", "top": out_top}


def rekeyed(records: list, count: int, prefix: str, one_per_customer: bool = False) -> list[tuple[str, bytes, bytes]]:
    """`count` valid events of the stream, in stream order, moved to fresh customers
    (customer_id → prefix + id, or one customer per event) with fresh event ids."""
    valid = [r for r in records if r.valid]
    out = []
    for i in range(count):
        r = valid[i % len(valid)]
        obj = orjson.loads(r.value)
        cycle = i // len(valid)
        cid = f"{prefix}{i:07d}" if one_per_customer else f"{prefix}{cycle}-{obj['customer_id']}"
        obj["customer_id"] = cid
        obj["event_id"] = str(uuid.uuid4())
        out.append((r.kind, cid.encode(), orjson.dumps(obj)))
    return out


def latencies(sent: list[tuple[str, float]], scores, since: float | None = None) -> tuple[list[float], int]:
    """Per event: first score of its customer counting it (score `events` ≥ its ordinal
    among the customer's sent events) − its send time. Returns (sorted latencies, unscored);
    with `since`, of the events sent at or after it only."""
    by_customer: dict[str, list[tuple[float, int]]] = {}
    for m in scores:
        if m.value is None or not m.key:
            continue
        by_customer.setdefault(m.key.decode(), []).append((m.timestamp / 1000.0, orjson.loads(m.value)["events"]))
    ordinal: Counter = Counter()
    out, missing = [], 0
    for cid, t_sent in sent:
        ordinal[cid] += 1
        j = ordinal[cid]
        if since is not None and t_sent < since:
            continue
        done = [ts for ts, n in by_customer.get(cid, ()) if n >= j]
        if done:
            out.append(min(done) - t_sent)
        else:
            missing += 1
    return sorted(out), missing


def live_value(value: bytes, sent_at: float) -> bytes:
    """The event as if it happened at `sent_at`: `occurred_at` is the send time, and the
    order's `promised_at` / `fulfilled_at` move with it (their spacing from it kept)."""
    obj = orjson.loads(value)
    original = datetime.fromisoformat(obj["occurred_at"].replace("Z", "+00:00"))
    now = datetime.fromtimestamp(sent_at, timezone.utc)
    delta = now - original
    obj["occurred_at"] = now.isoformat()
    for name in ("promised_at", "fulfilled_at"):
        if obj.get(name):
            obj[name] = (datetime.fromisoformat(obj[name].replace("Z", "+00:00")) + delta).isoformat()
    return orjson.dumps(obj)


class PacedProducer:
    """The paced phases' load generator: confluent-kafka (librdkafka, in the `test` extra)
    when installed, else kafka-python. On this 2-core machine the generator shares the CPUs
    with the worker and the broker: kafka-python costs 280–480 µs of CPU per record sent at
    linger 0 (about one core at 3,700 records/s, more than the worker spends per event),
    librdkafka 30–60 µs. Both partition keys with murmur2 (the Java client's partitioner), so
    a customer's records land in the same partition number on every input topic.

    `linger_ms`: how long a record waits for others to share its produce request. A channel's
    producer left at its client's defaults waits 5 ms (librdkafka since 1.5, the Java client
    since Kafka 4.0); at 0 every record is a produce request of its own. Measured, the broker's
    and the worker's CPU per paced event do not move with it (bench/README.md). The latency
    counts the wait: it runs from the call to `send()`."""

    def __init__(self, settings: Settings, client_id: str = "cxpulse-bench-lat", linger_ms: float = LINGER_MS):
        self.errors: list[str] = []
        self.client = self.client_name()
        self._futures: list = []
        self._ck: Any = None   # confluent_kafka.Producer
        self._kp: Any = None   # kafka.KafkaProducer
        if self.client.startswith("confluent-kafka"):
            import confluent_kafka
            self._ck = confluent_kafka.Producer({
                "bootstrap.servers": settings.bootstrap, "acks": "all", "linger.ms": linger_ms,
                "partitioner": "murmur2_random", "client.id": client_id})
        else:
            from kafka import KafkaProducer
            self._kp = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                                     linger_ms=round(linger_ms), client_id=client_id)

    @staticmethod
    def client_name() -> str:
        try:
            import confluent_kafka
        except ImportError:
            return f"kafka-python {installed_version('kafka-python')}"
        return f"confluent-kafka {installed_version('confluent-kafka')}"

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        if self._ck is not None:
            while True:
                try:
                    self._ck.produce(topic, key=key, value=value, on_delivery=self._delivered)
                    break
                except BufferError:   # the local queue is full: serve deliveries, then again
                    self._ck.poll(0.05)
            self._ck.poll(0)
        else:
            self._futures.append(self._kp.send(topic, key=key, value=value))

    def close(self, timeout: float = 30.0) -> None:
        """Every record acknowledged, or BenchError."""
        if self._ck is not None:
            left = self._ck.flush(timeout)
            if left:
                self.errors.append(f"{left} records not delivered in {timeout:g} s")
        else:
            try:
                self._kp.flush()
                for f in self._futures:
                    f.get(timeout=timeout)
            finally:
                self._kp.close()
        if self.errors:
            raise BenchError(f"paced produce ({self.client}): {len(self.errors)} failed: {self.errors[0]}")


def paced_produce(settings: Settings, records: list[tuple[str, bytes, bytes]], rate: float,
                  live: bool = False, mark_after: float = math.inf,
                  mark=lambda: None, linger_ms: float = LINGER_MS) -> list[tuple[str, float]]:
    """Send at `rate` events/s; return (customer_id, wall-clock time of send()) in order.
    `live`: each event's time is its send time (`live_value`). `mark()` is called once, just
    before the first send `mark_after` seconds or more after the first."""
    topic_for = settings.topic_for_type
    p = PacedProducer(settings, linger_ms=linger_ms)
    sent: list[tuple[str, float]] = []
    try:
        start = time.perf_counter()
        for i, (kind, key, value) in enumerate(records):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            if sent and at - sent[0][1] >= mark_after:
                mark()
                mark_after = math.inf
            if live:
                value = live_value(value, at)
            sent.append((key.decode(), at))
            p.send(topic_for[kind], key, value)
    finally:
        p.close()
    return sent


SETTLE_SECONDS = 10.0   # the live phase's first seconds (a third of a shorter phase): the stream time jumps from the replay to now


@dataclass(frozen=True)
class LatencyPhase:
    """What a paced phase measured. Latencies are sorted; `settled` are those of the events
    sent `settle` seconds or more into the phase. The per-event CPU and the event loop's
    shares are over those events: from the first of them being sent until the worker has
    committed the phase's last event."""
    latencies: list[float]
    unscored: int
    settled: list[float]
    worker_cpu_per_event: float     # seconds, all the worker's threads
    broker_cpu_per_event: float     # seconds, the embedded broker
    loop_running_share: float       # of the wall time: the event loop's thread on a CPU
    loop_cpu_wait_share: float      # of the wall time: runnable, waiting for a CPU
    broker_cpu_cores: float         # the embedded broker's CPU over the same wall time, in cores
    scores: int = 0                 # score records published for the phase's customers


def phase_cpu_figures(prefix: str, phase: LatencyPhase) -> dict[str, float | None]:
    """A paced phase's CPU figures, under the result keys of its `prefix` ("latency", "live")."""
    return {f"{prefix}_worker_cpu_us_per_event": per_event_us(phase.worker_cpu_per_event),
            f"{prefix}_broker_cpu_us_per_event": per_event_us(phase.broker_cpu_per_event),
            f"{prefix}_broker_cpu_cores": share(phase.broker_cpu_cores),
            f"{prefix}_loop_running_share": share(phase.loop_running_share),
            f"{prefix}_loop_cpu_wait_share": share(phase.loop_cpu_wait_share)}


def phase_cpu_text(phase: LatencyPhase, settle: float) -> str:
    """The progress line's account of a paced phase's CPU after its first `settle` seconds."""
    loop = ("event loop: no scheduler statistics" if math.isnan(phase.loop_running_share) else
            f"event loop on a CPU {phase.loop_running_share:.0%} of the time, "
            f"waiting for a free one {phase.loop_cpu_wait_share:.0%}")
    return (f"after the first {settle:g} s: worker CPU {phase.worker_cpu_per_event * 1e6:,.0f} µs/event, "
            f"broker {phase.broker_cpu_per_event * 1e6:,.0f} µs/event ({phase.broker_cpu_cores:.2f} cores); {loop}")


def latency_phase(s: Settings, records: list, rate: float, count: int, prefix: str, live: bool,
                  alive=lambda: True, settle: float = SETTLE_SECONDS,
                  worker_cpu=lambda: math.nan,
                  broker_cpu=lambda: math.nan,
                  loop_sched=lambda: (math.nan, math.nan),
                  linger_ms: float = LINGER_MS) -> LatencyPhase:
    """Paced events to fresh customers (`prefix`), then what `LatencyPhase` holds: the
    worker's CPU from `worker_cpu()`, the broker's from `broker_cpu()`, the event loop's
    (running, waiting for a CPU) seconds from `loop_sched()`."""
    from pipeline.adapters.kafka import kafka_io

    at_settle: list[tuple[float, float, float, tuple[float, float]]] = []
    sent = paced_produce(s, rekeyed(records, count, prefix), rate, live=live, mark_after=settle,
                         mark=lambda: at_settle.append((time.monotonic(), worker_cpu(), broker_cpu(), loop_sched())),
                         linger_ms=linger_ms)
    watch = OffsetWatch(s, s.app_id, input_end_offsets(s))
    try:
        watch.wait(300, alive=alive)
    finally:
        watch.close()
    wall_end, cpu_end, broker_end, sched_end = time.monotonic(), worker_cpu(), broker_cpu(), loop_sched()
    key = prefix.encode()
    scores = [m for m in kafka_io.read_topic(s, s.topic_scores, timeout=300) if m.key and m.key.startswith(key)]
    lats, missing = latencies(sent, scores)
    if not sent:
        return LatencyPhase(lats, missing, [], math.nan, math.nan, math.nan, math.nan, math.nan, len(scores))
    since = sent[0][1] + settle
    settled, _ = latencies(sent, scores, since=since)
    after = sum(1 for _, t in sent if t >= since)
    if not (at_settle and after):
        return LatencyPhase(lats, missing, settled, math.nan, math.nan, math.nan, math.nan, math.nan, len(scores))
    wall0, cpu0, broker0, (run0, wait0) = at_settle[0]
    wall = max(wall_end - wall0, 1e-9)
    return LatencyPhase(lats, missing, settled, (cpu_end - cpu0) / after, (broker_end - broker0) / after,
                        (sched_end[0] - run0) / wall, (sched_end[1] - wait0) / wall, (broker_end - broker0) / wall,
                        len(scores))


# ----------------------------------------------------------------------------- the run


def run_bench(settings: Settings, events: int = DEFAULT_EVENTS, seed: int = 7, latency_seconds: float = 30.0,
              peer: bool = True, profile: bool = False, work_dir: Path = RESULTS_DIR / "tmp",
              quiet: bool = False, quick: bool = False, latency_share: float = 0.5,
              latency_rate: float | None = None, linger_ms: float = LINGER_MS) -> dict:
    from pipeline.adapters.kafka import kafka_io, topics
    from pipeline.adapters.kafka.broker import EmbeddedBroker
    from pipeline.adapters.kafka.worker_process import WorkerProcess

    tag = uuid.uuid4().hex[:8]
    run_dir = work_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    wall0 = time.monotonic()
    s = settings.model_copy(update={
        "data_dir": run_dir,
        "kafka_port": free_port(settings.kafka_host) if settings.embedded_broker else settings.kafka_port,
        "web_port": free_port(settings.web_host),
        "app_id": f"cxpulse-bench-{tag}",
        "lateness_seconds": (DAYS + 2) * 86400,   # the whole stream: the 3 topics are read independently
        "topic_touchpoints": f"bench-{tag}.touchpoints", "topic_orders": f"bench-{tag}.orders",
        "topic_complaints": f"bench-{tag}.complaints", "topic_scores": f"bench-{tag}.scores",
        "topic_alerts": f"bench-{tag}.alerts", "topic_deadletter": f"bench-{tag}.deadletter",
        "topic_erasures": f"bench-{tag}.erasures",
        "topic_actions": f"bench-{tag}.actions",
    })
    result: dict = {"N": events, "events": events, "machine": machine(), "versions": versions(),
                    "settings": {"partitions": s.partitions, "batch_max": s.batch_max, "batch_within": s.batch_within,
                                 "commit_interval": s.commit_interval, "sink_batch_rows": s.sink_batch_rows,
                                 "lateness_seconds": s.lateness_seconds},
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    say(quiet, f"generate  {events:,} events (seed {seed})")
    t = time.perf_counter()
    stream, records = make_stream(events, seed)
    result["customers"] = len({k for _, k, _ in stream if k})
    result["seconds_generate"] = round(time.perf_counter() - t, 2)

    broker = EmbeddedBroker(s) if s.embedded_broker else None
    worker = WorkerProcess(s, log_path=run_dir / "worker.log")
    try:
        if broker:
            broker.start()
            say(quiet, f"broker    embedded on {broker.bootstrap}")
        topics.ensure_topics(s)
        topic_for = s.topic_for_type
        t = time.perf_counter()
        kafka_io.produce(s, [(topic_for[kind], key, value) for kind, key, value in stream])
        result["produce_events_per_s"] = round(events / (time.perf_counter() - t), 1)
        ends = input_end_offsets(s)
        if sum(ends.values()) != events:
            raise BenchError(f"the input topics hold {sum(ends.values()):,} records, expected {events:,}")
        say(quiet, f"produce   {events:,} events at {result['produce_events_per_s']:,.0f}/s")

        # -- raw limit --------------------------------------------------------------
        passes = 1 if quick else 2
        limits = raw_limits(s, events, passes)
        client = max(limits, key=lambda c: limits[c])
        raw = limits[client]
        result["raw_events_per_s"] = round(raw, 1)
        result["raw_events_per_s_by_client"] = {c: round(v, 1) for c, v in limits.items()}
        result["raw_client"] = f"{client} {result['versions'].get(client)} (large fetch) + orjson.loads"
        say(quiet, f"raw       {raw:,.0f} events/s with {client} "
                   f"({', '.join(f'{c} {v:,.0f}' for c, v in limits.items())})")

        # -- peer -------------------------------------------------------------------
        result["quix_events_per_s"] = None
        result["quix_error"] = None
        if peer:
            say(quiet, "peer      Quix Streams on the same records")
            out = run_peer(s, events, run_dir, tag, quiet)
            if "error" in out:
                result["quix_error"] = out["error"]
                say(quiet, f"peer      failed: {out['error']}")
            else:
                result["quix_events_per_s"] = round(out["events_per_s"], 1)
                result["quix_version"] = out.get("version")
                say(quiet, f"peer      {out['events_per_s']:,.0f} events/s")
        else:
            result["quix_error"] = "skipped (--no-peer)"

        # -- full pipeline + memory ---------------------------------------------------
        say(quiet, "pipeline  starting a Faust worker on the same records")
        worker.start()
        rss_start = rss_bytes(worker.pid)
        cpu = CpuTrace(worker.pid)
        cpu.sample()
        first_read = FirstRead(worker)

        def progress(left: int) -> None:
            cpu.sample()
            first_read.poll()
        watch = OffsetWatch(s, s.app_id, ends)
        try:
            t_done = watch.wait(600, alive=lambda: worker.alive, on_progress=progress)
        finally:
            watch.close()
        cpu.sample()
        scores = kafka_io.read_topic(s, s.topic_scores, timeout=300)
        if not scores:
            raise BenchError("the worker published no scores")
        t_first_score = min(m.timestamp for m in scores) / 1000.0
        # The interval starts when the worker read its first input record. Until session 32 it
        # started at the first score record, and a worker reads, decodes and processes a good
        # part of a pre-produced stream before its first batch's rows are durable and its
        # scores go out: 60,000 events, 6.1 s of its CPU before the first score against 4.6 s
        # after it, so the rate read twice the work it was. Both are reported.
        t_first = first_read.at if first_read.at is not None and first_read.at < t_first_score else t_first_score
        pipeline_seconds = max(t_done - t_first, 1e-6)
        pipe_rate = events / pipeline_seconds
        customers = len({m.key for m in scores})
        # CPU of the worker process (all threads) over the measured interval, and from its start
        # (imports, group join, ClickHouse open) to caught up; per event of the stream.
        cpu_run = cpu.at(t_done) - cpu.at(t_first)
        cpu_after_score = cpu.at(t_done) - cpu.at(t_first_score)
        score_seconds = max(t_done - t_first_score, 1e-6)
        result.update({
            "worker_cpu_seconds": round(cpu_run, 2),
            "worker_cpu_us_per_event": round(1e6 * cpu_run / events, 1),
            "worker_cpu_cores": round(cpu_run / pipeline_seconds, 2),
            "worker_cpu_seconds_with_startup": round(cpu.at(t_done) - cpu.samples[0][1], 2),
            "pipeline_from": "first input record read" if t_first < t_first_score else "first score record",
            "pipeline_events_per_s_from_first_score": round(events / score_seconds, 1),
            "worker_cpu_us_per_event_from_first_score": round(1e6 * cpu_after_score / events, 1),
        })
        result.update({
            "pipeline_events_per_s": round(pipe_rate, 1), "pipeline_seconds": round(pipeline_seconds, 2),
            "customers_tracked": customers, "scores_published": len(scores),
            "scores_per_event": round(len(scores) / events, 4),
            "rss_idle_bytes": rss_start,
        })
        say(quiet, f"pipeline  {pipe_rate:,.0f} events/s ({pipeline_seconds:.1f} s), {customers:,} customers; "
                   f"worker CPU {result['worker_cpu_us_per_event']:,.0f} µs/event ({result['worker_cpu_cores']:.2f} cores)")

        # -- idle -------------------------------------------------------------------
        # Caught up, nothing produced: what the worker (timers, fetches) and the broker cost
        # doing nothing. The paced phases below pay it too, spread over their events.
        idle_seconds = 2.0 if quick else IDLE_SECONDS
        idle = idle_cpu_cores(worker.pid, broker.pid if broker else None, idle_seconds)
        stored = data_dir_mb(broker.data_dir) if broker and broker.data_dir else None
        result.update({"worker_idle_cpu_cores": idle[0], "broker_idle_cpu_cores": idle[1], "broker_data_mb": stored})
        say(quiet, f"idle      worker {idle[0]:.3f} cores"
                   + (f", broker {idle[1]:.3f} cores" if idle[1] is not None else "") + f" over {idle_seconds:g} s"
                   + (f"; the broker's data directory {stored:,.0f} MB" if stored is not None else ""))

        # -- latency ----------------------------------------------------------------
        rate = latency_rate if latency_rate is not None else max(1.0, pipe_rate * latency_share)
        count = max(50, int(rate * latency_seconds))
        say(quiet, f"latency   {count:,} paced events at {rate:,.0f}/s ("
                   + (f"{rate / pipe_rate:.2f} of the pipeline rate, fixed)" if latency_rate is not None
                      else f"{latency_share:g} of the pipeline rate)") + f", producer linger {linger_ms:g} ms")
        settle = min(SETTLE_SECONDS, latency_seconds / 3)

        def broker_cpu() -> float:
            return cpu_seconds(broker.pid) if broker and broker.pid else math.nan
        phase = latency_phase(
            s, records, rate, count, f"L{tag}-", live=False, alive=lambda: worker.alive, settle=settle,
            worker_cpu=lambda: cpu_seconds(worker.pid), broker_cpu=broker_cpu,
            loop_sched=lambda: main_thread_sched(worker.pid), linger_ms=linger_ms)
        lats, missing = phase.latencies, phase.unscored
        if not lats:
            raise BenchError("no score was published for the paced events")
        result.update({
            "latency_rate_events_per_s": round(rate, 1), "latency_rate_fixed": latency_rate is not None,
            "latency_producer": PacedProducer.client_name(), "latency_linger_ms": linger_ms,
            "latency_share": round(rate / pipe_rate, 4) if latency_rate is not None else latency_share,
            "latency_events": count, "latency_unscored": missing,
            "latency_scores_per_event": round(phase.scores / count, 4),
            **phase_cpu_figures("latency", phase),
            "p50_latency_s": round(quantile(lats, 0.50), 4), "p99_latency_s": round(quantile(lats, 0.99), 4),
            "max_latency_s": round(lats[-1], 4),
            "latency_quantiles_s": {f"p{q}": round(quantile(lats, q / 100), 4) for q in (1, 10, 25, 50, 75, 90, 99)},
        })
        say(quiet, f"latency   p50 {result['p50_latency_s'] * 1000:,.0f} ms, p99 {result['p99_latency_s'] * 1000:,.0f} ms "
                   f"({missing:,} of {count:,} without a score); " + phase_cpu_text(phase, settle))
        # the same, live: each event's time is its send time (a live stream; above, the replayed
        # events are weeks behind the stream time, so each one's customer is also swept at once)
        say(quiet, f"latency   {count:,} paced events at {rate:,.0f}/s, event time = send time (live)")
        phase = latency_phase(
            s, records, rate, count, f"V{tag}-", live=True, alive=lambda: worker.alive, settle=settle,
            worker_cpu=lambda: cpu_seconds(worker.pid), broker_cpu=broker_cpu,
            loop_sched=lambda: main_thread_sched(worker.pid), linger_ms=linger_ms)
        lats, missing, settled = phase.latencies, phase.unscored, phase.settled
        if not lats:
            raise BenchError("no score was published for the live paced events")
        result.update({
            "live_latency_unscored": missing,
            "live_scores_per_event": round(phase.scores / count, 4),
            **phase_cpu_figures("live", phase),
            "p50_live_latency_s": round(quantile(lats, 0.50), 4), "p99_live_latency_s": round(quantile(lats, 0.99), 4),
            "max_live_latency_s": round(lats[-1], 4),
            # without the phase's first seconds: the worker's stream time jumps from the replayed
            # events (weeks old) to now, and the sweep then finds every customer of the run due
            "live_settle_seconds": settle,
            "p99_live_latency_settled_s": round(quantile(settled, 0.99), 4) if settled else None,
        })
        say(quiet, f"latency   live: p50 {result['p50_live_latency_s'] * 1000:,.0f} ms, "
                   f"p99 {result['p99_live_latency_s'] * 1000:,.0f} ms ({missing:,} of {count:,} without a score); "
                   + phase_cpu_text(phase, settle))

        # -- memory -----------------------------------------------------------------
        # Two bursts of M new customers (one event each) into the warm worker (ClickHouse
        # open, the stream's customers loaded). The figure is the RSS growth over both
        # bursts (peak after either) per customer: with ~1 KB states the growth of one
        # burst alone is within the allocator's noise and can even be negative. At least
        # 5,000 per burst (~10 MB of states in all): with 500 (the quick run's old size)
        # the growth was below the noise and read 0 in a CI run.
        m_customers = max(5_000, events // 8)
        rss = [rss_bytes(worker.pid)]
        for burst in range(2):
            kafka_io.produce(s, [(topic_for[k], key, v) for k, key, v in
                                 rekeyed(records, m_customers, f"M{tag}-{burst}-", one_per_customer=True)])
            watch = OffsetWatch(s, s.app_id, input_end_offsets(s))
            try:
                watch.wait(300, alive=lambda: worker.alive)
            finally:
                watch.close()
            time.sleep(1.0)
            rss.append(rss_bytes(worker.pid))
        result.update({
            "rss_bytes": rss, "rss_customers_per_burst": m_customers,
            "rss_bytes_per_100k_customers": round(max(max(rss[1], rss[2]) - rss[0], 0) / (2 * m_customers) * 100_000),
            "rss_bytes_per_100k_customers_first_burst": round(max(rss[1] - rss[0], 0) / m_customers * 100_000),
        })
        say(quiet, f"memory    RSS {' → '.join(f'{x / 2**20:,.0f}' for x in rss)} MiB in bursts of {m_customers:,} "
                   f"new customers: {result['rss_bytes_per_100k_customers'] / 2**20:,.0f} MiB per 100k")
        worker.stop()

        # -- profile ----------------------------------------------------------------
        if profile:
            say(quiet, "profile   a fresh worker re-consumes the N events under py-spy (at most 60 s)")
            result.update(profile_worker(s, ends, run_dir, tag, quiet, RESULTS_DIR / "profile.txt",
                                         max_seconds=20.0 if quick else 60.0))
    finally:
        worker.stop()
        if broker:
            broker.stop()
    # the sweep index (pipeline/service/sweep_index.py): the cost of a timer tick with nothing due
    from pipeline.tools.core_loop import sweep_tick_cost

    tick = sweep_tick_cost(100_000)
    result["sweep_idle_tick_ms_100k"] = round(tick["idle_tick_ms"], 4)
    result["sweep_schedule_us"] = round(tick["schedule_us"], 2)
    result["ratios"] = ratios(result)
    result["seconds_total"] = round(time.monotonic() - wall0, 1)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def ratios(r: dict) -> dict:
    def div(a, b):   # four significant digits: pipeline/raw is about 0.002 against the fastest client
        return float(f"{r[a] / r[b]:.4g}") if r.get(a) and r.get(b) else None

    return {"pipeline/raw": div("pipeline_events_per_s", "raw_events_per_s"),
            "quix/raw": div("quix_events_per_s", "raw_events_per_s"),
            "pipeline/quix": div("pipeline_events_per_s", "quix_events_per_s")}


def print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(v, fmt="{:,.0f}") -> str:
        return "—" if v is None else fmt.format(v)

    t = Table(title=f"cxpulse bench — {r['N']:,} events, {r.get('customers', 0):,} customers, "
                    f"{r['machine']['nproc']} CPUs", header_style="bold")
    t.add_column("measure")
    t.add_column("value", justify="right")
    ratio = r.get("ratios", {})
    t.add_row("pipeline / raw limit", num(ratio.get("pipeline/raw"), "{:.1%}"))
    t.add_row("Quix Streams peer / raw limit", num(ratio.get("quix/raw"), "{:.1%}"))
    t.add_row("pipeline / Quix Streams peer", num(ratio.get("pipeline/quix"), "{:.2f}×"))
    t.add_section()
    t.add_row(f"raw limit (consume + decode, {r.get('raw_client', '?').split(' ')[0]}), events/s",
              num(r.get("raw_events_per_s")))
    for client, v in (r.get("raw_events_per_s_by_client") or {}).items():
        t.add_row(f"  raw with {client}, events/s", num(v))
    t.add_row("full pipeline (to ClickHouse + committed), events/s", num(r.get("pipeline_events_per_s")))
    t.add_row("worker CPU per event (all threads, /proc)", num(r.get("worker_cpu_us_per_event"), "{:,.0f} µs"))
    t.add_row("worker CPU while catching up", num(r.get("worker_cpu_cores"), "{:.2f} cores"))
    t.add_row("score records per event: catching up / paced / live",
              " / ".join(num(r.get(k), "{:.2f}") for k in ("scores_per_event", "latency_scores_per_event",
                                                           "live_scores_per_event")))
    t.add_row("Quix Streams peer (same core), events/s",
              num(r.get("quix_events_per_s")) if r.get("quix_events_per_s") else f"— ({r.get('quix_error')})")
    t.add_row(f"latency p50 at {num(r.get('latency_rate_events_per_s'))} events/s"
              + (f" (producer linger {r['latency_linger_ms']:g} ms)" if r.get("latency_linger_ms") is not None else ""),
              num(r.get("p50_latency_s"), "{:.3f} s"))
    t.add_row("latency p99", num(r.get("p99_latency_s"), "{:.3f} s"))
    t.add_row("latency p50, live (event time = send time)", num(r.get("p50_live_latency_s"), "{:.3f} s"))
    t.add_row("latency p99, live", num(r.get("p99_live_latency_s"), "{:.3f} s"))
    t.add_row(f"latency p99, live, after its first {r.get('live_settle_seconds', SETTLE_SECONDS):g} s",
              num(r.get("p99_live_latency_settled_s"), "{:.3f} s"))
    t.add_row(f"worker CPU per live event, after its first {r.get('live_settle_seconds', SETTLE_SECONDS):g} s",
              num(r.get("live_worker_cpu_us_per_event"), "{:,.0f} µs"))
    t.add_row(f"broker CPU per live event, after its first {r.get('live_settle_seconds', SETTLE_SECONDS):g} s",
              f"{num(r.get('live_broker_cpu_us_per_event'), '{:,.0f} µs')} "
              f"({num(r.get('live_broker_cpu_cores'), '{:.2f}')} cores)")
    t.add_row(f"worker event loop in the live phase after its first {r.get('live_settle_seconds', SETTLE_SECONDS):g} s: "
              "on a CPU / runnable, waiting for one",
              f"{num(r.get('live_loop_running_share'), '{:.0%}')} / {num(r.get('live_loop_cpu_wait_share'), '{:.0%}')}")
    t.add_row("worker / broker CPU while idle (caught up)",
              f"{num(r.get('worker_idle_cpu_cores'), '{:.3f}')} / {num(r.get('broker_idle_cpu_cores'), '{:.3f}')} cores")
    t.add_row("embedded broker's data directory, caught up", num(r.get("broker_data_mb"), "{:,.0f} MB"))
    t.add_row("sweep tick with nothing due, 100k customers", num(r.get("sweep_idle_tick_ms_100k"), "{:.3f} ms"))
    t.add_row("worker RSS per 100k customers", num((r.get("rss_bytes_per_100k_customers") or 0) / 2**20, "{:,.0f} MiB"))
    t.add_row("bench wall time", num(r.get("seconds_total"), "{:.0f} s"))
    Console(highlight=False).print(t)


if __name__ == "__main__":  # python -m pipeline.tools.bench [options] (the CLI calls main())
    from pipeline.config import load

    parser = argparse.ArgumentParser(prog="cxpulse bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(load(), parser.parse_args()))
