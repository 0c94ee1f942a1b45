"""Lab: the cost of handing score records to the adapters as pydantic models (validated and
serialized by pydantic) instead of the TypedDicts the core builds (serialized by orjson),
per record, against the cost of processing one record. Run: .venv/bin/python docs/lab/record_cost.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import time  # noqa: E402

import orjson  # noqa: E402

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.service.replay import replay
from pipeline.tools.generator import generate
from schemas.outputs import ScoreRecord

stream = generate(customers=300, days=60, seed=7)
res = replay(stream.values(), build_core(Settings()), clock=time.time, tick=None)
scores = list(res.scores.values()) * 20


def per_record(f) -> float:
    """Best of five passes, microseconds per score record."""
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for s in scores:
            f(s)
        best = min(best, time.perf_counter() - t)
    return best / len(scores) * 1e6


d = per_record(orjson.dumps)
v = per_record(lambda s: ScoreRecord.model_validate(s).model_dump_json())
t0 = time.perf_counter(); n = len(replay(stream.values(), build_core(Settings()), clock=time.time, tick=None).scores); rt = time.perf_counter() - t0
print(f"records {len(scores)}: dict+orjson {d:.2f} us, model_validate+dump_json {v:.2f} us per score")
print(f"replay of {len(stream.records)} records: {rt / len(stream.records) * 1e6:.1f} us per record")
