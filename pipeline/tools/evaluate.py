"""Judge churn risk on data with known outcomes (DESIGN.md section 4).

Two evaluations, both through the very same core as the workers (`pipeline.service.replay`):

- `run_evaluate`: a synthetic stream with planted churners (pipeline.tools.generator) replayed to
  its end: ROC AUC of churn_risk, precision / recall at the alert threshold, lead time of
  the first churn alert before departure, and whether the score names the planted driver.
- `run_transactions_evaluate`: a real purchase history (CSV) replayed up to a cutoff;
  customers with no purchase in the following window are the churners.

The metric functions are pure and live in pipeline.domain.prediction_metrics. docs/evaluation.md explains each figure.
"""
from __future__ import annotations

import json
import math
import time as time_module
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from pipeline.config import Settings
from pipeline.domain.alerts import CHURN_THRESHOLDS
from pipeline.domain.backtest import alerted_at
from pipeline.domain.prediction_metrics import (  # noqa: F401 - re-exported for the evaluations
    bootstrap_auc_interval, brier_score, lift_share, precision_recall_at,
    recall_at_precision, reliability, roc_auc, top_k_share)

WARNING_THRESHOLD = CHURN_THRESHOLDS["standard"][0]
T = TypeVar("T")

def _calibration(labels: Sequence[bool], scores: Sequence[float]) -> dict:
    share = sum(1 for y in labels if y) / len(labels) if labels else 0.0
    return {"brier": _r(brier_score(labels, scores)) if labels else None,
            "brier_base_rate": _r(share * (1.0 - share)), "reliability": reliability(labels, scores)}


def median(xs: Sequence[float]) -> float:
    """The median (mean of the two middle values for an even count). ValueError when empty."""
    v = sorted(xs)
    if not v:
        raise ValueError("median of an empty sequence")
    m = len(v) // 2
    return float(v[m]) if len(v) % 2 else (v[m - 1] + v[m]) / 2.0


def _safe_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    try:
        return roc_auc(labels, scores)
    except ValueError:
        return None


def early_warning_judged(labels: Sequence[bool], warnings: Sequence[float | None]
                         ) -> tuple[int, float | None, float | None, float | None]:
    """`early_warning` judged on the customers who have one (None: no early-warning model
    scored them): (how many, ROC AUC, Brier, Brier of predicting their churn share)."""
    pairs = [(y, float(p)) for y, p in zip(labels, warnings) if p is not None]
    if not pairs:
        return 0, None, None, None
    ys, ps = [y for y, _ in pairs], [p for _, p in pairs]
    return len(pairs), _safe_auc(ys, ps), brier_score(ys, ps), brier_score(ys, [sum(ys) / len(ys)] * len(ys))


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# ----------------------------------------------------------------------------- synthetic


def _known(value: T | None) -> T:
    """A planted churner's churn time or driver (the generator sets both for every churner)."""
    if value is None:
        raise ValueError("a churner without its churn time or driver in the generator's truth")
    return value


