"""The HTTP status a worker's web view answers (integration tests)."""
from __future__ import annotations

import urllib.error
import urllib.request


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
