"""Counting the fetch requests a Kafka client sends (integration tests of the idle pauses:
the embedded broker answers an empty fetch at once, and an unpatched client spins)."""
from __future__ import annotations

from typing import Any


def count_fetch_requests(monkeypatch: Any, connection_class: type, method: str) -> list[int]:
    """Wrap `connection_class.method(request, ...)` (the client's one way out for a request)
    for the test; the returned one-item list holds how many FetchRequests went through it."""
    fetches = [0]
    send = getattr(connection_class, method)

    def counting_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if type(request).__name__.startswith("FetchRequest"):
            fetches[0] += 1
        return send(self, request, *args, **kwargs)

    monkeypatch.setattr(connection_class, method, counting_send)
    return fetches
