"""Stopping the child processes the tools start (the embedded broker, workers)."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_child(proc: subprocess.Popen, sig: int, timeout: float) -> int | None:
    """Send `sig` (the process's graceful-stop signal), wait up to `timeout` seconds, then
    kill its whole process group. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_child(proc)
    return proc.returncode


def kill_child(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (started with start_new_session=True), as in a crash."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
