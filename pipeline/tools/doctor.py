"""`cxpulse doctor`: check the local set-up and say how to fix what is wrong.

Checks, in order: the broker answers; every topic exists with the expected partition
count (input topics co-partitioned, cx.scores compacted); ClickHouse answers and is
migrated (for the embedded chDB: whether its path is locked by a running worker); the
worker web port is free or a worker answers /healthz there; the installed versions of
python / faust / kafka-python / clickhouse-connect / chdb (against pyproject's pins).

Every check is a `Check(name, ok, detail, fix)`; `run_checks` never raises.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from pipeline.adapters.clickhouse.dsn import chdb_lock_holder, chdb_path, redact
from pipeline.config import PROJECT_ROOT, Settings

PACKAGES = {"faust": "faust-streaming", "kafka-python": "kafka-python",
            "clickhouse-connect": "clickhouse-connect", "chdb": "chdb"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


# --------------------------------------------------------------------------- helpers

def healthz(settings: Settings, timeout: float = 2.0) -> dict | None:
    """The worker's /healthz answer, or None when nothing answers there."""
    url = f"http://{settings.web_host}:{settings.web_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if r.status == 200 else None
    except (OSError, ValueError):
        return None


def _admin(settings: Settings, timeout: float):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="cxpulse-doctor",
                            bootstrap_timeout_ms=int(timeout * 1000), request_timeout_ms=int(timeout * 1000))


def _broker_fix(settings: Settings) -> str:
    if settings.embedded_broker:
        return (f"start the embedded broker on {settings.bootstrap} with `cxpulse broker` (in its own "
                f"terminal), or point CXPULSE_KAFKA_BOOTSTRAP at your Kafka")
    return f"check that Kafka runs at CXPULSE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} and is reachable from here"


def _recreate(settings: Settings, topic: str, want: int) -> str:
    if settings.embedded_broker:
        broker_dir = settings.data_dir / "broker"
        return (f"recreate {topic} with {want} partitions: on the embedded broker (local data only) stop it, "
                f"`rm -rf {broker_dir}`, start `cxpulse broker` again and then `cxpulse worker`, which "
                f"creates the topics with CXPULSE_PARTITIONS={want}")
    return (f"recreate {topic} with {want} partitions with your Kafka tools (e.g. kafka-topics.sh --delete, "
            f"then start `cxpulse worker`, which creates missing topics with CXPULSE_PARTITIONS={want})")


# --------------------------------------------------------------------------- checks

def check_kafka(settings: Settings, timeout: float = 5.0) -> list[Check]:
    """The broker, then every topic's existence and partition count, co-partitioning and
    compaction of cx.scores."""
    from pipeline.adapters.kafka.topics import topic_specs

    specs = topic_specs(settings)
    noisy = logging.getLogger("kafka")
    level = noisy.level
    noisy.setLevel(logging.CRITICAL)  # connection errors are the check's result, not log noise
    try:
        return _check_kafka(settings, specs, timeout)
    finally:
        noisy.setLevel(level)