def run_evaluate(settings: Settings, customers: int = 2000, days: int = 120, seed: int = 7,
                 churn_threshold: float = WARNING_THRESHOLD, out: Callable[[str], object] | None = print,
                 end: datetime | None = None, horizon_days: float | None = 28.0,
                 churn_model: str = "hand-set") -> dict:
    """Generate a stream with planted churners, replay it to its end and measure.

    Figures (all as of the stream end unless said otherwise):
    - auc: ROC AUC of churn_risk, churners vs stayers;
    - precision / recall: churn_risk >= churn_threshold (the warning alert threshold);
    - lead_time_days_median: churn_at minus the first `firing` churn_risk alert, over the
      churners that got one (positive = the alert came before the customer left);
    - driver_top2: share of churners whose planted driver is among the top-2 churn_drivers;
    - auc_early (with horizon_days): a second replay cut at end - horizon_days; churners who
      were still active at the cut vs stayers: does the score rank leavers before they leave?
    `end` defaults to today's midnight UTC, so a run is reproducible within a day and the
    time-of-day layout of the stream does not depend on when it runs.
    """
    from pipeline.bootstrap import build_core
    from pipeline.service.replay import replay
    from pipeline.tools.generator import generate

    say = out or (lambda s: None)
    if end is None:
        end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    stream = generate(customers=customers, days=days, seed=seed, end=end)
    say(f"generated {len(stream.records)} records for {customers} customers over {days} days "
        f"({stream.n_churners} planted churners, {stream.n_invalid} invalid, {stream.n_duplicates} duplicates)")
    topic = settings.topic_for_type
    # each record goes to the topic it was produced to (wrong_topic records included)
    res = replay(stream.values(), build_core(settings), clock=time_module.time, as_of=stream.end,
                 topic_of=_fresh_topic_of(stream, topic), learner=_learner(settings, churn_model))
    truth = stream.truth
    ids = sorted(truth)
    labels = [truth[c].churned for c in ids]
    missing = [c for c in ids if c not in res.scores]
    risk = [float(res.scores[c]["churn_risk"]) if c in res.scores else 0.0 for c in ids]
    auc = _safe_auc(labels, risk)
    precision, recall = precision_recall_at(labels, risk, churn_threshold)
    # each customer against the warning threshold of their tier: what the alerts use
    tier_ok = [c in res.scores and alerted_at(r, res.scores[c]["tier"]) for c, r in zip(ids, risk)]
    precision_tier, recall_tier = precision_recall_at(labels, [float(x) for x in tier_ok], 0.5)
    recall_p80, threshold_p80 = recall_at_precision(labels, risk, 0.8)

    first_alert: dict[str, datetime] = {}
    for a in res.alerts:
        if a.get("type") == "churn_risk" and a.get("status") == "firing" and a["customer_id"] not in first_alert:
            first_alert[a["customer_id"]] = _ts(a["as_of"])
    churners = [c for c in ids if truth[c].churned]
    stayers = [c for c in ids if not truth[c].churned]
    churn_at = {c: _known(truth[c].churn_at) for c in churners}
    episodes = churn_alert_episodes(res.alerts)
    leads = [x for c in churners if (x := lead_time_days(episodes.get(c, []), churn_at[c])) is not None]
    lead_med = median(leads) if leads else None
    first_leads = [(churn_at[c] - first_alert[c]).total_seconds() / 86400.0 for c in churners if c in first_alert]
    stayers_firing_at_end = sum(1 for c in stayers if any(end is None for _, end in episodes.get(c, [])))

    hits: Counter[str] = Counter()
    per_driver: Counter[str] = Counter()
    top1: Counter[str] = Counter()
    for c in churners:
        d = _known(truth[c].driver)
        per_driver[d] += 1
        drivers = [x["factor"] for x in (res.scores[c]["churn_drivers"] if c in res.scores else [])]
        if d in drivers[:2]:
            hits[d] += 1
        if drivers:
            top1[drivers[0]] += 1
    driver_top2 = sum(hits.values()) / len(churners) if churners else None
    false_alarms: Counter[str] = Counter()   # stayers at or above the threshold, by top driver
    for c, y, r in zip(ids, labels, risk):
        if not y and r >= churn_threshold:
            named = [x["factor"] for x in res.scores[c]["churn_drivers"]] if c in res.scores else []
            false_alarms[named[0] if named else "none"] += 1

    result = {
        "customers": customers, "days": days, "seed": seed, "end": stream.end.isoformat(),
        "records": len(stream.records), "events_valid": stream.n_valid, "by_kind": stream.counts,
        "churners": len(churners), "stayers": len(stayers),
        "invalid_planted": stream.n_invalid, "dead_letters": len(res.dead_letters),
        "left_out_after_end": res.after_as_of,
        "duplicates_planted": stream.n_duplicates, "duplicates_seen": res.duplicates, "applied": res.applied,
        "unscored_customers": len(missing),
        "auc": _r(auc), "churn_threshold": churn_threshold, "precision": _r(precision), "recall": _r(recall),
        "precision_tier_thresholds": _r(precision_tier), "recall_tier_thresholds": _r(recall_tier),
        "recall_at_precision_0.8": _r(recall_p80), "threshold_at_precision_0.8": _r(threshold_p80),
        **_calibration(labels, risk),
        "churners_alerted": len(leads), "churners_alerted_share": _r(len(leads) / len(churners)) if churners else None,
        "stayers_alerted_share": _r(sum(1 for c in stayers if c in first_alert) / len(stayers)) if stayers else None,
        "alerted_before_churn_share": _r(sum(1 for x in leads if x > 0) / len(churners)) if churners else None,
        "lead_time_days_median": _r(lead_med, 2),
        "first_alert_lead_days_median": _r(median(first_leads), 2) if first_leads else None,
        "stayers_alert_firing_at_end_share": _r(stayers_firing_at_end / len(stayers)) if stayers else None,
        "driver_top2": _r(driver_top2),
        "driver_top2_by_driver": {d: f"{hits[d]}/{per_driver[d]}" for d in sorted(per_driver)},
        "churner_top_driver_counts": dict(top1.most_common()),
        "false_alarm_top_driver_counts": dict(false_alarms.most_common()),
    }
    if horizon_days:
        cut = stream.end - timedelta(days=horizon_days)
        early = replay(stream.values(), build_core(settings), clock=time_module.time, as_of=cut,
                       topic_of=_fresh_topic_of(stream, topic),
                       learner=_learner(settings, churn_model))
        e_ids = [c for c in ids if c in early.scores and (not truth[c].churned or churn_at[c] > cut)]
        e_labels = [truth[c].churned for c in e_ids]
        e_risk = [float(early.scores[c]["churn_risk"]) for c in e_ids]
        p_e, r_e = precision_recall_at(e_labels, e_risk, churn_threshold)
        result.update({"early_cutoff": cut.isoformat(), "early_positives": sum(e_labels),
                       "early_negatives": len(e_labels) - sum(e_labels), "auc_early": _r(_safe_auc(e_labels, e_risk)),
                       "precision_early": _r(p_e), "recall_early": _r(r_e)})
        result.update({f"{k}_early": v for k, v in _calibration(e_labels, e_risk).items()})
        # the early warning, where a learned one scored the cut: the question it answers (leaves soon, still there)
        n_ew, ew_auc, ew_brier, ew_base = early_warning_judged(
            e_labels, [early.scores[c].get("early_warning") for c in e_ids])
        result.update({"early_warning_customers_early": n_ew, "auc_early_warning_early": _r(ew_auc),
                       "brier_early_warning_early": _r(ew_brier), "brier_base_rate_early_warning_early": _r(ew_base)})
        result["churn_model_early"] = _model_summary(early)
    result["churn_model"] = _model_summary(res)
    _print(say, result)
    return result


