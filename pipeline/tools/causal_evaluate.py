"""Judge churn_risk on the causal generator at a cut (docs/evaluation.md §5).

A stream in causal mode (pipeline.tools.causal_stream) is replayed through the very same
core as the workers up to a cut (a whole day since the stream start); among the customers
still present at the cut (not departed before it, and seen at least once), the label is
"leaves within the next 30 days". Figures: ROC AUC of churn_risk, the oracle's AUC on the
same customers (the best achievable probability from the incidents known at the cut), the
share of the oracle's lift over chance the model captures, Brier and the reliability table,
and the share of recent leavers whose planted driver is among the top two churn_drivers; the
same of early_warning and its early_warning_drivers where an early-warning model served; and
at the alert thresholds of each customer's tier (as the churn alerts fire, and as the live
backtest judges them), how many customers churn_risk and early_warning each reach, with
precision and recall, and how many the early warning alone reaches.
"""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Callable

from pipeline.bootstrap import build_core
from pipeline.config import Settings
from pipeline.tools.evaluate import (
    _calibration, _fresh_topic_of, _print, _r, _safe_auc, brier_score, early_warning_judged, lift_share, top_k_share,
)
from pipeline.domain.backtest import alert_figures, alerted_at
from pipeline.tools.hazard_model import HazardModel, oracle_drivers

WINDOW_DAYS = 30


def _present(oracle: float | None) -> float:
    """The oracle of a customer still present at the cut (None only for one already gone)."""
    if oracle is None:
        raise ValueError("no oracle for a customer present at the cut")
    return oracle


def run_causal_evaluate(settings: Settings, model: HazardModel, customers: int = 2000, days: int = 180,
                        seed: int = 7, cut_day: int | None = None, end: datetime | None = None,
                        out: Callable[[str], object] | None = print, churn_model: str = "hand-set") -> dict:
    """Generate a causal stream of `days` days, replay it up to `cut_day` (default days − 30)
    and measure churn_risk against departures within the next 30 days. `churn_model` as in
    `cxpulse evaluate --churn-model` (learned: trained in-stream up to the cut)."""
    from pipeline.tools.generator import generate
    from pipeline.service.replay import replay

    say = out or (lambda s: None)
    cut_day = days - WINDOW_DAYS if cut_day is None else cut_day
    if not 1 <= cut_day <= days - WINDOW_DAYS:
        raise ValueError(f"cut day {cut_day} must be in 1..{days - WINDOW_DAYS} "
                         f"(the stream must cover the {WINDOW_DAYS} days after the cut)")
    if end is None:
        end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    stream = generate(customers=customers, days=days, seed=seed, end=end, model=model)
    truth = stream.causal
    assert truth is not None, "a causal stream carries its truth"
    cut = stream.start + timedelta(days=cut_day)
    say(f"causal stream ({model.name}): {len(stream.records)} records, {customers} customers, {days} days, "
        f"{sum(1 for t in truth.customers.values() if t.departed_day is not None)} departures; cut at day "
        f"{cut_day} ({cut.date()})")
    from pipeline.tools.evaluate import _learner, _model_summary

    res = replay(stream.values(), build_core(settings), clock=lambda: cut.timestamp(), as_of=cut,
                 learner=_learner(settings, churn_model), topic_of=_fresh_topic_of(stream, settings.topic_for_type),
                 sweep=False)   # the scores at the cut only: no alert is judged here
    ids = sorted(c for c, t in truth.customers.items() if t.present_at(cut_day) and c in res.scores)
    labels = [truth.customers[c].leaves_within(cut_day, WINDOW_DAYS) for c in ids]
    risk = [float(res.scores[c]["churn_risk"]) for c in ids]
    oracle = [_present(truth.oracle(c, cut_day, WINDOW_DAYS)) for c in ids]   # ids are present at the cut
    auc, auc_oracle = _safe_auc(labels, risk), _safe_auc(labels, oracle)
    share = lift_share(auc, auc_oracle) if auc is not None and auc_oracle is not None and auc_oracle > 0.5 else None

    leavers = [(c, d) for c, y in zip(ids, labels) if y and (d := truth.customers[c].driver) is not None]
    planted = [d for _, d in leavers]
    named = [[d["factor"] for d in res.scores[c].get("churn_drivers", [])] for c, _ in leavers]
    # the ceiling: the oracle's own top two at the cut (the planted driver is the dominant
    # incident on the departure day, which may be revealed after the cut)
    oracle_named = [oracle_drivers(truth.customers[c].incidents, cut_day, model, WINDOW_DAYS) for c, _ in leavers]
    hits: Counter[str] = Counter()
    per: Counter[str] = Counter()
    for d, ns in zip(planted, named):
        per[d] += 1
        hits[d] += d in ns[:2]
    calib = _calibration(labels, risk)
    # the early warning, P(leaves within H | still here), where an early-warning model served at the cut
    warnings = [res.scores[c].get("early_warning") for c in ids]
    n_ew, ew_auc, ew_brier, ew_base = early_warning_judged(labels, warnings)
    ew_named = [[d["factor"] for d in res.scores[c].get("early_warning_drivers", [])] for c, _ in leavers]
    ew_leavers = [(d, ns) for (c, _), d, ns in zip(leavers, planted, ew_named)
                  if res.scores[c].get("early_warning") is not None]
    ew_share = (lift_share(ew_auc, auc_oracle) if ew_auc is not None and auc_oracle is not None and auc_oracle > 0.5
                else None)
    # the alert thresholds of each customer's tier (as the churn alerts fire) on churn_risk and on
    # the early warning, and who the early warning alone would alert
    tiers = [res.scores[c]["tier"] for c in ids]
    alerted, precision, recall = alert_figures(labels, risk, tiers)
    ew_alerted, ew_precision, ew_recall = alert_figures(labels, warnings, tiers)
    ew_only = [y for y, r, w, tier in zip(labels, risk, warnings, tiers) if alerted_at(w, tier) and not alerted_at(r, tier)]
    summary = _model_summary(res)
    result = {
        "mode": "causal", "hazard": model.to_json(), "customers": customers, "days": days, "seed": seed,
        "cut_day": cut_day, "cut": cut.isoformat(), "records": len(stream.records),
        "present_at_cut": len(ids), "leave_within_30d": sum(labels),
        "leave_rate_30d": _r(sum(labels) / len(ids)) if ids else None,
        "auc_early": _r(auc), "auc_oracle": _r(auc_oracle), "lift_share": _r(share),
        **{f"{k}_early": v for k, v in calib.items()},
        "brier_oracle": _r(brier_score(labels, oracle)) if ids else None,
        "recent_leavers_with_driver": len(leavers),
        "recent_leavers_at_baseline": sum(labels) - len(leavers),
        "driver_top2": _r(top_k_share(planted, named, 2)) if leavers else None,
        "driver_top2_by_driver": {d: f"{hits[d]}/{per[d]}" for d in sorted(per)},
        "driver_top2_oracle": _r(top_k_share(planted, oracle_named, 2)) if leavers else None,
        "early_warning_customers": n_ew,
        "auc_early_warning": _r(ew_auc), "lift_share_early_warning": _r(ew_share),
        "driver_top2_early_warning": _r(top_k_share([d for d, _ in ew_leavers], [ns for _, ns in ew_leavers], 2))
        if ew_leavers else None,
        "brier_early_warning": _r(ew_brier), "brier_base_rate_early_warning": _r(ew_base),
        "early_warning_model": _early_warning_model(summary),
        "alerted_at_cut": alerted, "precision_at_cut": _r(precision), "recall_at_cut": _r(recall),
        "alerted_early_warning": ew_alerted if n_ew else None,
        "precision_early_warning": _r(ew_precision), "recall_early_warning": _r(ew_recall) if n_ew else None,
        "alerted_early_warning_only": len(ew_only) if n_ew else None,
        "leavers_early_warning_only": sum(ew_only) if n_ew else None,
        "churn_model": summary,
    }
    _print(say, result)
    return result


