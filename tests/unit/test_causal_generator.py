"""The causal mode of the generator: the hazard model and its oracle (hand-computed), the
stream (wire-valid, deterministic, incidents visible in the events, nothing started after a
departure, departures all year round), and the default mode left byte-identical."""
from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.tools.generator import generate
from pipeline.tools.hazard_model import (
    INCIDENT_FACTORS, PRESETS, HazardModel, daily_hazard, dominant_factor, hazard_model, in_force,
    oracle_probability, parse_ratios,
)
from schemas.events import parse_event
from schemas.outputs import ChurnFactor

END = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _digest(stream) -> str:
    h = hashlib.sha256()
    for r in stream.records:
        h.update(r.kind.encode() + b"|" + (r.key or b"-") + b"|" + r.value + b"\n")
    for t in sorted(stream.truth.values(), key=lambda t: t.customer_id):
        h.update(repr(t).encode())
    return h.hexdigest()


@pytest.mark.parametrize("seed, n_records, digest", [
    (7, 6395, "dcf7a4f9137cc9370b54d24c5a1084a49d73634dfbe4ceca35ecb2989dda8768"),
    (11, 5863, "d8832aff0178c5b709eb23c73faaee8d0883c16c97d55ff4bf61d7779a08b799"),
])
def test_default_mode_output_is_unchanged(seed, n_records, digest):
    """Digests recorded from the generator before the causal mode was added."""
    s = generate(customers=300, days=40, seed=seed, end=END)
    assert len(s.records) == n_records and s.causal is None
    assert _digest(s) == digest


# --- the hazard model ----------------------------------------------------------------------

MODEL = HazardModel("t", baseline=0.01, decay_days=30.0, ratios={"detractor": 4.0, "late_fulfilment": 2.0})


def test_daily_hazard_hand_computed():
    inc = [(9.5, "detractor"), (15.0, "late_fulfilment")]
    assert daily_hazard(inc, 9, MODEL) == pytest.approx(0.01)          # revealed during day 9: from day 10
    assert daily_hazard(inc, 10, MODEL) == pytest.approx(0.04)
    assert daily_hazard(inc, 16, MODEL) == pytest.approx(0.08)         # both in force: 0.01 · 4 · 2
    assert daily_hazard(inc, 39, MODEL) == pytest.approx(0.04 * 2)     # detractor until day 39 (≤ 9.5 + 30)
    assert daily_hazard(inc, 40, MODEL) == pytest.approx(0.02)
    assert daily_hazard(inc, 46, MODEL) == pytest.approx(0.01)
    assert daily_hazard([(1.0, "low_ratings")], 5, MODEL) == pytest.approx(0.01)   # no ratio set: 1
    assert in_force(inc, 16, MODEL) == inc


def test_oracle_hand_computed():
    inc = [(9.5, "detractor"), (25.0, "late_fulfilment")]
    # cut 20: only the detractor is known; days 20..39 at 0.04, days 40..49 at 0.01
    assert oracle_probability(inc, 20, MODEL) == pytest.approx(1 - math.exp(-(20 * 0.04 + 10 * 0.01)))
    # cut 30: both known; days 30..39: 0.08, 40..55 (≤ 25 + 30): 0.02, 56..59: 0.01
    assert oracle_probability(inc, 30, MODEL) == pytest.approx(1 - math.exp(-(10 * 0.08 + 16 * 0.02 + 4 * 0.01)))
    assert oracle_probability([], 30, MODEL, window_days=10) == pytest.approx(1 - math.exp(-0.1))


def test_dominant_factor():
    inc = [(1.0, "late_fulfilment"), (2.0, "late_fulfilment"), (3.0, "detractor")]
    # late: 2 · ln 2 = ln 4 = detractor's ln 4: a tie goes to the first in INCIDENT_FACTORS order
    assert dominant_factor(inc, 5, MODEL) == "late_fulfilment"
    assert dominant_factor(inc[1:], 5, MODEL) == "detractor"
    assert dominant_factor(inc, 40, MODEL) is None
    assert dominant_factor([(1.0, "low_ratings")], 5, MODEL) is None     # ratio 1 adds nothing


def test_settings_and_custom_ratios():
    assert set(PRESETS) >= {"strong", "weak"}
    assert all(set(m.ratios) == set(INCIDENT_FACTORS) for m in PRESETS.values())
    assert all(PRESETS["strong"].ratio(f) > PRESETS["weak"].ratio(f) for f in INCIDENT_FACTORS)
    assert set(INCIDENT_FACTORS) <= {f.value for f in ChurnFactor}      # DESIGN.md §2 vocabulary
    m = hazard_model("weak", parse_ratios("failed_recovery=6, detractor=2.5"), decay_days=20)
    assert m.ratio("failed_recovery") == 6.0 and m.ratio("detractor") == 2.5
    assert m.ratio("late_fulfilment") == PRESETS["weak"].ratio("late_fulfilment") and m.decay_days == 20
    assert m.name == "weak+custom" and hazard_model("weak") is PRESETS["weak"]
    for bad in ("churn=2", "detractor", "detractor=x"):
        with pytest.raises(ValueError, match="bad hazard ratio"):
            parse_ratios(bad)
    with pytest.raises(ValueError):
        hazard_model("medium")
    with pytest.raises(ValueError):
        HazardModel("x", baseline=0.0)


