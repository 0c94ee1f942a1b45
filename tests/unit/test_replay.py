"""`cxpulse replay`: the offline path over a JSON Lines file, and the ClickHouse backfill."""
from __future__ import annotations

from datetime import timedelta

import orjson

from pipeline.adapters.clickhouse import queries
from pipeline.tools.cli import main
from pipeline.tools.generator import generate, write_jsonl
from pipeline.adapters.clickhouse.sink import ClickHouseSink
from schemas.outputs import ScoreRecord


def test_replay_writes_one_score_per_customer_as_of_and_backfills_clickhouse(tmp_path, monkeypatch, capsys):
    stream = generate(customers=60, days=20, seed=5, invalid_ratio=0.03)
    events = tmp_path / "events.jsonl"
    write_jsonl(stream, events)
    as_of = stream.end - timedelta(days=5)
    monkeypatch.setenv("CXPULSE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "scores.jsonl"
    code = main(["replay", str(events), "--as-of", as_of.isoformat(), "--scores-out", str(out),
                 "--quiet", "--to-clickhouse"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "events/s" in printed
    scores = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len({s["customer_id"] for s in scores}) == len(scores) > 0
    for s in scores:
        ScoreRecord.model_validate(s)
        assert s["as_of"].startswith(as_of.strftime("%Y-%m-%dT%H:%M"))
    with ClickHouseSink(f"chdb://{tmp_path / 'data' / 'clickhouse'}") as sink:
        counts = queries.table_counts(sink.client)
        latest_after = sink.client.query(
            "SELECT count() FROM cx_events FINAL WHERE occurred_at > {t:DateTime64(3, 'UTC')}",
            parameters={"t": as_of}).result_rows[0][0]
    assert counts["cx_scores_latest"] == len(scores)
    assert counts["cx_events"] > 0 and latest_after == 0   # nothing after --as-of was applied


def test_replay_as_of_before_every_event_says_so(tmp_path, monkeypatch, capsys):
    """An --as-of earlier than the whole file (a date copied from an example) scores nobody:
    the replay says why on stderr instead of only printing zero customers."""
    stream = generate(customers=10, days=7, seed=5, invalid_ratio=0.0)
    events = tmp_path / "events.jsonl"
    write_jsonl(stream, events)
    monkeypatch.setenv("CXPULSE_DATA_DIR", str(tmp_path / "data"))
    before = stream.end - timedelta(days=30)
    assert main(["replay", str(events), "--as-of", before.isoformat(), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "customers 0" in captured.out
    assert "every event read is after --as-of" in captured.err and "without --as-of" in captured.err
    assert main(["replay", str(events), "--quiet"]) == 0
    assert "--as-of" not in capsys.readouterr().err