def _learner(settings: Settings, churn_model: str):
    """The learning loop for a replay ("learned", the product's churn model), or None
    ("hand-set": today's fixed-weight model, for comparison)."""
    if churn_model == "hand-set":
        return None
    if churn_model not in ("learned", "lightgbm"):
        raise ValueError(f"unknown churn model {churn_model!r} (learned, lightgbm or hand-set)")
    from pipeline.service.churn_learning import ChurnLearner

    return ChurnLearner(settings.churn_horizon_days, kind="lightgbm" if churn_model == "lightgbm" else "logistic")


def _model_summary(res) -> dict | None:
    """Which churn model scored the replay's final scores, and the last model trained."""
    learner = getattr(res, "learner", None)
    if learner is None:
        return None
    served = [c for c in learner.cards if c is not None]
    pos, neg, leavers = learner.book.counts()
    return {"labelled_rows": pos + neg, "labelled_leaving": pos, "leavers": leavers, "models_trained": len(served),
            "train_seconds_max": _r(max(learner.train_seconds), 2) if learner.train_seconds else None,
            "serving": learner.served.to_dict() if learner.served is not None else None,
            "last_trained": served[-1].to_dict() if served else None,
            # the early warning serving at the end: its card, or why none serves (None: no training yet)
            "early_warning": (learner.early_warning.to_dict() if learner.early_warning is not None
                              else {"withheld": learner.early_warning_withheld} if learner.early_warning_withheld
                              else None)}


