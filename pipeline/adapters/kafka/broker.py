"""The embedded Kafka-protocol broker (noida-db) for local runs and CI.

Production points `CXPULSE_KAFKA_BOOTSTRAP` at Apache Kafka and never starts this.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.adapters.child_process import kill_child, stop_child
from pipeline.config import Settings


class BrokerError(RuntimeError):
    """The embedded broker could not be started; the message says what to change."""


def binary_path() -> Path:
    import noida_db  # the pinned PyPI package that ships the broker binary

    path = Path(noida_db.__file__).parent / "noida-db"
    if not path.exists():
        raise BrokerError(f"noida-db binary missing at {path}; run `make install`")
    return path


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@dataclass
class EmbeddedBroker:
    """Runs `noida-db start --only kafka` on loopback with a project-local data dir."""

    settings: Settings
    data_dir: Path | None = None
    log_path: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir or self.settings.data_dir / "broker"
        self.log_path = self.log_path or self.data_dir.parent / "broker.log"

    def _paths(self) -> tuple[Path, Path]:
        assert self.data_dir is not None and self.log_path is not None   # set by __post_init__
        return self.data_dir, self.log_path

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.kafka_host}:{self.settings.kafka_port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        host, port = self.settings.kafka_host, self.settings.kafka_port
        if not port_is_free(host, port):
            raise BrokerError(
                f"port {host}:{port} is already in use, so the embedded broker cannot start; "
                f"stop whatever holds it or set CXPULSE_KAFKA_PORT to a free port "
                f"(or CXPULSE_KAFKA_BOOTSTRAP to use a running broker)"
            )
        data_dir, log_path = self._paths()
        data_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        self._proc = subprocess.Popen(
            [str(binary_path()), "start", "--data-dir", str(data_dir), "--host", host,
             "--only", "kafka", "--kafka-port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if not wait_for_port(host, port, timeout) or self._proc.poll() is not None:
            self.stop()
            tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
            raise BrokerError(f"embedded broker did not come up on {host}:{port} within {timeout}s; log {log_path}:\n{tail}")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, signal.SIGINT, timeout)

    def kill(self) -> None:
        """Hard stop (fault-injection tests)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_child(proc)

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (the bench reads its CPU time)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
