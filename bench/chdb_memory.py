"""How much of the worker's RSS growth per customer is the in-process ClickHouse engine (chDB).

`cxpulse bench` measures the worker's RSS over bursts of new customers (one event each). The
worker runs chDB in its own process (locally and in CI; production talks to a ClickHouse server
over HTTP), so that figure also holds what the engine keeps for the rows inserted. This script
repeats the bursts without Kafka or a worker: the core processes them (states thrown away) and
the rows are written to a fresh chDB, or, with --no-write, only built. The difference is the
engine's share.

    .venv/bin/python bench/chdb_memory.py              # with the chDB writes
    .venv/bin/python bench/chdb_memory.py --no-write   # the control: the core and the rows only
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=7500, help="new customers per burst (the bench's size)")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="build the rows but do not write them")
    args = parser.parse_args()

    from pipeline.adapters.clickhouse.rows import batch_rows
    from pipeline.adapters.clickhouse.sink import ClickHouseSink
    from pipeline.bootstrap import build_core
    from pipeline.config import Settings
    from pipeline.service.processor import RawRecord
    from pipeline.tools import bench

    settings = Settings()
    core = build_core(settings)
    _, records = bench.make_stream(20_000, 7)
    work = Path(tempfile.mkdtemp(prefix="cxpulse-chdb-memory-"))
    sink = None if args.no_write else ClickHouseSink(f"chdb://{work / 'chdb'}").open()

    def burst(prefix: str, m: int) -> None:
        events = bench.rekeyed(records, m, prefix, one_per_customer=True)
        raws = [RawRecord(settings.topic_for_type[kind], 0, i, key, value) for i, (kind, key, value) in enumerate(events)]
        for i in range(0, len(raws), 1000):
            rows = batch_rows(core.process(raws[i:i + 1000], lambda cid: None, received_at=time.time()))
            if sink is not None:
                sink.write(rows)

    try:
        burst("W-", 2000)   # warm-up: imports, caches, the engine's first parts
        gc.collect()
        rss = [bench.rss_bytes(os.getpid())]
        for j in range(args.bursts):
            burst(f"M{j}-", args.customers)
            gc.collect()
            rss.append(bench.rss_bytes(os.getpid()))
    finally:
        if sink is not None:
            sink.close()
        shutil.rmtree(work, ignore_errors=True)
    per_100k = [round((b - a) / args.customers * 100_000 / 2**20) for a, b in zip(rss, rss[1:])]
    print(f"{'core + rows only' if args.no_write else 'core + rows + chDB writes'}: RSS "
          f"{' → '.join(f'{x / 2**20:,.0f}' for x in rss)} MiB in bursts of {args.customers:,} new customers; "
          f"growth per burst, MiB per 100k customers: {', '.join(map(str, per_100k))}")


if __name__ == "__main__":
    main()