def _early_warning_model(summary: dict | None) -> str | None:
    """The early-warning model that scored the cut, or why none did (None: no learning)."""
    ew = summary["early_warning"] if summary is not None else None
    if ew is None:
        return None
    return f"none: {ew['withheld']}" if "withheld" in ew else f"{ew['version']} (validation AUC {ew['auc_validation']})"


def summary_table(results: list[dict]) -> list[str]:
    """One line per run: hazard, seed, AUC, oracle AUC, lift share, top-2, Brier vs base rate."""
    lines = [f"{'hazard':<14} {'seed':>4} {'present':>7} {'leave':>5} {'auc':>6} {'oracle':>6} {'lift':>6} "
             f"{'top2':>6} {'top2 oracle':>11} {'brier':>6} {'base':>6} {'ew auc':>6} {'ew lift':>7} {'ew top2':>7} {'ew brier':>8}"]
    for r in results:
        lines.append(f"{r['hazard']['name']:<14} {r['seed']:>4} {r['present_at_cut']:>7} {r['leave_within_30d']:>5} "
                     f"{_fmt(r['auc_early'])} {_fmt(r['auc_oracle'])} {_fmt(r['lift_share'])} "
                     f"{_fmt(r['driver_top2'])} {_fmt(r.get('driver_top2_oracle')):>11} {_fmt(r['brier_early'])} "
                     f"{_fmt(r['brier_base_rate_early'])} {_fmt(r.get('auc_early_warning'))} "
                     f"{_fmt(r.get('lift_share_early_warning')):>7} {_fmt(r.get('driver_top2_early_warning')):>7} "
                     f"{_fmt(r.get('brier_early_warning')):>8}")
    return lines


def _fmt(x: float | None) -> str:
    return f"{x:>6.3f}" if x is not None else f"{'-':>6}"
