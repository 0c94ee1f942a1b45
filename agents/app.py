"""The Faust worker's entry points: `app` for `faust -A agents.app worker`, and `main` for
`cxpulse worker`. The app is built by agents/factory.py from the loaded settings; what the
worker does with records, timers, rebalances and a stop is pipeline/service/worker_loop.py."""
from __future__ import annotations

import sys

from agents.factory import create_app
from pipeline.config import load

app = create_app(load())


def main(argv: list[str] | None = None) -> None:
    """Run a worker (`cxpulse worker`): Faust's own command line, with our defaults."""
    from pipeline.bootstrap import tune_gc

    settings = app.settings
    tune_gc()   # after the app is built: its objects are frozen out of the collector's sight
    sys.argv = ["cxpulse", "-l", settings.log_level, "worker", "--web-port", str(settings.web_port)] + list(argv or [])
    app.main()