def _check_kafka(settings: Settings, specs: dict, timeout: float) -> list[Check]:
    try:
        admin = _admin(settings, timeout)
    except Exception as exc:
        return [Check("broker", False, f"no broker answers at {settings.bootstrap} ({type(exc).__name__})",
                      _broker_fix(settings)),
                Check("topics", False, "not checked: no broker", "fix the broker first")]
    out = [Check("broker", True, f"{settings.bootstrap} answers"
                 + (" (embedded broker)" if settings.embedded_broker else ""))]
    try:
        existing = set(admin.list_topics())
        present = [t for t in specs if t in existing]
        counts = {t: 0 for t in specs}
        for d in admin.describe_topics(present) if present else []:
            counts[d["name"]] = len(d.get("partitions") or [])
        compact = None
        if settings.topic_scores in existing:
            try:
                from kafka.admin import ConfigResource, ConfigResourceType

                cfg = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic_scores)])
                compact = _config_value(cfg, settings.topic_scores, "cleanup.policy")
            except Exception:
                compact = None  # brokers that do not describe configs: not judged
    except Exception as exc:
        admin.close()
        return out + [Check("topics", False, f"listing topics failed: {exc}", _broker_fix(settings))]
    admin.close()

    for topic, (want, _cfg) in specs.items():
        got = counts.get(topic, 0)
        if topic not in existing:
            out.append(Check(f"topic {topic}", False, "missing",
                             "start `cxpulse worker` or run `cxpulse produce FILE.jsonl`: both create the "
                             f"missing topics with CXPULSE_PARTITIONS={want} partitions"))
        elif got != want:
            out.append(Check(f"topic {topic}", False, f"{got} partitions, expected {want} (CXPULSE_PARTITIONS)",
                             f"set CXPULSE_PARTITIONS={got} if every topic has {got}, else {_recreate(settings, topic, want)}"))
        else:
            note = ""
            if topic == settings.topic_scores and compact is not None:
                note = f", cleanup.policy={compact}"
                if "compact" not in compact:
                    out.append(Check(f"topic {topic}", False, f"{got} partitions{note}",
                                     f"set cleanup.policy=compact on {topic} (it holds the latest score per key)"))
                    continue
            out.append(Check(f"topic {topic}", True, f"{got} partitions{note}"))

    inputs = {t: counts.get(t, 0) for t in settings.input_topics}
    if all(inputs.values()) and len(set(inputs.values())) == 1:
        out.append(Check("co-partitioning", True, f"input topics share {next(iter(inputs.values()))} partitions"))
    else:
        out.append(Check("co-partitioning", False,
                         "input topics differ: " + ", ".join(f"{t}={n}" for t, n in inputs.items()),
                         "input topics must exist with the same partition count (key = customer_id); "
                         + _recreate(settings, "the odd ones", settings.partitions)))
    return out


def _config_value(result, topic: str, name: str) -> str | None:
    """cleanup.policy out of describe_configs' answer (its shape varies across versions)."""
    if isinstance(result, dict):
        entry = result.get("topic", {}).get(topic, {}).get(name)
        if isinstance(entry, dict):
            return entry.get("value")
        return None
    for resp in result if isinstance(result, list) else [result]:
        for res in getattr(resp, "resources", []) or []:
            for cfg in res[4] if len(res) > 4 else []:
                if cfg[0] == name:
                    return cfg[1]
    return None


