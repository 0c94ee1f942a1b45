"""`cxpulse evaluate --uplift`: did the action work? (docs/evaluation.md §6)

Two sources of cases, one report (pipeline.domain.uplift.uplift_by_action):

- `run_generated_uplift`: a causal stream with operators (pipeline.tools.operators). Every
  case whose outcome window lies inside the stream counts; churned = departed within the
  horizon from the trigger day; revenue = paid orders in that window. The planted uplift
  (expected difference in P(leave within the horizon), no call vs call, from the incidents
  known at each trigger) is printed beside the measured one.
- `alert_cases`: churn_risk alerts as the pipeline published them (first `firing` record
  of each episode, with `control` and `withheld_action`), judged against what each customer
  did after the alert (gone = no activity within the horizon; revenue = paid orders in it).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from pipeline.domain.uplift import CaseOutcome, uplift_by_action
from pipeline.tools.hazard_model import HazardModel
from pipeline.tools.operators import ACTION, OperatorPolicy


def generated_cases(truth, horizon_days: int) -> tuple[list[CaseOutcome], float | None]:
    """The operator cases of a causal stream with a full outcome window, and the planted uplift:
    over the called cases, the share that would have left within the horizon without the call
    (the same daily draws against the hazard without the call's cut) minus the share that left."""
    out: list[CaseOutcome] = []
    planted: list[float] = []
    for k in truth.cases:
        d0 = k.trigger_day
        if d0 + horizon_days > truth.days:
            continue
        t = truth.customers[k.customer_id]
        churned = t.departed_day is not None and d0 <= t.departed_day < d0 + horizon_days
        revenue = sum(a for at, a in truth.orders.get(k.customer_id, ()) if d0 <= at < d0 + horizon_days)
        out.append(CaseOutcome(ACTION, k.control, churned, round(revenue, 2)))
        if not k.control:
            cf = truth.no_call_departure.get(k.customer_id)
            planted.append(float(cf is not None and d0 <= cf < d0 + horizon_days) - float(churned))
    return out, (sum(planted) / len(planted) if planted else None)


def run_generated_uplift(model: HazardModel, policy: OperatorPolicy, customers: int = 2000, days: int = 180,
                         seed: int = 7, end: datetime | None = None, resamples: int = 1000,
                         out: Callable[[str], object] | None = print) -> dict:
    from pipeline.tools.generator import generate

    say = out or (lambda s: None)
    if end is None:
        end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    stream = generate(customers=customers, days=days, seed=seed, end=end, model=model, operators=policy)
    assert stream.causal is not None, "a causal stream (hazard model given) carries its truth"
    cases, planted = generated_cases(stream.causal, policy.horizon_days)
    rows = uplift_by_action(cases, resamples=resamples, seed=seed)
    result = {"mode": "uplift", "source": "generator", "hazard": model.to_json(), "operators": policy.to_json(),
              "customers": customers, "days": days, "seed": seed, "cases": len(cases),
              "planted_churn_uplift": planted, "rows": rows}
    say(f"causal stream ({model.name}) with operators: seed {seed}, {customers} customers, {days} days; "
        f"{len(stream.causal.cases)} cases, {len(cases)} with a full {policy.horizon_days}-day window")
    say(f"policy: a call within a day after the generator-view 30-day risk reaches {policy.threshold:g}; "
        f"the call cuts the leaving hazard by {policy.effect:.0%} for {policy.effect_days} days; "
        f"control share {policy.control_share:g}")
    if planted is not None:
        say(f"planted churn uplift (called cases: left within the horizon without the call, same draws, "
            f"minus left): {planted:.4f}")
    for line in report_lines(rows, policy.horizon_days):
        say(line)
    return result


def report_lines(rows: Sequence[Mapping], horizon_days: float) -> list[str]:
    """The uplift table: per action, each arm's count, churn rate and mean revenue, the churn
    uplift (control − treated) and revenue kept (treated − control), with 95 % intervals."""
    lines = [f"outcomes within {horizon_days:g} days of the alert, per action:"]
    for r in rows:
        lines.append(f"  {r['action']}: treated {r['treated']} (churned {_p(r['churn_treated'])}, revenue "
                     f"{_m(r['revenue_treated'])}), control {r['control']} (churned {_p(r['churn_control'])}, "
                     f"revenue {_m(r['revenue_control'])})")
        if r["churn_uplift"] is not None:
            lo, hi = r["churn_uplift_ci"]
            rlo, rhi = r["revenue_kept_ci"]
            verdict = "no effect shown (interval covers 0)" if lo <= 0 <= hi else (
                "fewer departures when treated" if lo > 0 else "more departures when treated")
            lines.append(f"    churn uplift {r['churn_uplift']:+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}): {verdict}; "
                         f"revenue kept {r['revenue_kept']:+.2f} (95 % CI {rlo:+.2f} to {rhi:+.2f})")
        else:
            lines.append(f"    {r['note']}")
    return lines


def summary_table(runs: Sequence[Mapping]) -> list[str]:
    """One line per seed: cases, planted and measured churn uplift, its interval, and whether it covers the planted one."""
    lines = [f"{'seed':>4} {'cases':>5} {'planted':>8} {'measured':>8} {'95% CI':>19} {'covers':>6}"]
    for r in runs:
        row = r["rows"][-1]
        planted = r["planted_churn_uplift"]
        if row["churn_uplift"] is None:
            lines.append(f"{r['seed']:>4} {r['cases']:>5} {planted if planted is not None else '-':>8}  {row['note']}")
            continue
        lo, hi = row["churn_uplift_ci"]
        covers = planted is not None and lo <= planted <= hi
        lines.append(f"{r['seed']:>4} {r['cases']:>5} {planted:>+8.4f} {row['churn_uplift']:>+8.4f} "
                     f"{lo:>+9.4f}..{hi:>+8.4f} {'yes' if covers else 'NO':>6}")
    return lines


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _m(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# ----------------------------------------------------------------------------- pipeline alerts


def alert_cases(alerts: Iterable[Mapping], events: Iterable[Mapping], horizon_days: float,
                as_of: datetime) -> list[CaseOutcome]:
    """Churn alerts (first `firing` record of each churn_risk episode old enough for a full
    horizon before `as_of`; per customer only the first such episode, since a customer's
    episodes share one outcome and are not independent cases) and what became of each
    customer: churned = no event within the horizon after the alert; revenue = `paid` order
    amounts in it."""
    from pipeline.tools.evaluate import _ts

    first: dict[str, Mapping] = {}
    for a in alerts:
        if a.get("type") == "churn_risk" and a.get("status") == "firing" and a["alert_id"] not in first:
            first[a["alert_id"]] = a
    by_customer: dict[str, list[tuple[datetime, float]]] = {}
    for e in events:
        amount = float(e["amount"]) if e.get("type") == "order" and e.get("status") == "paid" and e.get("amount") else 0.0
        by_customer.setdefault(e["customer_id"], []).append((_ts(e["occurred_at"]), amount))
    horizon = timedelta(days=horizon_days)
    out = []
    seen: set[str] = set()
    for a in sorted(first.values(), key=lambda a: _ts(a["as_of"])):
        at = _ts(a["as_of"])
        if at + horizon > as_of or a["customer_id"] in seen:
            continue
        seen.add(a["customer_id"])   # one case per customer: episodes of one customer are not independent
        after = [(t, m) for t, m in by_customer.get(a["customer_id"], ()) if at < t <= at + horizon]
        action = (a.get("withheld_action") or a["recommended_action"]) if a.get("control") else a["recommended_action"]
        out.append(CaseOutcome(action, bool(a.get("control")), not after, round(sum(m for _, m in after), 2)))
    return out


def _events(lines: Iterable[str]) -> tuple[list[dict], int]:
    """Parsed events with a customer and a time; the rest counted (the pipeline dead-letters them)."""
    from pipeline.tools.evaluate import _ts

    out, skipped = [], 0
    for line in (ln for ln in lines if ln.strip()):
        try:
            e = json.loads(line)
            if _ts(e["occurred_at"]).tzinfo is None:
                raise ValueError("no time zone")
            if not isinstance(e.get("customer_id"), str):
                raise ValueError("no customer_id")
            if e.get("amount") is not None:
                float(e["amount"])
        except (ValueError, KeyError, TypeError, AttributeError):
            skipped += 1
            continue
        out.append(e)
    return out, skipped


def run_alerts_uplift(alerts_path: Path, events_path: Path, horizon_days: float, as_of: datetime | None = None,
                      resamples: int = 1000, out: Callable[[str], object] | None = print) -> dict:
    """`cxpulse evaluate --uplift --alerts FILE --events FILE`: JSON Lines of published alerts
    and of the input events (e.g. exported from ClickHouse)."""
    from pipeline.tools.evaluate import _ts

    say = out or (lambda s: None)
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines() if line.strip()]
    events, skipped = _events(events_path.read_bytes().decode("utf-8", errors="replace").splitlines())
    if skipped:
        say(f"{skipped} lines of {events_path} skipped: not an event (bad JSON, no customer_id or occurred_at)")
    if as_of is None:
        as_of = max((_ts(e["occurred_at"]) for e in events), default=datetime.now(timezone.utc))
    cases = alert_cases(alerts, events, horizon_days, as_of)
    rows = uplift_by_action(cases, resamples=resamples)
    say(f"{len(cases)} customers' first churn alert with a full {horizon_days:g}-day window before "
        f"{as_of.isoformat()}")
    for line in report_lines(rows, horizon_days):
        say(line)
    return {"mode": "uplift", "source": "alerts", "cases": len(cases), "as_of": as_of.isoformat(), "rows": rows}
