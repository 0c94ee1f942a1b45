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


def test_replay_says_why_records_were_dead_lettered_and_where_to_read_them(tmp_path, monkeypatch, capsys):
    """Nothing refused silently: the summary counts the dead letters by reason, quotes the
    first one's error with the line it came from, and names the file that holds them all (or
    the option that writes it)."""
    events = tmp_path / "events.jsonl"
    stream = generate(customers=3, days=7, seed=5, invalid_ratio=0.0)
    write_jsonl(stream, events)
    good = events.read_bytes()
    events.write_bytes(good + b'\n{"type": "touchpoint"}\nnot json\n\n{"a": 1}\n')
    monkeypatch.setenv("CXPULSE_DATA_DIR", str(tmp_path / "data"))
    assert main(["replay", str(events), "--quiet"]) == 0
    printed = capsys.readouterr().out
    lines = len(good.splitlines())
    assert "dead-lettered 3," in printed
    assert "dead letters by reason: invalid_record 2, invalid_json 1;" in printed
    assert f"first (non-blank line {lines + 1}): touchpoint.event_id: Field required" in printed
    assert "--deadletters-out FILE writes them all" in printed
    out = tmp_path / "dead.jsonl"
    assert main(["replay", str(events), "--quiet", "--deadletters-out", str(out)]) == 0
    assert f"all written to {out}" in capsys.readouterr().out
    written = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [d["reason"] for d in written] == ["invalid_record", "invalid_json", "invalid_record"]
    assert written[0]["offset"] == lines          # the non-blank line, counted from 0
    # a clean file prints no such line
    events.write_bytes(good)
    assert main(["replay", str(events), "--quiet"]) == 0
    assert "dead letters" not in capsys.readouterr().out
