"""What a ClickHouse DSN names: the embedded chDB's data path and the process holding it,
and the DSN as it may be printed (without its password). Used by `cxpulse doctor` and
`cxpulse erase` before they open the store.
"""
from __future__ import annotations

import fcntl
import re
import urllib.parse
from pathlib import Path


def chdb_path(dsn: str) -> Path | None:
    """The data path of a `chdb://` DSN, None for a ClickHouse server."""
    if not dsn.startswith("chdb://"):
        return None
    return Path(urllib.parse.urlparse(dsn).path or dsn[len("chdb://"):])


def chdb_lock_holder(path: Path) -> int | None:
    """The pid of the process holding the chDB data path (it flocks `<path>/status`),
    or None when nobody holds it. -1 when held but the pid cannot be read."""
    status = path / "status"
    try:
        f = open(status, "rb")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            m = re.search(rb"PID:\s*(\d+)", f.read(256))
            return int(m.group(1)) if m else -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def redact(dsn: str) -> str:
    """A DSN without its password."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
