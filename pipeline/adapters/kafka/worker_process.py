"""Run a cxpulse Faust worker as a child process (demo, tests, benchmark, fault drills)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.adapters.kafka.broker import port_is_free
from pipeline.adapters.child_process import kill_child, stop_child
from pipeline.config import Settings


class WorkerError(RuntimeError):
    pass


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as CXPULSE_* variables, so a child process sees exactly these."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"CXPULSE_{name.upper()}"] = value if isinstance(value, str) else __import__("json").dumps(value)
    return env


@dataclass
class WorkerProcess:
    settings: Settings
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self, timeout: float = 60.0) -> "WorkerProcess":
        s = self.settings
        if not port_is_free(s.web_host, s.web_port):
            raise WorkerError(f"worker web port {s.web_host}:{s.web_port} is already in use; "
                              f"set CXPULSE_WEB_PORT to a free port")
        self.log_path = self.log_path or s.data_dir / f"worker-{s.web_port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(s), **self.extra_env}
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tools.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise WorkerError(f"worker exited with {self._proc.returncode}; see {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise WorkerError(f"worker did not answer /healthz within {timeout}s; see {self.log_path}:\n{self.log_tail()}")

    def counter(self, name: str, timeout: float = 5.0) -> float:
        """The worker's counter `name` (as registered, e.g. "cxpulse_events_applied") summed over
        its labels, read from its /metrics; OSError when it does not answer within `timeout`."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text) if family.name == name
                   for sample in family.samples if sample.name == name + "_total")

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None:   # not started
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM: Faust commits and shuts down)."""
        proc, self._proc = self._proc, None
        return None if proc is None else stop_child(proc, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """kill -9, as in a crash."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_child(proc)

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