def churn_alert_episodes(alerts: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[datetime, datetime | None]]]:
    """Per customer, the churn-alert episodes as (fired, resolved or None), in order.
    A severity change re-sends `firing` with the same alert_id: same episode."""
    out: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    open_: dict[str, tuple[str, datetime]] = {}
    for a in sorted((a for a in alerts if a.get("type") == "churn_risk"), key=lambda a: _ts(a["as_of"])):
        cid, at = a["customer_id"], _ts(a["as_of"])
        if a["status"] == "firing" and cid not in open_:
            open_[cid] = (a["alert_id"], at)
        elif a["status"] == "resolved" and cid in open_:
            out[cid].append((open_.pop(cid)[1], at))
    for cid, (_, at) in open_.items():
        out[cid].append((at, None))
    for eps in out.values():
        eps.sort(key=lambda e: e[0])
    return dict(out)


def lead_time_days(episodes: Sequence[tuple[datetime, datetime | None]], churn_at: datetime) -> float | None:
    """Days between the start of the churn alert that stood when the customer left and
    the departure (positive: warned before). With no alert standing at `churn_at`, the
    first alert after it (negative); None when the customer was never alerted after an
    earlier, resolved false start. An alert that fired and resolved long before the
    departure is not a warning of it."""
    for start, end in episodes:
        if start <= churn_at and (end is None or end > churn_at):
            return (churn_at - start).total_seconds() / 86400.0
    later = [start for start, _ in episodes if start > churn_at]
    return (churn_at - later[0]).total_seconds() / 86400.0 if later else None


def _fresh_topic_of(stream, topic: dict[str, str]) -> Callable[[bytes], str]:
    """topic_of for replay: the topic each record was produced to, in stream order
    (identical bytes in two topics, e.g. two empty invalid records, are told apart by order)."""
    kinds: dict[bytes, list[str]] = defaultdict(list)
    for r in stream.records:
        kinds[r.value].append(r.kind)
    cursor: Counter[bytes] = Counter()

    def topic_of(value: bytes) -> str:
        ks = kinds[value]
        k = ks[min(cursor[value], len(ks) - 1)]
        cursor[value] += 1
        return topic[k]
    return topic_of


def _print(say: Callable[[str], object], result: dict) -> None:
    labels = {
        "auc": "ROC AUC of churn_risk (churners vs stayers)",
        "precision": "precision at the alert threshold",
        "recall": "recall at the alert threshold",
        "recall_at_precision_0.8": "best recall at precision >= 0.8 (any threshold)",
        "brier": "Brier score of churn_risk (0 = perfect)",
        "brier_base_rate": "Brier score of predicting the churn share",
        "reliability": "calibration by churn_risk bin",
        "brier_early": "Brier score at the early cutoff",
        "brier_base_rate_early": "Brier score of the churn share at the early cutoff",
        "reliability_early": "calibration at the early cutoff (leavers still active)",
        "lead_time_days_median": "median lead time, days (alert standing at departure)",
        "first_alert_lead_days_median": "median lead time, days (first alert ever)",
        "churners_alerted_share": "churners with a churn alert",
        "stayers_alerted_share": "stayers with a churn alert",
        "driver_top2": "planted driver among the top-2 drivers",
        "auc_early": "ROC AUC at the early cutoff (leavers still active)",
        "precision_early": "precision at the early cutoff",
        "recall_early": "recall at the early cutoff",
        "auc_recency_baseline": "ROC AUC of days since last purchase (baseline)",
        "auc_oracle": "ROC AUC of the oracle (same customers)",
        "lift_share": "share of the oracle's lift over 0.5 captured",
        "brier_oracle": "Brier score of the oracle",
        "early_warning_customers": "customers with an early_warning at the cut",
        "early_warning_model": "early-warning model at the cut",
        "alerted_at_cut": "churn_risk at its tier's alert threshold (customers)",
        "precision_at_cut": "precision of those (leave within 30 days)",
        "recall_at_cut": "recall of those",
        "alerted_early_warning": "early_warning at the same thresholds (customers)",
        "precision_early_warning": "precision of those",
        "recall_early_warning": "recall of those",
        "alerted_early_warning_only": "of them, below the threshold on churn_risk",
        "leavers_early_warning_only": "leavers among those",
        "early_warning_customers_early": "customers with an early_warning at the early cutoff",
        "auc_early_warning_early": "ROC AUC of early_warning at the early cutoff",
        "brier_early_warning_early": "Brier score of early_warning at the early cutoff",
        "brier_base_rate_early_warning_early": "Brier score of the churn share (those customers)",
        "auc_early_warning": "ROC AUC of early_warning at the early cutoff",
        "lift_share_early_warning": "share of the oracle's lift captured by early_warning",
        "driver_top2_early_warning": "planted driver among the top-2 early_warning_drivers",
        "brier_early_warning": "Brier score of early_warning at the early cutoff",
        "brier_base_rate_early_warning": "Brier score of the churn share (those customers)",
    }
    for k, v in result.items():
        if k.startswith("reliability"):
            say(f"  {labels[k]}:")
            for row in v:
                say(f"    churn_risk {row['bin']}: {row['n']:>6} customers, mean risk {row['mean_risk']:.3f}, "
                    f"churned {row['observed']:.3f}")
            continue
        say(f"  {labels.get(k, k):<52} {json.dumps(v) if isinstance(v, (dict, list)) else v}")