# --- the stream ----------------------------------------------------------------------------

@pytest.fixture
def settings(tmp_path):
    from pipeline.config import load
    return load(data_dir=tmp_path)


@pytest.fixture(scope="module")
def causal():
    return generate(customers=600, days=150, seed=5, end=END, model=PRESETS["strong"])


def test_causal_stream_is_deterministic_and_seeded():
    a = generate(customers=80, days=60, seed=3, end=END, model=PRESETS["weak"])
    b = generate(customers=80, days=60, seed=3, end=END, model=PRESETS["weak"])
    c = generate(customers=80, days=60, seed=4, end=END, model=PRESETS["weak"])
    assert _digest(a) == _digest(b) != _digest(c)
    assert a.causal.customers == b.causal.customers


def test_causal_records_are_wire_valid_with_planted_defects(causal):
    valid = [r for r in causal.records if r.valid]
    for r in valid:
        parse_event(r.value)   # raises on an invalid record
    assert causal.n_invalid > 0 and causal.n_duplicates > 0
    assert set(causal.truth) == set(causal.causal.customers)


def _events_by_customer(stream):
    out = defaultdict(list)
    seen = set()
    for r in stream.records:
        if r.valid and r.value not in seen:
            seen.add(r.value)
            ev = parse_event(r.value)
            out[ev.customer_id].append(ev)
    return out