def check_clickhouse(settings: Settings, timeout: float = 10.0) -> list[Check]:
    """Reachable and migrated (opening the sink applies pending migrations). For the
    embedded chDB, a path locked by another process is reported instead of opened."""
    dsn = settings.dsn
    path = chdb_path(dsn)
    if path is not None:
        holder = chdb_lock_holder(path)
        if holder is not None:
            pid = f"pid {holder}" if holder > 0 else "another process"
            worker = healthz(settings)
            if worker is not None and (holder <= 0 or _alive(holder)):
                return [Check("clickhouse", True, f"chDB {path} is in use by a running worker ({pid}); "
                              "not opened (chDB allows one process per path)")]
            return [Check("clickhouse", False, f"chDB {path} is locked by {pid}, and no worker answers "
                          f"http://{settings.web_host}:{settings.web_port}/healthz",
                          f"stop that process (kill {holder})" if holder > 0 else "stop the process using it")]

    from pipeline.adapters.clickhouse.migrations import migration_files
    from pipeline.adapters.clickhouse.sink import ClickHouseSink

    sink = ClickHouseSink(dsn, retry_initial=0.2, retry_max=1.0)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            sink.open()
            result["versions"] = sorted(r[0] for r in sink.client.query(
                "SELECT version FROM schema_migrations FINAL").result_rows)
        except BaseException as exc:  # noqa: BLE001 -- reported, not raised
            result["error"] = exc

    quiet = [logging.getLogger(n) for n in ("pipeline.adapters.clickhouse.sink", "clickhouse_connect")]
    levels = [q.level for q in quiet]
    for q in quiet:  # the retry warnings would drown the table; the check reports the outcome
        q.setLevel(logging.CRITICAL)
    timed_out = False
    try:
        t = threading.Thread(target=target, name="doctor-clickhouse", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            timed_out = True
            sink.close()  # a retrying open() raises SinkClosed
            t.join(5)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    if timed_out or ("error" not in result and "versions" not in result):
        return [Check("clickhouse", False, f"no ClickHouse answers at {redact(dsn)} within {timeout:.0f}s",
                      "start ClickHouse or fix CXPULSE_CLICKHOUSE_DSN (http(s)://user:pass@host:8123/db, "
                      "or empty for the embedded chDB)")]
    try:
        sink.close()
    except Exception:
        pass
    if "error" in result:
        exc = result["error"]
        return [Check("clickhouse", False, f"{redact(dsn)}: {type(exc).__name__}: {str(exc)[:200]}",
                      "fix CXPULSE_CLICKHOUSE_DSN, or check the server's log")]
    want = {p.stem for p in migration_files()}
    have = set(result.get("versions") or ())
    missing = sorted(want - have)
    if missing:
        return [Check("clickhouse", False, f"{redact(dsn)}: migrations missing: {', '.join(missing)}",
                      "check deploy/clickhouse/*.sql and the server's log; a worker applies them on start")]
    return [Check("clickhouse", True, f"{redact(dsn)}: reachable, migrations up to {max(have)} ({len(have)})")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_worker_port(settings: Settings) -> list[Check]:
    from pipeline.adapters.kafka.broker import port_is_free

    where = f"{settings.web_host}:{settings.web_port}"
    if port_is_free(settings.web_host, settings.web_port):
        return [Check("worker web port", True, f"{where} free (no worker running here)")]
    answer = healthz(settings)
    if answer is None:
        return [Check("worker web port", False, f"{where} is taken by something that is not a cxpulse worker",
                      "stop what holds the port or set CXPULSE_WEB_PORT to a free port")]
    app = answer.get("app")
    if app and app != settings.app_id:
        return [Check("worker web port", False, f"{where}: a worker of app {app!r} answers, not {settings.app_id!r}",
                      "set CXPULSE_APP_ID / CXPULSE_WEB_PORT to match the worker you mean")]
    return [Check("worker web port", True, f"{where}: worker {app or ''} answers /healthz".replace("  ", " "))]


def _pins() -> dict[str, str]:
    """Exact pins (name==version) from pyproject.toml, when the source tree is at hand."""
    try:
        import tomllib

        deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    except Exception:
        return {}
    pins = {}
    for d in deps:
        if "==" in d:
            name, version = d.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def check_versions() -> list[Check]:
    out = []
    py = platform.python_version()
    ok_py = sys.version_info[:2] == (3, 11)
    out.append(Check("python", ok_py, py, "" if ok_py else "use Python 3.11 (pyproject: >=3.11,<3.12)"))
    pins = _pins()
    for label, dist in PACKAGES.items():
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out.append(Check(label, False, "not installed", "make install (pip install -e '.[test]')"))
            continue
        pin = pins.get(dist)
        if pin and pin != v:
            out.append(Check(label, False, f"{v} (pinned {pin})", "make install (pip install -e '.[test]')"))
        else:
            out.append(Check(label, True, v))
    return out


def run_checks(settings: Settings, timeout: float = 5.0) -> list[Check]:
    checks: list[Check] = []
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_kafka(settings, timeout),
        lambda: check_clickhouse(settings, max(timeout, 10.0)),
        lambda: check_worker_port(settings),
        check_versions,
    ]
    for step in steps:
        try:
            checks.extend(step())
        except Exception as exc:  # a check must not hide the others
            checks.append(Check(getattr(step, "__name__", "check"), False, f"{type(exc).__name__}: {exc}",
                                "report this as a bug"))
    return checks


def print_checks(checks: list[Check], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        probe = Console()
        # On a terminal, fit it; in a pipe or a log, do not wrap the cells.
        console = Console(highlight=False, width=probe.width if probe.is_terminal else 400)
    table = Table(title="cxpulse doctor", show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    table.add_column("how to fix", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]OK[/green]" if c.ok else "[bold red]FAIL[/bold red]", c.detail, c.fix)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    console.print(f"{len(failed)} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed")


def main(settings: Settings, timeout: float = 5.0) -> int:
    checks = run_checks(settings, timeout)
    print_checks(checks)
    return 1 if any(not c.ok for c in checks) else 0