# ----------------------------------------------------------------------------- transactions


class CutoffError(ValueError):
    """A cutoff that is not an ISO date or datetime."""


def cutoff_instant(cutoff: date | datetime | str) -> datetime:
    """A date means the end of that day (UTC); a naive datetime is UTC."""
    if isinstance(cutoff, str):
        try:
            cutoff = datetime.fromisoformat(cutoff) if len(cutoff) > 10 else date.fromisoformat(cutoff)
        except ValueError:
            raise CutoffError(f"cutoff {cutoff!r}: expected an ISO date (1997-09-30) or datetime") from None
    if isinstance(cutoff, datetime):
        return cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=timezone.utc)
    return datetime.combine(cutoff + timedelta(days=1), time(0), tzinfo=timezone.utc)


def run_transactions_evaluate(settings: Settings, csv_path: str | Path, cutoff: date | datetime | str,
                              window_days: float = 90.0, churn_threshold: float = WARNING_THRESHOLD,
                              out: Callable[[str], object] | None = None, resamples: int = 1000,
                              churn_model: str = "hand-set", date_format: str | None = None,
                              columns: list[str] | None = None) -> dict:
    """Replay a real purchase history up to `cutoff` and check churn_risk against what happened.

    Label: a customer with at least one purchase up to the cutoff is a churner when they
    make no purchase in (cutoff, cutoff + window_days]. Returns the ROC AUC of churn_risk
    for that label, with a recency baseline (days since the last purchase) for comparison,
    and `scores`: for churn_risk, days since the last purchase, 1 − RFM percentile score,
    1 − BG/NBD P(alive) and the BG/NBD P(no purchase in the window)
    (pipeline.tools.purchase_baselines, all from the purchases up to the cutoff only), the
    ROC AUC with a percentile-bootstrap 95 % interval (`resamples`).
    """
    from pipeline.bootstrap import build_core
    from pipeline.service.replay import replay
    from pipeline.tools.transactions import occurred_at, read_transactions, to_order_events

    say = out or (lambda s: None)
    cut = cutoff_instant(cutoff)
    horizon = cut + timedelta(days=window_days)
    log = read_transactions(csv_path, date_format, columns)
    rows = sorted(log.rows, key=lambda r: occurred_at(r[1]))
    before = [r for r in rows if occurred_at(r[1]) <= cut]
    last: dict[str, datetime] = {}
    for cid, when, _ in before:
        last[cid] = max(last.get(cid, occurred_at(when)), occurred_at(when))
    came_back = {cid for cid, when, _ in rows if cut < occurred_at(when) <= horizon}
    if before and occurred_at(before[0][1]) < settings.time_floor:
        # a history older than the live input's floor (CXPULSE_TIME_FLOOR, 2000-01-01; CDNOW is
        # 1997): every purchase was dead-lettered implausible_time and nobody was scored
        settings = settings.model_copy(update={"time_floor": occurred_at(before[0][1])})
    from pipeline.tools.progress import bar, quiet_default

    # minutes on a long history with the learned model (weekly trainings): a bar on a terminal
    with bar("replay up to the cutoff", len(before), quiet_default()) as progress:
        res = replay(to_order_events(before), build_core(settings), clock=time_module.time, as_of=cut,
                     learner=_learner(settings, churn_model), sweep=False,   # the scores at the cutoff only
                     on_progress=lambda n: progress.update(completed=n))
    ids = sorted(last)
    labels = [c not in came_back for c in ids]
    risk = [float(res.scores[c]["churn_risk"]) if c in res.scores else 0.0 for c in ids]
    recency = [(cut - last[c]).total_seconds() / 86400.0 for c in ids]
    precision, recall = precision_recall_at(labels, risk, churn_threshold)
    scores = _purchase_scores(before, cut, ids, labels, risk, resamples, window_days)
    result = {
        "csv": str(csv_path), "cutoff": cut.isoformat(), "window_days": window_days,
        "input_rows": log.lines, "encoding": log.encoding, "transactions": len(rows), "left_out": log.skipped,
        "transactions_replayed": len(before), "customers": len(ids),
        "churn_horizon_days": settings.churn_horizon_days,
        "time_floor": settings.time_floor.isoformat(),
        "churned": sum(labels), "churn_rate": _r(sum(labels) / len(ids)) if ids else None,
        "unscored_customers": sum(1 for c in ids if c not in res.scores),
        "auc": _r(_safe_auc(labels, risk)), "auc_recency_baseline": _r(_safe_auc(labels, recency)),
        "churn_threshold": churn_threshold, "precision": _r(precision), "recall": _r(recall),
        **_calibration(labels, risk),
        "scores": scores,
        "churn_model": _model_summary(res),
    }
    _print(say, result)
    if abs(window_days - settings.churn_horizon_days) > 0.5:
        # a question of another length: the ranking is comparable, the probabilities are not
        say(f"  note: churn_risk is P(no activity within {settings.churn_horizon_days:g} days) "
            f"(CXPULSE_CHURN_HORIZON_DAYS); the label here is no purchase within {window_days:g} days, so its "
            f"Brier score and calibration answer another question than the risk does")
    for name, f in scores.items():
        if f["auc"] is None:   # every customer churned, or none did: nothing to rank
            say(f"  ROC AUC {name:<32} n/a (the labels hold one class only)")
        else:
            say(f"  ROC AUC {name:<32} {f['auc']:.4f}  95% CI [{f['ci95'][0]:.4f}, {f['ci95'][1]:.4f}]")
    return result