def test_incidents_are_visible_in_the_events_and_nothing_starts_after_departure(causal):
    by_cust = _events_by_customer(causal)
    start = causal.start
    for cid, t in causal.causal.customers.items():
        evs = by_cust[cid]
        leave = t.departed_at or causal.end + timedelta(days=1)
        late = sum(1 for e in evs if e.type == "order" and e.status == "delivered"
                   and e.fulfilled_at > e.promised_at and e.fulfilled_at < leave)
        detractors = sum(1 for e in evs if e.type == "touchpoint" and e.nps is not None and e.nps <= 6)
        returns = sum(1 for e in evs if e.type == "order" and e.status == "returned")
        failed = sum(1 for e in evs if e.type == "complaint" and e.status == "resolved" and e.satisfied is False)
        counts = Counter(f for _, f in t.incidents)
        assert counts["late_fulfilment"] == late, cid
        assert counts["detractor"] == detractors, cid
        assert counts["refunds_returns"] == returns, cid
        assert counts["failed_recovery"] == failed, cid
        # incidents are dated when the stream shows them, before the departure
        assert all(0 <= r and (t.departed_at is None or start + timedelta(days=r) < t.departed_at)
                   for r, _ in t.incidents)
        if t.departed_at is not None:
            started = [e for e in evs if e.occurred_at >= t.departed_at and (
                (e.type == "order" and e.status in ("placed", "returned"))
                or e.type == "touchpoint" or (e.type == "complaint" and e.status == "opened"))]
            assert not started, (cid, started[:1])
            assert t.departed_day == int((t.departed_at - start).total_seconds() // 86400)
            if t.driver is not None:
                assert t.driver == dominant_factor(t.incidents, t.departed_day, PRESETS["strong"])


def test_departures_all_year_round_and_the_oracle_predicts_them(causal):
    ct = causal.causal
    days = [t.departed_day for t in ct.customers.values() if t.departed_day is not None]
    per_month = Counter(d // 30 for d in days)
    assert len(per_month) == 5 and min(per_month.values()) >= len(days) / 5 / 2.5   # no month empty or bunched
    assert 0.2 < len(days) / len(ct.customers) < 0.8
    drivers = Counter(t.driver for t in ct.customers.values() if t.departed_day is not None)
    assert drivers[None] < len(days) / 2 and len([d for d in drivers if d]) >= 5
    # the oracle ranks who leaves within 30 days of a cut, at several cuts
    from pipeline.tools.evaluate import roc_auc
    for cut in (60, 90, 120):
        ids = [c for c, t in ct.customers.items() if t.present_at(cut)]
        labels = [ct.customers[c].leaves_within(cut) for c in ids]
        assert roc_auc(labels, [ct.oracle(c, cut) for c in ids]) > 0.6
        assert all(ct.oracle(c, cut) is None for c, t in ct.customers.items() if not t.present_at(cut))


def test_truth_file_lines(causal):
    lines = causal.causal.to_json_lines(oracle_every_days=30)
    head, rows = lines[0], lines[1:]
    assert head["kind"] == "hazard_model" and head["future_incidents"] == "ignored"
    assert head["ratios"]["failed_recovery"] == PRESETS["strong"].ratio("failed_recovery")
    assert len(rows) == 600
    r = next(x for x in rows if x["departed_day"] is not None and x["departed_day"] > 35 and x["incidents"])
    assert "30" in r["oracle_30d"] and str(r["departed_day"] // 30 * 30 + 30) not in r["oracle_30d"]
    assert r["oracle_30d"]["30"] == pytest.approx(causal.causal.oracle(r["customer_id"], 30), abs=1e-6)


def test_run_causal_evaluate_small(settings):
    from pipeline.tools.evaluate import lift_share
    from pipeline.tools.causal_evaluate import run_causal_evaluate, summary_table
    lines: list[str] = []
    r = run_causal_evaluate(settings, PRESETS["strong"], customers=300, days=100, seed=2, cut_day=60,
                            end=END, out=lines.append)
    assert any("oracle" in s for s in lines)
    assert r["present_at_cut"] > 100 and 0 < r["leave_within_30d"] < r["present_at_cut"]
    assert 0 <= r["auc_early"] <= 1 and r["auc_oracle"] > 0.5
    assert r["lift_share"] == pytest.approx(lift_share(r["auc_early"], r["auc_oracle"]), abs=1e-3)
    assert r["recent_leavers_with_driver"] + r["recent_leavers_at_baseline"] == r["leave_within_30d"]
    assert sum(row["n"] for row in r["reliability_early"]) == r["present_at_cut"]
    assert len(summary_table([r, r])) == 3
    assert r["churn_model"] is None and r["early_warning_model"] is None   # the hand-set model: nothing learned
    assert 0 < r["alerted_at_cut"] < r["present_at_cut"]
    assert r["precision_at_cut"] * r["alerted_at_cut"] == pytest.approx(r["recall_at_cut"] * r["leave_within_30d"],
                                                                          abs=0.05)   # both are the leavers alerted
    assert r["alerted_early_warning"] is None and r["alerted_early_warning_only"] is None   # no early warning
    with pytest.raises(ValueError, match="cut day"):
        run_causal_evaluate(settings, PRESETS["strong"], customers=10, days=40, cut_day=20, end=END)


def test_cli_rejects_a_bad_hazard_setting(capsys):
    from pipeline.tools.cli import main
    assert main(["evaluate", "--mode", "causal", "--hazard-ratios", "churn=2"]) == 2
    assert "bad hazard ratio 'churn=2'" in capsys.readouterr().err
    assert main(["evaluate", "--mode", "causal", "--hazard", "medium"]) == 2
    assert main(["evaluate", "--mode", "causal", "--days", "60", "--cut-day", "45"]) == 2
    assert "cut day 45 must be in 1..30" in capsys.readouterr().err


def test_generator_cli_writes_the_causal_truth_file(tmp_path):
    import json
    from pipeline.tools.generator import main
    out, truth = tmp_path / "e.jsonl", tmp_path / "t.jsonl"
    assert main(["--mode", "causal", "--hazard", "weak", "--hazard-ratios", "failed_recovery=4", "--customers", "40",
                 "--days", "40", "--seed", "2", "--end", "2026-01-01T00:00:00+00:00", "--out", str(out),
                 "--truth", str(truth)]) == 0
    lines = [json.loads(x) for x in truth.read_text().splitlines()]
    assert lines[0]["kind"] == "hazard_model" and lines[0]["name"] == "weak+custom"
    assert lines[0]["ratios"]["failed_recovery"] == 4.0
    assert len(lines) == 41 and all(x["kind"] == "customer" for x in lines[1:])
    assert sum(1 for _ in out.open()) > 100


def test_oracle_drivers_rank_the_incidents_known_at_the_cut_by_the_log_hazard_they_add():
    from pipeline.tools.hazard_model import HazardModel, oracle_drivers

    m = HazardModel("t", baseline=0.001, decay_days=30.0, ratios={"failed_recovery": 8.0, "detractor": 2.0})
    # detractor at day 120: in force on days 121..150, 16 of them in the window 135..164 (16 ln 2 = 11.1);
    # failed recovery at day 130: days 131..160, 26 in the window (26 ln 8 = 54.1); a late delivery adds
    # nothing (no ratio); an old detractor (day 100) is out of force; one after the cut is not known
    incidents = [(100.0, "detractor"), (120.0, "detractor"), (130.0, "failed_recovery"),
                 (132.0, "late_fulfilment"), (140.0, "failed_recovery")]
    assert oracle_drivers(incidents, 135, m) == ["failed_recovery", "detractor"]
    assert oracle_drivers([(100.0, "detractor"), (140.0, "failed_recovery")], 135, m) == []