HINDSIGHT = "ceiling: fit on these labels (5-fold)"


def _purchase_scores(before: Sequence[tuple], cut: datetime, ids: list[str], labels: list[bool],
                     risk: list[float], resamples: int, window_days: float) -> dict[str, dict]:
    """ROC AUC with a bootstrap 95 % interval of churn_risk, the three purchase baselines and
    the hindsight ceiling (`HINDSIGHT`: a logistic regression fitted, out of fold, on these
    very labels from the purchase-history features; not a model anyone could serve, the mark
    of how far the evidence ranks the label)."""
    from pipeline.tools import purchase_baselines as pb
    from pipeline.tools.transactions import occurred_at

    summaries = pb.summarise(((c, occurred_at(w), float(a)) for c, w, a in before), cut)
    rfm = pb.rfm_scores(summaries, cut)
    inputs = [pb.bgnbd_inputs(summaries[c], cut) for c in ids]
    params = pb.fit_bgnbd(*zip(*inputs))
    columns = {
        "churn_risk": risk,
        "days_since_last_purchase": [pb.recency_days(summaries[c], cut) for c in ids],
        "rfm (1 - percentile score)": [1.0 - rfm[c] for c in ids],
        "bgnbd (1 - P(alive))": [1.0 - pb.bgnbd_p_alive(params, *xs) for xs in inputs],
        "bgnbd P(no purchase in window)": [pb.bgnbd_p_no_purchase(params, *xs, window_days) for xs in inputs],
    }
    if min(sum(labels), len(labels) - sum(labels)) >= 5:   # five folds, each with both classes
        features = pb.hindsight_features(summaries, cut, ids)
        columns[HINDSIGHT] = pb.hindsight_ceiling(features, labels)
    out: dict[str, dict] = {}
    for name, col in columns.items():
        auc = _safe_auc(labels, col)
        lo, hi = bootstrap_auc_interval(labels, col, resamples) if auc is not None else (None, None)
        out[name] = {"auc": _r(auc), "ci95": [_r(lo), _r(hi)]}
    out["bgnbd (1 - P(alive))"]["params_days"] = {k: round(v, 4) for k, v in params.__dict__.items()}
    return out
